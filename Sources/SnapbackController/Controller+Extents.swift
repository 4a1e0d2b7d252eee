import SnapbackCore
import SnapbackData

/// One run of grains of a map's bitmap, in bytes of the volume: changed since the map's point in
/// time or not.
public struct ChangedExtent: Sendable, Hashable {
    /// The length in bytes.
    public var lengthBytes: UInt64
    /// The source was written in these grains since the map started (its `dirty` bitmap).
    public var changed: Bool

    /// A run of `lengthBytes` bytes.
    public init(lengthBytes: UInt64, changed: Bool) {
        self.lengthBytes = lengthBytes
        self.changed = changed
    }
}

/// Read-only views of what a host sees, by extent: the allocation behind a volume's image (NBD
/// `base:allocation`) and the grains a map's source changed (`snapback:dirty:MAP`). Bitmaps are
/// read under the state lock, which is released before any store is asked; no gate is held, so
/// an answer is a snapshot that a concurrent write may make stale (as the NBD protocol allows).
extension Controller {
    /// Which store answers the allocation of a range of a volume's image, or `nil`: allocated
    /// data, whatever the stores say.
    private typealias AllocationSegment = (range: Range<UInt64>, volume: Volume, store: BlockStore?)

    /// The holes and data behind what hosts read of `length` bytes at `offset`: the volume's own
    /// store for its own bytes; on a valid image's target, the target's store for split grains and
    /// the source's for the others; grains a running rollback has not restored yet are reported as
    /// data (never wrong: a hole is only a hint). Throws as a read would (unknown, faulted, range).
    public func allocation(volume volumeID: VolumeID, offset: UInt64, length: UInt64) throws(HostIOError) -> [BlockExtent] {
        let segments = try locked { () throws(HostIOError) -> [AllocationSegment] in
            let (volume, store) = try hostVolumeLocked(volumeID, offset, Int(clamping: length))
            guard length > 0 else { return [] }
            let range = offset ..< offset + length
            if committed.runningRollback(onto: volumeID) != nil {
                // Conservative: which grains come from the image changes with every step.
                return [(range, volume, nil)]
            }
            guard let map = mapTargetingLocked(volumeID), map.imageValid, let maps = bitmaps[map.id] else {
                return [(range, volume, store)]
            }
            guard let source = committed.volumes[map.sourceID], let sourceStore = stores[map.sourceID] else {
                throw .faulted(volume: committed.volumes[map.sourceID]?.name ?? volume.name)
            }
            // Runs of grains with the same `split` bit, found a word at a time.
            let grainBytes = UInt64(map.grainSizeBytes)
            var segments: [AllocationSegment] = []
            var position = offset
            while position < range.upperBound {
                let grain = position / grainBytes
                let split = maps.split[grain]
                let nextGrain = (split ? maps.split.nextClear(from: grain) : maps.split.nextSet(from: grain)) ?? map.grainsTotal
                let end = min(range.upperBound, nextGrain * grainBytes)
                precondition(end > position, "a grain run makes no progress")
                segments.append(split ? (position ..< end, volume, store) : (position ..< end, source, sourceStore))
                position = end
            }
            return segments
        }
        var extents: [BlockExtent] = []
        for segment in segments {
            let found: [BlockExtent]
            if let store = segment.store {
                do throws(BlockStoreError) {
                    found = try store.allocation(at: segment.range.lowerBound, length: UInt64(segment.range.count))
                } catch {
                    throw .io(volume: segment.volume.name, detail: error.description)
                }
            } else {
                found = [BlockExtent(lengthBytes: UInt64(segment.range.count), isHole: false)]
            }
            for extent in found where extent.lengthBytes > 0 {
                if let last = extents.last, last.isHole == extent.isHole {
                    extents[extents.count - 1].lengthBytes += extent.lengthBytes
                } else {
                    extents.append(extent)
                }
            }
        }
        return extents
    }

    /// The grains of forward map `mapID` that its source changed since the map's point in time,
    /// as runs over `length` bytes at `offset` of the source: its `dirty` bitmap (not `split`,
    /// which a background copy also sets for grains the source never changed). Runs are cut at
    /// grain boundaries, so the first and last may cover part of a grain. Throws `.unknownVolume`
    /// when the map is gone and `.faulted` when it has no valid image (nothing to compare with).
    public func changedExtents(map mapID: MapID, offset: UInt64, length: UInt64) throws(HostIOError) -> [ChangedExtent] {
        try locked { () throws(HostIOError) -> [ChangedExtent] in
            guard let map = committed.maps[mapID], map.role == .forward else { throw .unknownVolume("map \(mapID)") }
            let (volume, _) = try hostVolumeLocked(map.sourceID, offset, Int(clamping: length))
            guard map.imageValid, let maps = bitmaps[mapID] else { throw .faulted(volume: volume.name) }
            let grainBytes = UInt64(map.grainSizeBytes)
            let end = offset + length
            var extents: [ChangedExtent] = []
            var position = offset
            while position < end {
                let grain = position / grainBytes
                let dirty = maps.dirty[grain]
                let nextGrain = (dirty ? maps.dirty.nextClear(from: grain) : maps.dirty.nextSet(from: grain)) ?? map.grainsTotal
                let stop = min(end, nextGrain * grainBytes)
                precondition(stop > position, "a grain run makes no progress")
                extents.append(ChangedExtent(lengthBytes: stop - position, changed: dirty))
                position = stop
            }
            return extents
        }
    }

    /// The forward maps whose source is `volumeID`, by name (the `snapback:dirty:MAP` contexts
    /// of its export). Reads the published state: no lock.
    public func mapsOfSource(_ volumeID: VolumeID) -> [(id: MapID, name: String)] {
        state.maps.values.filter { $0.role == .forward && $0.sourceID == volumeID }.sorted { $0.id < $1.id }.map { ($0.id, $0.name) }
    }
}
