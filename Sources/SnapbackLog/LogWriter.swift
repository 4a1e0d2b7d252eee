import CLMDB
import Foundation
import SnapbackCore

/// The single writer: a dedicated thread that owns every write transaction of the environment
/// (LMDB's rule) and group-commits queued appends.
final class LogWriter: @unchecked Sendable {
    enum Job {
        /// Events to append and, optionally, writes to other databases that must commit in the
        /// same transaction (the data plane's bitmap marks). `events` may be empty only when
        /// `alongside` is given; the receipt then has `lastSequence == firstSequence - 1`.
        /// `callers` is parallel to `events` (the caller of each), or empty when none has one.
        case append(
            events: [Event], callers: [Caller?], timestampMilliseconds: Int64, alongside: ((Transaction) throws -> Void)?,
            completion: @Sendable (Result<AppendReceipt, LogError>) -> Void)
        case transaction((Transaction) throws -> Void, completion: (Error?) -> Void)
    }

    /// The map doubles when full, up to this bound; then appends fail with `.mapFull`.
    private let mapSizeBytesMax: Int

    private let environment: LMDBEnvironment
    private let events: MDB_dbi
    private let meta: MDB_dbi
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var stopping = false
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    // Written only by the writer thread, under `condition`.
    private var head: (sequence: UInt64, hash: [UInt8])
    private var commits: UInt64 = 0

    /// Group commits made so far.
    var commitCount: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return commits
    }

    init(environment: LMDBEnvironment, events: MDB_dbi, meta: MDB_dbi, head: (sequence: UInt64, hash: [UInt8]), mapSizeBytesMax: Int) {
        self.mapSizeBytesMax = mapSizeBytesMax
        self.environment = environment
        self.events = events
        self.meta = meta
        self.head = head
    }

    var headSequence: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return head.sequence
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "snapback-log-writer"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    func submit(_ job: Job) {
        condition.lock()
        if stopping {
            condition.unlock()
            fail(job, with: .closed)
            return
        }
        queue.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Drains the queue, then ends the thread. Idempotent.
    func stop() {
        condition.lock()
        let wasStopping = stopping
        stopping = true
        condition.signal()
        condition.unlock()
        if !wasStopping && thread != nil { finished.wait() }
    }

    private func fail(_ job: Job, with error: LogError) {
        switch job {
        case let .append(_, _, _, _, completion): completion(.failure(error))
        case let .transaction(_, completion): completion(error)
        }
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty && stopping {
                condition.unlock()
                finished.signal()
                return
            }
            // Take one transaction job alone, or as many appends as fit in one batch.
            var batch: [Job] = []
            var eventCount = 0
            var taken = 0
            for job in queue {
                if case .append(let events, _, _, _, _) = job {
                    if !batch.isEmpty, eventCount + events.count > EventLog.batchEventsMax { break }
                    if let first = batch.first, case .transaction = first { break }
                    batch.append(job)
                    eventCount += events.count
                } else {
                    if !batch.isEmpty { break }
                    batch.append(job)
                }
                taken += 1
            }
            queue.removeFirst(taken)
            condition.unlock()

            if case let .transaction(body, completion) = batch[0] {
                do {
                    try environment.write(body)
                    completion(nil)
                } catch {
                    completion(error)
                }
            } else {
                commitAppends(batch)
            }
        }
    }

    private func commitAppends(_ batch: [Job]) {
        var receipts: [AppendReceipt] = []
        var newHead = head
        while true {
            do {
                (receipts, newHead) = try environment.write { transaction in try self.writeRecords(batch, transaction) }
                break
            } catch let error as LMDBError where error.code == .mapFull {
                let grown = environment.mapSizeBytes * 2
                guard grown <= mapSizeBytesMax, (try? environment.setMapSize(grown)) != nil else {
                    batch.forEach { fail($0, with: .mapFull(mapSizeBytes: environment.mapSizeBytes)) }
                    return
                }
            } catch let error as LMDBError {
                batch.forEach { fail($0, with: .lmdb(error)) }
                return
            } catch let error as LogError {
                batch.forEach { fail($0, with: error) }
                return
            } catch {
                // An `alongside` writer failed for its own reasons: nothing of the batch commits.
                batch.forEach { fail($0, with: .sideWriteFailed("\(error)")) }
                return
            }
        }
        condition.lock()
        head = newHead
        commits += 1
        condition.unlock()
        for (job, receipt) in zip(batch, receipts) {
            if case let .append(_, _, _, _, completion) = job { completion(.success(receipt)) }
        }
    }

    private func writeRecords(_ batch: [Job], _ transaction: Transaction) throws -> ([AppendReceipt], (sequence: UInt64, hash: [UInt8])) {
        var sequence = head.sequence
        var hash = head.hash
        var receipts: [AppendReceipt] = []
        receipts.reserveCapacity(batch.count)
        var writer = ByteWriter(capacity: 256)
        for job in batch {
            guard case let .append(events, callers, timestampMilliseconds, alongside, _) = job else { continue }
            let first = sequence + 1
            for (index, event) in events.enumerated() {
                sequence += 1
                let caller = callers.isEmpty ? nil : callers[index]
                hash.withUnsafeBytes { previous in
                    LogRecord.encode(event: event, caller: caller, timestampMilliseconds: timestampMilliseconds, previousHash: previous, into: &writer)
                }
                var key = sequence.bigEndian
                try withUnsafeBytes(of: &key) { keyBytes in
                    try writer.bytes.withUnsafeBytes { valueBytes in
                        // Paired assertion: what is about to be stored parses back as written (the
                        // checksum is checked again by every reader).
                        let view = try! RecordView(sequence: sequence, value: valueBytes)
                        precondition(view.typeCode == event.type.rawValue && view.timestampMilliseconds == timestampMilliseconds && view.caller == caller)
                        try transaction.put(self.events, key: keyBytes, value: valueBytes, append: true)
                        LogRecord.hash(sequence: sequence, value: valueBytes, into: &hash)
                    }
                }
            }
            try alongside?(transaction)
            receipts.append(AppendReceipt(firstSequence: first, lastSequence: sequence))
        }
        var headValue = LogRecord.key(sequence)
        headValue.append(contentsOf: hash)
        try EventLog.headKey.withUnsafeBytes { key in
            try headValue.withUnsafeBytes { try transaction.put(meta, key: key, value: $0) }
        }
        return (receipts, (sequence, hash))
    }

}
