import SnapbackCore
import SnapbackData

/// The keys of one cluster's store in etcd, all under `/snapback/CLUSTER/` (`Specs/cluster.md`,
/// "Keys"). Sequence numbers are 20 decimal digits and ids 10, so that etcd's byte order is
/// their numeric order and a range reads them in order.
public struct ClusterKeys: Sendable {
    public let cluster: String
    public let prefix: String

    /// A cluster name: 1 to 63 bytes of letters, digits, `_`, `.` and `-` (it is part of every key).
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 63
            && name.utf8.allSatisfy { byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "-")
            }
    }

    public init(cluster: String) {
        precondition(Self.isValidName(cluster), "cluster name \(cluster) is not 1-63 of [A-Za-z0-9_.-]")
        self.cluster = cluster
        prefix = "/snapback/\(cluster)/"
    }

    static func digits(_ value: UInt64, width: Int) -> String {
        let text = String(value)
        precondition(text.count <= width)
        return String(repeating: "0", count: width - text.count) + text
    }

    private func bytes(_ suffix: String) -> [UInt8] { Array((prefix + suffix).utf8) }

    /// The record of event `sequence` (the LMDB log's record value, ``LogRecord``).
    public func event(_ sequence: UInt64) -> [UInt8] { bytes("events/" + Self.digits(sequence, width: 20)) }
    public var eventsPrefix: [UInt8] { bytes("events/") }
    /// The sequence number of an event key, or `nil`.
    public func sequence(ofEventKey key: [UInt8]) -> UInt64? {
        let start = eventsPrefix
        guard key.count == start.count + 20, key.starts(with: start) else { return nil }
        return UInt64(String(decoding: key[start.count...], as: UTF8.self))
    }

    /// The head: the last sequence number (8 bytes big-endian), its chain hash (32) and the
    /// term of the leader that wrote it (8 bytes big-endian).
    public var head: [UInt8] { bytes("head") }
    /// The leader: held with the leader's lease; its value is a ``LeaderRecord``.
    public var leader: [UInt8] { bytes("leader") }
    /// The last term (decimal text); a term is won with the leader key, in one transaction.
    public var term: [UInt8] { bytes("term") }
    /// Who won term `term` and when (a ``LeaderRecord``): the history of leaders, one per term.
    public func termRecord(_ term: UInt64) -> [UInt8] { bytes("terms/" + Self.digits(term, width: 20)) }
    public var termsPrefix: [UInt8] { bytes("terms/") }
    /// A live node, held with its lease (a ``NodeRecord``).
    public func node(_ name: String) -> [UInt8] { bytes("nodes/" + name) }
    public var nodesPrefix: [UInt8] { bytes("nodes/") }
    /// Part `part` of bitmap `kind` of `map` (1 KiB, ``GrainBitmap/partBytes(_:)``).
    public func bitmapPart(map: MapID, kind: BitmapKind, part: Int) -> [UInt8] {
        bytes("bitmaps/" + Self.digits(UInt64(map), width: 10) + "/\(kind.rawValue)/" + Self.digits(UInt64(part), width: 10))
    }
    public func bitmapPrefix(map: MapID, kind: BitmapKind) -> [UInt8] {
        bytes("bitmaps/" + Self.digits(UInt64(map), width: 10) + "/\(kind.rawValue)/")
    }
    /// A checkpoint of the reduced state after record `sequence` (the LMDB log's encoding).
    public func checkpoint(_ sequence: UInt64) -> [UInt8] { bytes("checkpoints/" + Self.digits(sequence, width: 20)) }
    public var checkpointsPrefix: [UInt8] { bytes("checkpoints/") }
    public func sequence(ofCheckpointKey key: [UInt8]) -> UInt64? {
        let start = checkpointsPrefix
        guard key.count == start.count + 20, key.starts(with: start) else { return nil }
        return UInt64(String(decoding: key[start.count...], as: UTF8.self))
    }
    /// Why `key`, found under ``checkpointsPrefix``, is no checkpoint's key: the words with which
    /// replay and verify reject it.
    func notACheckpointKey(_ key: [UInt8]) -> String {
        "\(String(decoding: key, as: UTF8.self)) is not a checkpoint's key (20 digits after checkpoints/)"
    }
}
