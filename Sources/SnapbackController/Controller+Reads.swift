import SnapbackCore
import SnapbackData

/// Host reads: point-in-time images on targets, images of grains not yet restored on a
/// restoring source, and plain reads outside the lock.
extension Controller {
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
        // A failed disk read faults the volume durably, before the host hears of it: the image
        // read holds the family's gates, so `faultLocked` records the fault at once.
        try readLocked(volume: volumeID, offset: offset, into: bytes)
    }

    /// A read that needs no other volume's bytes (the volume is no valid image's target and no
    /// rollback restores it): decided under the lock with the gate held shared, then read from
    /// the disk after the lock is released, alongside other plain reads and writes. Returns false,
    /// having read nothing, when the read needs the image (the locked path).
    private func readPlain(volume volumeID: VolumeID, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) throws(HostIOError) -> Bool {
        try plainAccess(volume: volumeID) { () throws(HostIOError) -> (Volume, BlockStore)? in
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
    func plainAccess(
        volume volumeID: VolumeID, decide: () throws(HostIOError) -> (Volume, BlockStore)?, io: (BlockStore) throws(BlockStoreError) -> Void
    ) throws(HostIOError) -> Bool {
        let gate = gates.gate(volumeID)
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
            throw exclusive(volumes: { [volume.id] }) { failureLocked(volume, error) }
        }
        gate.unlock()
        return true
    }

    /// An image read: the family's gates held, so no copy, restore or mark of the family runs
    /// meanwhile. Which bytes come from which volume is decided under the lock; the reads run
    /// with it released.
    private func readLocked(volume volumeID: VolumeID, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) throws(HostIOError) {
        try exclusive(volumes: { [volumeID] }) { () throws(HostIOError) in
            let (volume, store) = try hostVolumeLocked(volumeID, offset, bytes.count)
            var segments: [(volume: Volume, store: BlockStore, range: Range<Int>)] = [(volume, store, 0..<bytes.count)]
            if let map = mapTargetingLocked(volumeID), map.imageValid, let maps = bitmaps[map.id] {
                // Target: grains the target does not hold come from the source.
                segments += try overlayLocked(bytes.count, offset, map, from: map.sourceID, where: { !maps.split[$0] })
            }
            if let rollback = committed.runningRollback(onto: volumeID), let maps = bitmaps[rollback.id] {
                // Restoring source: grains not yet restored come from the image on the target.
                segments += try overlayLocked(bytes.count, offset, rollback, from: rollback.targetID, where: { maps.dirty[$0] && !maps.restored[$0] })
            }
            // In order: the volume's own bytes first, then the image's grains over them.
            let failure = unlocked { () -> (Volume, BlockStoreError)? in
                for segment in segments {
                    do throws(BlockStoreError) {
                        try segment.store.read(
                            at: offset + UInt64(segment.range.lowerBound), into: UnsafeMutableRawBufferPointer(rebasing: bytes[segment.range]))
                    } catch {
                        return (segment.volume, error)
                    }
                }
                return nil
            }
            if let (failed, error) = failure { throw failureLocked(failed, error) }
        }
    }

    /// The parts of a read of `length` bytes at `offset` in grains of `map` matching `condition`,
    /// to be read from volume `otherID`.
    private func overlayLocked(
        _ length: Int, _ offset: UInt64, _ map: LCMap, from otherID: VolumeID, where condition: (UInt64) -> Bool
    ) throws(HostIOError) -> [(volume: Volume, store: BlockStore, range: Range<Int>)] {
        guard let range = grains(of: map, offset, length), let other = committed.volumes[otherID] else { return [] }
        let end = offset + UInt64(length)
        var segments: [(volume: Volume, store: BlockStore, range: Range<Int>)] = []
        for grain in range where condition(grain) {
            let start = max(offset, grain * UInt64(map.grainSizeBytes))
            let stop = min(end, (grain + 1) * UInt64(map.grainSizeBytes))
            guard let store = stores[otherID] else { throw .faulted(volume: other.name) }
            segments.append((other, store, Int(start - offset)..<Int(stop - offset)))
        }
        return segments
    }

}
