import SnapbackCore
import SnapbackData

/// Background work: rollbacks first (a faulted source waits for them), then background copies.
extension Controller {
    /// What one step did.
    public struct StepOutcome: Sendable, Equatable {
        /// Bytes copied (grain copies, either direction).
        public var bytesCopied: UInt64 = 0
        /// True when background work remains.
        public var workRemains = false
        /// Background-copy bytes per map (for pacing).
        public var copiedBytesByMap: [MapID: UInt64] = [:]
    }

    /// Bounds on one step: grains copied between two durable marks.
    public static let stepGrainsMax = 64
    /// A rollback's bound (it runs at full speed; fewer, larger syncs go faster).
    public static let rollbackStepGrainsMax = 4096

    /// Does up to `budgetBytes` of background work, for rollbacks and (when `copies`) every
    /// copying map alike, and returns what it did.
    @discardableResult
    public func step(budgetBytes: UInt64, copies: Bool = true) -> StepOutcome {
        let budgets = copies ? copyRatesBytesPerSecond.mapValues { _ in budgetBytes } : [:]
        return step(rollbackBudgetBytes: budgetBytes, copyBudgetsBytes: budgets)
    }

    /// Does one round of background work: up to `rollbackBudgetBytes` for each running rollback
    /// (rollbacks run at full speed), and up to `copyBudgetsBytes[map]` of background copy for
    /// each map (the caller paces these from ``copyRatesBytesPerSecond``). At least one grain is
    /// copied for a map with any budget. Errors fault the failing volume and end that map's work.
    @discardableResult
    public func step(rollbackBudgetBytes: UInt64, copyBudgetsBytes: [MapID: UInt64]) -> StepOutcome {
        exclusive {
            var outcome = StepOutcome()
            for map in committed.mapsByID where map.role == .forward && map.rollback != nil {
                rollbackStepLocked(map, budgetBytes: rollbackBudgetBytes, &outcome)
            }
            for map in committed.mapsByID where copyRunsLocked(map) && map.copyRate > 0 {
                guard let budget = copyBudgetsBytes[map.id], budget > 0 else { continue }
                var mapOutcome = StepOutcome()
                copyStepLocked(map, budgetBytes: budget, &mapOutcome)
                outcome.bytesCopied += mapOutcome.bytesCopied
                outcome.copiedBytesByMap[map.id] = mapOutcome.bytesCopied
            }
            outcome.workRemains = hasBackgroundWorkLocked()
            return outcome
        }
    }

    /// True while a rollback runs or a map with a copy rate is copying.
    public var hasBackgroundWork: Bool { locked { hasBackgroundWorkLocked() } }

    func hasBackgroundWorkLocked() -> Bool {
        committed.maps.values.contains { $0.role == .forward && ($0.rollback != nil || (copyRunsLocked($0) && $0.copyRate > 0)) }
    }

    /// True when `map`'s background copy can run: a copying forward map with a valid image whose
    /// source is not faulted. (A faulted source cannot be read: the copy waits, without counting
    /// as background work, until the source is recovered.)
    func copyRunsLocked(_ map: LCMap) -> Bool {
        map.role == .forward && map.state == .copying && map.imageValid && committed.volumes[map.sourceID]?.status != .faulted
    }

    /// The copy rate of every copying map, in bytes per second (IBM's table).
    public var copyRatesBytesPerSecond: [MapID: UInt64] {
        locked {
            var rates: [MapID: UInt64] = [:]
            for map in committed.maps.values where copyRunsLocked(map) {
                rates[map.id] = CopyRate.bytesPerSecond(map.copyRate)
            }
            return rates
        }
    }

    /// Copies up to `budgetBytes` of grains the target does not hold yet, syncs the target, then
    /// durably marks them split together with the progress event (or the completion).
    private func copyStepLocked(_ map: LCMap, budgetBytes: UInt64, _ outcome: inout StepOutcome) {
        guard var maps = bitmaps[map.id] else { return }
        let grainsMax = max(1, min(Self.stepGrainsMax, Int(budgetBytes / UInt64(map.grainSizeBytes))))
        var batch: [UInt64] = []
        var cursor = copyCursors[map.id] ?? 0
        while batch.count < grainsMax, let grain = maps.split.nextClear(from: cursor) {
            batch.append(grain)
            cursor = grain + 1
        }
        if batch.isEmpty, cursor > 0, let grain = maps.split.nextClear(from: 0) {
            batch.append(grain)
            cursor = grain + 1
        }
        copyCursors[map.id] = cursor
        if !batch.isEmpty {
            do {
                try copyGrainsLocked(map, batch)
            } catch {
                return  // the failing volume was faulted; the map stops or the source is faulted
            }
            for grain in batch { maps.split[grain] = true }
            outcome.bytesCopied += UInt64(batch.count) * UInt64(map.grainSizeBytes)
        }
        let splitCount = maps.split.setCount
        let command: Command = splitCount == map.grainsTotal
            ? .completeCopy(map: map.id) : .recordCopyProgress(map: map.id, grainsCopied: splitCount)
        _ = try? commitBitmaps([map.id: maps], commands: [command])
    }

    /// Restores up to `budgetBytes` of dirty, not yet restored grains (target → source), syncs the
    /// source, then durably marks them restored with the progress event; completes the rollback
    /// when none remain.
    private func rollbackStepLocked(_ map: LCMap, budgetBytes: UInt64, _ outcome: inout StepOutcome) {
        guard var maps = bitmaps[map.id], let rollback = map.rollback else { return }
        // A rollback that cannot read its target or write its source is given up, recorded,
        // and its source left faulted, rather than retried for ever.
        for volumeID in [map.sourceID, map.targetID] where stores[volumeID] == nil {
            let name = committed.volumes[volumeID]?.name ?? String(volumeID)
            _ = try? commitLocked(.abandonRollback(map: map.id, reason: "the backing store of volume \(name) is unavailable"))
            return
        }
        // The work is counted on the first step (and again after a restart before any progress);
        // the count is recorded with the first batch's marks.
        // A grain restored and then written again by a host is both restored and dirty: count
        // it once (found by the simulator, seed 1).
        let toRestore = rollback.grainsToRestore > 0 ? rollback.grainsToRestore : maps.dirty.unionCount(maps.restored)
        let grainsMax = max(1, min(Self.rollbackStepGrainsMax, Int(budgetBytes / UInt64(map.grainSizeBytes))))
        var batch: [UInt64] = []
        var cursor: UInt64 = 0
        while batch.count < grainsMax, let grain = maps.dirty.nextSet(from: cursor) {
            if !maps.restored[grain] { batch.append(grain) }
            cursor = grain + 1
        }
        if !batch.isEmpty {
            do {
                try restoreGrainsLocked(map, batch, &maps)
            } catch {
                let text = "I/O error: \(error)".unicodeScalars.map { $0.properties.generalCategory == .control ? " " : String($0) }.joined()
                let reason = String(text.prefix(Limits.reasonBytesMax / 4))
                _ = try? commitLocked(.abandonRollback(map: map.id, reason: reason))
                return
            }
            outcome.bytesCopied += UInt64(batch.count) * UInt64(map.grainSizeBytes)
        }
        var commands: [Command] = []
        let restored = min(maps.restored.setCount, toRestore)
        if toRestore > 0 {
            commands.append(.recordRollbackProgress(map: map.id, grainsRestored: restored, grainsToRestore: toRestore))
        }
        // The last batch's marks and the completion share one commit.
        let remaining = maps.dirty.nextSet(from: 0).map { first in
            var grain: UInt64? = first
            while let current = grain {
                if !maps.restored[current] { return true }
                grain = maps.dirty.nextSet(from: current + 1)
            }
            return false
        } ?? false
        if !remaining { commands.append(.completeRollback(map: map.id)) }
        _ = try? commitBitmaps([map.id: maps], commands: commands)
    }
}
