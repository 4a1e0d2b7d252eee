import Foundation
@_spi(Testing) import SnapbackController
import SnapbackCore
import SnapbackAdapters
import SnapbackData
import SnapbackSimulated
import SnapbackLog
import SnapbackTesting
import Testing

/// Group commit of coordinated writes (Specs/data-plane.md, "Batches"). The simulator makes
/// batches of its own (`SimulationOperation.writeBatch`) and checks them across crashes; these
/// tests check the queue that concurrent writers meet in, on real files and a real log.
@Suite("Write batches", .serialized)
struct WriteBatchTests {
    /// Eight threads make first writes (copy-on-write) to distinct grains of a source with an
    /// active snapshot. Every write is acknowledged, several share a batch, the source ends with
    /// every write, the image keeps the bytes of the start, and every written grain is durably
    /// split and dirty (a restarted controller loads the same bitmaps).
    @Test func concurrentFirstWritesShareBatchesAndKeepTheImage() async throws {
        try await onOwnThread { try Self.concurrentFirstWritesShareBatchesAndKeepTheImageBody() }
    }

    private static func concurrentFirstWritesShareBatchesAndKeepTheImageBody() throws {
        let directory = NSTemporaryDirectory() + "snapback-batch-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let grainBytes = 64 << 10, grainCount = 64, threads = 8
        let sizeBytes = grainBytes * grainCount
        let image = pattern(seed: 3, length: sizeBytes)
        var expected = image
        let mapID: MapID
        do {
            let log = try EventLog(directory: directory + "/log")
            defer { log.close() }
            let controller = try Controller(
                durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
                clock: { 1 }, version: "test")
            try controller.execute(.createVolume(name: "s", sizeBytes: UInt64(sizeBytes), path: nil))
            try controller.execute(.createVolume(name: "t", sizeBytes: UInt64(sizeBytes), path: nil))
            try controller.write(volume: 0, offset: 0, bytes: image, fua: true)
            try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: UInt32(grainBytes))))
            try controller.execute(.startMap(map: "m"))
            mapID = controller.state.map("m")!.id

            // Thread k writes the middle 4 KiB of grains k, k + 8, ...: each a first write.
            let writes = (0..<grainCount).map { grain in (offset: grain * grainBytes + 1000, bytes: pattern(seed: UInt64(100 + grain), length: 4096)) }
            for write in writes { expected.replaceSubrange(write.offset..<write.offset + 4096, with: write.bytes) }
            let errors = Progress(grainCount: 0)
            let group = DispatchGroup()
            startThreads(threads, group) { thread in
                for grain in stride(from: thread, to: grainCount, by: threads) {
                    do {
                        try controller.write(volume: 0, offset: UInt64(writes[grain].offset), bytes: writes[grain].bytes, fua: grain % 3 == 0)
                    } catch {
                        errors.lock.withLock { errors.failures.append("\(error)") }
                    }
                }
            }
            group.wait()
            #expect(errors.lock.withLock { errors.failures }.isEmpty)
            let batches = controller.coordinatedBatches
            #expect(batches.writes == grainCount, "every first write went through the queue")
            #expect(batches.batches < grainCount, "some writes shared a batch (\(batches.batches) batches)")
            #expect(try controller.read(volume: 0, offset: 0, length: sizeBytes) == expected)
            #expect(try controller.read(volume: 1, offset: 0, length: sizeBytes) == image, "the image keeps its bytes")
            let bitmaps = controller.bitmaps(of: mapID)!
            #expect(bitmaps.split.setCount == UInt64(grainCount) && bitmaps.dirty.setCount == UInt64(grainCount))
            try controller.checkpoint()
        }
        // What was acknowledged is durable: a new controller sees the same marks and bytes.
        let log = try EventLog(directory: directory + "/log")
        defer { log.close() }
        let controller = try Controller(
            durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
            clock: { 2 }, version: "test")
        let bitmaps = controller.bitmaps(of: mapID)!
        #expect(bitmaps.split.setCount == UInt64(grainCount) && bitmaps.dirty.setCount == UInt64(grainCount))
        #expect(try controller.read(volume: 1, offset: 0, length: sizeBytes) == image)
        // And a rollback brings the image back.
        try controller.execute(.startRestore(map: "m"))
        while controller.hasBackgroundWork { controller.step(budgetBytes: 1 << 20) }
        #expect(try controller.read(volume: 0, offset: 0, length: sizeBytes) == image)
        #expect(log.verify().isSound)
    }

    /// A batch is made as if its writes came one after another: overlapping writes end with the
    /// last one's bytes, copy-on-write copies each grain once, before any of them, and writes
    /// that must be made alone (a refused one) make the whole batch go one by one, each refused
    /// or done as alone.
    @Test func aBatchIsItsWritesInOrder() throws {
        let rig = try Rig(seed: 12)
        let image = try rig.scene(sizeBytes: 1 << 20, autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)
        let first = pattern(seed: 20, length: 100_000), second = pattern(seed: 21, length: 50_000)
        var expected = image
        expected.replaceSubrange(10_000..<110_000, with: first)
        expected.replaceSubrange(60_000..<110_000, with: second)
        let outcomes = batch(rig, [(0, 10_000, first, false), (0, 60_000, second, true)])
        #expect(outcomes.allSatisfy { if case .success = $0 { true } else { false } })
        #expect(try rig.read("s") == expected)
        #expect(try rig.read("t") == image)

        // With a write to the read-only target in it, each write is made alone.
        let third = pattern(seed: 22, length: 4096)
        let mixed = batch(rig, [(0, 500_000, third, false), (rig.id("t"), 0, third, false)])
        #expect(mixed.count == 2)
        if case .success = mixed[0] {} else { Issue.record("the source write should be done: \(mixed[0])") }
        if case .failure(let error) = mixed[1] {
            #expect(error == .readOnly(volume: "t"))
        } else {
            Issue.record("the target write should be refused")
        }
        expected.replaceSubrange(500_000..<504_096, with: third)
        #expect(try rig.read("s") == expected)
        #expect(try rig.read("t") == image)
    }

    private func batch(_ rig: Rig, _ writes: [(VolumeID, Int, [UInt8], Bool)]) -> [Result<Void, HostIOError>] {
        let buffers = writes.map { write in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: write.2.count, alignment: 1)
            buffer.copyBytes(from: write.2)
            return buffer
        }
        defer { buffers.forEach { $0.deallocate() } }
        return rig.controller.write(zip(writes, buffers).map { write, buffer in
            Controller.HostWrite(volumeID: write.0, offset: UInt64(write.1), bytes: UnsafeRawBufferPointer(buffer), fua: write.3)
        })
    }
}
