import SnapbackCore
import SnapbackData

/// Host I/O (brief section 3): copy-on-write on sources, point-in-time images on targets, and
/// restore-before-write during a rollback.
extension Controller {
    /// How a host sees a volume: its size and whether it may write.
    public struct Export: Sendable, Equatable {
        public var volumeID: VolumeID
        public var sizeBytes: UInt64
        public var readOnly: Bool
    }

    /// The export of volume `name` (by name or id), or `nil`. Never waits for the lock (the NBD
    /// handshake calls it on an event loop); every read and write checks again under the lock.
    public func export(_ name: String) -> Export? {
        let state = state
        guard let volume = state.volume(name) else { return nil }
        return Export(volumeID: volume.id, sizeBytes: volume.sizeBytes, readOnly: Self.isReadOnly(volume.id, in: state))
    }

    /// A target is read-only to hosts while its map has autorestore on, and while a rollback
    /// reads from it.
    func isReadOnlyLocked(_ volumeID: VolumeID) -> Bool {
        Self.isReadOnly(volumeID, in: committed)
    }

    static func isReadOnly(_ volumeID: VolumeID, in state: ControllerState) -> Bool {
        state.maps.values.contains { $0.role == .forward && $0.targetID == volumeID && ($0.autorestore || $0.rollback != nil) }
    }

    /// The forward map whose target is `volumeID`, if any.
    func mapTargetingLocked(_ volumeID: VolumeID) -> LCMap? {
        committed.maps.values.first { $0.role == .forward && $0.targetID == volumeID }
    }

    /// Checks that the volume exists, is online to hosts and that the range lies inside it.
    func hostVolumeLocked(_ volumeID: VolumeID, _ offset: UInt64, _ length: Int) throws(HostIOError) -> (Volume, BlockStore) {
        guard let volume = committed.volumes[volumeID] else { throw .unknownVolume(String(volumeID)) }
        guard volume.status != .faulted, let store = stores[volumeID] else { throw .faulted(volume: volume.name) }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        guard length >= 0, !overflow, end <= volume.sizeBytes else {
            throw .outOfRange(offset: offset, length: length, sizeBytes: volume.sizeBytes)
        }
        return (volume, store)
    }

    /// The grains of `map` that `offset..<offset+length` touches.
    func grains(of map: LCMap, _ offset: UInt64, _ length: Int) -> ClosedRange<UInt64>? {
        guard length > 0 else { return nil }
        let grainBytes = UInt64(map.grainSizeBytes)
        return (offset / grainBytes)...((offset + UInt64(length) - 1) / grainBytes)
    }

    /// The byte range of grain `grain` of `map` (the last grain may be short).
    func grainRange(_ map: LCMap, _ grain: UInt64, sizeBytes: UInt64) -> (offset: UInt64, length: Int) {
        let offset = grain * UInt64(map.grainSizeBytes)
        return (offset, Int(min(UInt64(map.grainSizeBytes), sizeBytes - offset)))
    }

    // MARK: Reads

    /// Reads what a host sees: a target's point-in-time image while its map is active, a
    /// restoring source's image for grains not yet restored, else the volume's bytes.
    public func read(volume volumeID: VolumeID, offset: UInt64, length: Int) throws(HostIOError) -> [UInt8] {
        guard length >= 0 else { throw .outOfRange(offset: offset, length: length, sizeBytes: state.volumes[volumeID]?.sizeBytes ?? 0) }
        var bytes = [UInt8](repeating: 0, count: length)
        var failure: HostIOError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(HostIOError) { try read(volume: volumeID, offset: offset, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Fills `bytes` with what a host sees at `offset` (see `read(volume:offset:length:)`).
    public func read(volume volumeID: VolumeID, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) throws(HostIOError) {
        if try readPlain(volume: volumeID, offset: offset, into: bytes) { return }
        do throws(HostIOError) {
            try readLocked(volume: volumeID, offset: offset, into: bytes)
        } catch {
            // A failed disk read faults the volume: durably, before the host hears of it.
            recordPendingFaults()
            throw error
        }
    }

    /// A read that needs no other volume's bytes (the volume is no valid image's target and no
    /// rollback restores it): decided under the lock with the gate held shared, then read from
    /// the disk after the lock is released, alongside other plain reads and writes. Returns false,
    /// having read nothing, when the read needs the image (the locked path).
    private func readPlain(volume volumeID: VolumeID, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) throws(HostIOError) -> Bool {
        try plainAccess { () throws(HostIOError) -> (Volume, BlockStore)? in
            let (volume, store) = try hostVolumeLocked(volumeID, offset, bytes.count)
            return holdsOwnBytesLocked(volumeID) ? (volume, store) : nil
        } io: { (store) throws(BlockStoreError) in
            try store.read(at: offset, into: bytes)
        }
    }

    /// Plain access (reads, writes, flushes): holding the gate shared, `decide` runs under the
    /// lock and names the volume and its store, or nil when the access is not plain; then `io`
    /// runs after the lock is released. An I/O error faults the volume (taking the gate
    /// exclusively) before it is thrown. Returns false when `decide` said nil.
    private func plainAccess(
        decide: () throws(HostIOError) -> (Volume, BlockStore)?, io: (BlockStore) throws(BlockStoreError) -> Void
    ) throws(HostIOError) -> Bool {
        gate.lockShared()
        let plain: (Volume, BlockStore)?
        do throws(HostIOError) {
            plain = try locked(decide)
        } catch {
            gate.unlock()
            throw error
        }
        guard let (volume, store) = plain else {
            gate.unlock()
            return false
        }
        do throws(BlockStoreError) {
            try io(store)
        } catch {
            gate.unlock()
            throw exclusive { faultLocked(volume, error) }
        }
        gate.unlock()
        return true
    }

    private func readLocked(volume volumeID: VolumeID, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) throws(HostIOError) {
        try locked { () throws(HostIOError) in
            let (volume, store) = try hostVolumeLocked(volumeID, offset, bytes.count)
            do throws(BlockStoreError) {
                try store.read(at: offset, into: bytes)
            } catch {
                throw faultLocked(volume, error)
            }
            if let map = mapTargetingLocked(volumeID), map.imageValid, let maps = bitmaps[map.id] {
                // Target: grains the target does not hold come from the source.
                try overlayLocked(bytes, offset, map, from: map.sourceID, where: { !maps.split[$0] })
            }
            if let rollback = committed.runningRollback(onto: volumeID), let maps = bitmaps[rollback.id] {
                // Restoring source: grains not yet restored come from the image on the target.
                try overlayLocked(bytes, offset, rollback, from: rollback.targetID, where: { maps.dirty[$0] && !maps.restored[$0] })
            }
        }
    }

    /// Replaces the parts of `bytes` (read at `offset`) in grains of `map` matching `condition`
    /// with the bytes of volume `otherID`.
    private func overlayLocked(
        _ bytes: UnsafeMutableRawBufferPointer, _ offset: UInt64, _ map: LCMap, from otherID: VolumeID, where condition: (UInt64) -> Bool
    ) throws(HostIOError) {
        guard let range = grains(of: map, offset, bytes.count), let other = committed.volumes[otherID] else { return }
        let end = offset + UInt64(bytes.count)
        for grain in range where condition(grain) {
            let start = max(offset, grain * UInt64(map.grainSizeBytes))
            let stop = min(end, (grain + 1) * UInt64(map.grainSizeBytes))
            guard let store = stores[otherID] else { throw .faulted(volume: other.name) }
            do throws(BlockStoreError) {
                try store.read(at: start, into: UnsafeMutableRawBufferPointer(rebasing: bytes[Int(start - offset)..<Int(stop - offset)]))
            } catch {
                throw faultLocked(other, error)
            }
        }
    }

    // MARK: Writes

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
    public func write(volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool) throws(HostIOError) {
        if try writePlain(volume: volumeID, offset: offset, from: bytes, fua: fua) { return }
        try writeCoordinated(HostWrite(volumeID: volumeID, offset: offset, bytes: bytes, fua: fua))
    }

    /// One coordinated host write: restore before write, copy-on-write and marks, then the
    /// source. Must hold the gate exclusively.
    func writeOneLocked(_ write: HostWrite) throws(HostIOError) {
        let (volumeID, offset, bytes, fua) = (write.volumeID, write.offset, write.bytes, write.fua)
        let (volume, store) = try hostVolumeLocked(volumeID, offset, bytes.count)
        if isReadOnlyLocked(volumeID) { throw .readOnly(volume: volume.name) }
        if let map = mapTargetingLocked(volumeID), map.imageValid {
            try prepareTargetWriteLocked(map, offset, bytes.count)
        }
        if let rollback = committed.runningRollback(onto: volumeID) {
            try restoreBeforeWriteLocked(rollback, offset, bytes.count)
        }
        if Self.brokenOrderingForTesting {
            try brokenCopyOnWriteLocked(volume, store, offset, Array(bytes), fua: fua)
            return
        }
        try copyOnWriteLocked(volume, offset, bytes.count)
        do throws(BlockStoreError) {
            try store.write(at: offset, from: bytes)
            if fua { try store.sync() }
        } catch {
            throw faultLocked(volume, error)
        }
    }

    /// The write of a host when it needs no coordination: no map owes the grains it touches a
    /// copy or a mark, and no rollback restores them. Decided under the lock with the gate held
    /// shared; the disk is written after the lock is released, alongside other such writes.
    /// Returns false, having written nothing, when the write needs the coordinated path.
    private func writePlain(volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool) throws(HostIOError) -> Bool {
        try plainAccess { () throws(HostIOError) -> (Volume, BlockStore)? in
            try plainWriteLocked(volumeID, offset, bytes.count)
        } io: { (store) throws(BlockStoreError) in
            try store.write(at: offset, from: bytes)
            if fua { try store.sync() }
        }
    }

    /// The volume and store a host write of `length` bytes at `offset` goes to when it needs no
    /// coordination; nil when it does. Throws when the write is refused.
    private func plainWriteLocked(_ volumeID: VolumeID, _ offset: UInt64, _ length: Int) throws(HostIOError) -> (Volume, BlockStore)? {
        let (volume, store) = try hostVolumeLocked(volumeID, offset, length)
        if isReadOnlyLocked(volumeID) { throw .readOnly(volume: volume.name) }
        return needsNoCoordinationLocked(volume, offset, length) ? (volume, store) : nil
    }

    /// Writes `bytes` at `offset` for a host if that can be done at once, without waiting: the
    /// gate and the lock are free, and the write needs no coordination (see `writePlain`). No
    /// sync. Returns false, changing nothing on record, otherwise and on any error; the caller
    /// then makes the write with `write(volume:offset:from:fua:)`, which rewrites the range or
    /// records the fault. For the NBD server's event loops, which must not wait on a lock held
    /// across a sync.
    public func writeImmediately(volume volumeID: VolumeID, offset: UInt64, from bytes: UnsafeRawBufferPointer) -> Bool {
        guard gate.tryLockShared() else { return false }
        defer { gate.unlock() }
        guard lock.try() else { return false }
        let plain = try? plainWriteLocked(volumeID, offset, bytes.count)
        lock.unlock()
        guard let (_, store) = plain ?? nil else { return false }
        do throws(BlockStoreError) {
            try store.write(at: offset, from: bytes)
            return true
        } catch {
            return false
        }
    }

    /// True when a host write of `length` bytes at `offset` on `volume` needs no copy-on-write,
    /// restore or mark: the volume is no valid image's target, no rollback restores it, and every
    /// active map of which it is the source already holds the touched grains split and dirty.
    /// Only exclusive holders clear those bits or change those maps, so the answer holds until
    /// the gate is released.
    private func needsNoCoordinationLocked(_ volume: Volume, _ offset: UInt64, _ length: Int) -> Bool {
        guard !Self.brokenOrderingForTesting, holdsOwnBytesLocked(volume.id) else { return false }
        for map in committed.forwardMaps(ofSource: volume.id) where map.isActive {
            guard let maps = bitmaps[map.id] else { return false }
            guard let range = grains(of: map, offset, length) else { continue }
            for grain in range where !maps.split[grain] || !maps.dirty[grain] { return false }
        }
        return true
    }

    /// True when what hosts see of the volume is its own bytes: it is no valid image's target
    /// (whose unsplit grains are read from the source) and no rollback restores it (whose
    /// grains not yet restored are read from the image).
    func holdsOwnBytesLocked(_ volumeID: VolumeID) -> Bool {
        mapTargetingLocked(volumeID)?.imageValid != true && committed.runningRollback(onto: volumeID) == nil
    }

    /// Makes every completed host write on the volume durable. Runs alongside plain writes.
    public func flush(volume volumeID: VolumeID) throws(HostIOError) {
        _ = try plainAccess { () throws(HostIOError) -> (Volume, BlockStore)? in
            try hostVolumeLocked(volumeID, 0, 0)
        } io: { (store) throws(BlockStoreError) in
            try store.sync()
        }
    }

    /// Records the faults host reads met, holding the gate exclusively (``exclusive(_:)`` does).
    private func recordPendingFaults() {
        exclusive {}
    }

    /// Before a host write during a rollback: every grain the write touches that the rollback has
    /// not restored yet is settled first, so that no later rollback step copies over this write.
    /// Dirty grains are copied back from the image; clean grains already hold it. All of them are
    /// then durably marked restored. (Found by the Promela model: marking only dirty grains let a
    /// write to a clean grain become dirty, unrestored, and be overwritten by a later step.)
    private func restoreBeforeWriteLocked(_ map: LCMap, _ offset: UInt64, _ length: Int) throws(HostIOError) {
        guard var maps = bitmaps[map.id], let range = grains(of: map, offset, length) else { return }
        let touched = range.filter { !maps.restored[$0] }
        guard !touched.isEmpty else { return }
        let pending = touched.filter { maps.dirty[$0] }
        if !pending.isEmpty { try restoreGrainsLocked(map, pending, &maps) }
        for grain in touched { maps.restored[grain] = true }
        do {
            try commitBitmaps([map.id: maps])
        } catch {
            throw HostIOError.io(volume: committed.volumes[map.sourceID]?.name ?? "", detail: "\(error)")
        }
    }

    /// Copies grains `grains` (ascending) of `map` from target to source and syncs the source;
    /// marks them restored and clean in `maps` (not yet durable). Runs of adjacent grains move in
    /// one read and one write of up to ``copyRunBytesMax``.
    func restoreGrainsLocked(_ map: LCMap, _ grains: [UInt64], _ maps: inout MapBitmaps) throws(HostIOError) {
        guard let source = committed.volumes[map.sourceID], let target = committed.volumes[map.targetID] else { return }
        guard let sourceStore = stores[source.id] else { throw .faulted(volume: source.name) }
        guard let targetStore = stores[target.id] else { throw .faulted(volume: target.name) }
        var buffer = [UInt8](repeating: 0, count: Self.copyRunBytesMax)
        let runs = runs(of: grains, map)
        for run in runs where runs.count > 1 {
            let offset = run.lowerBound * UInt64(map.grainSizeBytes)
            targetStore.prefetch(at: offset, length: Int(min(UInt64(run.count) * UInt64(map.grainSizeBytes), source.sizeBytes - offset)))
        }
        for run in runs {
            let offset = run.lowerBound * UInt64(map.grainSizeBytes)
            let length = Int(min(UInt64(run.count) * UInt64(map.grainSizeBytes), source.sizeBytes - offset))
            // The rollback writes the source: the source's other active maps keep their images
            // through copy-on-write, like any other write (found by the end-to-end tests).
            try copyOnWriteLocked(source, offset, length, excluding: map.id)
            do throws(BlockStoreError) {
                try targetStore.read(at: offset, into: &buffer, range: 0..<length)
            } catch {
                throw faultLocked(target, error)
            }
            do throws(BlockStoreError) {
                try sourceStore.write(at: offset, from: buffer, range: 0..<length)
            } catch {
                throw faultLocked(source, error)
            }
            for grain in run {
                maps.restored[grain] = true
                maps.dirty[grain] = false
            }
        }
        do throws(BlockStoreError) { try sourceStore.sync() } catch { throw faultLocked(source, error) }
    }

    /// The largest single read or write of a grain copy.
    static let copyRunBytesMax = 256 << 10  // measured: 4 MiB runs were 3x slower than 256 KiB (tools/bench rollback)

    /// Splits ascending `grains` into runs of adjacent grains, each at most ``copyRunBytesMax``.
    func runs(of grains: [UInt64], _ map: LCMap) -> [ClosedRange<UInt64>] {
        let grainsPerRun = UInt64(max(1, Self.copyRunBytesMax / Int(map.grainSizeBytes)))
        var result: [ClosedRange<UInt64>] = []
        for grain in grains {
            if let last = result.last, grain == last.upperBound + 1, UInt64(last.count) < grainsPerRun {
                result[result.count - 1] = last.lowerBound...grain
            } else {
                result.append(grain...grain)
            }
        }
        return result
    }

    /// For every active map of the source: copy the unsplit grains the write touches to the
    /// target and sync it, then durably mark split and dirty (one commit for all maps).
    func copyOnWriteLocked(_ source: Volume, _ offset: UInt64, _ length: Int, excluding excluded: MapID? = nil) throws(HostIOError) {
        var updated: [MapID: MapBitmaps] = [:]
        for map in committed.forwardMaps(ofSource: source.id) where map.isActive && map.id != excluded {
            guard var maps = bitmaps[map.id], let range = grains(of: map, offset, length) else { continue }
            let unsplit = range.filter { !maps.split[$0] }
            if !unsplit.isEmpty {
                do {
                    try copyGrainsLocked(map, unsplit)
                } catch is TargetFailure {
                    // The target faulted. Its map stopped, and no copy-on-write is owed to it,
                    // unless a rollback reads from that target and keeps the map: then the write
                    // must fail rather than destroy the image (found by the simulator, seed 171).
                    if committed.maps[map.id]?.imageValid == true {
                        throw HostIOError.io(volume: source.name, detail: "the target of lcmap \(map.name) failed during copy-on-write")
                    }
                    continue
                } catch let error as HostIOError {
                    throw error
                } catch {
                    preconditionFailure("\(error)")
                }
                for grain in unsplit { maps.split[grain] = true }
            }
            var changed = !unsplit.isEmpty
            for grain in range where !maps.dirty[grain] {
                maps.dirty[grain] = true
                changed = true
            }
            if changed { updated[map.id] = maps }
        }
        guard !updated.isEmpty else { return }
        do {
            try commitBitmaps(updated)
        } catch {
            throw HostIOError.io(volume: source.name, detail: "\(error)")
        }
    }

    /// Raised when a target failed during a grain copy (the target is then faulted).
    struct TargetFailure: Error {}

    /// Copies grains `grains` (ascending) of `map` from source to target, in runs of adjacent
    /// grains, and syncs the target (unless `sync` is false: the caller syncs it later, before
    /// marking the grains split).
    /// - Throws: ``TargetFailure`` when the target failed (and was faulted), ``HostIOError``
    ///   when the source failed (and was faulted).
    func copyGrainsLocked(_ map: LCMap, _ grains: [UInt64], sync: Bool = true) throws {
        guard let source = committed.volumes[map.sourceID], let target = committed.volumes[map.targetID] else { return }
        guard let sourceStore = stores[source.id] else { throw HostIOError.faulted(volume: source.name) }
        guard let targetStore = stores[target.id] else { throw TargetFailure() }
        let runs = runs(of: grains, map)
        let longest = runs.map { $0.count }.max() ?? 1
        var buffer = [UInt8](repeating: 0, count: longest * Int(map.grainSizeBytes))
        for run in runs {
            let offset = run.lowerBound * UInt64(map.grainSizeBytes)
            let length = Int(min(UInt64(run.count) * UInt64(map.grainSizeBytes), source.sizeBytes - offset))
            do throws(BlockStoreError) {
                try sourceStore.read(at: offset, into: &buffer, range: 0..<length)
            } catch {
                throw faultLocked(source, error)
            }
            do throws(BlockStoreError) {
                try targetStore.write(at: offset, from: buffer, range: 0..<length)
            } catch {
                _ = faultLocked(target, error)
                throw TargetFailure()
            }
        }
        guard sync else { return }
        do throws(BlockStoreError) {
            try targetStore.sync()
        } catch {
            _ = faultLocked(target, error)
            throw TargetFailure()
        }
    }

    /// A write to the target of an active map with autorestore off: grains the target does not
    /// hold yet are first copied from the source (so the rest of each grain stays the image's),
    /// durably marked split, then the write goes to the target.
    private func prepareTargetWriteLocked(_ map: LCMap, _ offset: UInt64, _ length: Int) throws(HostIOError) {
        guard var maps = bitmaps[map.id], let range = grains(of: map, offset, length) else { return }
        let unsplit = range.filter { !maps.split[$0] }
        guard !unsplit.isEmpty else { return }
        let target = committed.volumes[map.targetID]!
        do {
            try copyGrainsLocked(map, unsplit)
        } catch is TargetFailure {
            throw .io(volume: target.name, detail: "copying grains from the source failed")
        } catch let error as HostIOError {
            throw error
        } catch {
            preconditionFailure("\(error)")
        }
        for grain in unsplit { maps.split[grain] = true }
        do { try commitBitmaps([map.id: maps]) } catch { throw .io(volume: target.name, detail: "\(error)") }
    }

    /// Records an I/O error on `volume` as a fault (which may start an automatic rollback) and
    /// returns the error to give the host. Under the lock alone (a host read), the fault waits in
    /// `pendingFaults` for the caller to take the gate exclusively: a fault may start a rollback,
    /// which no plain write may overlap.
    func faultLocked(_ volume: Volume, _ error: BlockStoreError) -> HostIOError {
        if committed.volumes[volume.id]?.status != .faulted {
            let reason = String("\(error)".prefix(Limits.reasonBytesMax / 4))
            if exclusivelyHeld {
                _ = try? commitLocked(.reportFault(volume: String(volume.id), cause: .ioError, reason: reason))
            } else if !pendingFaults.contains(where: { $0.volumeID == volume.id }) {
                pendingFaults.append((volume.id, reason))
            }
        }
        return .io(volume: volume.name, detail: "\(error)")
    }

    /// Commits the faults in `pendingFaults` of volumes not faulted since. Must hold the gate
    /// exclusively.
    func recordPendingFaultsLocked() {
        guard !pendingFaults.isEmpty else { return }
        let faults = pendingFaults
        pendingFaults = []
        for fault in faults where committed.volumes[fault.volumeID].map({ $0.status != .faulted }) == true {
            _ = try? commitLocked(.reportFault(volume: String(fault.volumeID), cause: .ioError, reason: fault.reason))
        }
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

    /// A mutation-testing switch, never set outside tests: when true, a host write to a source
    /// applies the classic ordering bug. It saves the old bytes of the grains to copy, writes
    /// (and, with FUA, syncs) the source FIRST, and only then writes the saved grains to the
    /// target, syncs it and commits `split`/`dirty`. Without a crash nothing shows; a crash
    /// between the source write and the marks leaves a grain that is neither split nor
    /// unchanged, so the point-in-time image changes. The deterministic simulator must catch it
    /// (`Tests/SimulationTests`). Global and unsynchronised: set it only while no controller runs.
    @_spi(Testing) nonisolated(unsafe) public static var brokenOrderingForTesting = false

    /// The write path under ``brokenOrderingForTesting``: the source write comes before the
    /// target copy and the marks. Must hold the lock.
    func brokenCopyOnWriteLocked(_ source: Volume, _ store: BlockStore, _ offset: UInt64, _ bytes: [UInt8], fua: Bool) throws(HostIOError) {
        var saved: [(map: LCMap, maps: MapBitmaps, grains: [UInt64], old: [[UInt8]])] = []
        for map in committed.forwardMaps(ofSource: source.id) where map.isActive {
            guard let maps = bitmaps[map.id], let range = grains(of: map, offset, bytes.count) else { continue }
            let unsplit = range.filter { !maps.split[$0] }
            var old: [[UInt8]] = []
            for grain in unsplit {
                let (grainOffset, length) = grainRange(map, grain, sizeBytes: source.sizeBytes)
                do throws(BlockStoreError) { old.append(try store.read(at: grainOffset, length: length)) } catch { throw faultLocked(source, error) }
            }
            saved.append((map, maps, Array(range), old))
        }
        do throws(BlockStoreError) {
            try store.write(at: offset, bytes: bytes)
            if fua { try store.sync() }
        } catch {
            throw faultLocked(source, error)
        }
        var updated: [MapID: MapBitmaps] = [:]
        for (map, original, range, old) in saved {
            var maps = original
            let unsplit = range.filter { !maps.split[$0] }
            if let targetStore = stores[map.targetID], !unsplit.isEmpty {
                do throws(BlockStoreError) {
                    for (grain, grainBytes) in zip(unsplit, old) {
                        try targetStore.write(at: grain * UInt64(map.grainSizeBytes), bytes: grainBytes)
                    }
                    try targetStore.sync()
                } catch {
                    if let target = committed.volumes[map.targetID] { _ = faultLocked(target, error) }
                    continue
                }
            }
            for grain in unsplit { maps.split[grain] = true }
            for grain in range { maps.dirty[grain] = true }
            updated[map.id] = maps
        }
        guard !updated.isEmpty else { return }
        do { try commitBitmaps(updated) } catch { throw HostIOError.io(volume: source.name, detail: "\(error)") }
    }
}
