import SnapbackCore
import SnapbackData

/// Host writes: plain writes outside the lock, and coordinated writes planned by
/// `GrainPlanner` and carried out by the executor (`Controller+Execute.swift`).
extension Controller {
    /// Writes for a host, following the durability rules: on a restoring source, dirty grains not
    /// yet restored are restored first; for every active map of the source, grains not yet split
    /// are copied to the target and made durable, and `split`/`dirty` are durably marked, before
    /// the source is written. `fua` makes the write itself durable before returning.
    public func write(volume volumeID: VolumeID, offset: UInt64, bytes: [UInt8], fua: Bool) throws(HostIOError) {
        var failure: HostIOError?
        bytes.withUnsafeBytes { buffer in
            do throws(HostIOError) { try write(volume: volumeID, offset: offset, from: buffer, fua: fua) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes `bytes` at `offset` for a host (see `write(volume:offset:bytes:fua:)`).
    /// `hostEpoch`: the epoch of the connection that sent it (an NBD request); a write from a
    /// connection opened before a rollback started onto the volume is refused (`superseded`).
    public func write(
        volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool, hostEpoch: UInt64? = nil
    ) throws(HostIOError) {
        // The anomaly detector counts the write only once it is acknowledged (refused or failed:
        // its samples are given back).
        let detector = detector(volumeID)
        let samples = detector.map { reserveSamples($0, length: bytes.count) } ?? .none
        var acknowledged = false
        defer { if !acknowledged, let detector { releaseSamples(detector, length: bytes.count) } }
        let plain = try SampleEntropies.with(samples) { (entropies) throws(HostIOError) -> Bool in
            let written = try writePlain(volume: volumeID, offset: offset, from: bytes, fua: fua, hostEpoch: hostEpoch, before: { store in
                self.measureOverwritten(store, writeOffset: offset, samples, into: entropies)
            })
            if written, let detector {
                measureWritten(bytes, samples, into: entropies)
                countWrite(detector, length: bytes.count, samples, entropies)
            }
            return written
        }
        if plain {
            acknowledged = true
            return
        }
        var write = HostWrite(volumeID: volumeID, offset: offset, bytes: bytes, fua: fua, hostEpoch: hostEpoch)
        write.detector = detector
        write.samples = samples
        try writeCoordinated(write)
        acknowledged = true
    }

    /// One coordinated host write: the plan (a target's copies, restore before write,
    /// copy-on-write and marks), carried out stage by stage, then the source. Must hold the gate
    /// exclusively.
    func writeOneLocked(_ write: HostWrite) throws(HostIOError) {
        let (volumeID, offset, bytes, fua) = (write.volumeID, write.offset, write.bytes, write.fua)
        // A target that fails during copy-on-write is faulted, which stops its map: the write is
        // then planned again, and owes that map nothing. Each round faults one more volume.
        for _ in 0...committed.maps.count {
            let (volume, store) = try hostVolumeLocked(volumeID, offset, bytes.count)
            try checkHostEpochLocked(volume, write.hostEpoch)
            if isReadOnlyLocked(volumeID) { throw .readOnly(volume: volume.name) }
            let stages = planWriteLocked(volumeID, offset, bytes.count)
            do throws(StageFailure) {
                if Self.brokenOrderingForTesting {
                    try performSourceFirstForTesting(stages, volume, store, offset, bytes, fua: fua)
                    return
                }
                try perform(stages)
            } catch {
                if try replanAfterLocked(error, writing: volume) { continue }
            }
            let written = unlocked { () -> Result<Void, BlockStoreError> in
                // What the write replaces, for the anomaly detector, while the source still holds
                // it; then the samples, once written (outside the lock, the gate held).
                SampleEntropies.with(write.samples) { entropies in
                    measureOverwritten(store, writeOffset: offset, write.samples, into: entropies)
                    let result = Result { () throws(BlockStoreError) in
                        try store.write(at: offset, from: bytes)
                        if fua { try store.sync() }
                    }
                    if let detector = write.detector, case .success = result {
                        measureWritten(bytes, write.samples, into: entropies)
                        countWrite(detector, length: bytes.count, write.samples, entropies)
                    }
                    return result
                }
            }
            if case let .failure(error) = written { throw failureLocked(volume, error) }
            // Every volume written has room: an `out_of_space` one is online again.
            for written in Set([volumeID] + stages.flatMap { $0.copies.map(\.to) }).sorted() { noteWriteSucceededLocked(written) }
            return
        }
        throw .io(volume: committed.volumes[volumeID]?.name ?? String(volumeID), detail: "copy-on-write kept failing on the targets")
    }

    /// The stages a write of `length` bytes at `offset` on `volumeID` needs before it may touch
    /// the volume: on a restoring source, the touched grains settled; on a source, copy-on-write
    /// for every active map. (A target is never written by hosts.)
    func planWriteLocked(_ volumeID: VolumeID, _ offset: UInt64, _ length: Int) -> [GrainStage] {
        var view = PlannedBitmaps(bitmaps)
        var stages: [GrainStage] = []
        if let rollback = committed.runningRollback(onto: volumeID), let volume = committed.volumes[volumeID] {
            // Grains a rollback step copied but has not marked yet are settled again here, and
            // leave that step's marks: the write may make them dirty again.
            let settled = GrainPlanner.restoreBeforeWrite(
                committed, &view, rollback, offset: offset, length: length, sizeBytes: volume.sizeBytes)
            if let range = grains(of: rollback, offset, length) {
                for grain in range { unmarkedRestores[rollback.id]?.grains.remove(grain) }
            }
            stages += settled
        }
        let copies = GrainPlanner.copyOnWrite(committed, &view, source: volumeID, offset: offset, length: length)
        stages.append(GrainStage(copies: copies, marks: view.endStage()))
        return stages.filter { !$0.isEmpty }
    }

    /// What a failed stage of a host write on `volume` means. A volume that failed is faulted (a
    /// fault may stop maps or start a rollback). Returns true when the write should be planned
    /// again: a copy-on-write target failed and no rollback reads from it, so its map, now
    /// stopped, is owed nothing. Otherwise throws the error the host gets.
    func replanAfterLocked(_ failure: StageFailure, writing volume: Volume) throws(HostIOError) -> Bool {
        switch failure {
        case let .commit(error):
            if case .storageFull = error { throw .noSpace(volume: volume.name, detail: "\(error)") }
            throw .io(volume: volume.name, detail: "\(error)")
        case let .volume(failedID, error):
            guard let failed = committed.volumes[failedID] else { throw .io(volume: volume.name, detail: "\(error)") }
            let hostError = failureLocked(failed, error)
            if error.failureClass == .capacity {
                // A target out of space cannot take the grains the write would replace: the
                // write is refused, so that the image survives (nothing is faulted).
                if failedID == volume.id { throw hostError }
                throw .outOfSpace(volume: volume.name, detail: "the copy-on-write target \(failed.name) is out of space: \(error)")
            }
            guard failedID != volume.id, isCopyOnWriteTarget(failedID, of: volume.id) else { throw hostError }
            // The image must survive: a rollback reading from this target keeps its map
            // (found by the simulator, seed 171).
            if committed.maps.values.contains(where: { $0.targetID == failedID && $0.imageValid }) {
                throw .io(volume: volume.name, detail: "the target \(failed.name) failed during copy-on-write")
            }
            return true
        case let .unavailable(missingID):
            let name = committed.volumes[missingID]?.name ?? String(missingID)
            throw .io(volume: volume.name, detail: "the backing store of volume \(name) is unavailable")
        }
    }

    /// True when `targetID` is the target of a forward map whose source is `sourceID`.
    func isCopyOnWriteTarget(_ targetID: VolumeID, of sourceID: VolumeID) -> Bool {
        committed.forwardMaps(ofSource: sourceID).contains { $0.targetID == targetID }
    }

    /// The write of a host when it needs no coordination: no map owes the grains it touches a
    /// copy or a mark, and no rollback restores them. Decided under the lock with the gate held
    /// shared; the disk is written after the lock is released, alongside other such writes.
    /// Returns false, having written nothing, when the write needs the coordinated path.
    /// `before` runs on the store just before the write (the detector reads what it replaces).
    private func writePlain(
        volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool, hostEpoch: UInt64?,
        before: (BlockStore) -> Void = { _ in }
    ) throws(HostIOError) -> Bool {
        try plainAccess(volume: volumeID) { () throws(HostIOError) -> (Volume, BlockStore)? in
            try plainWriteLocked(volumeID, offset, bytes.count, hostEpoch: hostEpoch)
        } io: { (store) throws(BlockStoreError) in
            before(store)
            try store.write(at: offset, from: bytes)
            if fua { try store.sync() }
        }
    }

    /// Makes `length` bytes at `offset` read as zeroes by punching a hole in the volume's store,
    /// when that is a plain write (no copy-on-write or mark owed, no rollback restoring the range:
    /// see `writePlain`) and the store can punch; durable first when `fua`. Returns false, having
    /// changed nothing, otherwise: the caller then writes zeroes through `write`, which copies
    /// grains first as any write does. A volume with anomaly detection on is never punched (its
    /// detector counts the zeroes written).
    public func punchZeroes(volume volumeID: VolumeID, offset: UInt64, length: Int, fua: Bool, hostEpoch: UInt64? = nil) throws(HostIOError) -> Bool {
        guard detector(volumeID) == nil else { return false }
        var punched = false
        let plain = try plainAccess(volume: volumeID) { () throws(HostIOError) -> (Volume, BlockStore)? in
            try plainWriteLocked(volumeID, offset, length, hostEpoch: hostEpoch)
        } io: { (store) throws(BlockStoreError) in
            punched = try store.punchHole(at: offset, length: length)
            if punched, fua { try store.sync() }
        }
        return plain && punched
    }

    /// The volume and store a host write of `length` bytes at `offset` goes to when it needs no
    /// coordination; nil when it does. Throws when the write is refused.
    func plainWriteLocked(_ volumeID: VolumeID, _ offset: UInt64, _ length: Int, hostEpoch: UInt64?) throws(HostIOError) -> (Volume, BlockStore)? {
        let (volume, store) = try hostVolumeLocked(volumeID, offset, length)
        try checkHostEpochLocked(volume, hostEpoch)
        if isReadOnlyLocked(volumeID) { throw .readOnly(volume: volume.name) }
        return needsNoCoordinationLocked(volume, offset, length) ? (volume, store) : nil
    }

    /// Writes `bytes` at `offset` for a host if that can be done at once, without waiting: the
    /// gate and the lock are free, and the write needs no coordination (see `writePlain`). No
    /// sync. Returns false, changing nothing on record, otherwise and on any error; the caller
    /// then makes the write with `write(volume:offset:from:fua:)`, which rewrites the range or
    /// records the fault. For the NBD server's event loops, which must not wait on a lock held
    /// across a sync.
    public func writeImmediately(volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer, hostEpoch: UInt64? = nil) -> Bool {
        let gate = gates.gate(volumeID)
        guard gate.tryLockShared() else { return false }
        defer { gate.unlock() }
        guard lock.try() else { return false }
        let plain = try? plainWriteLocked(volumeID, offset, bytes.count, hostEpoch: hostEpoch)
        lock.unlock()
        guard let (_, store) = plain ?? nil else { return false }
        guard let detector = detector(volumeID) else {
            do throws(BlockStoreError) { try store.write(at: offset, from: bytes) } catch { return false }
            return true
        }
        // Counted only if written: a failed write is made again by `write(volume:...)`, which
        // counts it then.
        let samples = reserveSamples(detector, length: bytes.count)
        return SampleEntropies.with(samples) { entropies in
            measureOverwritten(store, writeOffset: offset, samples, into: entropies)
            do throws(BlockStoreError) {
                try store.write(at: offset, from: bytes)
            } catch {
                releaseSamples(detector, length: bytes.count)
                return false
            }
            measureWritten(bytes, samples, into: entropies)
            countWrite(detector, length: bytes.count, samples, entropies)
            return true
        }
    }

    /// True when a host write of `length` bytes at `offset` on `volume` needs no copy-on-write,
    /// restore or mark: the volume is no valid image's target, no rollback restores it, and every
    /// active map of which it is the source already holds the touched grains split and dirty.
    /// Only exclusive holders clear those bits or change those maps, so the answer holds until
    /// the gate is released.
    private func needsNoCoordinationLocked(_ volume: Volume, _ offset: UInt64, _ length: Int) -> Bool {
        // A write to an `out_of_space` volume is coordinated, so that its success is recorded.
        guard !Self.brokenOrderingForTesting, volume.status != .outOfSpace, holdsOwnBytesLocked(volume.id) else { return false }
        for map in committed.forwardMaps(ofSource: volume.id) where map.isActive {
            guard let maps = bitmaps[map.id] else { return false }
            guard let range = grains(of: map, offset, length) else { continue }
            for grain in range where !maps.split[grain] || !maps.dirty[grain] { return false }
        }
        return true
    }

}

// MARK: Mutation testing

extension Controller {
    /// Runs `body` as an exclusive holder of the gate and the lock (as every command does), for
    /// tests that check that no plain host write lands meanwhile. `body` must not call the
    /// controller.
    @_spi(Testing) public func exclusiveForTesting<T>(_ body: () throws -> T) rethrows -> T {
        try exclusive(body)
    }

    /// A mutation-testing switch, never set outside tests: when true, a host write carries out
    /// its plan in the classic wrong order. It reads the old bytes of the grains to copy, writes
    /// (and, with FUA, syncs) the source FIRST, and only then writes the saved grains to the
    /// targets, syncs them and commits the marks. Without a crash nothing shows; a crash between
    /// the source write and the marks leaves a grain that is neither split nor unchanged, so the
    /// point-in-time image changes. The deterministic simulator must catch it
    /// (`Tests/SimulationTests`). Global and unsynchronised: set it only while no controller runs.
    @_spi(Testing) nonisolated(unsafe) public static var brokenOrderingForTesting = false

    /// The same plan as the executor's, in the wrong order (see ``brokenOrderingForTesting``).
    func performSourceFirstForTesting(
        _ stages: [GrainStage], _ volume: Volume, _ store: BlockStore, _ offset: UInt64, _ bytes: UnsafeRawBufferPointer, fua: Bool
    ) throws(StageFailure) {
        var saved: [(GrainCopy, [[UInt8]])] = []
        for stage in stages {
            for copy in stage.copies {
                guard let map = committed.maps[copy.map], let from = stores[copy.from], let size = committed.volumes[copy.from]?.sizeBytes else { continue }
                var old: [[UInt8]] = []
                for grain in copy.grains {
                    let (grainOffset, length) = GrainPlanner.byteRange(of: grain...grain, grainSizeBytes: map.grainSizeBytes, sizeBytes: size)
                    do throws(BlockStoreError) { old.append(try from.read(at: grainOffset, length: length)) } catch { throw .volume(copy.from, error) }
                }
                saved.append((copy, old))
            }
        }
        do throws(BlockStoreError) {
            try store.write(at: offset, from: bytes)
            if fua { try store.sync() }
        } catch {
            throw .volume(volume.id, error)
        }
        for (copy, old) in saved {
            guard let map = committed.maps[copy.map], let to = stores[copy.to] else { continue }
            do throws(BlockStoreError) {
                for (grain, grainBytes) in zip(copy.grains, old) { try to.write(at: grain * UInt64(map.grainSizeBytes), bytes: grainBytes) }
                try to.sync()
            } catch {
                throw .volume(copy.to, error)
            }
        }
        for stage in stages where !stage.marks.isEmpty {
            do throws(ControllerError) { try commit(marks: stage.marks) } catch { throw .commit(error) }
        }
    }
}
