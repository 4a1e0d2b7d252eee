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
        /// When a durable commit failed: how long background work waits before its next try.
        public var waitingMilliseconds: Int64?
        /// True when host I/O or a command waited for the gates of a family this step held.
        public var hostIOWaited = false
        /// True when host I/O or a command used a volume outside every family with background
        /// work since the previous step: other hosts are busy, and a rollback yields them a share
        /// of the machine (the daemon paces it, `BackgroundService`).
        public var othersBusy = false
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
    ///
    /// Each family with work is stepped holding only its own gates, so that host I/O on other
    /// families goes on. A rollback's step adapts within the budget: it starts at the budget,
    /// drops to ``rollbackStepBytesMin`` after a step during which host I/O or a command waited
    /// for its family's gates, and doubles back after each step during which none did.
    @discardableResult
    public func step(rollbackBudgetBytes: UInt64, copyBudgetsBytes: [MapID: UInt64]) -> StepOutcome {
        var outcome = StepOutcome()
        // After a failed commit, background work waits for its backoff (never a tight loop).
        let (due, families) = locked { () -> (Bool, [Set<VolumeID>]) in
            (backgroundBackoff.due(at: clock()), familiesWithWorkLocked())
        }
        let busy = families.reduce(into: Set<VolumeID>()) { $0.formUnion($1) }
        let takersOutside = gates.takerCount(outside: busy)
        locked {
            outcome.othersBusy = takersOutside != takersOutsideAtLastStep
            takersOutsideAtLastStep = takersOutside
        }
        if due {
            let failuresBefore = health.failedCommits
            tickDetectors()
            startDueScheduledRollbacks()
            startDueScheduledGroupRollbacks()
            for family in families {
                exclusive(volumes: { family }, background: true) {
                    stepFamilyLocked(rollbackBudgetBytes: rollbackBudgetBytes, copyBudgetsBytes: copyBudgetsBytes, &outcome)
                }
            }
            completeRestoredGroupRollbacks()
            if health.failedCommits == failuresBefore { locked { backgroundBackoff.succeeded() } }
        }
        locked {
            outcome.workRemains = hasBackgroundWorkLocked()
            if !backgroundBackoff.due(at: clock()) { outcome.waitingMilliseconds = backgroundBackoff.notBeforeMilliseconds - clock() }
        }
        return outcome
    }

    /// Starts the automatic rollbacks whose hold window has passed (a restart after the
    /// deadline starts them at once).
    private func startDueScheduledRollbacks() {
        let isDue = { [unowned self] (id: MapID) in (committed.maps[id]?.scheduledRollback?.atMilliseconds ?? .max) <= clock() }
        commitEach(
            locked { committed.mapsByID.map(\.id) }, holding: { [unowned self] in committed.maps[$0].map { [$0.sourceID] } },
            when: isDue, { .startScheduledRollback(map: $0) })
    }

    /// Starts the group rollbacks whose hold window has passed, holding every member's family.
    private func startDueScheduledGroupRollbacks() {
        let isDue = { [unowned self] (id: GroupID) in (committed.groups[id]?.scheduledRollback?.atMilliseconds ?? .max) <= clock() }
        commitEach(
            locked { committed.groupsByID.map(\.id) }, holding: { [unowned self] in Set(committed.members(of: $0).map(\.sourceID)) },
            when: isDue, { .startScheduledGroupRollback(group: $0) })
    }

    /// Completes the group rollbacks every member of which restored its grains: one commit, so
    /// that every source goes online at once. It holds every member's family (a member's source
    /// changes from `restoring` to `online`).
    private func completeRestoredGroupRollbacks() {
        let isReady = { [unowned self] (id: GroupID) in committed.groups[id].map(groupRollbackRestoredLocked) ?? false }
        commitEach(
            locked { committed.groupsByID.map(\.id) }, holding: { [unowned self] in Set(committed.members(of: $0).map(\.sourceID)) },
            when: isReady, { .completeGroupRollback(group: $0) })
    }

    /// Commits `command(id)` for each of `ids` for which `when` holds, first under the lock, then
    /// again once the gates of the families of `holding(id)` are held (a command may have changed
    /// it meanwhile). A commit the state machine refuses, or the log cannot record, waits for the
    /// background backoff.
    private func commitEach<ID>(
        _ ids: [ID], holding volumes: @escaping (ID) -> Set<VolumeID>?, when condition: (ID) -> Bool, _ command: (ID) -> Command
    ) {
        for id in locked({ ids.filter(condition) }) {
            exclusive(volumes: { volumes(id) }) {
                guard condition(id) else { return }
                do throws(ControllerError) {
                    _ = try commitLocked(command(id))
                } catch {
                    backgroundBackoff.failed(at: clock())
                }
            }
        }
    }

    /// True when `group` rolls back and every member restored its grains.
    func groupRollbackRestoredLocked(_ group: LCGroup) -> Bool {
        guard group.rollback != nil else { return false }
        let rollbacks = committed.members(of: group.id).compactMap(\.rollback)
        return !rollbacks.isEmpty && rollbacks.allSatisfy(\.awaitingGroup)
    }

    /// The smallest adaptive rollback step.
    public static let rollbackStepBytesMin: UInt64 = 1 << 20

    /// The families (as volume sets, ascending by their lowest id) with background work:
    /// running rollbacks, copies that can run, faults waiting to be recorded.
    private func familiesWithWorkLocked() -> [Set<VolumeID>] {
        var seeds: [VolumeID] = pendingFaults.map(\.volumeID)
        for map in committed.mapsByID where hasBackgroundWorkLocked(map) { seeds.append(map.sourceID) }
        var families: [Set<VolumeID>] = []
        for seed in seeds where !families.contains(where: { $0.contains(seed) }) {
            families.append(familyLocked([seed]))
        }
        return families.sorted { ($0.min() ?? 0) < ($1.min() ?? 0) }
    }

    /// One round of the held family's rollbacks, then its copies. Must hold the family's gates.
    private func stepFamilyLocked(rollbackBudgetBytes: UInt64, copyBudgetsBytes: [MapID: UInt64], _ outcome: inout StepOutcome) {
        let held = gates.heldVolumes() ?? []
        var rolledBack: [MapID] = []
        for map in committed.mapsByID where hasRollbackWork(map) && held.contains(map.sourceID) {
            // Large until someone waits for the family's gates.
            let adaptive = rollbackStepBytes[map.id] ?? rollbackBudgetBytes
            rollbackStepLocked(map, budgetBytes: min(rollbackBudgetBytes, adaptive), &outcome)
            rolledBack.append(map.id)
        }
        for map in committed.mapsByID where copyRunsLocked(map) && map.copyRate > 0 && held.contains(map.sourceID) {
            guard let budget = copyBudgetsBytes[map.id], budget > 0 else { continue }
            var mapOutcome = StepOutcome()
            copyStepLocked(map, budgetBytes: budget, &mapOutcome)
            outcome.bytesCopied += mapOutcome.bytesCopied
            outcome.copiedBytesByMap[map.id] = mapOutcome.bytesCopied
        }
        let contended = gates.takeContended(held)
        if contended { outcome.hostIOWaited = true }
        for map in rolledBack {
            let current = rollbackStepBytes[map] ?? rollbackBudgetBytes
            rollbackStepBytes[map] = contended ? Self.rollbackStepBytesMin : min(rollbackBudgetBytes, current * 2)
        }
    }

    /// True while a rollback runs or a map with a copy rate is copying.
    public var hasBackgroundWork: Bool { locked { hasBackgroundWorkLocked() } }

    func hasBackgroundWorkLocked() -> Bool {
        hasPendingFaultsLocked || committed.maps.values.contains(where: hasBackgroundWorkLocked)
            || committed.groups.values.contains(where: groupRollbackRestoredLocked)
    }

    /// True while `map` rolls back, or copies with a copy rate.
    func hasBackgroundWorkLocked(_ map: LCMap) -> Bool {
        hasRollbackWork(map) || (map.role == .forward && copyRunsLocked(map) && map.copyRate > 0)
    }

    /// True while `map`'s rollback has grains to restore (a member of a group rollback that
    /// restored its grains waits for the others).
    func hasRollbackWork(_ map: LCMap) -> Bool {
        map.role == .forward && map.rollback != nil && map.rollback?.awaitingGroup != true
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

    /// How long the marks of a background copy's or a rollback's copied grains may wait before
    /// they are made durable, in one commit with one progress event (`Specs/data-plane.md`,
    /// "Coalesced marks"). A crash loses only the marks: the copies are made again.
    public struct MarksCoalescing: Sendable, Equatable {
        /// Bytes of copies whose marks may wait.
        public var bytesMax: UInt64
        /// How long the oldest unmarked copy may wait (controller clock).
        public var millisecondsMax: Int64

        public init(bytesMax: UInt64, millisecondsMax: Int64) {
            self.bytesMax = bytesMax
            self.millisecondsMax = millisecondsMax
        }

        /// snapbackd's: 256 MiB or 1 s, whichever comes first.
        public static let daemon = MarksCoalescing(bytesMax: 256 << 20, millisecondsMax: 1000)
        /// Every step commits its marks (the crash scenarios count on it).
        public static let everyStep = MarksCoalescing(bytesMax: 0, millisecondsMax: 0)
    }

    /// Copies up to `budgetBytes` of grains the target does not hold yet (not synced); when
    /// ``MarksCoalescing`` says so, and when the last grain is copied, syncs the target and durably marks the copied grains split with the progress event
    /// (or the completion).
    private func copyStepLocked(_ map: LCMap, budgetBytes: UInt64, _ outcome: inout StepOutcome) {
        guard bitmaps[map.id] != nil else { return }
        let now = clock()
        var unmarked = unmarkedCopies[map.id] ?? (grains: [], sinceMilliseconds: now)
        let grainsMax = max(1, min(Self.stepGrainsMax, Int(budgetBytes / UInt64(map.grainSizeBytes))))
        // (Bitmaps are read through temporaries, never held across a commit, which changes them
        // in place: a held copy would make the commit copy them.)
        let (batch, cursor) = GrainPlanner.nextCopyGrains(bitmaps[map.id]!, from: copyCursors[map.id] ?? 0, grainsMax: grainsMax, unmarked: unmarked.grains)
        copyCursors[map.id] = cursor
        if !batch.isEmpty {
            do throws(StageFailure) {
                _ = try performCopies([GrainCopy(map: map.id, from: map.sourceID, to: map.targetID, grains: batch)])
            } catch {
                // The failing volume is faulted: a target's fault stops the map, a source's makes
                // the copy wait.
                failBackgroundLocked(error)
                return
            }
            unmarked.grains.formUnion(batch)
            outcome.bytesCopied += UInt64(batch.count) * UInt64(map.grainSizeBytes)
        }
        unmarkedCopies[map.id] = unmarked
        // Host writes may have split unmarked grains meanwhile (copy-on-write copies them again).
        let splitCount = bitmaps[map.id]!.split.setCount + UInt64(unmarked.grains.count { !bitmaps[map.id]!.split[$0] })
        let complete = splitCount == map.grainsTotal
        // Nothing left to copy but marks to make: make them now.
        let idle = batch.isEmpty && !unmarked.grains.isEmpty
        guard complete || idle || flushDue(unmarked.grains.count, map, since: unmarked.sinceMilliseconds, now: now) else { return }
        var marks = BitmapMarks()
        for grain in unmarked.grains { marks.set(map.id, .split, grain, true) }
        var commands: [Command] = [complete ? .completeCopy(map: map.id) : .recordCopyProgress(map: map.id, grainsCopied: splitCount)]
        // The copy wrote the target: a target that was out of space has room again.
        if committed.volumes[map.targetID]?.status == .outOfSpace { commands.append(.recordSpaceRestored(volume: map.targetID)) }
        do throws(StageFailure) {
            try perform(GrainStage(marks: marks), syncing: [map.targetID], commands: commands)
            unmarkedCopies[map.id] = nil
        } catch {
            failBackgroundLocked(error)
        }
    }

    /// True when `count` unmarked grains of `map`, waiting since `since`, are due for their commit.
    private func flushDue(_ count: Int, _ map: LCMap, since: Int64, now: Int64) -> Bool {
        guard count > 0 else { return false }
        return UInt64(count) * UInt64(map.grainSizeBytes) >= marksCoalescing.bytesMax || now - since >= marksCoalescing.millisecondsMax
    }

    /// Restores up to `budgetBytes` of dirty, not yet restored grains (target → source), not
    /// synced; when ``MarksCoalescing`` says so, and when none remain, syncs the source and durably marks them restored with the progress event
    /// (and the completion, in the same commit).
    private func rollbackStepLocked(_ map: LCMap, budgetBytes: UInt64, _ outcome: inout StepOutcome) {
        guard bitmaps[map.id] != nil, let rollback = map.rollback, let source = committed.volumes[map.sourceID] else { return }
        // A rollback that cannot read its target or write its source is given up, recorded,
        // and its source left faulted, rather than retried for ever.
        for volumeID in [map.sourceID, map.targetID] where stores[volumeID] == nil {
            let name = committed.volumes[volumeID]?.name ?? String(volumeID)
            abandonLocked(map, reason: "the backing store of volume \(name) is unavailable")
            return
        }
        let now = clock()
        // The work is counted on the first step (and again after a restart before any progress).
        var toRestore = rollback.grainsToRestore
        let counting = toRestore == 0
        if counting { toRestore = countRollbackLocked(map.id) ?? 0 }
        var unmarked = unmarkedRestores[map.id] ?? (grains: [], sinceMilliseconds: now)
        let grainsMax = max(1, min(Self.rollbackStepGrainsMax, Int(budgetBytes / UInt64(map.grainSizeBytes))))
        var cursor = rollbackCursors[map.id] ?? 0
        var batch: [UInt64] = []
        // While a commit of marks is failing, nothing more is copied: the marks are retried.
        if unmarked.grains.isEmpty || backgroundBackoff.delayMilliseconds == 0 {
            (batch, cursor) = GrainPlanner.nextRollbackGrains(bitmaps[map.id]!, from: cursor, grainsMax: grainsMax, unmarked: unmarked.grains)
        }
        if !batch.isEmpty {
            do throws(StageFailure) {
                for stage in planRestoreLocked(map, batch, sizeBytes: source.sizeBytes) {
                    // Copy-on-write for the other maps is durable before the source is written;
                    // the restore's own marks wait for the coalesced commit. The restore stops
                    // early when host I/O or a command waits for the family: the grains not
                    // copied are the next step's.
                    guard stage.marks.isEmpty, stage.copies.count == 1 else {
                        try perform(stage)
                        continue
                    }
                    let held = gates.heldVolumes() ?? []
                    let waits = waitsForFamily ?? { [gates] in gates.isContended($0) }
                    let copied = try performCopy(stage.copies[0]) { waits(held) }
                    if copied.count < batch.count {
                        cursor = batch[copied.count]
                        batch = copied
                    }
                }
            } catch {
                rollbackFailedLocked(map, error)
                return
            }
            unmarked.grains.formUnion(batch)
            outcome.bytesCopied += UInt64(batch.count) * UInt64(map.grainSizeBytes)
        }
        rollbackCursors[map.id] = cursor
        unmarkedRestores[map.id] = unmarked
        // Done when no grain remains after the cursor, nor (a safety net, once per rollback)
        // before it: a grain whose restore-before-write failed after it left the unmarked set.
        var remaining = GrainPlanner.nextRollbackGrains(bitmaps[map.id]!, from: cursor, grainsMax: 1, unmarked: unmarked.grains).grains.first
        if remaining == nil, let missed = GrainPlanner.nextRollbackGrains(bitmaps[map.id]!, from: 0, grainsMax: 1, unmarked: unmarked.grains).grains.first {
            rollbackCursors[map.id] = missed
            remaining = missed
        }
        let flushing = remaining == nil || flushDue(unmarked.grains.count, map, since: unmarked.sinceMilliseconds, now: now)
        // The count is recorded with the first marks, or alone when they wait.
        guard flushing || (counting && toRestore > 0) else { return }
        var marks = BitmapMarks()
        if flushing {
            for grain in unmarked.grains {
                marks.set(map.id, .restored, grain, true)
                marks.set(map.id, .dirty, grain, false)
            }
        }
        var commands: [Command] = []
        if toRestore > 0 {
            let unmarkedCount = flushing ? UInt64(unmarked.grains.count { !bitmaps[map.id]!.restored[$0] }) : 0
            let restored = min(bitmaps[map.id]!.restored.setCount + unmarkedCount, toRestore)
            commands.append(.recordRollbackProgress(map: map.id, grainsRestored: restored, grainsToRestore: toRestore))
        }
        // The last marks and the completion share one commit.
        if remaining == nil { commands.append(.completeRollback(map: map.id)) }
        do throws(StageFailure) {
            try perform(GrainStage(marks: marks), syncing: marks.isEmpty ? [] : [map.sourceID], commands: commands)
            guard flushing else { return }
            unmarkedRestores[map.id] = nil
            if remaining == nil { rollbackCursors[map.id] = nil }
        } catch {
            rollbackFailedLocked(map, error)
        }
    }

    /// The work of `map`'s rollback: grains dirty or restored (a grain restored and then written
    /// again by a host is both: counted once, found by the simulator, seed 1).
    private func countRollbackLocked(_ map: MapID) -> UInt64? {
        guard let maps = bitmaps[map] else { return nil }
        return maps.dirty.unionCount(maps.restored)
    }

    /// The stages restoring `grains` of `map` (see `GrainPlanner.restore`), without the restore's
    /// own marks.
    private func planRestoreLocked(_ map: LCMap, _ grains: [UInt64], sizeBytes: UInt64) -> [GrainStage] {
        var view = PlannedBitmaps(bitmaps)
        return GrainPlanner.restore(committed, &view, map, grains: grains, sizeBytes: sizeBytes, marking: false)
    }

    /// A rollback step failed: a volume that failed is faulted and the rollback abandoned
    /// (`RollbackStopped`); a copy-on-write target of another map that failed is faulted (its
    /// map stops) and the step is made again; a failed commit is retried after a backoff.
    private func rollbackFailedLocked(_ map: LCMap, _ failure: StageFailure) {
        switch failure {
        case .commit:
            failBackgroundLocked(failure)
        case let .volume(volumeID, error):
            guard let volume = committed.volumes[volumeID] else { return }
            _ = failureLocked(volume, error)
            if error.failureClass == .capacity {
                // Out of space is not damage: the rollback waits and tries again.
                backgroundBackoff.failed(at: clock())
                return
            }
            if volumeID == map.sourceID || volumeID == map.targetID {
                let text = "I/O error: \(error)".unicodeScalars.map { $0.properties.generalCategory == .control ? " " : String($0) }.joined()
                abandonLocked(map, reason: String(text.prefix(Limits.reasonBytesMax / 4)))
            }
        case let .unavailable(volumeID):
            abandonLocked(map, reason: "the backing store of volume \(committed.volumes[volumeID]?.name ?? String(volumeID)) is unavailable")
        }
    }

    /// Records that `map`'s rollback is given up (`RollbackStopped`); retried after a backoff
    /// when the log cannot record it.
    private func abandonLocked(_ map: LCMap, reason: String) {
        guard committed.maps[map.id]?.rollback != nil else { return }
        do throws(ControllerError) {
            _ = try commitLocked(.abandonRollback(map: map.id, reason: reason))
        } catch {
            failBackgroundLocked(.commit(error))
        }
    }

    /// Background work that failed: a volume that failed is faulted; a failed commit makes the
    /// background work wait for ``backgroundBackoff`` before it is tried again.
    private func failBackgroundLocked(_ failure: StageFailure) {
        switch failure {
        case let .commit(error):
            if case .rejected = error { return }
            backgroundBackoff.failed(at: clock())
        case let .volume(volumeID, error):
            if let volume = committed.volumes[volumeID] { _ = failureLocked(volume, error) }
            // Out of space: the copy waits and tries again.
            if error.failureClass == .capacity { backgroundBackoff.failed(at: clock()) }
        case .unavailable:
            break
        }
    }
}
