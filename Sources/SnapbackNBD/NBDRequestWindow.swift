// The requests of one connection that are in progress, and the rule for admitting one more. Pure:
// the connection handler asks it before every export call.

extension NBDOperation {
    /// The export bytes the operation reads or changes; nil when it touches none.
    public var byteRange: Range<UInt64>? {
        switch self {
        case .read(let offset, let lengthBytes),
             .write(let offset, let lengthBytes, _),
             .trim(let offset, let lengthBytes, _),
             .writeZeroes(let offset, let lengthBytes, _, _, _),
             .blockStatus(let offset, let lengthBytes, _):
            // `NBDRequest.check` guarantees offset + length fits the export, hence UInt64.
            lengthBytes == 0 ? nil : offset ..< offset + UInt64(lengthBytes)
        case .flush, .disconnect:
            nil
        }
    }

    /// True when the operation changes export data.
    public var modifiesData: Bool {
        switch self {
        case .write, .trim, .writeZeroes: true
        case .read, .flush, .disconnect, .blockStatus: false
        }
    }

    /// The data held in memory for it, in bytes: the write payload or the read result; for TRIM
    /// and WRITE_ZEROES, what the export may buffer for one piece (they are passed on in pieces of
    /// at most `NBDLimits.payloadBytesMax` bytes); for BLOCK_STATUS, its reply at the most extents.
    public var bufferedBytes: Int {
        switch self {
        case .read(_, let lengthBytes), .write(_, let lengthBytes, _):
            Int(lengthBytes)
        case .trim(_, let lengthBytes, _), .writeZeroes(_, let lengthBytes, _, _, _):
            Int(min(lengthBytes, NBDLimits.payloadBytesMax))
        case .blockStatus:
            8 * NBDLimits.blockStatusExtentsMax
        case .flush, .disconnect:
            0
        }
    }
}

/// The in-progress requests of one connection (from admission until their reply is written).
///
/// Requests run concurrently, and their replies may leave out of order (each carries its cookie,
/// as the protocol allows), but a connection still behaves as if its requests ran one after
/// another in the order received: a request waits while it overlaps an in-progress request and
/// either of them changes data; NBD_CMD_FLUSH and NBD_CMD_DISC wait until nothing is in
/// progress. The window is bounded both in requests and in buffered bytes.
public struct NBDRequestWindow: Sendable {
    /// The most requests in progress at once on one connection.
    public static let requestsMax = 16
    /// The most payload and read bytes held for one connection's requests in progress, in bytes
    /// (a single request larger than this still runs, alone).
    public static let bufferedBytesMax = 64 * 1024 * 1024

    private struct Entry: Sendable {
        let id: UInt64
        let range: Range<UInt64>?
        let modifiesData: Bool
        let bufferedBytes: Int
    }

    private var entries: [Entry] = []
    private var nextID: UInt64 = 0
    /// The buffered bytes of the requests in progress.
    public private(set) var bufferedBytes = 0

    /// An empty window.
    public init() {}

    /// The number of requests in progress.
    public var count: Int { entries.count }
    /// True when nothing is in progress.
    public var isEmpty: Bool { entries.isEmpty }

    /// Whether `decision` may start now; otherwise it (and everything after it) waits.
    public func canAdmit(_ decision: NBDRequestCheck) -> Bool {
        switch decision {
        case .reject:
            return entries.count < Self.requestsMax
        case .accept(.flush), .accept(.disconnect):
            return entries.isEmpty
        case .accept(let operation):
            if entries.isEmpty { return true }
            guard entries.count < Self.requestsMax,
                  bufferedBytes + operation.bufferedBytes <= Self.bufferedBytesMax
            else { return false }
            guard let range = operation.byteRange else { return true }
            return !entries.contains { entry in
                guard let other = entry.range, other.overlaps(range) else { return false }
                return entry.modifiesData || operation.modifiesData
            }
        }
    }

    /// Records `decision` as in progress and returns its id for `complete`.
    /// - Precondition: `canAdmit(decision)`.
    public mutating func admit(_ decision: NBDRequestCheck) -> UInt64 {
        precondition(canAdmit(decision), "admitted a request the window cannot take")
        let id = nextID
        nextID &+= 1
        let entry: Entry
        switch decision {
        case .reject:
            entry = Entry(id: id, range: nil, modifiesData: false, bufferedBytes: 0)
        case .accept(let operation):
            entry = Entry(id: id, range: operation.byteRange, modifiesData: operation.modifiesData, bufferedBytes: operation.bufferedBytes)
        }
        entries.append(entry)
        bufferedBytes += entry.bufferedBytes
        return id
    }

    /// Removes a finished request.
    /// - Precondition: `id` is in progress.
    public mutating func complete(_ id: UInt64) {
        guard let index = entries.firstIndex(where: { $0.id == id }) else {
            preconditionFailure("completed request \(id) is not in progress")
        }
        bufferedBytes -= entries[index].bufferedBytes
        entries.remove(at: index)
    }
}
