import Foundation
import SnapbackCore
import SnapbackData
import SnapbackLog

extension LogError: StorageFailure {
    public var isOutOfSpace: Bool {
        switch self {
        case .mapFull: return true
        case let .lmdb(error):
            if error.code == .mapFull { return true }
            if case let .system(code) = error.code { return code == ENOSPC || code == EDQUOT }
            return false
        default: return false
        }
    }
}

/// A failed commit of the LMDB log, with the free space of its file system at the time. LMDB
/// reports a short write (ENOSPC on the way) as EIO, so a failure while the file system has
/// less than ``fullBelowBytes`` free counts as out of space.
public struct LogCommitFailure: StorageFailure, CustomStringConvertible {
    public var error: LogError
    public var freeBytes: UInt64?
    public static let fullBelowBytes: UInt64 = 1 << 20

    public var isOutOfSpace: Bool {
        if error.isOutOfSpace { return true }
        guard case let .lmdb(lmdb) = error, case .system = lmdb.code, let freeBytes else { return false }
        return freeBytes < Self.fullBelowBytes
    }

    public var description: String {
        "\(error)" + (freeBytes.map { $0 < Self.fullBelowBytes ? " (the log's file system has \($0) bytes free)" : "" } ?? "")
    }
}

/// The durable store of snapbackd: events in the LMDB log, bitmaps in the `bitmaps` database of
/// the same environment, committed in one transaction.
///
/// Bitmap keys: map id (4 bytes big-endian), kind (1 byte), index (4 bytes big-endian); values:
/// the bytes of a part (1 KiB, 8,192 grains; kind byte `0x80 | kind`), or, in logs written
/// before parts, of a whole chunk (8 KiB; kind byte `kind`). Parts load after chunks and win: a
/// part is only ever newer than the chunk it lies in. An absent part or chunk is all clear.
public final class LogDurableStore: DurableStore, @unchecked Sendable {
    public let log: EventLog
    private let bitmaps: LogTable
    /// Told how long each successful commit took (the LMDB transaction and its sync), from the
    /// committing thread; it must be quick (snapbackd records it in a histogram).
    private let commitObserver: (@Sendable (Duration) -> Void)?
    private let replayLock = NSLock()
    private var lastReplayStorage: Replay?

    /// - Parameters:
    ///   - log: The open event log; bitmaps go in its `bitmaps` table.
    ///   - commitObserver: Told the duration of every successful commit, if given.
    /// - Throws: `LogError` when the bitmaps table cannot be opened.
    public init(log: EventLog, commitObserver: (@Sendable (Duration) -> Void)? = nil) throws {
        self.log = log
        bitmaps = try log.table("bitmaps")
        self.commitObserver = commitObserver
    }

    static func key(map: MapID, kind: BitmapKind, chunk: Int, parts: Bool = false) -> [UInt8] {
        var key: [UInt8] = []
        key.reserveCapacity(9)
        withUnsafeBytes(of: map.bigEndian) { key.append(contentsOf: $0) }
        key.append(parts ? 0x80 | kind.rawValue : kind.rawValue)
        withUnsafeBytes(of: UInt32(chunk).bigEndian) { key.append(contentsOf: $0) }
        return key
    }

    public func commit(events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
        do {
            guard let commitObserver else {
                return try append(events: events, callers: callers, bitmapChanges: bitmapChanges, timestampMilliseconds: timestampMilliseconds)
            }
            let started = ContinuousClock.now
            let receipt = try append(events: events, callers: callers, bitmapChanges: bitmapChanges, timestampMilliseconds: timestampMilliseconds)
            commitObserver(started.duration(to: .now))
            return receipt
        } catch let error as LogError {
            throw LogCommitFailure(error: error, freeBytes: Self.freeBytes(of: log.directory))
        }
    }

    /// Bytes free to unprivileged writers on the file system of `path`, or `nil`.
    static func freeBytes(of path: String) -> UInt64? {
        var status = statvfs()
        guard statvfs(path, &status) == 0 else { return nil }
        return UInt64(status.f_bavail) * UInt64(status.f_frsize)
    }

    private func append(events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
        let writes = bitmapChanges.flatMap { change -> [(table: LogTable, write: TableWrite)] in
            switch change {
            case let .setPart(map, kind, part, bytes):
                [(bitmaps, .put(key: Self.key(map: map, kind: kind, chunk: part, parts: true), value: bytes))]
            case let .clear(map, kind):
                [false, true].map { parts in (bitmaps, .deletePrefix(Array(Self.key(map: map, kind: kind, chunk: 0, parts: parts).prefix(5)))) }
            }
        }
        return try log.append(events, callers: callers, timestampMilliseconds: timestampMilliseconds, writing: writes)
    }

    public func loadBitmap(map: MapID, kind: BitmapKind, grainCount: UInt64) throws -> GrainBitmap {
        var bitmap = GrainBitmap(grainCount: grainCount)
        // Whole chunks of an older log first, then the parts, which are newer.
        for parts in [false, true] {
            try log.scan(bitmaps, prefix: Array(Self.key(map: map, kind: kind, chunk: 0, parts: parts).prefix(5))) { key, value in
                guard key.count == 9 else { throw LogError.checkpointRejected("bitmap key of \(key.count) bytes for lcmap \(map) (\(kind))") }
                let index = Int(UInt32(bigEndian: key.loadUnaligned(fromByteOffset: 5, as: UInt32.self)))
                guard parts ? bitmap.loadPart(index, from: value) : bitmap.loadChunk(index, from: value) else {
                    throw LogError.checkpointRejected("bitmap \(parts ? "part" : "chunk") \(index) of lcmap \(map) (\(kind)) has \(value.count) bytes")
                }
            }
        }
        return bitmap
    }

    public func replayState() throws -> ControllerState {
        let replay = try log.replay()
        replayLock.withLock { lastReplayStorage = replay }
        return replay.state
    }

    /// The last replay (``replayState()``): where it started and the checkpoints it skipped,
    /// for the daemon's recovery report.
    public var lastReplay: Replay? { replayLock.withLock { lastReplayStorage } }

    public func checkpoint(_ state: ControllerState) throws { try log.saveCheckpoint(state) }
}
