import Foundation
@testable import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated
import Testing

/// The anomaly detector in the data path (`Specs/detection.md`, "Sampling"): only acknowledged
/// host writes count, whichever path makes them, and the sample counter stays the acknowledged
/// bytes modulo the stride when writes fail or are refused.
@Suite("detection sampling")
struct DetectionSamplingTests {
    let world = SimulatedWorld(seed: 1)
    let controller: Controller
    let source: VolumeID = 0
    let target: VolumeID = 1

    init() throws {
        controller = try Controller(
            durable: SimulatedDurableStore(world: world), volumes: SimulatedVolumeProvider(world: world), clock: world.clock,
            version: "test")
        try controller.execute(.createVolume(name: "v", sizeBytes: 4 << 20, path: nil, detection: .medium))
        try controller.execute(.createVolume(name: "t", sizeBytes: 4 << 20, path: nil))
        try controller.execute(
            .createMap(CreateMap(source: "v", target: "t", name: "m", autorestore: false, copyRate: 0, grainSizeBytes: 64 << 10)))
    }

    /// The source's detector: the interval being filled and the sample counter.
    var counted: (bytes: UInt64, samples: UInt32, overwrites: UInt32, sinceSample: UInt64) {
        let detector = controller.detector(source)!
        return detector.lock.withLock {
            (detector.interval.bytesWritten, detector.interval.sampledBlocks, detector.interval.overwriteSamples, detector.sinceSample)
        }
    }

    /// Random bytes (high entropy) of `count` bytes.
    func randomBytes(_ count: Int) -> [UInt8] {
        var random = SeededRandom(seed: UInt64(count))
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    @Test("a plain write made at once counts its bytes and one sample per 64 KiB, with what it overwrote")
    func plainImmediate() throws {
        try controller.write(volume: source, offset: 0, bytes: randomBytes(1 << 20), fua: false)  // data to overwrite
        let before = counted
        #expect(before.bytes == 1 << 20 && before.samples == 16 && before.overwrites == 0 && before.sinceSample == 0)
        let bytes = randomBytes(192 << 10)
        let written = bytes.withUnsafeBytes { controller.writeImmediately(volume: source, offset: 0, from: $0) }
        #expect(written)
        let after = counted
        #expect(after.bytes == before.bytes + (192 << 10))
        #expect(after.samples == before.samples + 3)
        #expect(after.overwrites == 3)  // the old blocks were read: random data, not free space
    }

    @Test("a write made at once that fails counts nothing; made again, it counts once")
    func immediateFailure() throws {
        try controller.write(volume: source, offset: 0, bytes: randomBytes(40 << 10), fua: false)
        let before = counted
        #expect(before.bytes == 40 << 10 && before.samples == 0 && before.sinceSample == 40 << 10)
        world.fullVolumes = [source]
        let bytes = randomBytes(48 << 10)
        let written = bytes.withUnsafeBytes { controller.writeImmediately(volume: source, offset: 1 << 20, from: $0) }
        #expect(!written)
        #expect(counted == before)
        world.fullVolumes = []
        try controller.write(volume: source, offset: 1 << 20, bytes: bytes, fua: false)
        let after = counted
        #expect(after.bytes == (40 + 48) << 10)
        #expect(after.samples == 1)
        #expect(after.sinceSample == (88 - 64) << 10)
    }

    @Test("a refused or failed write counts nothing, on the plain and the coordinated path")
    func refusedOrFailed() throws {
        try controller.write(volume: source, offset: 0, bytes: randomBytes(100 << 10), fua: false)
        let before = counted
        // Out of range: refused before any I/O.
        #expect(throws: HostIOError.self) { try controller.write(volume: source, offset: 4 << 20, bytes: randomBytes(64 << 10), fua: false) }
        #expect(counted == before)
        // A disk error on the plain path: the volume faults, the host hears of it.
        world.fullVolumes = [source]
        #expect(throws: HostIOError.self) { try controller.write(volume: source, offset: 0, bytes: randomBytes(128 << 10), fua: false) }
        #expect(counted == before)
        world.fullVolumes = []
        // A copy-on-write whose target is full: the write is refused, the image survives.
        try controller.execute(.startMap(map: "m"))
        world.fullVolumes = [target]
        #expect(throws: HostIOError.self) { try controller.write(volume: source, offset: 1 << 20, bytes: randomBytes(256 << 10), fua: false) }
        #expect(counted == before)
        world.fullVolumes = []
        // Then the same write, acknowledged: counted once, its old blocks known.
        try controller.write(volume: source, offset: 1 << 20, bytes: randomBytes(256 << 10), fua: false)
        let after = counted
        #expect(after.bytes == before.bytes + (256 << 10))
        #expect(after.samples == before.samples + 4)
        #expect(after.sinceSample == before.sinceSample)
    }

    @Test("a batch counts its acknowledged writes only")
    func batch() throws {
        try controller.execute(.startMap(map: "m"))
        let detector = controller.detector(source)!
        let first = randomBytes(64 << 10)
        let second = randomBytes(128 << 10)
        let outcomes = first.withUnsafeBytes { first in
            second.withUnsafeBytes { second in
                var writes = [
                    Controller.HostWrite(volumeID: source, offset: 0, bytes: first, fua: false),
                    Controller.HostWrite(volumeID: source, offset: 2 << 20, bytes: second, fua: false),
                ]
                for index in writes.indices {
                    writes[index].detector = detector
                    writes[index].samples = controller.reserveSamples(detector, length: writes[index].bytes.count)
                }
                return controller.write(writes)
            }
        }
        #expect(outcomes.allSatisfy { if case .success = $0 { true } else { false } })
        let after = counted
        #expect(after.bytes == 192 << 10 && after.samples == 3 && after.sinceSample == 0)
    }
}
