import Foundation
import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated
import SnapbackTesting

/// A simulated machine with a controller on it, restartable after a crash.
final class Rig {
    let world: SimulatedWorld
    let volumes: SimulatedVolumeProvider
    let durable: SimulatedDurableStore
    private(set) var controller: Controller

    init(seed: UInt64) throws {
        world = SimulatedWorld(seed: seed)
        volumes = SimulatedVolumeProvider(world: world)
        durable = SimulatedDurableStore(world: world)
        controller = try Controller(durable: durable, volumes: volumes, clock: world.clock, version: "test")
    }

    /// Crash (if not crashed already) and start a new controller on what survived.
    func restart() throws {
        world.restart()
        controller = try Controller(durable: durable, volumes: volumes, clock: world.clock, version: "test")
    }

    func id(_ name: String) -> VolumeID { controller.state.volume(name)!.id }

    func read(_ name: String, _ offset: UInt64 = 0, _ length: Int? = nil) throws -> [UInt8] {
        let volume = controller.state.volume(name)!
        return try controller.read(volume: volume.id, offset: offset, length: length ?? Int(volume.sizeBytes))
    }

    func write(_ name: String, _ offset: UInt64, _ bytes: [UInt8], fua: Bool = true) throws {
        try controller.write(volume: id(name), offset: offset, bytes: bytes, fua: fua)
    }

    /// Runs background steps until none remain (bounded).
    func drain(stepsMax: Int = 10_000) {
        var steps = 0
        while controller.hasBackgroundWork && steps < stepsMax {
            controller.step(budgetBytes: 4 << 20)
            steps += 1
        }
    }

    /// The standard scene: source `s` and target `t` of `sizeBytes`, source filled with a pattern,
    /// map `m` (autorestore as given, copy rate as given, 64 KiB grains) started.
    func scene(sizeBytes: UInt64 = 1 << 20, autorestore: Bool = true, copyRate: Int = 0, grainSizeBytes: UInt32 = 64 << 10) throws -> [UInt8] {
        try controller.execute(.createVolume(name: "s", sizeBytes: sizeBytes, path: nil))
        try controller.execute(.createVolume(name: "t", sizeBytes: sizeBytes, path: nil))
        try write("s", 0, pattern(seed: 1, length: Int(sizeBytes)))
        try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: autorestore, copyRate: copyRate, grainSizeBytes: grainSizeBytes)))
        try controller.execute(.startMap(map: "m"))
        return try read("s")
    }
}

/// Deterministic bytes.
func pattern(seed: UInt64, length: Int) -> [UInt8] {
    var random = SeededRandom(seed: seed)
    var bytes = [UInt8](repeating: 0, count: length)
    var index = 0
    while index < length {
        let word = random.next()
        for shift in stride(from: 0, to: 64, by: 8) where index < length {
            bytes[index] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
            index += 1
        }
    }
    return bytes
}

/// Starts `count` threads running `body(index)`; the group is left when each returns. (Real
/// threads: a dispatch queue may run blocking bodies a few at a time on a small machine.)
func startThreads(_ count: Int, _ group: DispatchGroup, _ body: @escaping @Sendable (Int) -> Void) {
    for index in 0..<count {
        group.enter()
        Thread.detachNewThread {
            body(index)
            group.leave()
        }
    }
}
