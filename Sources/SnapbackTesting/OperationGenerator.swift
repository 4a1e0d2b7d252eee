import SnapbackCore

/// Chooses a run's operations from its seed. It may look at the controller's state to choose
/// plausible names and ranges (a generator may peek; the checks never do), and it also asks for
/// operations the controller must refuse.
struct OperationGenerator {
    private var random: SeededRandom
    let writesToActiveTargets: Bool
    /// The defects to steer around (see ``Simulation/knownDefectsAvoided``).
    let avoided: Set<KnownDefect>
    /// The size of the run's volumes (one may differ, to see mismatched maps refused).
    let volumeSizeBytes: UInt64
    let volumeCount: Int

    static let volumeNames = ["v0", "v1", "v2", "v3"]
    static let mapNames = ["m0", "m1", "m2"]
    static let groupNames = ["g0", "g1"]
    /// Sizes to choose from: small, so that 2,000 seeds run in seconds; some with a short last
    /// grain (320 KiB and 576 KiB with 256 KiB grains).
    static let volumeSizesBytes: [UInt64] = [256 << 10, 320 << 10, 512 << 10, 576 << 10, 768 << 10, 1 << 20]

    init(seed: UInt64, writesToActiveTargets: Bool, avoiding avoided: Set<KnownDefect>) {
        // A stream of its own: the world's generator decides crash outcomes.
        random = SeededRandom(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 0x1234_5678)
        self.writesToActiveTargets = writesToActiveTargets
        self.avoided = avoided
        volumeSizeBytes = Self.volumeSizesBytes[Int(random.next() % UInt64(Self.volumeSizesBytes.count))]
        volumeCount = 2 + Int(random.next() % 3)
    }

    private mutating func chance(_ percent: Int) -> Bool { Int(random.next() % 100) < percent }
    private mutating func below(_ bound: Int) -> Int { Int(random.next() % UInt64(max(1, bound))) }
    private mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    // MARK: Set-up

    /// Volumes, their initial data (durable or not), one or two maps, usually started.
    mutating func setUp() -> [SimulationOperation] {
        var operations: [SimulationOperation] = []
        for index in 0..<volumeCount {
            let odd = index == volumeCount - 1 && volumeCount > 2 && chance(10)
            let size = odd ? volumeSizeBytes + (64 << 10) : volumeSizeBytes
            operations.append(.command(.createVolume(name: Self.volumeNames[index], sizeBytes: size, path: nil)))
        }
        for index in 0..<volumeCount where index == 0 || chance(50) {
            let fua = chance(70)
            operations.append(.write(volume: Self.volumeNames[index], offset: 0, bytes: .pattern(start: below(1 << 20), length: Int(volumeSizeBytes)), fua: fua))
            if !fua && chance(50) { operations.append(.flush(volume: Self.volumeNames[index])) }
        }
        operations.append(.command(.createMap(randomMap(name: "m0", source: "v0", target: "v1"))))
        if chance(40) {
            // A consistency group: m0, and with four volumes m1 (distinct volumes), started at
            // one instant.
            operations.append(.command(.createGroup(name: "g0", autorestore: chance(75), autorestoreDelaySeconds: chance(20) ? 1 : 0)))
            operations.append(.command(.changeMap(map: "m0", autorestore: nil, copyRate: nil, newName: nil, group: .join("g0"))))
            if volumeCount == 4 {
                var second = randomMap(name: "m1", source: "v2", target: "v3")
                second.group = "g0"
                operations.append(.command(.createMap(second)))
            }
            if chance(85) { operations.append(.command(.startGroup(group: "g0"))) }
            return operations
        }
        if volumeCount > 2 && chance(60) {
            let source = chance(60) ? "v0" : "v2"
            let target = source == "v0" ? "v2" : (volumeCount > 3 ? "v3" : "v0")
            operations.append(.command(.createMap(randomMap(name: "m1", source: source, target: target))))
            if chance(70) { operations.append(.command(.startMap(map: "m1"))) }
        }
        if chance(85) { operations.append(.command(.startMap(map: "m0"))) }
        return operations
    }

    private mutating func randomMap(name: String, source: String, target: String) -> CreateMap {
        CreateMap(
            source: source, target: target, name: name, autorestore: chance(60),
            copyRate: chance(50) ? 0 : 1 + below(150), grainSizeBytes: chance(80) ? 64 << 10 : 256 << 10)
    }

    // MARK: Operations

    /// The next operation, given what the controller holds now.
    mutating func next(_ driver: SimulationDriver) -> SimulationOperation {
        let state = driver.controller.state
        let volumes = state.volumesByID
        let forward = state.mapsByID.filter { $0.role == .forward }
        let volumeName = { (generator: inout OperationGenerator) -> String in
            volumes.isEmpty || generator.chance(3) ? generator.pick(Self.volumeNames) : generator.pick(volumes).name
        }
        let mapName = { (generator: inout OperationGenerator) -> String in
            if forward.isEmpty || generator.chance(5) {
                return generator.chance(20) ? generator.pick(Self.mapNames) + "_rev" : generator.pick(Self.mapNames)
            }
            return generator.pick(forward).name
        }
        let groupName = { (generator: inout OperationGenerator) -> String in
            state.groups.isEmpty || generator.chance(5) ? generator.pick(Self.groupNames) : generator.pick(state.groupsByID).name
        }
        let roll = below(1040)
        switch roll {
        case 1000..<1012:
            return .command(.startGroup(group: groupName(&self)))
        case 1012..<1020:
            return .command(.startGroupRestore(group: groupName(&self)))
        case 1020..<1025:
            return .command(.stopGroup(group: groupName(&self), force: chance(40)))
        case 1025..<1033:
            let change: MapGroupChange = chance(60) ? .join(groupName(&self)) : .leave
            return .command(.changeMap(map: mapName(&self), autorestore: nil, copyRate: nil, newName: nil, group: change))
        case 1033..<1036:
            return .command(.createGroup(name: chance(80) ? pick(Self.groupNames) : nil, autorestore: chance(70), autorestoreDelaySeconds: chance(20) ? 1 : 0))
        case 1036..<1039:
            return .command(.changeGroup(group: groupName(&self), newName: nil, autorestore: chance(50), autorestoreDelaySeconds: chance(30) ? pick([0, 1, 2]) : nil))
        case 1039:
            return .command(.removeGroup(group: groupName(&self), force: chance(50)))
        case 0..<400:
            let write = hostWrite(state, fallback: volumeName(&self))
            guard case let .write(volume, offset, bytes, fua) = write, chance(15) else { return write }
            // Sometimes several writes arrive together, as from concurrent NBD clients.
            var batch = [SimulationOperation.Write(volume: volume, offset: offset, bytes: bytes, fua: fua)]
            for _ in 0..<(1 + below(3)) {
                guard case let .write(volume, offset, bytes, fua) = hostWrite(state, fallback: volumeName(&self)) else { continue }
                batch.append(SimulationOperation.Write(volume: volume, offset: offset, bytes: bytes, fua: fua))
            }
            return batch.count > 1 ? .writeBatch(batch) : write
        case 400..<440:
            guard let volume = volumes.isEmpty ? nil : pick(volumes) else { return .drain }
            let (offset, length) = range(in: volume.sizeBytes)
            return .read(volume: volume.name, offset: offset, length: length)
        case 440..<510:
            return .flush(volume: volumeName(&self))
        case 640..<650:
            return .wait(milliseconds: pick([200, 1000, 2500]))
        case 510..<640:
            return .step(budgetBytes: pick([64 << 10, 128 << 10, 256 << 10, 512 << 10, 4 << 20]), copies: chance(85))
        case 650..<675:
            return .drain
        case 675..<685:
            return .command(.createVolume(name: pick(Self.volumeNames), sizeBytes: chance(90) ? volumeSizeBytes : volumeSizeBytes * 2, path: nil))
        case 685..<710:
            let source = volumeName(&self)
            let target = volumeName(&self)
            return .command(.createMap(randomMap(name: pick(Self.mapNames), source: source, target: target)))
        case 710..<760:
            return .command(.startMap(map: mapName(&self)))
        case 760..<768:
            return .command(.prepareMap(map: mapName(&self)))
        case 768..<793:
            let autorestore: Bool? = chance(60) ? chance(50) : nil
            let copyRate: Int? = autorestore == nil || chance(40) ? (chance(40) ? 0 : 1 + below(150)) : nil
            // A hold window now and then (a few simulated seconds).
            let delay: UInt32? = chance(15) ? pick([0, 1, 2]) : nil
            return .command(.changeMap(map: mapName(&self), autorestore: autorestore, copyRate: copyRate, newName: nil, autorestoreDelaySeconds: delay))
        case 793..<813:
            let name = mapName(&self)
            var force = chance(50)
            // ``KnownDefect/rollbackStoppedKeepsRestoredMarks``: no forced stop of a rollback.
            if avoided.contains(.rollbackStoppedKeepsRestoredMarks), state.map(name)?.rollback != nil { force = false }
            return .command(.stopMap(map: name, force: force))
        case 813..<823:
            return .command(.removeMap(map: mapName(&self), force: chance(50)))
        case 823..<828:
            return .command(.removeVolume(volume: volumeName(&self)))
        case 828..<868:
            // Faults mostly on sources, where they matter; now and then on a target of a group
            // that rolls back (it stops the group's rollback).
            let groupTargets = forward.filter { state.groupRollback(of: $0) != nil }.compactMap { state.volumes[$0.targetID]?.name }
            if !groupTargets.isEmpty, chance(15) {
                return .command(.reportFault(volume: pick(groupTargets), cause: .operator, reason: "simulated target fault"))
            }
            let sources = forward.compactMap { state.volumes[$0.sourceID]?.name }
            let name = !sources.isEmpty && chance(75) ? pick(sources) : volumeName(&self)
            // Now and then an onset: just before, at or after a start time of one of its maps.
            var onset: Int64?
            let starts = state.maps.values.filter { $0.role == .forward && state.volumes[$0.sourceID]?.name == name }.compactMap(\.startedAtMilliseconds)
                + state.groups.values.compactMap(\.startedAtMilliseconds)
            if !starts.isEmpty, chance(30) { onset = pick(starts) + Int64(pick([-1, 0, 1])) }
            return .command(.reportFault(volume: name, cause: .operator, reason: "simulated fault", onsetMilliseconds: onset))
        case 868..<898:
            return .command(.startRestore(map: mapName(&self)))
        case 898..<928:
            let faulted = volumes.filter { $0.status == .faulted }.map(\.name)
            return .command(.recoverVolume(volume: !faulted.isEmpty && chance(80) ? pick(faulted) : volumeName(&self)))
        case 928..<973:
            if driver.world.crashAtIOPoint != nil { return .step(budgetBytes: 64 << 10, copies: true) }
            // Mostly soon, so that the crash strikes inside the next few operations.
            return .scheduleCrash(ioPoints: chance(70) ? 1 + below(6) : 1 + below(24))
        case 973..<985:
            return .crashAndRestart
        case 993..<1000:
            return .failCommits(operations: 1 + below(4), noSpace: chance(50))
        case 985..<989:
            return .injectNoSpace(volume: volumeName(&self), operations: 1 + below(4))
        default:
            let name = volumeName(&self)
            if !avoided.isDisjoint(with: [.copyOnWriteSkippedForTargetReadByRollback, .rollbackStoppedKeepsRestoredMarks]), isInRollback(name, state) {
                return .flush(volume: name)
            }
            return .injectErrors(volume: name, operations: 1 + below(3))
        }
    }

    /// True when volume `name` is the source or the target of a running rollback: a failing
    /// target makes copy-on-write skip the map
    /// (``KnownDefect/copyOnWriteSkippedForTargetReadByRollback``), and a failing source or
    /// target abandons the rollback (``KnownDefect/rollbackStoppedKeepsRestoredMarks``).
    private func isInRollback(_ name: String, _ state: ControllerState) -> Bool {
        guard let volume = state.volume(name) else { return false }
        return state.maps.values.contains { $0.role == .forward && $0.rollback != nil && ($0.targetID == volume.id || $0.sourceID == volume.id) }
    }

    /// A host write, mostly to where copy-on-write and rollbacks happen: sources of active maps
    /// and restoring sources.
    private mutating func hostWrite(_ state: ControllerState, fallback: String) -> SimulationOperation {
        let forward = state.mapsByID.filter { $0.role == .forward }
        var restoring = state.volumesByID.filter { $0.status == .restoring }
        var excluded = Set<VolumeID>()
        if avoided.contains(.rollbackCountsRewrittenGrainsTwice) {
            // ``KnownDefect/rollbackCountsRewrittenGrainsTwice``: no write to a restoring source
            // before its rollback's first step has counted the work.
            excluded = Set(restoring.filter { state.runningRollback(onto: $0.id)?.rollback?.grainsToRestore == 0 }.map(\.id))
            restoring.removeAll { excluded.contains($0.id) }
        }
        let sources = forward.filter(\.isActive).compactMap { state.volumes[$0.sourceID] }.filter { !excluded.contains($0.id) }
        let protectedTargets = Set(forward.filter { $0.isActive && !writesToActiveTargets }.map(\.targetID))
        var candidates: [Volume]
        if !restoring.isEmpty && chance(40) {
            candidates = restoring
        } else if !sources.isEmpty && chance(70) {
            candidates = sources
        } else {
            candidates = state.volumesByID.filter { !protectedTargets.contains($0.id) && !excluded.contains($0.id) }
        }
        guard !candidates.isEmpty else { return .flush(volume: fallback) }
        let volume = pick(candidates)
        let (offset, length) = range(in: volume.sizeBytes)
        let bytes: SimulationOperation.WriteBytes = chance(10) ? .fill(UInt8(truncatingIfNeeded: random.next()), length: length) : .pattern(start: below(1 << 20), length: length)
        return .write(volume: volume.name, offset: offset, bytes: bytes, fua: chance(50))
    }

    /// A random range inside a volume: small, medium or across grains; aligned or not.
    private mutating func range(in sizeBytes: UInt64) -> (UInt64, Int) {
        let size = Int(sizeBytes)
        var offset = below(size)
        switch below(10) {
        case 0..<4: offset -= offset % 512
        case 4..<6: offset -= offset % (64 << 10)
        default: break
        }
        var length: Int
        switch below(100) {
        case 0..<35: length = 1 + below(4096)
        case 35..<75: length = 4096 + below(60 << 10)
        default: length = (64 << 10) + below(128 << 10)
        }
        if chance(40) { length = max(512, length - length % 512) }
        length = max(1, min(length, size - offset))
        return (UInt64(offset), length)
    }
}
