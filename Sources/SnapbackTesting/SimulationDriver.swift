import Foundation
import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated

/// An invariant the simulator checks after every operation and every recovery.
public enum Invariant: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The controller's state is exactly the reduction of the durable log.
    case stateIsLogReduction = "state-is-log-reduction"
    /// Every event the controller acknowledged is in the durable log after a restart.
    case acknowledgedEventKept = "acknowledged-event-kept"
    /// Reads return every acknowledged host write; durable ones survive crashes.
    case hostDataKept = "host-data-kept"
    /// A finished rollback leaves the source equal to the image, except bytes written by
    /// acknowledged host writes after the rollback started.
    case rollbackRestoresImage = "rollback-restores-image"
    /// A target's image never changes while its map stays active.
    case imageUnchanged = "image-unchanged"
    /// The bitmaps never claim what the disks do not hold: dirty and restored grains are split,
    /// split grains of the target hold the image, clean grains of the source hold the image.
    case bitmapsHeld = "bitmaps-held"
    /// A new controller starts on whatever a crash left.
    case controllerRecovers = "controller-recovers"
    /// Background work finishes once nothing blocks it.
    case backgroundWorkFinishes = "background-work-finishes"
    /// The controller is `degraded` exactly while its last durable commit failed.
    case controllerHealth = "controller-health"
    /// A full disk (ENOSPC) is never a fault: no `io_error` fault, hence no automatic rollback,
    /// comes of it.
    case capacityIsNotDamage = "capacity-is-not-damage"
    /// An automatic rollback restores the newest image taken at or before the fault's onset, and
    /// never starts before its hold window has passed.
    case restorePointRespected = "restore-point-respected"
    /// A group rollback restores every member to the images of one group start (the members of
    /// that start), and its members are `restoring` together until all complete.
    case groupAtOneInstant = "group-at-one-instant"

    /// The invariant's name, as printed in violations.
    public var description: String { rawValue }
}

/// The first invariant a run broke, with everything needed to reproduce it.
public struct Violation: Error, Sendable, Equatable, CustomStringConvertible {
    /// The seed of the run.
    public var seed: UInt64
    /// The index of the operation after which the invariant failed (0 is the first).
    public var operationIndex: Int
    /// The operation, as printed by a verbose replay.
    public var operation: String
    /// The invariant broken.
    public var invariant: Invariant
    /// What was observed, and what the model allowed.
    public var detail: String
    /// The command line that replays the run, e.g. `tools/simulate --seed 42`.
    public var replayCommand: String

    /// The seed, the operation, the invariant, the detail and the replay command.
    public var description: String {
        "seed \(seed), operation #\(operationIndex) (\(operation)): \(invariant): \(detail)\n  reproduce: \(replayCommand)"
    }
}

/// Counts of what a run did.
public struct SimulationStatistics: Sendable, Equatable {
    /// Operations performed (set-up included).
    public var operations = 0
    /// Commands accepted and refused.
    public var commandsAcknowledged = 0
    public var commandsRefused = 0
    /// Host writes acknowledged, and failed with an I/O error.
    public var writesAcknowledged = 0
    public var writesFailed = 0
    /// Host flushes acknowledged; background steps run.
    public var flushes = 0
    public var steps = 0
    /// Crashes followed by a restart.
    public var crashes = 0
    /// Rollbacks started and completed, as the durable log tells.
    public var rollbacksStarted = 0
    public var rollbacksCompleted = 0
    /// I/O error injections; bytes read and compared against the model.
    public var errorInjections = 0
    public var noSpaceInjections = 0
    public var commitFailureInjections = 0
    public var bytesChecked: UInt64 = 0

    /// All zero.
    public init() {}

    /// Adds two runs' counts.
    public static func + (left: Self, right: Self) -> Self {
        var sum = left
        sum.operations += right.operations
        sum.commandsAcknowledged += right.commandsAcknowledged
        sum.commandsRefused += right.commandsRefused
        sum.writesAcknowledged += right.writesAcknowledged
        sum.writesFailed += right.writesFailed
        sum.flushes += right.flushes
        sum.steps += right.steps
        sum.crashes += right.crashes
        sum.rollbacksStarted += right.rollbacksStarted
        sum.rollbacksCompleted += right.rollbacksCompleted
        sum.errorInjections += right.errorInjections
        sum.noSpaceInjections += right.noSpaceInjections
        sum.commitFailureInjections += right.commitFailureInjections
        sum.bytesChecked += right.bytesChecked
        return sum
    }
}

/// What one operation came to.
public struct OperationOutcome: Sendable, Equatable, CustomStringConvertible {
    /// How an operation ended.
    public enum Kind: Sendable, Equatable {
        /// Done (and acknowledged, for a command or a host I/O).
        case done
        /// Refused without effect (a rejected command, a read-only or faulted volume, ...).
        case refused
        /// Failed with an I/O or storage error: it may have been partly done.
        case failed
    }

    /// How it ended.
    public var kind: Kind
    /// A one-line account (the events recorded, or the error).
    public var text: String

    /// The one-line account.
    public var description: String { text }
}

/// A simulated machine (disks, durable log, clock) with the real ``Controller`` on it, the
/// reference model beside it, and the invariant checks between them. The seeded simulator and
/// the scenario runner both drive one of these, an operation at a time.
public final class SimulationDriver {
    /// The seed of the world (crash outcomes).
    public let seed: UInt64
    /// The simulated machine: I/O points, crashes, injected errors, clock.
    public let world: SimulatedWorld
    /// The simulated disks, kept across restarts.
    public let volumes: SimulatedVolumeProvider
    /// The simulated durable log and bitmaps, kept across restarts.
    public let durable: SimulatedDurableStore
    /// The running controller (a new one after every restart).
    public private(set) var controller: Controller
    /// What every volume must read as, from acknowledged operations and the durable log.
    public private(set) var model = ReferenceModel()
    /// The first violation, after which the driver checks nothing more.
    public private(set) var violation: Violation?
    /// What the driver did so far.
    public private(set) var statistics = SimulationStatistics()
    /// The command that reproduces this run, quoted in violations.
    public let replayCommand: String
    /// Operations performed so far (the index of the next one).
    public private(set) var operationIndex = 0
    /// Full checks of every volume happen every this many operations (and after recoveries).
    public var fullCheckInterval = 32
    /// Receives a line per operation when set (verbose replays).
    public var log: ((String) -> Void)?

    /// Events the controller acknowledged, by sequence number.
    private var acknowledged: [(sequence: UInt64, event: Event)] = []
    /// Operations left before injected commit failures stop.
    private var commitFailureOperationsLeft = 0
    /// Injected errors still to run, per volume, in operations.
    private var errorOperationsLeft: [VolumeID: Int] = [:]
    private var noSpaceOperationsLeft: [VolumeID: Int] = [:]
    /// The split bitmaps as of the last check, so that only new grains are compared.
    private var checkedSplit: [MapID: GrainBitmap] = [:]
    /// The operation being checked (described only when a violation or a log needs it).
    private var currentOperation: SimulationOperation?
    private var operationNote: String?
    private var fullCheckDue = false

    static let controllerVersion = "simulator"
    /// The coalescing of marks this run's controllers use.
    public let marksCoalescing: Controller.MarksCoalescing
    /// The coalescings seeds choose from: snapbackd's (256 MiB or 1 s; the simulated clock moves
    /// 1 ms a call), every step, and a few grains or 20 ms.
    public static let coalescingChoices: [Controller.MarksCoalescing] = [
        .daemon, .everyStep, Controller.MarksCoalescing(bytesMax: 256 << 10, millisecondsMax: 20),
    ]
    /// The bound on one drain, in steps.
    public static let drainStepsMax = 200

    /// A fresh machine of `seed` with a controller started on it.
    /// - Throws: what ``Controller/init(durable:volumes:clock:version:)`` throws (nothing on an empty machine).
    /// `marksCoalescing`: how long copied grains' marks wait; by default the seed chooses one of
    /// ``coalescingChoices`` (snapbackd's, every step, or a few grains).
    public init(seed: UInt64, replayCommand: String, marksCoalescing: Controller.MarksCoalescing? = nil) throws {
        self.seed = seed
        self.replayCommand = replayCommand
        self.marksCoalescing = marksCoalescing ?? Self.coalescingChoices[Int(seed % UInt64(Self.coalescingChoices.count))]
        world = SimulatedWorld(seed: seed)
        volumes = SimulatedVolumeProvider(world: world)
        durable = SimulatedDurableStore(world: world)
        controller = try Controller(
            durable: durable, volumes: volumes, clock: world.clock, version: Self.controllerVersion, marksCoalescing: self.marksCoalescing,
            waitsForFamily: world.waitsForFamily)
        model.read(durable.events)
    }

    // MARK: Operations

    /// Performs `operation`, updates the model from its acknowledged outcome and, unless the
    /// world has crashed, checks every invariant.
    @discardableResult
    public func perform(_ operation: SimulationOperation) -> OperationOutcome {
        let index = operationIndex
        operationIndex += 1
        statistics.operations += 1
        currentOperation = operation
        operationNote = nil
        var touched: [(VolumeID, Range<Int>)] = []
        var wholeBitmaps = false
        var justInjected: VolumeID?
        let eventsBefore = durable.events.count
        // Host writes this operation acknowledged (see the rollback check after the switch).
        var acknowledgedWrites: [(volumeID: VolumeID, offset: Int, bytes: [UInt8])] = []
        let outcome: OperationOutcome
        switch operation {
        case let .command(command):
            outcome = execute(command)
        case let .write(name, offset, writeBytes, fua):
            guard let volume = controller.state.volume(name) else {
                outcome = OperationOutcome(kind: .refused, text: "no volume \(name)")
                break
            }
            let bytes = writeBytes.bytes
            let range = Int(offset)..<Int(offset) + bytes.count
            do throws(HostIOError) {
                try controller.write(volume: volume.id, offset: offset, bytes: bytes, fua: fua)
                model.hostWrite(volume.id, at: Int(offset), bytes, fua: fua)
                acknowledgedWrites.append((volume.id, Int(offset), bytes))
                statistics.writesAcknowledged += 1
                touched.append((volume.id, range))
                outcome = OperationOutcome(kind: .done, text: "ok")
            } catch {
                switch error {
                case .io, .outOfSpace:
                    model.hostWriteFailed(volume.id, at: Int(offset), bytes)
                    statistics.writesFailed += 1
                    outcome = OperationOutcome(kind: .failed, text: "\(error)")
                default:
                    outcome = OperationOutcome(kind: .refused, text: "\(error)")
                }
            }
        case let .writeBatch(writes):
            outcome = writeBatch(writes, touched: &touched, acknowledged: &acknowledgedWrites)
        case let .read(name, offset, length):
            if let volume = controller.state.volume(name), length >= 0, offset + UInt64(length) <= volume.sizeBytes {
                touched.append((volume.id, Int(offset)..<Int(offset) + length))
                outcome = OperationOutcome(kind: .done, text: "checked")
            } else {
                outcome = OperationOutcome(kind: .refused, text: "out of range or no volume")
            }
        case let .flush(name):
            guard let volume = controller.state.volume(name) else {
                outcome = OperationOutcome(kind: .refused, text: "no volume \(name)")
                break
            }
            do throws(HostIOError) {
                try controller.flush(volume: volume.id)
                model.hostFlush(volume.id)
                statistics.flushes += 1
                outcome = OperationOutcome(kind: .done, text: "ok")
            } catch {
                if case .io = error {
                    outcome = OperationOutcome(kind: .failed, text: "\(error)")
                } else {
                    outcome = OperationOutcome(kind: .refused, text: "\(error)")
                }
            }
        case let .step(budgetBytes, copies):
            let done = controller.step(budgetBytes: budgetBytes, copies: copies)
            statistics.steps += 1
            wholeBitmaps = true
            outcome = OperationOutcome(kind: .done, text: "copied \(done.bytesCopied) bytes\(done.workRemains ? ", work remains" : "")")
        case let .wait(milliseconds):
            world.nowMilliseconds += max(0, milliseconds)
            outcome = OperationOutcome(kind: .done, text: "now \(world.nowMilliseconds)")
        case .drain:
            var steps = 0
            var copied: UInt64 = 0
            while controller.hasBackgroundWork, steps < Self.drainStepsMax, !world.crashed {
                let done = controller.step(budgetBytes: 4 << 20)
                copied += done.bytesCopied
                // snapbackd sleeps out a failed commit's backoff; so does the simulated clock.
                if let waiting = done.waitingMilliseconds { world.nowMilliseconds += max(1, waiting) }
                steps += 1
            }
            statistics.steps += steps
            wholeBitmaps = true
            outcome = OperationOutcome(kind: .done, text: "\(steps) steps, copied \(copied) bytes")
        case let .scheduleCrash(points):
            world.crashAtIOPoint = world.ioPoints + max(1, points)
            outcome = OperationOutcome(kind: .done, text: "at I/O point \(world.ioPoints + max(1, points))")
        case .crashAndRestart:
            world.crashAtIOPoint = nil
            outcome = OperationOutcome(kind: .done, text: "restarted")
        case let .failCommits(operations, noSpace):
            world.failingCommitsErrno = noSpace ? ENOSPC : EIO
            commitFailureOperationsLeft = max(1, operations) + 1
            statistics.commitFailureInjections += 1
            outcome = OperationOutcome(kind: .done, text: "ok")
        case let .injectErrors(name, operations), let .injectNoSpace(name, operations):
            if let volume = controller.state.volume(name) {
                if case .injectErrors = operation {
                    world.failingVolumes.insert(volume.id)
                    errorOperationsLeft[volume.id] = max(1, operations)
                    statistics.errorInjections += 1
                } else {
                    world.fullVolumes.insert(volume.id)
                    noSpaceOperationsLeft[volume.id] = max(1, operations)
                    statistics.noSpaceInjections += 1
                }
                justInjected = volume.id
                outcome = OperationOutcome(kind: .done, text: "ok")
            } else {
                outcome = OperationOutcome(kind: .refused, text: "no volume \(name)")
            }
        }
        // A rollback started or restarted during a host write's operation (a fault that waited to
        // be recorded is recorded when the write takes its family's gates: before the write, or
        // after a write of its batch failed): the model learns of it only now, after the writes.
        // Each such write may have landed before the rollback (then restored away) or after it.
        let rolledBack = Set(durable.events.dropFirst(eventsBefore).compactMap { stored -> VolumeID? in
            switch stored.event {
            case let .rollbackStarted(id, _, _), let .rollbackRestarted(id, _): controller.state.maps[id]?.sourceID
            default: nil
            }
        })
        if !rolledBack.isEmpty, acknowledgedWrites.contains(where: { rolledBack.contains($0.volumeID) }) {
            model.read(durable.events)
            for write in acknowledgedWrites where rolledBack.contains(write.volumeID) {
                model.hostWriteFailed(write.volumeID, at: write.offset, write.bytes)
            }
        }
        if violation == nil {
            // Faults name their errno: none may come of a full disk's.
            for stored in durable.events.dropFirst(eventsBefore) {
                if case let .volumeFaulted(id, _, _, reason) = stored.event, reason.contains("errno \(ENOSPC)") {
                    fail(.capacityIsNotDamage, "volume \(id) was faulted by a full disk: \(reason)")
                }
            }
        }
        log?("#\(index) \(operation) -> \(outcome)\(world.crashed ? " [crashed at I/O point \(world.ioPoints)]" : "")")
        expireInjectedErrors(except: justInjected)
        if case .crashAndRestart = operation {
            restart()
        } else if !world.crashed {
            checkAfterOperation(touched: touched, wholeBitmaps: wholeBitmaps)
        }
        return outcome
    }

    /// A batch of host writes: each write that the controller acknowledges is recorded in the
    /// model in the batch's order, as if made one after another.
    private func writeBatch(
        _ writes: [SimulationOperation.Write], touched: inout [(VolumeID, Range<Int>)], acknowledged: inout [(volumeID: VolumeID, offset: Int, bytes: [UInt8])]
    ) -> OperationOutcome {
        let state = controller.state
        let known = writes.compactMap { write in state.volume(write.volume).map { (volume: $0, write: write, bytes: write.bytes.bytes) } }
        let buffers = known.map { entry in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: entry.bytes.count, alignment: 1)
            buffer.copyBytes(from: entry.bytes)
            return buffer
        }
        defer { buffers.forEach { $0.deallocate() } }
        let outcomes = controller.write(zip(known, buffers).map { entry, buffer in
            Controller.HostWrite(volumeID: entry.volume.id, offset: entry.write.offset, bytes: UnsafeRawBufferPointer(buffer), fua: entry.write.fua)
        })
        var counts = (done: 0, failed: 0, refused: writes.count - known.count)
        for (entry, result) in zip(known, outcomes) {
            let offset = Int(entry.write.offset)
            switch result {
            case .success:
                model.hostWrite(entry.volume.id, at: offset, entry.bytes, fua: entry.write.fua)
                acknowledged.append((entry.volume.id, offset, entry.bytes))
                statistics.writesAcknowledged += 1
                touched.append((entry.volume.id, offset..<offset + entry.bytes.count))
                counts.done += 1
            case .failure(.io), .failure(.outOfSpace):
                model.hostWriteFailed(entry.volume.id, at: offset, entry.bytes)
                statistics.writesFailed += 1
                counts.failed += 1
            case .failure:
                counts.refused += 1
            }
        }
        let kind: OperationOutcome.Kind = counts.done > 0 ? .done : counts.failed > 0 ? .failed : .refused
        return OperationOutcome(kind: kind, text: "\(counts.done) ok, \(counts.failed) failed, \(counts.refused) refused")
    }

    private func execute(_ command: Command) -> OperationOutcome {
        do throws(ControllerError) {
            let (events, last) = try controller.executeRecorded(command)
            for (position, event) in events.enumerated() {
                acknowledged.append((last - UInt64(events.count - 1 - position), event))
            }
            statistics.commandsAcknowledged += 1
            return OperationOutcome(kind: .done, text: events.isEmpty ? "ok, no events" : "ok: " + events.map { "\($0.type)" }.joined(separator: ", "))
        } catch {
            statistics.commandsRefused += 1
            if case .storage = error { return OperationOutcome(kind: .failed, text: "\(error)") }
            return OperationOutcome(kind: .refused, text: "\(error.code): \(error)")
        }
    }

    private func expireInjectedErrors(except fresh: VolumeID?) {
        if commitFailureOperationsLeft > 0 {
            commitFailureOperationsLeft -= 1
            if commitFailureOperationsLeft == 0 { world.failingCommitsErrno = nil }
        }
        for (volumeID, left) in noSpaceOperationsLeft where volumeID != fresh {
            if left <= 1 {
                noSpaceOperationsLeft[volumeID] = nil
                world.fullVolumes.remove(volumeID)
            } else {
                noSpaceOperationsLeft[volumeID] = left - 1
            }
        }
        for (volumeID, left) in errorOperationsLeft where volumeID != fresh {
            if left <= 1 {
                errorOperationsLeft[volumeID] = nil
                world.failingVolumes.remove(volumeID)
                fullCheckDue = true
            } else {
                errorOperationsLeft[volumeID] = left - 1
            }
        }
    }

    /// Stops injecting errors and cancels a scheduled crash (the end of a run).
    public func quiesce() {
        commitFailureOperationsLeft = 0
        world.failingCommitsErrno = nil
        errorOperationsLeft.removeAll()
        world.failingVolumes.removeAll()
        noSpaceOperationsLeft.removeAll()
        world.fullVolumes.removeAll()
        world.crashAtIOPoint = nil
        fullCheckDue = true
    }

    /// Crashes (if a crash has not struck already) and starts a new controller on what survived,
    /// then checks everything a recovery must guarantee and settles the model on what survived.
    public func restart() {
        statistics.crashes += 1
        world.restart()
        // A controller cannot start while the log cannot record its start: the machine comes
        // back once commits work again (snapbackd exits with an error before that).
        commitFailureOperationsLeft = 0
        world.failingCommitsErrno = nil
        durable.lastCommitFailed = false
        do {
            controller = try Controller(
                durable: durable, volumes: volumes, clock: world.clock, version: Self.controllerVersion, marksCoalescing: marksCoalescing,
                waitsForFamily: world.waitsForFamily)
        } catch {
            fail(.controllerRecovers, "the controller did not start after the crash: \(error)")
            return
        }
        log?("   restarted: \(durable.events.count) durable events")
        model.read(durable.events)
        checkStateIsLogReduction(full: true)
        checkAcknowledgedEvents()
        guard violation == nil else { return }
        model.completedRollbacks.removeAll()
        model.changedWhole.removeAll()
        if world.failingVolumes.isEmpty {
            settleAll()
        } else {
            // Reads would hit the injected errors (and fault volumes): no observation.
            for volumeID in Array(model.volumes.keys) { model.volumes[volumeID]?.crashUnobserved() }
            fullCheckDue = true
        }
        checkedSplit.removeAll()
        checkBitmaps(whole: true)
    }

    // MARK: Checks

    /// Records `invariant` as broken (the first violation wins).
    func fail(_ invariant: Invariant, _ detail: String) {
        guard violation == nil else { return }
        violation = Violation(
            seed: seed, operationIndex: max(0, operationIndex - 1), operation: operationNote ?? currentOperation.map { "\($0)" } ?? "start",
            invariant: invariant,
            detail: detail, replayCommand: replayCommand)
        log?("   VIOLATION \(invariant): \(detail)")
        // The durable log's last events, for a post-mortem (a single seed's log only).
        if let log {
            for stored in durable.events.suffix(30) { log("   log #\(stored.sequence) @\(stored.timestampMilliseconds): \(stored.event)") }
        }
    }

    private func checkAfterOperation(touched: [(VolumeID, Range<Int>)], wholeBitmaps: Bool) {
        guard violation == nil else { return }
        model.read(durable.events)
        statistics.rollbacksStarted = model.rollbacksStarted
        statistics.rollbacksCompleted = model.rollbacksCompleted
        if let broken = model.restorePointViolations.first { fail(.restorePointRespected, broken) }
        if let broken = model.groupViolations.first { fail(.groupAtOneInstant, broken) }
        checkStateIsLogReduction(full: false)
        // Degraded exactly while the last durable commit failed.
        let degraded = controller.health.status == .degraded
        if violation == nil, degraded != durable.lastCommitFailed {
            fail(.controllerHealth, "the controller is \(controller.health.status.rawValue) but the last commit \(durable.lastCommitFailed ? "failed" : "succeeded")")
        }
        guard violation == nil, world.failingVolumes.isEmpty else { return }
        for mapID in model.completedRollbacks {
            // The map may be gone; its source is found in the log's state of the completion.
            if let map = model.replayed.maps[mapID] {
                checkRead(map.sourceID, nil, .now, invariant: .rollbackRestoresImage)
            }
        }
        model.completedRollbacks.removeAll()
        for volumeID in model.changedWhole.sorted() { checkRead(volumeID, nil, .now) }
        model.changedWhole.removeAll()
        if fullCheckDue || operationIndex % fullCheckInterval == 0 {
            fullCheckDue = false
            for volumeID in model.volumes.keys.sorted() { checkRead(volumeID, nil, .now) }
            checkedSplit.removeAll()
            checkBitmaps(whole: true)
            return
        }
        for (volumeID, range) in touched {
            checkRead(volumeID, range, .now)
            for map in model.replayed.forwardMaps(ofSource: volumeID) where map.imageValid {
                checkRead(map.targetID, range, .now, invariant: .imageUnchanged)
            }
        }
        checkBitmaps(whole: wholeBitmaps, touched: touched)
    }

    /// The last checks of a run: the whole log replayed, every acknowledged event kept, every
    /// volume, image and bitmap compared.
    public func finalCheck() {
        guard violation == nil, !world.crashed else { return }
        operationNote = "final check"
        model.read(durable.events)
        checkStateIsLogReduction(full: true)
        checkAcknowledgedEvents()
        guard violation == nil else { return }
        for mapID in model.completedRollbacks {
            if let map = model.replayed.maps[mapID] { checkRead(map.sourceID, nil, .now, invariant: .rollbackRestoresImage) }
        }
        model.completedRollbacks.removeAll()
        for volumeID in model.volumes.keys.sorted() { checkRead(volumeID, nil, .now) }
        checkedSplit.removeAll()
        checkBitmaps(whole: true)
    }

    private func checkAcknowledgedEvents() {
        for (sequence, event) in acknowledged {
            guard sequence >= 1, sequence <= durable.events.count, durable.events[Int(sequence) - 1].event == event else {
                fail(.acknowledgedEventKept, "acknowledged event #\(sequence) (\(event.type)) is not in the durable log of \(durable.events.count) events")
                return
            }
        }
    }

    /// Invariant (a): the controller's state is the log's reduction; `full` replays the whole
    /// durable log, else the model's incremental reduction is compared.
    private func checkStateIsLogReduction(full: Bool) {
        guard violation == nil else { return }
        let state = controller.state
        if full {
            do {
                let replayed = try durable.replayState()
                guard state == replayed else {
                    fail(.stateIsLogReduction, "the controller's state differs from durable.replayState() (\(durable.events.count) events)")
                    return
                }
            } catch {
                fail(.stateIsLogReduction, "the durable log does not replay: \(error)")
                return
            }
        }
        guard model.eventsRead == durable.events.count, state == model.replayed else {
            fail(.stateIsLogReduction, "the controller's state differs from the reduction of the \(durable.events.count) durable events")
            return
        }
    }

    /// Reads `range` of a volume (all of it when `nil`) through the controller and checks it
    /// against the model at `moment`. Unreadable (faulted) volumes are skipped. Returns the bytes.
    @discardableResult
    func checkRead(_ volumeID: VolumeID, _ range: Range<Int>?, _ moment: ByteModel.Moment, invariant: Invariant? = nil) -> [UInt8]? {
        guard violation == nil, let expected = model.volumes[volumeID] else { return nil }
        let range = range ?? 0..<expected.sizeBytes
        let parts = expected.knownParts(of: range, moment)
        guard !parts.isEmpty || moment == .afterCrash, !range.isEmpty else { return nil }
        let observed: [UInt8]
        do throws(HostIOError) {
            observed = try controller.read(volume: volumeID, offset: UInt64(range.lowerBound), length: range.count)
        } catch {
            return nil
        }
        statistics.bytesChecked += UInt64(observed.count)
        for part in parts {
            if let bad = expected.firstDisallowed(observed, part.lowerBound - range.lowerBound, at: part.lowerBound, count: part.count, moment) {
                let kind = invariant ?? (model.activeMap(targeting: volumeID) != nil ? .imageUnchanged : .hostDataKept)
                fail(kind, "\(describe(volumeID)) reads 0x\(hex(bad.observed)) at byte \(bad.offset)\(grainNote(volumeID, bad.offset)); allowed \(allowed(bad.allowed))\(moment == .afterCrash ? " after the crash" : "")")
                return observed
            }
        }
        return observed
    }

    /// Reads every volume after a restart, checks it against what may have survived, and makes
    /// what survived the model's known content.
    private func settleAll() {
        for volumeID in model.volumes.keys.sorted() {
            guard violation == nil else { return }
            if let observed = checkRead(volumeID, nil, .afterCrash) {
                model.volumes[volumeID]?.settle(observed: observed)
            } else {
                model.volumes[volumeID]?.crashUnobserved()
            }
        }
    }

    /// Invariant (f), for every active forward map: dirty grains are split; restored grains
    /// exist only during a rollback; split grains of the target (raw) hold the
    /// image, now and durably; clean grains of the source (raw) hold the image recorded at the
    /// start. `whole` compares every grain, else only newly split grains and `touched` ones.
    func checkBitmaps(whole: Bool, touched: [(VolumeID, Range<Int>)] = []) {
        for map in model.replayed.mapsByID where map.role == .forward && map.imageValid {
            guard violation == nil else { return }
            guard let bitmaps = controller.bitmaps(of: map.id) else {
                fail(.bitmapsHeld, "lcmap \(map.name) is active but has no bitmaps")
                return
            }
            if let grain = bitmaps.dirty.firstNotIn(bitmaps.split) {
                fail(.bitmapsHeld, "lcmap \(map.name): grain \(grain) is dirty but not split")
                return
            }
            if map.rollback == nil, !bitmaps.restored.isEmpty {
                fail(.bitmapsHeld, "lcmap \(map.name): grain \(bitmaps.restored.nextSet(from: 0)!) is marked restored with no rollback running")
                return
            }
            guard let image = model.volumes[map.targetID], let targetStore = volumes.stores[map.targetID],
                let sourceStore = volumes.stores[map.sourceID]
            else { continue }
            let grainBytes = Int(map.grainSizeBytes)
            let sizeBytes = image.sizeBytes
            func grainRange(_ grain: UInt64) -> Range<Int> { Int(grain) * grainBytes..<min(sizeBytes, (Int(grain) + 1) * grainBytes) }
            var grains: [UInt64] = []
            if whole {
                grains = Array(0..<map.grainsTotal)
            } else {
                let previous = checkedSplit[map.id]
                var grain = bitmaps.split.nextSet(from: 0)
                while let current = grain {
                    if previous == nil || previous!.grainCount != bitmaps.split.grainCount || !previous![current] { grains.append(current) }
                    grain = bitmaps.split.nextSet(from: current + 1)
                }
                for (volumeID, range) in touched where (volumeID == map.sourceID || volumeID == map.targetID) && !range.isEmpty {
                    grains += (UInt64(range.lowerBound / grainBytes))...(UInt64((range.upperBound - 1) / grainBytes))
                }
            }
            checkedSplit[map.id] = bitmaps.split
            for grain in Set(grains).sorted() where grain < map.grainsTotal {
                let range = grainRange(grain)
                if bitmaps.split[grain] {
                    for part in image.knownParts(of: range, .now) {
                        if let bad = image.firstDisallowed(targetStore.current, part.lowerBound, at: part.lowerBound, count: part.count, .now) {
                            fail(.bitmapsHeld, "lcmap \(map.name): grain \(grain) is split but the target holds 0x\(hex(bad.observed)) at byte \(bad.offset), the image \(allowed(bad.allowed))")
                            return
                        }
                    }
                    for part in image.knownParts(of: range, .afterCrash) {
                        if let bad = image.firstDisallowed(targetStore.durable, part.lowerBound, at: part.lowerBound, count: part.count, .afterCrash) {
                            fail(.bitmapsHeld, "lcmap \(map.name): grain \(grain) is durably split but the target durably holds 0x\(hex(bad.observed)) at byte \(bad.offset), the image \(allowed(bad.allowed))")
                            return
                        }
                    }
                }
                if !bitmaps.dirty[grain], let snapshot = model.snapshots[map.id] {
                    for (bytes, what) in [(sourceStore.current, "holds"), (sourceStore.durable, "durably holds")] {
                        for part in snapshot.knownParts(of: range, .either) {
                            if let bad = snapshot.firstDisallowed(bytes, part.lowerBound, at: part.lowerBound, count: part.count, .either) {
                                fail(.bitmapsHeld, "lcmap \(map.name): grain \(grain) is clean but the source \(what) 0x\(hex(bad.observed)) at byte \(bad.offset), the image \(allowed(bad.allowed))")
                                return
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: Descriptions

    func describe(_ volumeID: VolumeID) -> String {
        let name = model.replayed.volumes[volumeID]?.name ?? "#\(volumeID)"
        if let map = model.activeMap(targeting: volumeID) { return "target \(name) (image of lcmap \(map.name))" }
        if let map = model.replayed.runningRollback(onto: volumeID) { return "source \(name) (rolling back lcmap \(map.name))" }
        return "volume \(name)"
    }

    private func grainNote(_ volumeID: VolumeID, _ offset: Int) -> String {
        guard let map = model.replayed.mapsByID.first(where: { $0.role == .forward && ($0.sourceID == volumeID || $0.targetID == volumeID) })
        else { return "" }
        return " (grain \(offset / Int(map.grainSizeBytes)) of lcmap \(map.name))"
    }

    private func hex(_ value: UInt8) -> String { String(value, radix: 16) }

    private func allowed(_ values: [UInt8]) -> String {
        values.isEmpty ? "anything" : Array(Set(values)).sorted().map { "0x" + hex($0) }.joined(separator: " or ")
    }
}
