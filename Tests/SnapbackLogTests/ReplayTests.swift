import Foundation
@testable import SnapbackCore
import Testing

@testable import SnapbackLog
import SnapbackRandom

@Suite("Replay and checkpoints")
struct ReplayTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func replayingAnyPrefixEqualsFoldingThatPrefix(seed: UInt64) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var states: [ControllerState] = []
        try appendRandomHistory(log, commands: 300, seed: seed, states: &states)
        let last = log.lastSequence
        #expect(last == UInt64(states.count - 1))
        #expect(last > 100, "the random history should be long enough to mean something")
        var random = SeededRandom(seed: seed)
        var prefixes: [UInt64] = [0, 1, last]
        for _ in 0..<20 { prefixes.append(UInt64.random(in: 0...last, using: &random)) }
        for prefix in prefixes {
            #expect(try log.replay(through: prefix).state == states[Int(prefix)], "prefix \(prefix), seed \(seed)")
        }
    }

    @Test(arguments: [4, 5] as [UInt64])
    func checkpointPlusSuffixEqualsTheWholeLog(seed: UInt64) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var states: [ControllerState] = []
        var state = try appendRandomHistory(log, commands: 150, seed: seed, states: &states)
        try log.saveCheckpoint(state)
        let checkpointAt = state.eventsApplied
        state = try appendRandomHistory(log, commands: 150, seed: seed &+ 100, from: state, states: &states)
        let replay = try log.replay()
        #expect(replay.checkpointSequence == checkpointAt)
        #expect(replay.eventsReplayed == log.lastSequence - checkpointAt)
        #expect(replay.state == state)
        #expect(try log.replay(useCheckpoints: false).state == state)
        // A prefix that ends before the checkpoint cannot use it, and still comes out right.
        let early = checkpointAt / 2
        let earlyReplay = try log.replay(through: early)
        #expect(earlyReplay.checkpointSequence == nil)
        #expect(earlyReplay.state == states[Int(early)])
        #expect(log.verify().isSound)
        #expect(log.verify().checkpointsChecked == 1)
    }

    @Test func onlyTheNewestCheckpointsAreKept() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var state = ControllerState()
        for round in 0..<4 {
            let events = try decide(.recordControllerStart(version: "r\(round)"), state)
            _ = try log.append(events, timestampMilliseconds: 1)
            events.forEach { state.apply($0) }
            try log.saveCheckpoint(state)
        }
        #expect(try log.checkpointSequences() == [4, 3])
    }

    @Test func aDamagedCheckpointIsSkippedAndReportedAndReplayFallsBack() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var states: [ControllerState] = []
        let state = try appendRandomHistory(log, commands: 100, seed: 9, states: &states)
        try log.saveCheckpoint(state)
        let key = LogRecord.key(state.eventsApplied)
        let checkpoints = log.checkpoints
        try log.write { transaction in
            try key.withUnsafeBytes { keyBytes in
                var value = Array(try transaction.get(checkpoints, key: keyBytes)!)
                value[value.count - 1] ^= 0x01
                try value.withUnsafeBytes { try transaction.put(checkpoints, key: keyBytes, value: $0) }
            }
        }
        let replay = try log.replay()
        #expect(replay.checkpointSequence == nil)
        #expect(replay.checkpointsRejected.count == 1)
        #expect(replay.state == state)
        let report = log.verify()
        #expect(report.problem?.kind == .checkpoint)
        #expect(report.problem?.sequence == state.eventsApplied)
    }

    @Test func aCheckpointThatDisagreesWithTheLogFailsVerify() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var states: [ControllerState] = []
        var state = try appendRandomHistory(log, commands: 100, seed: 11, states: &states)
        // A state that claims the right sequence number but holds something else.
        let sequence = state.eventsApplied
        state.apply(.controllerStarted(version: "forged"))
        state.eventsApplied = sequence
        try log.saveCheckpoint(state)
        let report = log.verify()
        #expect(report.problem?.kind == .checkpoint)
        #expect(report.problem?.detail.contains("differs") == true)
    }

    @Test func aCheckpointPastTheEndIsRejected() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        var state = ControllerState()
        state.apply(.controllerStarted(version: "x"))
        #expect(throws: LogError.self) { try log.saveCheckpoint(state) }
    }
}
