import SnapbackCore
import Testing
import SnapbackRandom

/// Crashes the `event-record` fuzz target found (Tests/Fuzz/regressions/event-record holds the
/// inputs), reproduced through the public API. Both need a log `decide` never writes, which any
/// log whose checksums and hash chain hold can still contain: `evolve` and the state's queries
/// must stay total over whatever decodes. Each runs in its own process, so a regression fails
/// the test instead of trapping the test runner.
@Suite("fuzz regressions: core")
struct CoreFuzzRegressionTests {
    // grain-count-overflow.bin: VolumeCreated of 2^64 - 512 bytes, then a MapCreated on it.
    // `grainCount` computed (sizeBytes + grainSizeBytes - 1) / grainSizeBytes, which overflows.
    @Test("fixed: MapCreated on a volume of nearly 2^64 bytes traps in evolve (grain count overflow)")
    func grainCountOverflow() async {
        await #expect(processExitsWith: .success) {
            var state = ControllerState()
            state.apply(.volumeCreated(id: 0, name: "src", sizeBytes: UInt64.max - 511, path: nil))
            state.apply(.volumeCreated(id: 1, name: "tgt", sizeBytes: UInt64.max - 511, path: nil))
            state.apply(
                .mapCreated(
                    MapCreated(
                        id: 0, name: "m", reverseID: 1, reverseName: "m_rev", sourceID: 0, targetID: 1, copyRate: 50,
                        grainSizeBytes: 64 << 10, autorestore: false)))
            precondition(state.maps[0]?.grainsTotal == 1 << 48)
            precondition(grainCount(sizeBytes: UInt64.max, grainSizeBytes: 64 << 10) == 1 << 48)
        }
    }

    // fault-id-overflow.bin: VolumeFaulted with fault id 2^64 - 2 (so the next is 2^64 - 1), the
    // source recovered by a rollback, then a rollback stopped on the online source, which makes
    // the stop its fault and counted the next id with an overflowing `+= 1`.
    @Test("fixed: RollbackStopped after the largest fault id traps in evolve (fault id overflow)")
    func faultIDOverflow() async {
        await #expect(processExitsWith: .success) {
            var state = ControllerState()
            state.apply(.volumeCreated(id: 0, name: "src", sizeBytes: 1 << 20, path: nil))
            state.apply(.volumeCreated(id: 1, name: "tgt", sizeBytes: 1 << 20, path: nil))
            state.apply(
                .mapCreated(
                    MapCreated(
                        id: 0, name: "m", reverseID: 1, reverseName: "m_rev", sourceID: 0, targetID: 1, copyRate: 0,
                        grainSizeBytes: 64 << 10, autorestore: true)))
            state.apply(.mapStarted(id: 0, startOrdinal: 1))
            state.apply(.volumeFaulted(id: 0, faultID: UInt64.max - 1, cause: .ioError, reason: "EIO"))
            state.apply(.volumeRecovered(id: 0))
            state.apply(.rollbackStarted(id: 0, trigger: .operator, faultID: nil))
            state.apply(.rollbackStopped(id: 0, reason: "stopped by operator (stoplcmap -force)"))
            precondition(state.volumes[0]?.fault?.id == UInt64.max)
            state.apply(.rollbackStarted(id: 0, trigger: .operator, faultID: nil))
        }
    }

    // group-member-target-missing.bin: a group of one map whose target volume the log removed,
    // started, its source faulted. The policy's group check force-unwrapped the target volume.
    @Test("fixed: the rollback policy traps on a group member whose target volume is gone")
    func groupMemberTargetMissing() async {
        await #expect(processExitsWith: .success) {
            var state = ControllerState()
            state.apply(.volumeCreated(id: 0, name: "src", sizeBytes: 1 << 20, path: nil))
            state.apply(.volumeCreated(id: 1, name: "tgt", sizeBytes: 1 << 20, path: nil))
            state.apply(
                .mapCreated(
                    MapCreated(
                        id: 0, name: "m", reverseID: 1, reverseName: "m_rev", sourceID: 0, targetID: 1, copyRate: 0,
                        grainSizeBytes: 64 << 10, autorestore: true)))
            state.apply(.groupCreated(id: 0, name: "g", autorestore: true, autorestoreDelaySeconds: 0))
            state.apply(.mapGroupChanged(id: 0, group: 0))
            state.apply(.mapStarted(id: 0, startOrdinal: 1))
            state.apply(.groupStarted(id: 0, startOrdinal: 1, members: [0]))
            state.apply(.volumeRemoved(id: 1))
            state.apply(.volumeFaulted(id: 0, faultID: 1, cause: .ioError, reason: "EIO"))
            precondition(automaticRollbackChoice(for: 0, in: state) == nil)
            precondition(groupRollbackBlocker(state.groups[0]!, in: state)?.code == .noValidImage)
        }
    }

    // copy-progress-overflow.bin: MapCopyProgressed with 2^62 grains copied of a 4-grain map.
    // `progressPercent` computed grainsCopied * 100 / grainsTotal, which overflows.
    @Test("fixed: a copy progress far past the map's grains traps in progressPercent")
    func copyProgressOverflow() async {
        await #expect(processExitsWith: .success) {
            var harness = try Fixture.started()
            harness.force(.mapCopyProgressed(id: 0, grainsCopied: 1 << 62))
            precondition(harness.state.maps[0]?.progressPercent == 100)
        }
    }

    @Test("fixed: rollback progress near UInt64.max traps in progressPercent")
    func rollbackProgressOverflow() async {
        await #expect(processExitsWith: .success) {
            let rollback = Rollback(trigger: .operator, faultID: nil, grainsRestored: UInt64.max / 2, grainsToRestore: UInt64.max)
            precondition(rollback.progressPercent == 49)
        }
    }

    /// The overflow-free forms agree with the specified ⌊part × 100 / whole⌋ and ⌈size / grain⌉
    /// wherever those do not overflow.
    @Test func percentAndGrainCountUnchangedInRange() {
        var random = SeededRandom(seed: 6)
        for _ in 0..<10_000 {
            let whole = random.uint64(1...(UInt64.max / 100))
            let part = random.uint64(0...whole)
            var map = LCMap(
                id: 0, name: "m", role: .forward, partnerID: 1, sourceID: 0, targetID: 1, copyRate: 50,
                grainSizeBytes: 64 << 10, autorestore: false, grainsCopied: part, grainsTotal: whole)
            #expect(map.progressPercent == Int(part * 100 / whole))
            map.grainsTotal = 0
            #expect(map.progressPercent == 100)
            let rollback = Rollback(trigger: .auto, faultID: 1, grainsRestored: part, grainsToRestore: whole)
            #expect(rollback.progressPercent == Int(part * 100 / whole))

            let size = random.uint64(0...(UInt64.max - (256 << 10)))
            let grain: UInt32 = random.pick([64 << 10, 256 << 10, 1, 512])
            #expect(grainCount(sizeBytes: size, grainSizeBytes: grain) == (size + UInt64(grain) - 1) / UInt64(grain))
        }
    }
}
