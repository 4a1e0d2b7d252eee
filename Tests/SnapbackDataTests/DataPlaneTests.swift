import Foundation
import SnapbackController
import SnapbackCore
import SnapbackAdapters
import SnapbackData
import SnapbackSimulated
import SnapbackLog
import SnapbackTesting
import Testing

@Suite("Data plane")
struct DataPlaneTests {
    @Test(arguments: 1...20 as ClosedRange<UInt64>)
    func anyInterleavingOfWritesAndCopyKeepsTheImage(seed: UInt64) throws {
        let rig = try Rig(seed: seed)
        var random = SeededRandom(seed: seed)
        let grain: UInt32 = Bool.random(using: &random) ? 64 << 10 : 256 << 10
        let size: UInt64 = UInt64(Int.random(in: 3...9, using: &random)) * (128 << 10) + 4096
        let image = try rig.scene(sizeBytes: size, autorestore: Bool.random(using: &random), copyRate: Int.random(in: 0...150, using: &random), grainSizeBytes: grain)
        var expectedSource = image
        for _ in 0..<40 {
            if Bool.random(using: &random) {
                let offset = UInt64.random(in: 0..<size, using: &random)
                let length = Int.random(in: 1...min(Int(size - offset), 300_000), using: &random)
                let bytes = pattern(seed: random.next(), length: length)
                try rig.write("s", offset, bytes, fua: Bool.random(using: &random))
                expectedSource.replaceSubrange(Int(offset)..<Int(offset) + length, with: bytes)
            } else {
                rig.controller.step(budgetBytes: UInt64.random(in: 1...(512 << 10), using: &random))
            }
            #expect(try rig.read("t") == image, "seed \(seed): the image changed")
        }
        #expect(try rig.read("s") == expectedSource)
        // After any history, a rollback makes the source equal the image byte for byte.
        try rig.controller.execute(.startRestore(map: "m"))
        rig.drain()
        #expect(try rig.read("s") == image, "seed \(seed): rollback result differs from the image")
        #expect(rig.controller.state.volume("s")?.status == .online)
    }

    @Test func aMapKeepsItsSnapshotSoASecondFaultRollsBackAgain() throws {
        let rig = try Rig(seed: 2)
        let image = try rig.scene()
        for round in 0..<2 {
            try rig.write("s", 10_000, pattern(seed: UInt64(40 + round), length: 300_000))
            #expect(try rig.read("s") != image)
            let events = try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "round \(round)"))
            #expect(events.count == 2, "fault and automatic rollback")
            #expect(rig.controller.state.volume("s")?.status == .restoring)
            // Reads during the rollback already show the image.
            #expect(try rig.read("s") == image)
            rig.drain()
            #expect(try rig.read("s") == image)
            #expect(rig.controller.state.volume("s")?.status == .online)
            #expect(rig.controller.state.map("m")?.imageValid == true)
        }
    }

    /// Found by the Promela model: a write during a rollback to a grain that was clean when the
    /// rollback started must not be overwritten by a later rollback step, nor hidden from reads.
    @Test func aWriteDuringARollbackToACleanGrainSurvivesTheRollback() throws {
        let rig = try Rig(seed: 12)
        let image = try rig.scene()
        try rig.write("s", 0, pattern(seed: 13, length: 64 << 10))  // grain 0 dirty
        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "x"))
        let update = pattern(seed: 14, length: 4096)
        let offset: UInt64 = 5 * (64 << 10) + 100  // grain 5: clean when the rollback started
        try rig.write("s", offset, update, fua: true)
        #expect(try rig.read("s", offset, update.count) == update, "a host must read back its own write")
        rig.drain()
        var expected = image
        expected.replaceSubrange(Int(offset)..<Int(offset) + update.count, with: update)
        #expect(try rig.read("s") == expected, "the rollback overwrote an acknowledged write")
    }

    /// Found by the Promela model: a write without FUA just before a start must not be able to
    /// change the image after the fact, so the start syncs the source first.
    @Test func startingAMapMakesTheSourceDurableFirst() throws {
        let rig = try Rig(seed: 15)
        try rig.controller.execute(.createVolume(name: "s", sizeBytes: 1 << 20, path: nil))
        try rig.controller.execute(.createVolume(name: "t", sizeBytes: 1 << 20, path: nil))
        try rig.write("s", 0, pattern(seed: 16, length: 1 << 20), fua: false)
        try rig.controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)))
        try rig.controller.execute(.startMap(map: "m"))
        let image = try rig.read("t")
        try rig.restart()
        #expect(try rig.read("t") == image, "a crash changed the image of a started map")
    }

    @Test func repeatingACompletedStepChangesNothing() throws {
        let rig = try Rig(seed: 3)
        let image = try rig.scene(copyRate: 150)
        try rig.write("s", 0, pattern(seed: 8, length: 200_000))
        rig.drain()
        let commits = rig.durable.commits
        let source = try rig.read("s")
        for _ in 0..<5 { rig.controller.step(budgetBytes: 1 << 20) }
        #expect(rig.durable.commits == commits)
        #expect(try rig.read("s") == source)
        #expect(try rig.read("t") == image)
    }

    /// Issue 12, part 7: a map's target is read-only to hosts while the map exists, whatever its
    /// autorestore (the image a later rollback restores must be the point-in-time image).
    @Test func theTargetIsReadOnlyWhileItsMapExists() throws {
        let rig = try Rig(seed: 4)
        let image = try rig.scene(autorestore: true)
        let commits = rig.durable.commits
        #expect(throws: HostIOError.readOnly(volume: "t")) { try rig.write("t", 0, [1, 2, 3]) }
        #expect(rig.durable.commits == commits)
        #expect(try rig.read("t") == image)
        // With autorestore off too.
        try rig.controller.execute(.changeMap(map: "m", autorestore: false, copyRate: nil, newName: nil))
        let after = rig.durable.commits
        #expect(throws: HostIOError.readOnly(volume: "t")) { try rig.write("t", 100, [9, 9, 9]) }
        #expect(rig.durable.commits == after)
        #expect(try rig.read("t") == image)
        // Once the map is gone, the target is an ordinary volume (holding whatever it held).
        try rig.controller.execute(.removeMap(map: "m", force: true))
        try rig.write("t", 100, [9, 9, 9])
        #expect(try rig.read("t", 100, 3) == [9, 9, 9])
    }

    @Test func outOfRangeRequestsAreRefusedAndChangeNothing() throws {
        let rig = try Rig(seed: 5)
        let image = try rig.scene()
        let commits = rig.durable.commits
        let size: UInt64 = 1 << 20
        #expect(throws: HostIOError.outOfRange(offset: size, length: 1, sizeBytes: size)) { try rig.write("s", size, [1]) }
        #expect(throws: HostIOError.outOfRange(offset: size - 1, length: 2, sizeBytes: size)) { _ = try rig.read("s", size - 1, 2) }
        #expect(throws: HostIOError.outOfRange(offset: .max, length: 2, sizeBytes: size)) { try rig.write("s", .max, [1, 2]) }
        #expect(throws: HostIOError.unknownVolume("99")) { try rig.controller.write(volume: 99, offset: 0, bytes: [1], fua: false) }
        #expect(rig.durable.commits == commits)
        #expect(try rig.read("s") == image)
    }

    @Test func anIOErrorOnTheSourceFaultsItAndRollsBackAutomatically() throws {
        let rig = try Rig(seed: 6)
        let image = try rig.scene(autorestore: true)
        try rig.write("s", 0, pattern(seed: 11, length: 70_000))
        rig.world.failingVolumes = [rig.id("s")]
        #expect(throws: HostIOError.self) { try rig.write("s", 0, [1, 2, 3]) }
        rig.world.failingVolumes = []
        let events = rig.durable.events.map(\.event)
        let fault = events.first { if case .volumeFaulted(_, _, .ioError, _) = $0 { true } else { false } }
        #expect(fault != nil)
        #expect(events.contains { if case .rollbackStarted(_, .auto, .some) = $0 { true } else { false } })
        rig.drain()
        #expect(try rig.read("s") == image)
    }

    @Test func aVanishedBackingStoreIsAFaultAtStartupNeverFixed() throws {
        let rig = try Rig(seed: 7)
        _ = try rig.scene(autorestore: false)
        rig.volumes.vanish(rig.id("s"))
        try rig.restart()
        let volume = rig.controller.state.volume("s")!
        #expect(volume.status == .faulted)
        #expect(volume.fault?.cause == .backingMissing)
        #expect(throws: HostIOError.faulted(volume: "s")) { _ = try rig.read("s", 0, 10) }
        #expect(rig.volumes.stores[volume.id] == nil, "the missing store must not be recreated")
    }

    @Test func faultingAVolumeWithoutAMapJustFaultsIt() throws {
        let rig = try Rig(seed: 8)
        try rig.controller.execute(.createVolume(name: "lonely", sizeBytes: 1 << 20, path: nil))
        let events = try rig.controller.execute(.reportFault(volume: "lonely", cause: .operator, reason: "disk noise"))
        #expect(events.count == 1)
        #expect(throws: HostIOError.faulted(volume: "lonely")) { try rig.write("lonely", 0, [1]) }
        try rig.controller.execute(.recoverVolume(volume: "lonely"))
        try rig.write("lonely", 0, [1])
    }

    /// A background copy cannot read a faulted source: it waits without counting as work (the
    /// daemon would otherwise step it a thousand times a second), and goes on once the source
    /// is recovered.
    @Test func aCopyWaitsWhileItsSourceIsFaultedAndGoesOnAfterRecovery() throws {
        let rig = try Rig(seed: 9)
        let image = try rig.scene(sizeBytes: 1 << 20, autorestore: false, copyRate: 50)
        rig.controller.step(budgetBytes: 64 << 10)
        #expect(rig.controller.state.map("m")?.state == .copying)
        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "test"))
        #expect(rig.controller.state.volume("s")?.status == .faulted, "autorestore is off: no rollback")
        #expect(!rig.controller.hasBackgroundWork)
        #expect(rig.controller.copyRatesBytesPerSecond.isEmpty)
        #expect(rig.controller.step(budgetBytes: 1 << 20).bytesCopied == 0)
        try rig.controller.execute(.recoverVolume(volume: "s"))
        #expect(rig.controller.hasBackgroundWork)
        rig.drain()
        #expect(rig.controller.state.map("m")?.state == .idleOrCopied)
        #expect(try rig.read("t") == image)
    }
}

@Suite("Data plane on real files and a real LMDB log")
struct RealStoreTests {
    @Test func rollbackOnRealFilesAndBackingChecksAtStartup() throws {
        let directory = NSTemporaryDirectory() + "snapback-data-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let image: [UInt8]
        do {
            let log = try EventLog(directory: directory + "/log")
            let controller = try Controller(
                durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
                clock: { 1 }, version: "test")
            try controller.execute(.createVolume(name: "s", sizeBytes: 2 << 20, path: nil))
            try controller.execute(.createVolume(name: "t", sizeBytes: 2 << 20, path: nil))
            try controller.write(volume: 0, offset: 0, bytes: pattern(seed: 1, length: 2 << 20), fua: true)
            try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0)))
            try controller.execute(.startMap(map: "m"))
            image = try controller.read(volume: 0, offset: 0, length: 2 << 20)
            try controller.write(volume: 0, offset: 300_000, bytes: pattern(seed: 2, length: 600_000), fua: true)
            try controller.execute(.reportFault(volume: "s", cause: .operator, reason: "test"))
            // Stop half way: the rest must be finished by the next controller.
            controller.step(budgetBytes: 256 << 10, copies: false)
            log.close()
        }
        do {
            let log = try EventLog(directory: directory + "/log")
            let controller = try Controller(
                durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
                clock: { 2 }, version: "test")
            #expect(controller.state.volume("s")?.status == .restoring)
            while controller.hasBackgroundWork { controller.step(budgetBytes: 1 << 20) }
            #expect(try controller.read(volume: 0, offset: 0, length: 2 << 20) == image)
            let raw = try FileBlockStore.open(path: directory + "/volumes/0.img", sizeBytes: 2 << 20)
            #expect(try raw.read(at: 0, length: 2 << 20) == image)
            #expect(log.verify().isSound)
            log.close()
        }
        // A resized backing file is a fault, reported with its sizes, not fixed.
        #expect(truncate(directory + "/volumes/1.img", 1 << 20) == 0)
        let log = try EventLog(directory: directory + "/log")
        let controller = try Controller(
            durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
            clock: { 3 }, version: "test")
        let target = controller.state.volume("t")!
        #expect(target.status == .faulted)
        #expect(target.fault?.cause == .backingResized)
        #expect(controller.state.map("m")?.state == .stopped, "a faulted target stops its map")
        let size = try FileManager.default.attributesOfItem(atPath: directory + "/volumes/1.img")[.size] as! Int
        #expect(size == 1 << 20)
    }
}
