import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog
import SnapbackRandom

/// A log of `count` commands with every intermediate state, checkpointed at `checkpoints`
/// (sequence numbers; `0` stands for the head).
func makeArchivableLog(commands count: Int, seed: UInt64, checkpoints: [UInt64]) throws -> (TemporaryDirectory, EventLog, [ControllerState]) {
    let directory = TemporaryDirectory("archive")
    let log = try EventLog(directory: directory.path)
    var states: [ControllerState] = []
    try appendRandomHistory(log, commands: count, seed: seed, states: &states)
    for sequence in checkpoints {
        try log.saveCheckpoint(states[Int(sequence == 0 ? log.lastSequence : sequence)])
    }
    return (directory, log, states)
}

/// The live records' sequence numbers (those LMDB still holds).
func liveSequences(_ log: EventLog) throws -> [UInt64] {
    try log.environment.read { transaction in
        var sequences: [UInt64] = []
        try transaction.scan(log.events, from: nil) { key, _ in
            sequences.append(LogRecord.sequence(ofKey: key)!)
            return true
        }
        return sequences
    }
}

@Suite("log archive: segments outside LMDB, one chain")
struct ArchiveTests {
    @Test func archivingMovesRecordsBeforeTheNewestCheckpointAndEveryReadIsUnchanged() throws {
        let (directory, log, states) = try makeArchivableLog(commands: 400, seed: 41, checkpoints: [120, 0])
        defer { directory.remove() }
        let last = log.lastSequence
        let before = try log.storedEvents()
        let report = try log.archive(through: .max, recordsPerSegment: 50)
        #expect(report.latestCheckpoint == last)
        #expect(report.archivedThrough == last - 1)
        #expect(report.recordsArchived == last - 1)
        #expect(report.segmentsWritten == Int((last - 1 + 49) / 50))
        #expect(try liveSequences(log) == [last])
        #expect(try log.archive.listing().count == report.segmentsWritten)
        // Reads across the archive and the live log see the same records.
        let after = try log.storedEvents()
        #expect(after.map(\.sequence) == before.map(\.sequence))
        #expect(after.map(\.event) == before.map(\.event))
        #expect(try log.storedEvents(from: 37, through: 163).map(\.sequence) == Array(37...163))
        #expect(try log.tail(75).map(\.sequence) == Array((last - 74)...last))
        // State at any point: from a segment's state, a checkpoint, or the start.
        for sequence in [1, 49, 50, 51, 119, 120, 121, last / 2, last - 1, last] {
            let replay = try log.replay(through: sequence)
            #expect(replay.state.encoded() == states[Int(sequence)].encoded(), "state at \(sequence)")
        }
        let verify = log.verify()
        #expect(verify.isSound, "\(String(describing: verify.problem))")
        #expect(verify.recordsChecked == last)
        // The older checkpoint's record is archived: it still loads and matches.
        #expect(verify.checkpointsChecked == 2)
        // Running again moves nothing.
        let again = try log.archive(through: .max, recordsPerSegment: 50)
        #expect(again.recordsArchived == 0 && again.archivedThrough == last - 1)
    }

    @Test func theNewestCheckpointAndTheRequestBoundWhatMoves() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 200, seed: 42, checkpoints: [])
        defer { directory.remove() }
        #expect(try log.archive(through: .max).recordsArchived == 0, "no checkpoint: nothing may move")
        try log.saveCheckpoint(try log.replay(through: 90).state)
        let first = try log.archive(through: 40, recordsPerSegment: 16)
        #expect(first.archivedThrough == 40 && first.segmentsWritten == 3)
        let second = try log.archive(through: .max, recordsPerSegment: 1000)
        #expect(second.archivedThrough == 89 && second.recordsArchived == 49 && second.segmentsWritten == 1)
        #expect(try log.archivedThrough() == 89)
        #expect(try liveSequences(log).first == 90)
        #expect(log.verify().isSound)
    }

    @Test func replayOlderThanEveryCheckpointStartsFromTheNewestSegmentBeforeIt() throws {
        let (directory, log, states) = try makeArchivableLog(commands: 300, seed: 43, checkpoints: [0])
        defer { directory.remove() }
        _ = try log.archive(through: .max, recordsPerSegment: 64)
        let replay = try log.replay(through: 150)
        #expect(replay.checkpointSequence == 128)
        #expect(replay.eventsReplayed == 22)
        #expect(replay.state.encoded() == states[150].encoded())
        let early = try log.replay(through: 20)
        #expect(early.checkpointSequence == nil && early.eventsReplayed == 20)
    }

    @Test func aReadOnlyOpenerReadsTheArchive() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 150, seed: 44, checkpoints: [0])
        defer { directory.remove() }
        _ = try log.archive(through: .max, recordsPerSegment: 40)
        let expected = try log.storedEvents().map(\.sequence)
        let reader = try EventLog(directory: directory.path, readOnly: true)
        #expect(try reader.storedEvents().map(\.sequence) == expected)
        #expect(reader.verify().isSound)
    }

    @Test func anAnchorInTheArchivedRangeStillHolds() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 120, seed: 45, checkpoints: [])
        defer { directory.remove() }
        let anchor = try #require(try log.chainHead()).anchor
        var states: [ControllerState] = []
        try appendRandomHistory(log, commands: 60, seed: 46, from: try log.replay().state, states: &states)
        try log.saveCheckpoint(try log.replay().state)
        _ = try log.archive(through: .max, recordsPerSegment: 30)
        #expect(anchor.sequence <= (try log.archivedThrough()))
        let report = log.verify(anchors: [anchor])
        #expect(report.isSound && report.anchorsChecked == 1)
        let forged = LogAnchor(sequence: anchor.sequence, hash: [UInt8](repeating: 7, count: 32))
        #expect(log.verify(anchors: [forged]).problem?.kind == .anchor)
    }

    @Test func aMissingSegmentIsReported() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 250, seed: 47, checkpoints: [0])
        defer { directory.remove() }
        _ = try log.archive(through: .max, recordsPerSegment: 50)
        let segments = try log.archive.listing()
        for victim in [segments[1], segments[segments.count - 1]] {
            let path = log.archive.directory + "/" + victim.name
            let saved = try Data(contentsOf: URL(fileURLWithPath: path))
            try FileManager.default.removeItem(atPath: path)
            let problem = try #require(log.verify().problem)
            #expect(problem.kind == .archive && problem.kind.exitCode == 10)
            #expect(problem.detail.contains("records \(victim.first)...\(victim.last)"), "\(problem)")
            #expect(throws: LogError.self) { try log.storedEvents(from: victim.first, through: victim.first) }
            try saved.write(to: URL(fileURLWithPath: path))
            #expect(log.verify().isSound)
        }
    }

    @Test func anAlteredSegmentIsReported() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 250, seed: 48, checkpoints: [0])
        defer { directory.remove() }
        _ = try log.archive(through: .max, recordsPerSegment: 50)
        let victim = try log.archive.listing()[2]
        let path = log.archive.directory + "/" + victim.name
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        // A flipped bit anywhere in the file: header or compressed payload.
        for offset in [10, 60, ArchiveSegmentHeader.byteCount + 5, original.count - 1] {
            var damaged = original
            damaged[offset] ^= 0x10
            try damaged.write(to: URL(fileURLWithPath: path))
            let problem = try #require(log.verify().problem, "offset \(offset)")
            #expect(problem.kind == .archive, "offset \(offset): \(problem)")
            #expect(problem.detail.contains(victim.name), "offset \(offset): \(problem)")
        }
        try original.write(to: URL(fileURLWithPath: path))
        // A record rewritten and the segment re-sealed (valid checksums, valid compression): the
        // hash chain breaks at the next record.
        let segment = try log.archive.load(victim.name)
        var values: [[UInt8]] = []
        try segment.forEach(from: victim.first, through: victim.last) { record in
            values.append(Array(record.value))
            return true
        }
        values[3][4] ^= 0x01  // the timestamp
        values[3] = resealed(values[3])
        try FileManager.default.removeItem(atPath: path)
        _ = try log.archive.write(first: victim.first, values: values, previousHash: segment.header.previousHash, stateBytes: segment.stateBytes)
        let problem = try #require(log.verify().problem)
        #expect(problem.kind == .chain && problem.sequence == victim.first + 4, "\(problem)")
        #expect(problem.detail.contains(victim.name))
        try original.write(to: URL(fileURLWithPath: path))
        #expect(log.verify().isSound)
    }

    /// What a crash at each step of an archive run leaves, and that the log reads, verifies and
    /// archives on from it.
    @Test func everyStateACrashCanLeaveReadsAndArchivesOn() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 300, seed: 49, checkpoints: [0])
        defer { directory.remove() }
        let expected = try log.storedEvents().map(\.event)
        _ = try log.archive(through: 100, recordsPerSegment: 100)
        // 1. Crash while writing the temporary file: a torn .tmp- file.
        let torn = log.archive.directory + "/.tmp-" + LogArchive.name(first: 101, last: 200)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: torn))
        #expect(try log.storedEvents().map(\.event) == expected)
        #expect(log.verify().isSound)
        // 2. Crash after the rename, before LMDB recorded it: a whole segment beyond the mark.
        var values: [[UInt8]] = []
        var previous: [UInt8] = []
        try log.scan(from: 100, through: 200) { record in
            if record.sequence == 100 { previous = record.hash } else { values.append(Array(record.value)) }
            return true
        }
        _ = try log.archive.write(first: 101, values: values, previousHash: previous, stateBytes: [])
        #expect(try log.archivedThrough() == 100)
        #expect(try log.storedEvents().map(\.event) == expected)
        #expect(log.verify().isSound)
        #expect(try liveSequences(log).first == 101)
        // A reader of another process sees the same.
        let reader = try EventLog(directory: directory.path, readOnly: true)
        #expect(try reader.storedEvents().map(\.event) == expected)
        // 3. The next run replaces the unrecorded segment and goes on.
        let report = try log.archive(through: .max, recordsPerSegment: 64)
        #expect(report.archivedThrough == log.lastSequence - 1)
        #expect(try log.storedEvents().map(\.event) == expected)
        let verify = log.verify()
        #expect(verify.isSound, "\(String(describing: verify.problem))")
        #expect(try log.archive.listing().allSatisfy { $0.last <= report.archivedThrough })
    }

    @Test func aLogOpenedReadWriteAfterArchivingAppendsOn() throws {
        let (directory, log, _) = try makeArchivableLog(commands: 100, seed: 50, checkpoints: [0])
        _ = try log.archive(through: .max, recordsPerSegment: 30)
        let last = log.lastSequence
        log.close()
        let reopened = try EventLog(directory: directory.path)
        defer { directory.remove() }
        var states: [ControllerState] = []
        try appendRandomHistory(reopened, commands: 50, seed: 51, from: try reopened.replay().state, states: &states)
        #expect(reopened.lastSequence > last)
        #expect(reopened.verify().isSound)
        #expect(try reopened.storedEvents().count == Int(reopened.lastSequence))
    }

    @Test func killingAnArchivingWriterLosesNothingAndLeavesOneChain() throws {
        let directory = TemporaryDirectory("archive-crash")
        defer { directory.remove() }
        var random = SeededRandom(seed: 52)
        var archivedSeen: UInt64 = 0
        for round in 0..<6 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: productsDirectory + "/snapback-log-driver")
            process.arguments = [
                "--dir", directory.path, "--events", "1000000", "--batch", "3", "--clients", String(round % 2 == 0 ? 1 : 4), "--print-acks",
                "--archive-every-ms", "25", "--archive-segment-records", "300",
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            let errors = Pipe()
            process.standardError = errors
            try process.run()
            usleep(UInt32.random(in: 250_000...600_000, using: &random))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationReason == .uncaughtSignal, "round \(round): the driver exited \(process.terminationStatus): \(stderr)")
            let lines = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
            let acknowledged = lines.compactMap { line -> UInt64? in
                let parts = line.split(separator: " ")
                return parts.count == 3 && parts[0] == "ack" ? UInt64(parts[2]) : nil
            }
            let archived = lines.compactMap { line -> UInt64? in
                let parts = line.split(separator: " ")
                return parts.count == 2 && parts[0] == "archived" ? UInt64(parts[1]) : nil
            }
            archivedSeen = max(archivedSeen, archived.max() ?? 0)
            let log = try EventLog(directory: directory.path)
            let report = log.verify()
            #expect(report.isSound, "round \(round): \(String(describing: report.problem))")
            if let highest = acknowledged.max() {
                #expect(log.lastSequence >= highest, "round \(round): acknowledged seq \(highest) lost")
            }
            #expect(try log.archivedThrough() >= (archived.max() ?? 0), "round \(round): a reported archive run was lost")
            #expect(log.lastSequence % 3 == 0)
            #expect(try log.storedEvents().count == Int(log.lastSequence))
            log.close()
        }
        #expect(archivedSeen > 0, "the driver should have archived before some kill")
    }
}
