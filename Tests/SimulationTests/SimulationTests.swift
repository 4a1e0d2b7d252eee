import Foundation
import SnapbackCore
import SnapbackTesting
import Testing

/// The deterministic simulator (brief section 6). Every suite that runs simulations is nested
/// here and runs serially: the sweeps use every core themselves. The mutation test flips a
/// process-wide switch (`Controller.brokenOrderingForTesting`), so it runs in a child process
/// (an exit test): other test targets drive controllers in this process at the same time.
@Suite("Deterministic simulation", .serialized)
struct SimulationTests {
    /// Seeds per sweep: 2,000 unless `SNAPBACK_SIMULATION_SEEDS` says otherwise.
    static let sweepSeeds: UInt64 = ProcessInfo.processInfo.environment["SNAPBACK_SIMULATION_SEEDS"].flatMap(UInt64.init) ?? 2_000

    @Test("2,000 seeds: no invariant broken")
    func sweep() async throws {
        let result = try await onOwnThread {
            Simulation.sweep(seeds: 1..<1 + Self.sweepSeeds, parallelism: ProcessInfo.processInfo.activeProcessorCount)
        }
        for failure in result.failures {
            Issue.record("\(failure.violation.map { "\($0)" } ?? "?")")
        }
        let statistics = result.statistics
        print(
            "simulation sweep: \(result.runs) seeds in \(result.duration): \(result.failures.count) failed; "
                + "\(statistics.operations) operations, \(statistics.writesAcknowledged) acknowledged writes, "
                + "\(statistics.crashes) crashes, \(statistics.rollbacksCompleted) rollbacks completed, "
                + "\(statistics.errorInjections) error injections, \(statistics.noSpaceInjections) disk-full injections")
        #expect(result.runs == Int(Self.sweepSeeds))
        // The runs did what they are for: crashes, rollbacks and I/O errors in numbers.
        #expect(statistics.crashes >= result.runs * 3)
        #expect(statistics.rollbacksCompleted >= result.runs)
        #expect(statistics.errorInjections >= result.runs * 9 / 10)
        #expect(statistics.noSpaceInjections >= result.runs * 9 / 10)
        #expect(statistics.writesAcknowledged >= result.runs * 20)
    }

    @Test("the classic ordering bug (source written before copy-on-write) is caught")
    func brokenOrderingIsCaught() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let sweep = Simulation.sweep(seeds: 1..<501, parallelism: 2) { $0.brokenOrdering = true }
            let caughtBy = Set(sweep.failures.compactMap { $0.violation?.invariant.rawValue })
            print("broken ordering: \(sweep.failures.count) of \(sweep.runs) seeds fail, caught by \(caughtBy.sorted())")
            if let first = sweep.failures.first?.violation { print("first: \(first)") }
            precondition(!sweep.failures.isEmpty, "the broken ordering went unnoticed")
            // Every failure says how to replay it.
            precondition(sweep.failures.allSatisfy { $0.violation?.replayCommand == "tools/simulate --seed \($0.seed) --broken-ordering" })
            // And the same seed fails the same way again.
            let first = sweep.failures[0]
            let again = Simulation(seed: first.seed, brokenOrdering: true).run()
            precondition(again.violation == first.violation, "seed \(first.seed) did not replay")
        }
        if let output = result?.standardOutputContent {
            print(String(decoding: output, as: UTF8.self), terminator: "")
        }
    }

    @Test("one seed replays the same run")
    func determinism() {
        for seed: UInt64 in [3, 77, 1234] {
            let first = Simulation(seed: seed).run()
            let second = Simulation(seed: seed).run()
            #expect(first.violation == second.violation)
            #expect(first.statistics == second.statistics)
            #expect(first.replayCommand == "tools/simulate --seed \(seed)")
        }
    }

    @Test("a verbose replay prints every operation")
    func verboseReplay() {
        var lines: [String] = []
        let result = Simulation(seed: 5, operationsCount: 40).run { lines.append($0) }
        #expect(result.violation == nil)
        #expect(lines.filter { $0.hasPrefix("#") }.count == result.statistics.operations)
        #expect(lines.first?.hasPrefix("#0 command createVolume") == true)
    }

    // Fixed (regression): KnownDefect.rollbackCountsRewrittenGrainsTwice. A host write during a rollback,
    // before its first step, marks the grain restored and then (copy-on-write) dirty again; the
    // first step counts dirty + restored, more than the map's grains; RollbackProgressed is
    // refused (invalid_progress), `_ = try? commitBitmaps(...)` in rollbackStepLocked drops the
    // restored marks, and every step copies the same grains again: the rollback never ends.
    @Test("regression: a rollback counted rewritten grains twice and never ended (seed 1)")
    func knownDefectRollbackCountsTwice() {
        let result = Simulation(seed: 1).run()
        #expect(result.violation == nil, "\(result.violation.map { "\($0)" } ?? "")")
    }

    // Fixed (regression): KnownDefect.rollbackStoppedKeepsRestoredMarks. RollbackStopped (stoplcmap -force, or a
    // rollback abandoned after an I/O error) keeps the map's restored marks while the map keeps
    // its image; the next rollback skips those grains and leaves host bytes where the image
    // belongs (Specs/scenarios/known-rollback-stopped-keeps-restored-marks.scenario).
    @Test("regression: an abandoned rollback left its restored marks (seed 33)")
    func knownDefectRollbackStoppedKeepsMarks() {
        let result = Simulation(seed: 33).run()
        #expect(result.violation == nil, "\(result.violation.map { "\($0)" } ?? "")")
    }
}
