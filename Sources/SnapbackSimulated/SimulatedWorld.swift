import Foundation
import SnapbackCore
import SnapbackData

// One seed drives a whole simulated run; users of SnapbackTesting get the generator with it.
@_exported import SnapbackRandom

/// The shared fate of a simulated machine: every I/O point (a block write, a sync, a durable
/// commit) is counted, and a crash can be scheduled at any of them. From the crash on, every
/// operation fails and nothing more becomes durable, until ``restart()``.
public final class SimulatedWorld: @unchecked Sendable {
    public var random: SeededRandom
    /// I/O points passed since the world began.
    public private(set) var ioPoints = 0
    /// Crash when this many I/O points have passed (the point itself does not happen).
    public var crashAtIOPoint: Int?
    public private(set) var crashed = false
    /// The simulated clock, in milliseconds.
    public var nowMilliseconds: Int64 = 1_800_000_000_000
    /// Volumes that answer every operation with an I/O error.
    public var failingVolumes: Set<VolumeID> = []
    /// Volumes whose disk is full: every write answers ENOSPC (reads and syncs work).
    public var fullVolumes: Set<VolumeID> = []
    /// When set, every durable commit fails with this errno (ENOSPC, EIO) and commits nothing.
    public var failingCommitsErrno: Int32?
    /// Block stores created in this world, for crash processing.
    var blockStores: [SimulatedBlockStore] = []

    public init(seed: UInt64) { random = SeededRandom(seed: seed) }

    /// Passes one I/O point; throws when the world has crashed or crashes now.
    func ioPoint(_ what: String) throws(BlockStoreError) {
        if crashed { throw .io(operation: "\(what) after a simulated crash", errno: 5) }
        ioPoints += 1
        if let crashAt = crashAtIOPoint, ioPoints >= crashAt {
            crashed = true
            throw .io(operation: "\(what): simulated crash", errno: 5)
        }
    }

    /// Crashes now (if not already), then applies crash semantics to every disk: each unsynced
    /// write is lost, kept, or torn at sector granularity, chosen by the seed. The world runs again.
    public func restart() {
        crashed = false
        crashAtIOPoint = nil
        for store in blockStores { store.applyCrash(&random) }
    }

    /// Whether host I/O waits for a family, asked by a rollback step between slices of its
    /// copy (it then stops early): one time in four, drawn from the seed, so that the simulator
    /// covers steps cut short as snapbackd's are when hosts wait.
    public var waitsForFamily: @Sendable (Set<VolumeID>) -> Bool {
        { [unowned self] _ in random.next() % 4 == 0 }
    }

    /// A clock for the controller.
    public var clock: @Sendable () -> Int64 {
        { [unowned self] in
            nowMilliseconds += 1
            return nowMilliseconds
        }
    }
}

/// A simulated disk: reads see every write; only synced writes are durable.
public final class SimulatedBlockStore: BlockStore, @unchecked Sendable {
    public let sizeBytes: UInt64
    public let volumeID: VolumeID
    private unowned let world: SimulatedWorld
    /// What reads return now.
    public private(set) var current: [UInt8]
    /// What survives a crash for sure.
    public private(set) var durable: [UInt8]
    private var pending: [(offset: Int, bytes: [UInt8])] = []
    public static let sectorBytes = 512

    init(world: SimulatedWorld, volumeID: VolumeID, sizeBytes: UInt64) {
        self.world = world
        self.volumeID = volumeID
        self.sizeBytes = sizeBytes
        current = [UInt8](repeating: 0, count: Int(sizeBytes))
        durable = current
        world.blockStores.append(self)
    }

    private func check(_ what: String) throws(BlockStoreError) {
        if world.failingVolumes.contains(volumeID) { throw .io(operation: "\(what) (injected error)", errno: 5) }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockStoreError) {
        try checkRange(offset, buffer.count)
        try check("read")
        if world.crashed { throw .io(operation: "read after a simulated crash", errno: 5) }
        current.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<Int(offset) + buffer.count])) }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockStoreError) {
        try checkRange(offset, buffer.count)
        try check("write")
        if world.fullVolumes.contains(volumeID) { throw .io(operation: "write (injected: disk full)", errno: ENOSPC) }
        try world.ioPoint("write volume \(volumeID)")
        let bytes = Array(buffer)
        current.replaceSubrange(Int(offset)..<Int(offset) + bytes.count, with: bytes)
        pending.append((Int(offset), bytes))
    }

    public func sync() throws(BlockStoreError) {
        try check("sync")
        try world.ioPoint("sync volume \(volumeID)")
        durable = current
        pending.removeAll()
    }

    /// Crash semantics: every unsynced write is lost, kept or torn (a random subset of its
    /// sectors lands), in order.
    func applyCrash(_ random: inout SeededRandom) {
        var survivor = durable
        for write in pending {
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                continue
            case 1:
                survivor.replaceSubrange(write.offset..<write.offset + write.bytes.count, with: write.bytes)
            default:
                var start = 0
                while start < write.bytes.count {
                    let sectorEnd = min(write.bytes.count, ((write.offset + start) / Self.sectorBytes + 1) * Self.sectorBytes - write.offset)
                    if Bool.random(using: &random) {
                        survivor.replaceSubrange(write.offset + start..<write.offset + sectorEnd, with: write.bytes[start..<sectorEnd])
                    }
                    start = sectorEnd
                }
            }
        }
        durable = survivor
        current = survivor
        pending.removeAll()
    }
}

/// Simulated volumes: one simulated disk per volume, kept across restarts.
public final class SimulatedVolumeProvider: VolumeProvider, @unchecked Sendable {
    private unowned let world: SimulatedWorld
    public private(set) var stores: [VolumeID: SimulatedBlockStore] = [:]

    public init(world: SimulatedWorld) { self.world = world }

    public func create(_ volume: Volume, adopt: Bool) throws -> BlockStore {
        let store = SimulatedBlockStore(world: world, volumeID: volume.id, sizeBytes: volume.sizeBytes)
        stores[volume.id] = store
        return store
    }

    public func open(_ volume: Volume) throws(BackingProblem) -> BlockStore {
        guard let store = stores[volume.id] else { throw .missing(path: "sim:\(volume.id)") }
        guard store.sizeBytes == volume.sizeBytes else {
            throw .sizeMismatch(path: "sim:\(volume.id)", recordedBytes: volume.sizeBytes, actualBytes: store.sizeBytes)
        }
        return store
    }

    public func remove(_ volume: Volume) { stores[volume.id] = nil }

    /// Makes a volume's backing store vanish, as a deleted file would.
    public func vanish(_ volumeID: VolumeID) { stores[volumeID] = nil }
}

/// An injected failure of a durable commit: nothing of the commit was made.
public struct SimulatedCommitFailure: StorageFailure, CustomStringConvertible {
    public var errno: Int32
    public init(errno: Int32) { self.errno = errno }
    public var isOutOfSpace: Bool { errno == ENOSPC }
    public var description: String { "simulated commit failure: \(String(cString: strerror(errno)))" }
}

/// A simulated durable store: a committed commit survives a crash, an uncommitted one vanishes.
public final class SimulatedDurableStore: DurableStore, @unchecked Sendable {
    private unowned let world: SimulatedWorld
    public private(set) var events: [StoredEvent] = []
    private var bitmaps: [String: [UInt8]] = [:]
    private var checkpointState: ControllerState?
    /// Commits made (each one durable transaction).
    public private(set) var commits = 0

    public init(world: SimulatedWorld) { self.world = world }

    private static func key(_ map: MapID, _ kind: BitmapKind, _ chunk: Int) -> String { "\(map)/\(kind.rawValue)/\(chunk)" }

    /// Whether the last commit attempt failed (an injected failure), for the health invariant.
    public var lastCommitFailed = false

    public func commit(events newEvents: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
        try world.ioPoint("commit")
        if let code = world.failingCommitsErrno {
            lastCommitFailed = true
            throw SimulatedCommitFailure(errno: code)
        }
        lastCommitFailed = false
        let first = UInt64(events.count) + 1
        precondition(callers.isEmpty || callers.count == newEvents.count, "one caller (or nil) per event")
        for (index, event) in newEvents.enumerated() {
            events.append(
                StoredEvent(
                    sequence: UInt64(events.count) + 1, timestampMilliseconds: timestampMilliseconds, event: event,
                    caller: callers.isEmpty ? nil : callers[index]))
        }
        for change in bitmapChanges {
            switch change {
            case let .setPart(map, kind, part, bytes): bitmaps[Self.key(map, kind, part)] = bytes
            case let .clear(map, kind):
                let prefix = "\(map)/\(kind.rawValue)/"
                for key in bitmaps.keys where key.hasPrefix(prefix) { bitmaps[key] = nil }
            }
        }
        commits += 1
        return AppendReceipt(firstSequence: first, lastSequence: UInt64(events.count))
    }

    public func loadBitmap(map: MapID, kind: BitmapKind, grainCount: UInt64) throws -> GrainBitmap {
        var bitmap = GrainBitmap(grainCount: grainCount)
        for part in 0..<bitmap.partCount {
            if let bytes = bitmaps[Self.key(map, kind, part)] {
                let loaded = bytes.withUnsafeBytes { bitmap.loadPart(part, from: $0) }
                precondition(loaded, "simulated bitmap part of the wrong size")
            }
        }
        return bitmap
    }

    public func replayState() throws -> ControllerState {
        var state = ControllerState()
        for stored in events { state.apply(stored.event, at: stored.timestampMilliseconds) }
        return state
    }

    public func checkpoint(_ state: ControllerState) throws { checkpointState = state }
}
