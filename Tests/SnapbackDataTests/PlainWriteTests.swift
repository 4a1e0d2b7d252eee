import Foundation
@_spi(Testing) import SnapbackController
import SnapbackCore
import SnapbackAdapters
import SnapbackData
import SnapbackSimulated
import SnapbackLog
import SnapbackTesting
import Testing

/// What writer threads did, under `lock`.
final class Progress: @unchecked Sendable {
    let lock = NSLock()
    var begun: [UInt64]
    var acknowledged: [UInt64]
    var stop = false
    var failures: [String] = []

    init(grainCount: Int) {
        begun = Array(repeating: 0, count: grainCount)
        acknowledged = Array(repeating: 0, count: grainCount)
    }
}

/// Host writes that need no coordination run outside the controller's lock (Specs/data-plane.md,
/// "Concurrency: the lock and the gate").
@Suite("Plain writes and the gate", .serialized)
struct PlainWriteTests {
    private func writeImmediately(_ rig: Rig, _ name: String, _ offset: UInt64, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { rig.controller.writeImmediately(volume: rig.id(name), offset: offset, from: $0) }
    }

    @Test func writeImmediatelyTakesOnlyWritesThatNeedNoCoordination() throws {
        let rig = try Rig(seed: 5)
        let image = try rig.scene(sizeBytes: 1 << 20, autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)
        let fresh = pattern(seed: 9, length: 4096)

        // Grain 0 is not split yet: the write needs a copy-on-write, so it is declined, untouched.
        #expect(!writeImmediately(rig, "s", 0, fresh))
        #expect(try rig.read("s") == image)
        #expect(rig.controller.bitmaps(of: rig.controller.state.map("m")!.id)!.split.isEmpty)

        // Once the copy-on-write has split and dirtied grain 0, a write inside it is plain.
        try rig.write("s", 0, pattern(seed: 8, length: 100), fua: false)
        #expect(writeImmediately(rig, "s", 4096, fresh))
        #expect(try rig.read("s", 4096, 4096) == fresh)
        #expect(try rig.read("t") == image, "the image keeps its bytes")
        // A write reaching into grain 1 (not split) is declined as a whole.
        #expect(!writeImmediately(rig, "s", (64 << 10) - 10, fresh))
        #expect(try rig.read("s", 64 << 10, 4096) == Array(image[(64 << 10)..<(68 << 10)]))

        // A target with autorestore on is read-only; a range outside the volume is refused.
        #expect(!writeImmediately(rig, "t", 0, fresh))
        #expect(!writeImmediately(rig, "s", (1 << 20) - 100, fresh))
        #expect(try rig.read("t") == image)

        // During a rollback every write is coordinated (restore before write).
        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "test"))
        #expect(rig.controller.state.volume("s")?.status == .restoring)
        #expect(!writeImmediately(rig, "s", 4096, fresh))
        rig.drain()
        #expect(try rig.read("s") == image)

        // A volume without maps takes plain writes; a faulted one does not.
        try rig.controller.execute(.createVolume(name: "w", sizeBytes: 1 << 20, path: nil))
        #expect(writeImmediately(rig, "w", 100, fresh))
        #expect(try rig.read("w", 100, 4096) == fresh)
        try rig.controller.execute(.reportFault(volume: "w", cause: .operator, reason: "test"))
        #expect(!writeImmediately(rig, "w", 100, pattern(seed: 10, length: 4096)))
    }

    /// While an exclusive holder runs, no plain write lands: the source, read twice from its
    /// file across 20 ms inside one exclusive section, does not change, although four threads
    /// rewrite all of it all the time (immediate and ordinary plain writes of 16 MiB, which take
    /// long enough that one is often in flight when a section begins).
    @Test func noPlainWriteLandsWhileAnExclusiveHolderRuns() async throws {
        try await onOwnThread { try Self.noPlainWriteLandsWhileAnExclusiveHolderRunsBody() }
    }

    private static func noPlainWriteLandsWhileAnExclusiveHolderRunsBody() throws {
        let (directory, log, controller) = try Self.realController()
        defer {
            log.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
        let sizeBytes = 16 << 20
        try controller.execute(.createVolume(name: "s", sizeBytes: UInt64(sizeBytes), path: nil))
        let file = try FileBlockStore.open(path: directory + "/volumes/0.img", sizeBytes: UInt64(sizeBytes))
        let shared = Progress(grainCount: 1)
        let group = DispatchGroup()
        startThreads(4, group) { writer in
            var random = SeededRandom(seed: UInt64(writer + 1))
            var bytes = [UInt8](repeating: UInt8(writer + 1), count: sizeBytes)
            var count: UInt64 = 0
            while !shared.lock.withLock({ shared.stop }) {
                count += 1
                withUnsafeBytes(of: (count << 8 | UInt64(writer)).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
                let immediate = Bool.random(using: &random) && bytes.withUnsafeBytes { controller.writeImmediately(volume: 0, offset: 0, from: $0) }
                if !immediate {
                    do {
                        try controller.write(volume: 0, offset: 0, bytes: bytes, fua: false)
                    } catch {
                        shared.lock.withLock { shared.failures.append("\(error)") }
                        return
                    }
                }
                shared.lock.withLock { shared.acknowledged[0] += 1 }
            }
        }
        while shared.lock.withLock({ shared.acknowledged[0] < 4 && shared.failures.isEmpty }) { Thread.sleep(forTimeInterval: 0.001) }
        var changedSections = 0
        for _ in 0..<20 {
            let (before, after) = try controller.exclusiveForTesting { () throws -> ([UInt8], [UInt8]) in
                let before = try file.read(at: 0, length: sizeBytes)
                Thread.sleep(forTimeInterval: 0.02)
                return (before, try file.read(at: 0, length: sizeBytes))
            }
            if before != after { changedSections += 1 }
            Thread.sleep(forTimeInterval: 0.005)
        }
        shared.lock.withLock { shared.stop = true }
        group.wait()
        #expect(changedSections == 0, "plain writes landed during \(changedSections) of 20 exclusive sections")
        #expect(shared.lock.withLock { shared.failures }.isEmpty)
        #expect(try file.read(at: 0, length: 8) != [UInt8](repeating: 0, count: 8), "the writers wrote")
    }

    /// A controller on real files and a real LMDB log in a new temporary directory.
    private static func realController() throws -> (directory: String, log: EventLog, controller: Controller) {
        let directory = NSTemporaryDirectory() + "snapback-gate-\(UUID().uuidString)"
        let log = try EventLog(directory: directory + "/log")
        let controller = try Controller(
            durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
            clock: { 1 }, version: "test")
        return (directory, log, controller)
    }

    /// Grain contents that name their version: the first 8 bytes are the version, every other
    /// byte its low byte, so a torn or mixed grain shows.
    private static func grainBytes(version: UInt64, grainBytes: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: version), count: grainBytes)
        withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        return bytes
    }

    private static func version(of grain: ArraySlice<UInt8>) -> UInt64? {
        let version = grain.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        return grain.dropFirst(8).allSatisfy({ $0 == UInt8(truncatingIfNeeded: version) }) ? version : nil
    }

    /// Four threads write whole grains (plain writes, immediate ones and coordinated ones mixed)
    /// while the map is stopped and restarted again and again. Each start's image must hold, for
    /// every grain, an untorn version no older than the last write acknowledged before the start
    /// and no newer than the last write begun before it ended, and must not change while the
    /// writers go on. A plain write that overlapped a start would break one of these.
    @Test func plainWritesRacingMapStartsKeepEveryImage() async throws {
        try await onOwnThread { try Self.plainWritesRacingMapStartsKeepEveryImageBody() }
    }

    private static func plainWritesRacingMapStartsKeepEveryImageBody() throws {
        let (directory, log, controller) = try Self.realController()
        defer {
            log.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
        let grainBytes = 64 << 10, grainCount = 32, writers = 4
        try controller.execute(.createVolume(name: "s", sizeBytes: UInt64(grainBytes * grainCount), path: nil))
        try controller.execute(.createVolume(name: "t", sizeBytes: UInt64(grainBytes * grainCount), path: nil))
        for grain in 0..<grainCount {
            try controller.write(volume: 0, offset: UInt64(grain * grainBytes), bytes: Self.grainBytes(version: 0, grainBytes: grainBytes), fua: false)
        }
        try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: UInt32(grainBytes))))

        let shared = Progress(grainCount: grainCount)
        let progress = shared.lock
        let group = DispatchGroup()
        startThreads(writers, group) { writer in
            var random = SeededRandom(seed: UInt64(writer + 1))
            var version: UInt64 = 0
            while true {
                let grain = writer + writers * Int.random(in: 0..<(grainCount / writers), using: &random)
                version += 1
                let bytes = Self.grainBytes(version: version, grainBytes: grainBytes)
                let stop = progress.withLock { () -> Bool in
                    shared.begun[grain] = version
                    return shared.stop
                }
                if stop { return }
                let offset = UInt64(grain * grainBytes)
                let immediate = Bool.random(using: &random) && bytes.withUnsafeBytes { controller.writeImmediately(volume: 0, offset: offset, from: $0) }
                if !immediate {
                    do {
                        try controller.write(volume: 0, offset: offset, bytes: bytes, fua: Bool.random(using: &random) && version % 16 == 0)
                    } catch {
                        progress.withLock { shared.failures.append("\(error)") }
                        return
                    }
                }
                progress.withLock { shared.acknowledged[grain] = version }
            }
        }
        defer {
            progress.withLock { shared.stop = true }
            group.wait()
        }

        while progress.withLock({ shared.acknowledged.allSatisfy { $0 == 0 } && shared.failures.isEmpty }) { Thread.sleep(forTimeInterval: 0.001) }
        for round in 0..<12 {
            if round > 0 { try controller.execute(.stopMap(map: "m", force: false)) }
            let floor = progress.withLock { shared.acknowledged }
            try controller.execute(.startMap(map: "m"))
            let ceiling = progress.withLock { shared.begun }
            let image = try controller.read(volume: 1, offset: 0, length: grainBytes * grainCount)
            for grain in 0..<grainCount {
                let version = Self.version(of: image[(grain * grainBytes)..<((grain + 1) * grainBytes)])
                #expect(version != nil, "round \(round): grain \(grain) of the image is torn")
                if let version {
                    #expect(version >= floor[grain] && version <= ceiling[grain],
                            "round \(round): grain \(grain) holds version \(version), outside \(floor[grain])...\(ceiling[grain])")
                }
            }
            Thread.sleep(forTimeInterval: 0.02)
            #expect(try controller.read(volume: 1, offset: 0, length: grainBytes * grainCount) == image, "round \(round): the image changed")
        }
        progress.withLock { shared.stop = true }
        group.wait()
        #expect(progress.withLock { shared.failures }.isEmpty)
        #expect(progress.withLock { shared.acknowledged.reduce(0, +) } > 0, "the writers wrote")
    }
}
