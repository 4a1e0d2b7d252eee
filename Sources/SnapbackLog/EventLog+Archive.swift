import CLMDB
import Foundation
import SnapbackCore

/// What one archive run did.
public struct ArchiveReport: Sendable, Equatable {
    /// The last archived sequence number after the run (0: nothing is archived).
    public var archivedThrough: UInt64
    /// Records this run moved out of LMDB.
    public var recordsArchived: UInt64
    /// Segments this run wrote.
    public var segmentsWritten: Int
    /// The newest checkpoint: records before it may be archived, it and those after stay in LMDB.
    public var latestCheckpoint: UInt64?
}

extension EventLog {
    /// The last archived sequence number (0 while nothing is archived).
    public func archivedThrough() throws -> UInt64 {
        try environment.read { try archiveMark($0).sequence }
    }

    /// Moves the records from the first live one through `min(through, C - 1)`, where C is the
    /// newest checkpoint, out of LMDB into archive segments of at most `recordsPerSegment`
    /// records. For each segment, in order: its records are read and checked (checksum, chain
    /// link, payload), the segment is written durably with the state after its last record, then
    /// one LMDB transaction deletes those records and advances the archive mark. A crash between
    /// the two leaves a segment beyond the mark, which readers ignore and the next run replaces.
    /// With the daemon running, only it may archive (one archiver at a time).
    /// - Throws: ``LogError/readOnly``; ``LogError/damagedRecord(sequence:problem:)`` for a
    ///   record that fails its checks (nothing from it on is archived);
    ///   ``LogError/archiveWriteFailed(_:)``; ``LogError/archiveDamaged(_:)`` when the existing
    ///   archive cannot be read. Segments completed before a failure stay archived.
    public func archive(through requested: UInt64, recordsPerSegment: Int = LogArchive.recordsPerSegmentDefault) throws -> ArchiveReport {
        precondition(recordsPerSegment >= 1)
        guard !environment.readOnly else { throw LogError.readOnly }
        archiveLock.lock()
        defer { archiveLock.unlock() }
        let latestCheckpoint = try checkpointSequences().first
        var mark = try environment.read { try archiveMark($0) }
        var report = ArchiveReport(archivedThrough: mark.sequence, recordsArchived: 0, segmentsWritten: 0, latestCheckpoint: latestCheckpoint)
        try archive.removeUnrecorded(after: mark.sequence)
        guard let latestCheckpoint, latestCheckpoint > 1 else { return report }
        let limit = min(requested, latestCheckpoint - 1)
        guard limit > mark.sequence else { return report }
        var state = try replay(through: mark.sequence).state
        while mark.sequence < limit {
            let first = mark.sequence + 1
            let last = min(limit, mark.sequence + UInt64(recordsPerSegment))
            var values: [[UInt8]] = []
            values.reserveCapacity(Int(last - first + 1))
            var previousHash = mark.hash
            try scan(from: first, through: last) { record in
                do throws(RecordProblem) {
                    guard record.sequence == first + UInt64(values.count) else {
                        throw .gap(expected: first + UInt64(values.count), found: record.sequence)
                    }
                    try record.checkChecksum()
                    try record.checkChain(previous: previousHash)
                    state.apply(try record.decodeEvent(), at: record.timestampMilliseconds)
                } catch {
                    throw LogError.damagedRecord(sequence: record.sequence, problem: error)
                }
                previousHash = record.hash
                values.append(Array(record.value))
                return true
            }
            guard values.count == Int(last - first + 1) else {
                throw LogError.damagedRecord(sequence: first + UInt64(values.count), problem: .gap(expected: first + UInt64(values.count), found: 0))
            }
            let header = try archive.write(first: first, values: values, previousHash: mark.hash, stateBytes: state.encoded())
            let expectedMark = mark
            let (eventsDatabase, metaDatabase) = (events, meta)
            try write { transaction in
                guard try self.archiveMark(transaction) == expectedMark else {
                    throw LogError.archiveWriteFailed("the archive mark moved during the run: another archiver is at work")
                }
                for sequence in first...last {
                    guard try LogRecord.key(sequence).withUnsafeBytes({ try transaction.delete(eventsDatabase, key: $0) }) else {
                        throw LogError.archiveWriteFailed("record \(sequence) vanished from LMDB while it was archived")
                    }
                }
                let value = LogRecord.key(last) + header.lastHash
                try Self.archivedKey.withUnsafeBytes { key in
                    try value.withUnsafeBytes { try transaction.put(metaDatabase, key: key, value: $0) }
                }
            }
            mark = (last, header.lastHash)
            report.archivedThrough = last
            report.recordsArchived += last - first + 1
            report.segmentsWritten += 1
        }
        return report
    }

    /// The chain hash of record `sequence`, from LMDB or, when archived, from its segment; `nil`
    /// when the log has no such record.
    func recordHash(_ sequence: UInt64, _ transaction: Transaction) throws -> [UInt8]? {
        if let value = try LogRecord.key(sequence).withUnsafeBytes({ try transaction.get(events, key: $0) }) {
            return LogRecord.hash(sequence: sequence, value: value)
        }
        let archived = try archiveMark(transaction).sequence
        guard sequence >= 1, sequence <= archived else { return nil }
        guard let segment = try archive.tiling(through: archived).first(where: { $0.first <= sequence && sequence <= $0.last }) else { return nil }
        return try archive.load(segment.name).withValue(sequence) { LogRecord.hash(sequence: sequence, value: $0) }
    }

    /// The newest archived segment that ends at or before `last` and after `after`, with the
    /// state it carries decoded: a starting point for replay older than any checkpoint. `nil`
    /// when there is none; a state that does not decode (another build's encoding) is reported
    /// in `rejected` and not used.
    func archivedState(through last: UInt64, after: UInt64, _ transaction: Transaction, rejected: inout [String]) throws
        -> (state: ControllerState, hash: [UInt8])?
    {
        let archived = try archiveMark(transaction).sequence
        guard archived > after, last > after else { return nil }
        guard let newest = try archive.tiling(through: archived).last(where: { $0.last <= last && $0.last > after }) else { return nil }
        let segment = try archive.load(newest.name)
        guard !segment.stateBytes.isEmpty else { return nil }
        do {
            return (try Checkpoint.state(segment.stateBytes, after: segment.header.last, what: "the state of segment \(newest.name)"), segment.header.lastHash)
        } catch {
            rejected.append(error.description)
            return nil
        }
    }
}
