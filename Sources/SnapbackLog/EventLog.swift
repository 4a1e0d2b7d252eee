import CLMDB
import Foundation
import SnapbackCore

/// The write-ahead event log: an append-only LMDB database of records keyed by sequence number,
/// chained by SHA-256, with checkpoints of the reduced state in the same environment.
///
/// One writer thread owns every write transaction. Appends from any thread or task queue up and
/// are group-committed: each commit is synced before any of its appenders is acknowledged.
public final class EventLog: @unchecked Sendable {
    /// Names of the databases in the environment.
    enum DatabaseName {
        static let events = "events"
        static let meta = "meta"
        static let checkpoints = "checkpoints"
    }

    static let formatMarker = Array("snapback-log/1".utf8)
    static let formatKey = Array("format".utf8)
    static let headKey = Array("head".utf8)
    /// The archive mark: the last archived sequence number and its record's hash (40 bytes, the
    /// head's layout); absent while nothing is archived.
    static let archivedKey = Array("archived".utf8)

    /// Default virtual map size: 16 GiB (LMDB reserves address space, not disk).
    public static let mapSizeBytesDefault = 16 << 30
    /// The default bound on map growth: 1 TiB.
    public static let mapSizeBytesMaxDefault = 1 << 40
    /// A bound on events per group commit.
    public static let batchEventsMax = 8192
    /// Checkpoints kept; older ones are deleted when a new one is written.
    public static let checkpointsKept = 2

    public let environment: LMDBEnvironment
    /// Where records moved out of LMDB live (``archive(through:)``).
    public let archive: LogArchive
    let events: MDB_dbi
    let meta: MDB_dbi
    let checkpoints: MDB_dbi
    private let writer: LogWriter?
    /// Held by ``archive(through:recordsPerSegment:)``: one archive run at a time in a process.
    let archiveLock = NSLock()

    /// Opens the log in `directory`. Read-write creates it when missing and starts the writer;
    /// read-only never writes and never takes the writer lock, so it works beside a running
    /// snapbackd.
    /// - Throws: ``LogError/noLog(directory:)`` when a read-only open finds no log,
    ///   ``LogError/incompatibleFormat(found:)`` for another format, ``LogError/lmdb(_:)``.
    /// - Parameters:
    ///   - mapSizeBytes: the initial virtual map size; the writer doubles it when it fills.
    ///   - mapSizeBytesMax: the bound on that growth; past it appends fail with ``LogError/mapFull(mapSizeBytes:)``.
    ///   - archiveDirectory: the directory of archive segments (snapbackd's is `DATA-DIR/archive`);
    ///     `directory/archive` when `nil`.
    public init(
        directory: String, readOnly: Bool = false, mapSizeBytes: Int = EventLog.mapSizeBytesDefault,
        mapSizeBytesMax: Int = EventLog.mapSizeBytesMaxDefault, archiveDirectory: String? = nil
    ) throws(LogError) {
        archive = LogArchive(directory: archiveDirectory ?? directory + "/archive")
        do {
            environment = try LMDBEnvironment(directory: directory, mapSizeBytes: mapSizeBytes, maxDatabases: 16, readOnly: readOnly)
        } catch {
            if readOnly, case .system(ENOENT) = error.code { throw .noLog(directory: directory) }
            throw .lmdb(error)
        }
        // A data file shorter than its meta page claims would fault (SIGBUS) on the first read of
        // a missing page: refuse it before reading anything.
        // A writer extends the file right after a commit that left it short (see
        // `LMDBEnvironment.coverLastPage`): a reader that opens in between looks again briefly.
        var (fileBytes, neededBytes) = (0, 0)
        for attempt in 0..<20 {
            if attempt > 0 { usleep(5_000) }
            let info = environment.info()
            neededBytes = (info.lastPageNumber + 1) * info.pageSizeBytes
            fileBytes = (try? FileManager.default.attributesOfItem(atPath: directory + "/data.mdb")[.size] as? Int) ?? 0
            if fileBytes >= neededBytes || !readOnly { break }
        }
        guard fileBytes >= neededBytes else { throw .truncatedDataFile(bytes: fileBytes, neededBytes: neededBytes) }
        do {
            events = try environment.openDatabase(DatabaseName.events, create: !readOnly)
            meta = try environment.openDatabase(DatabaseName.meta, create: !readOnly)
            checkpoints = try environment.openDatabase(DatabaseName.checkpoints, create: !readOnly)
        } catch {
            if error.code == .notFound { throw .noLog(directory: directory) }
            throw .lmdb(error)
        }
        // The writer must start from the true head; a reader leaves head checks to `verify`.
        let head = try Self.checkFormatAndHead(environment: environment, events: events, meta: meta, readOnly: readOnly)
        writer = readOnly ? nil : LogWriter(environment: environment, events: events, meta: meta, head: head, mapSizeBytesMax: mapSizeBytesMax)
        writer?.start()
    }

    deinit { writer?.stop() }

    /// Stops the writer after the appends already queued; later appends fail with `.closed`.
    public func close() { writer?.stop() }

    // MARK: - Appending

    /// Appends `events` as one atomic, durable transaction (possibly shared with other appenders)
    /// and returns once it is synced. `callers` is parallel to `events` (who asked for each), or
    /// empty when none has a caller.
    /// - Throws: ``LogError``; on error none of the events was recorded.
    public func append(_ events: [Event], callers: [Caller?] = [], timestampMilliseconds: Int64) throws(LogError) -> AppendReceipt {
        precondition(!events.isEmpty, "an append records at least one event")
        return try appendAndWait(events, callers, timestampMilliseconds, alongside: nil)
    }

    /// The asynchronous form of ``append(_:callers:timestampMilliseconds:)``.
    public func append(_ events: [Event], callers: [Caller?] = [], timestampMilliseconds: Int64) async throws(LogError) -> AppendReceipt {
        precondition(!events.isEmpty, "an append records at least one event")
        precondition(callers.isEmpty || callers.count == events.count, "one caller (or nil) per event")
        guard let writer else { throw .readOnly }
        let result: Result<AppendReceipt, LogError> = await withCheckedContinuation { continuation in
            writer.submit(
                .append(events: events, callers: callers, timestampMilliseconds: timestampMilliseconds, alongside: nil) { continuation.resume(returning: $0) })
        }
        return try result.get()
    }

    /// Appends `events` (possibly none) and runs `alongside` in the same durable transaction, so
    /// that writes to other databases of this environment (the data plane's bitmaps) commit
    /// atomically with the events that record them. Group-committed like any append.
    /// - Throws: ``LogError``; on error neither the events nor the writes were recorded.
    func append(
        _ events: [Event], callers: [Caller?], timestampMilliseconds: Int64, alongside: @escaping (Transaction) throws -> Void
    ) throws(LogError) -> AppendReceipt {
        try appendAndWait(events, callers, timestampMilliseconds, alongside: alongside)
    }

    /// Queues an append for the writer and blocks until it is durable (or failed).
    private func appendAndWait(
        _ events: [Event], _ callers: [Caller?], _ timestampMilliseconds: Int64, alongside: ((Transaction) throws -> Void)?
    ) throws(LogError) -> AppendReceipt {
        precondition(callers.isEmpty || callers.count == events.count, "one caller (or nil) per event")
        guard let writer else { throw .readOnly }
        let semaphore = DispatchSemaphore(value: 0)
        let outcome = ResultBox()
        writer.submit(.append(events: events, callers: callers, timestampMilliseconds: timestampMilliseconds, alongside: alongside) { result in
            outcome.result = result
            semaphore.signal()
        })
        semaphore.wait()
        return try outcome.result!.get()
    }

    /// Opens (creating it when the log is writable) another named database in this environment.
    func openDatabase(_ name: String) throws(LogError) -> MDB_dbi {
        do {
            return try environment.openDatabase(name, create: !environment.readOnly)
        } catch {
            throw .lmdb(error)
        }
    }

    /// Runs `body` in a write transaction on the writer thread, after every append queued before
    /// it, and commits it durably. Used for checkpoints and by layers that keep their own tables
    /// in this environment. When `body` throws, the transaction is aborted and the error rethrown.
    public func write<T>(_ body: @escaping (Transaction) throws -> T) throws -> T {
        guard let writer else { throw LogError.readOnly }
        let semaphore = DispatchSemaphore(value: 0)
        let box = AnyResultBox<T>()
        writer.submit(.transaction({ transaction in
            box.value = try body(transaction)
        }, completion: { error in
            box.error = error
            semaphore.signal()
        }))
        semaphore.wait()
        if let error = box.error as? LMDBError { throw LogError.lmdb(error) }
        if let error = box.error { throw error }
        return box.value!
    }

    /// The sequence number of the last durable record (0 for an empty log).
    public var lastSequence: UInt64 {
        if let writer { return writer.headSequence }
        return (try? readHead().sequence) ?? 0
    }

    /// Group commits made by this process's writer since the log was opened.
    public var commitCount: UInt64 { writer?.commitCount ?? 0 }

    // MARK: - Reading

    /// Calls `body` with each record from `first` through `last` (inclusive) in order, from the
    /// archive's segments and then from LMDB; `body` returns false to stop. Records are read in
    /// place: copy what must outlive the call.
    public func scan(from first: UInt64 = 1, through last: UInt64 = .max, _ body: (RecordView) throws -> Bool) throws {
        try environment.read { transaction in
            let archived = try archiveMark(transaction).sequence
            if first <= archived {
                let through = min(last, archived)
                for segment in try archive.tiling(through: archived) where segment.last >= first && segment.first <= through {
                    guard try archive.load(segment.name).forEach(from: first, through: through, body) else { return }
                }
                if last <= archived { return }
            }
            let startKey = LogRecord.key(max(first, archived + 1))
            try startKey.withUnsafeBytes { start in
                try transaction.scan(events, from: start) { key, value in
                    guard let sequence = LogRecord.sequence(ofKey: key) else {
                        throw LogError.damagedRecord(sequence: 0, problem: .malformed("a key of \(key.count) bytes"))
                    }
                    if sequence > last { return false }
                    let record: RecordView
                    do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: value) } catch {
                        throw LogError.damagedRecord(sequence: sequence, problem: error)
                    }
                    return try body(record)
                }
            }
        }
    }

    /// The archive mark read in `transaction`: the last archived record's sequence number and
    /// hash, `(0, zeros)` while nothing is archived.
    func archiveMark(_ transaction: Transaction) throws -> (sequence: UInt64, hash: [UInt8]) {
        try Self.decodeHead(try Self.archivedKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
    }

    /// Decoded events from `first` through `last`, each checked against its checksum.
    public func storedEvents(from first: UInt64 = 1, through last: UInt64 = .max) throws -> [StoredEvent] {
        var result: [StoredEvent] = []
        try scan(from: first, through: last) { record in
            result.append(try Self.storedEvent(record))
            return true
        }
        return result
    }

    /// The last `count` records, oldest first (from the archive too when LMDB holds fewer).
    public func tail(_ count: Int) throws -> [StoredEvent] {
        var result: [StoredEvent] = []
        guard count > 0 else { return [] }
        var archived: UInt64 = 0
        try environment.read { transaction in
            archived = try archiveMark(transaction).sequence
            try transaction.scan(events, from: nil, backwards: true) { key, value in
                guard let sequence = LogRecord.sequence(ofKey: key) else { return false }
                do {
                    result.append(try Self.storedEvent(try RecordView(sequence: sequence, value: value)))
                } catch let problem as RecordProblem {
                    throw LogError.damagedRecord(sequence: sequence, problem: problem)
                }
                return result.count < count
            }
        }
        result.reverse()
        let firstLive = result.first?.sequence ?? archived + 1
        if result.count < count, archived > 0, firstLive > 1 {
            let wanted = UInt64(count - result.count)
            let from = firstLive > wanted ? firstLive - wanted : 1
            // Archived records never change: reading them after the snapshot above is consistent.
            result.insert(contentsOf: try storedEvents(from: from, through: min(firstLive - 1, archived)), at: 0)
        }
        return result
    }

    /// Checks the record's checksum and decodes it.
    public static func storedEvent(_ record: RecordView) throws -> StoredEvent {
        do throws(RecordProblem) {
            try record.checkChecksum()
            return StoredEvent(
                sequence: record.sequence, timestampMilliseconds: record.timestampMilliseconds, event: try record.decodeEvent(), caller: record.caller)
        } catch {
            throw LogError.damagedRecord(sequence: record.sequence, problem: error)
        }
    }

    /// The recorded head: the last sequence number and its hash.
    public func readHead() throws -> (sequence: UInt64, hash: [UInt8]) {
        try environment.read { transaction in
            try Self.decodeHead(try Self.headKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
        }
    }

    /// The last record as an anchor (its sequence number and chain hash, computed from the record
    /// itself), and its time; `nil` for an empty log. Read in one snapshot beside a running writer.
    /// - Throws: ``LogError/headMismatch(_:)`` when the recorded head disagrees with the last
    ///   record, ``LogError/lmdb(_:)``.
    public func chainHead() throws -> (anchor: LogAnchor, timestampMilliseconds: Int64)? {
        try environment.read { transaction in
            let head = try Self.decodeHead(try Self.headKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
            var last: (anchor: LogAnchor, timestampMilliseconds: Int64)?
            try transaction.scan(events, from: nil, backwards: true) { key, value in
                guard let sequence = LogRecord.sequence(ofKey: key), sequence >= 1 else {
                    throw LogError.headMismatch("the last key has \(key.count) bytes; run `snapback log verify`")
                }
                let record: RecordView
                do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: value) } catch {
                    throw LogError.damagedRecord(sequence: sequence, problem: error)
                }
                last = (LogAnchor(sequence: sequence, hash: record.hash), record.timestampMilliseconds)
                return false
            }
            guard head.sequence == (last?.anchor.sequence ?? 0), head.hash == (last?.anchor.hash ?? LogRecord.zeroHash) else {
                throw LogError.headMismatch("head says seq \(head.sequence), last record is seq \(last?.anchor.sequence ?? 0)")
            }
            return last
        }
    }

    static func decodeHead(_ bytes: UnsafeRawBufferPointer?) throws -> (sequence: UInt64, hash: [UInt8]) {
        guard let bytes else { return (0, LogRecord.zeroHash) }
        guard bytes.count == 40, let sequence = LogRecord.sequence(ofKey: UnsafeRawBufferPointer(rebasing: bytes[0..<8])) else {
            throw LogError.headMismatch("the head entry has \(bytes.count) bytes, not 40")
        }
        return (sequence, Array(bytes[8..<40]))
    }

    /// Checks the format marker (writing it into a new log) and that the head matches the last
    /// record. Returns the head.
    private static func checkFormatAndHead(
        environment: LMDBEnvironment, events: MDB_dbi, meta: MDB_dbi, readOnly: Bool
    ) throws(LogError) -> (sequence: UInt64, hash: [UInt8]) {
        do {
            let found: [UInt8]? = try environment.read { transaction in
                try formatKey.withUnsafeBytes { try transaction.get(meta, key: $0) }.map { Array($0) }
            }
            if let found {
                guard found == formatMarker else { throw LogError.incompatibleFormat(found: String(decoding: found, as: UTF8.self)) }
            } else if !readOnly {
                try environment.write { transaction in
                    try formatKey.withUnsafeBytes { key in
                        try formatMarker.withUnsafeBytes { try transaction.put(meta, key: key, value: $0) }
                    }
                }
            }
            if readOnly { return (0, LogRecord.zeroHash) }
            return try environment.read { transaction in
                let head = try decodeHead(try headKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
                var lastSequence: UInt64 = 0
                var lastHash = LogRecord.zeroHash
                try transaction.scan(events, from: nil, backwards: true) { key, value in
                    lastSequence = LogRecord.sequence(ofKey: key) ?? 0
                    lastHash = LogRecord.hash(sequence: lastSequence, value: value)
                    return false
                }
                guard head.sequence == lastSequence, head.hash == lastHash else {
                    throw LogError.headMismatch("head says seq \(head.sequence), last record is seq \(lastSequence)")
                }
                return head
            }
        } catch let error as LogError {
            throw error
        } catch let error as LMDBError {
            throw .lmdb(error)
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }
}

/// Carries a result from the writer thread to a blocked caller.
final class ResultBox: @unchecked Sendable {
    var result: Result<AppendReceipt, LogError>?
}

final class AnyResultBox<T>: @unchecked Sendable {
    var value: T?
    var error: Error?
}
