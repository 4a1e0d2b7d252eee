import Foundation
@_spi(Testing) @testable import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated
import Testing

/// Concurrency by volume family: a holder of one family's gates never blocks host I/O on a
/// volume of another family, and does block plain I/O on its own.
@Suite("family gates")
struct FamilyGatesTests {
    /// a → a2 (a map), and b alone: two families. The world must outlive the controller (its
    /// clock refers to it).
    static func controller(_ world: SimulatedWorld) throws -> Controller {
        let controller = try Controller(
            durable: SimulatedDurableStore(world: world), volumes: SimulatedVolumeProvider(world: world), clock: world.clock, version: "test")
        for name in ["a", "a2", "b"] { try controller.execute(.createVolume(name: name, sizeBytes: 1 << 20, path: nil)) }
        try controller.execute(.createMap(CreateMap(source: "a", target: "a2", name: "m", copyRate: 0, grainSizeBytes: 64 << 10)))
        return controller
    }

    /// Holds the family of `volume` on a thread of its own; returns once the hold has begun, with
    /// a function that ends it.
    static func holdFamily(_ controller: Controller, of volume: VolumeID) -> () -> Void {
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let ended = DispatchSemaphore(value: 0)
        Thread {
            controller.exclusive(volumes: { [volume] }) {
                started.signal()
                // As a holder doing I/O does: the gates held, the state lock released.
                controller.unlocked { release.wait() }
            }
            ended.signal()
        }.start()
        started.wait()
        return {
            release.signal()
            ended.wait()
        }
    }

    @Test("I/O on another family goes on while a family is held; I/O on the held family waits")
    func familiesDoNotWaitOnEachOther() throws {
        let world = SimulatedWorld(seed: 1)
        let controller = try Self.controller(world)
        let state = controller.state
        let (a, b) = (state.volume("a")!.id, state.volume("b")!.id)
        #expect(controller.locked { controller.familyLocked([a]) } == [a, state.volume("a2")!.id])
        #expect(controller.locked { controller.familyLocked([b]) } == [b])

        let release = Self.holdFamily(controller, of: a)
        // Another family: a write, a read and a flush complete while a's family is held.
        let other = DispatchSemaphore(value: 0)
        Thread {
            try? controller.write(volume: b, offset: 4096, bytes: [UInt8](repeating: 7, count: 4096), fua: true)
            _ = try? controller.read(volume: b, offset: 0, length: 8192)
            other.signal()
        }.start()
        #expect(other.wait(timeout: .now() + 10) == .success, "I/O on b waited for a's family")
        // The held family: a plain write to a waits until the hold ends.
        let same = DispatchSemaphore(value: 0)
        Thread {
            try? controller.write(volume: a, offset: 0, bytes: [UInt8](repeating: 9, count: 4096), fua: false)
            same.signal()
        }.start()
        #expect(same.wait(timeout: .now() + 0.3) == .timedOut, "a write to a landed while its family was held")
        release()
        #expect(same.wait(timeout: .now() + 10) == .success)
        #expect(try controller.read(volume: a, offset: 0, length: 4096) == [UInt8](repeating: 9, count: 4096))
        #expect(try controller.read(volume: b, offset: 4096, length: 4096) == [UInt8](repeating: 7, count: 4096))
    }

    @Test("a family that grows while its gates are being taken is taken again, whole")
    func familyGrowsWhileTaken() throws {
        let world = SimulatedWorld(seed: 1)
        let controller = try Self.controller(world)
        let state = controller.state
        let (a, b) = (state.volume("a")!.id, state.volume("b")!.id)
        // A command joining b to a's family (a map a2 → b... a source may have several targets:
        // a → b) holds both families.
        try controller.execute(.createMap(CreateMap(source: "a", target: "b", name: "n", copyRate: 0, grainSizeBytes: 64 << 10)))
        #expect(controller.locked { controller.familyLocked([b]) }.contains(a))
        let release = Self.holdFamily(controller, of: b)
        let blocked = DispatchSemaphore(value: 0)
        Thread {
            try? controller.write(volume: a, offset: 0, bytes: [UInt8](repeating: 1, count: 512), fua: false)
            blocked.signal()
        }.start()
        #expect(blocked.wait(timeout: .now() + 0.3) == .timedOut, "a is in b's family now: its write must wait")
        release()
        #expect(blocked.wait(timeout: .now() + 10) == .success)
    }

    @Test("grain copies and commits trap unless the thread holds the volumes' gates")
    func holdsAreChecked() async throws {
        await #expect(processExitsWith: .failure) {
            let world = SimulatedWorld(seed: 1)
        let controller = try Self.controller(world)
            let m = controller.state.map("m")!
            controller.lock.withLock {
                _ = try? controller.performCopies([GrainCopy(map: m.id, from: m.sourceID, to: m.targetID, grains: [0])])
            }
        }
    }

    @Test("a step tells whether hosts used volumes outside the families with background work since the previous step")
    func stepSeesOtherVolumesBusy() throws {
        let world = SimulatedWorld(seed: 2)
        let controller = try Self.controller(world)
        let (a, b) = (controller.state.volume("a")!.id, controller.state.volume("b")!.id)
        try controller.execute(.changeMap(map: "m", autorestore: true, copyRate: nil, newName: nil))
        try controller.execute(.startMap(map: "m"))
        // A rollback of a's family: the whole volume dirty, in small steps so that it lasts.
        try controller.write(volume: a, offset: 0, bytes: [UInt8](repeating: 1, count: 1 << 20), fua: true)
        try controller.execute(.reportFault(volume: "a", cause: .operator, reason: "test"))
        #expect(controller.state.volume("a")!.status == .restoring)
        _ = controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:])
        // Nobody else: not busy. I/O on a itself (its own family) does not count either.
        #expect(!controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:]).othersBusy)
        _ = try controller.read(volume: a, offset: 0, length: 4096)
        #expect(!controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:]).othersBusy)
        // A host write to b, another family, between two steps: busy for the next step only.
        try controller.write(volume: b, offset: 0, bytes: [UInt8](repeating: 2, count: 4096), fua: false)
        #expect(controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:]).othersBusy)
        #expect(!controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:]).othersBusy)
        _ = try controller.read(volume: b, offset: 0, length: 4096)
        #expect(controller.step(rollbackBudgetBytes: 64 << 10, copyBudgetsBytes: [:]).othersBusy)
    }

    @Test("a coordinated write on one family never waits for another family's batch")
    func batchesOfFamiliesSideBySide() throws {
        let world = SimulatedWorld(seed: 3)
        let controller = try Self.controller(world)
        try controller.execute(.createVolume(name: "b2", sizeBytes: 1 << 20, path: nil))
        try controller.execute(.createMap(CreateMap(source: "b", target: "b2", name: "mb", copyRate: 0, grainSizeBytes: 64 << 10)))
        try controller.execute(.startMap(map: "m"))
        try controller.execute(.startMap(map: "mb"))
        let (a, b) = (controller.state.volume("a")!.id, controller.state.volume("b")!.id)
        // a's family held: a first write to a (copy-on-write: a coordinated write) makes a batch
        // in a's lane that waits for the gates.
        let release = Self.holdFamily(controller, of: a)
        let aDone = DispatchSemaphore(value: 0)
        Thread {
            try? controller.write(volume: a, offset: 0, bytes: [UInt8](repeating: 1, count: 4096), fua: false)
            aDone.signal()
        }.start()
        Thread.sleep(forTimeInterval: 0.1)
        #expect(aDone.wait(timeout: .now()) == .timedOut, "a's write waits for its family's gates")
        // A first write to b, another family, batches in its own lane meanwhile.
        let bDone = DispatchSemaphore(value: 0)
        Thread {
            try? controller.write(volume: b, offset: 0, bytes: [UInt8](repeating: 2, count: 4096), fua: false)
            bDone.signal()
        }.start()
        #expect(bDone.wait(timeout: .now() + 10) == .success, "b's coordinated write waited for a's batch")
        release()
        #expect(aDone.wait(timeout: .now() + 10) == .success)
        #expect(controller.coordinatedBatches.writes == 2)
        #expect(controller.bitmaps(of: controller.state.map("m")!.id)!.split[0])
        #expect(controller.bitmaps(of: controller.state.map("mb")!.id)!.split[0])
    }
}
