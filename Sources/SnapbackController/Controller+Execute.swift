import SnapbackCore
import SnapbackData

/// The one executor of grain plans (`GrainPlanner`): it carries out copies, syncs and commits in
/// the order of `Specs/data-plane.md`. Host writes, restores, rollback and copy steps all come
/// through here.
extension Controller {
    /// Why a stage could not be carried out. Nothing of the stage was committed.
    enum StageFailure: Error {
        /// Volume `volume` failed: a read of a copy's `from` volume, or a write or sync of its `to`.
        case volume(VolumeID, BlockStoreError)
        /// A volume a copy needs has no open store (faulted, or missing since start-up).
        case unavailable(VolumeID)
        /// The durable commit of the stage's marks failed.
        case commit(ControllerError)
    }

    /// The largest single read or write of a grain copy.
    static let copyRunBytesMax = 256 << 10  // measured: 4 MiB runs were 3x slower than 256 KiB (tools/bench rollback)

    /// Carries out `copies` in order, run by run (adjacent grains in one read and one write of at
    /// most ``copyRunBytesMax``), prefetching the runs of large copies. Syncs nothing; returns the
    /// volumes written. Must hold the gates of every volume involved and the lock; the lock is
    /// released during the I/O.
    func performCopies(_ copies: [GrainCopy]) throws(StageFailure) -> [VolumeID] {
        var buffer: [UInt8] = []
        return try performCopies(copies, buffer: &buffer)
    }

    /// ``performCopies(_:)`` with a buffer the caller keeps across calls.
    func performCopies(_ copies: [GrainCopy], buffer: inout [UInt8]) throws(StageFailure) -> [VolumeID] {
        // What the copies need, read under the lock.
        var work: [(copy: GrainCopy, from: BlockStore, to: BlockStore, ranges: [(offset: UInt64, length: Int)])] = []
        for copy in copies {
            gates.requireHeld(copy.from, "a grain copy")
            gates.requireHeld(copy.to, "a grain copy")
            guard let ranges = byteRangesLocked(of: copy) else { continue }
            guard let from = stores[copy.from] else { throw .unavailable(copy.from) }
            guard let to = stores[copy.to] else { throw .unavailable(copy.to) }
            work.append((copy, from, to, ranges))
        }
        return try unlocked { () throws(StageFailure) -> [VolumeID] in
            var written: [VolumeID] = []
            for (copy, from, to, ranges) in work {
                if ranges.count > 1 {
                    for (offset, length) in ranges { from.prefetch(at: offset, length: length) }
                }
                for (offset, length) in ranges {
                    if buffer.count < length { buffer = [UInt8](repeating: 0, count: max(length, Self.copyRunBytesMax)) }
                    do throws(BlockStoreError) {
                        try from.read(at: offset, into: &buffer, range: 0..<length)
                    } catch {
                        throw .volume(copy.from, error)
                    }
                    do throws(BlockStoreError) {
                        try to.write(at: offset, from: buffer, range: 0..<length)
                    } catch {
                        throw .volume(copy.to, error)
                    }
                }
                if !written.contains(copy.to) { written.append(copy.to) }
            }
            return written
        }
    }

    /// Carries out one copy run by run like ``performCopies(_:)``, but stops early, after at least
    /// one run, once `stop` says so (host I/O waits for the family). Returns the grains copied (a
    /// prefix of `copy.grains`). Syncs nothing.
    func performCopy(_ copy: GrainCopy, stoppingWhen stop: @escaping () -> Bool) throws(StageFailure) -> [UInt64] {
        guard let map = committed.maps[copy.map], let ranges = byteRangesLocked(of: copy) else { return [] }
        // The whole copy is prefetched at once (the disk may queue it all); it is made in slices
        // of one largest I/O (256 KiB), so that a wait is noticed at once.
        if let from = stores[copy.from] {
            for (offset, length) in ranges { from.prefetch(at: offset, length: length) }
        }
        let sliceGrainsMax = max(1, Self.copyRunBytesMax / Int(map.grainSizeBytes))
        var copied: [UInt64] = []
        var rest = copy.grains[...]
        var buffer: [UInt8] = []
        while !rest.isEmpty {
            let slice = Array(rest.prefix(sliceGrainsMax))
            rest = rest.dropFirst(slice.count)
            _ = try performCopies([GrainCopy(map: copy.map, from: copy.from, to: copy.to, grains: slice)], buffer: &buffer)
            copied += slice
            if !rest.isEmpty && stop() { break }
        }
        return copied
    }

    /// The byte ranges of `copy`'s runs (adjacent grains, at most ``copyRunBytesMax`` each), or
    /// `nil` when its map or volume is gone. Must hold the lock.
    func byteRangesLocked(of copy: GrainCopy) -> [(offset: UInt64, length: Int)]? {
        guard let map = committed.maps[copy.map], let volume = committed.volumes[copy.from] else { return nil }
        return GrainPlanner.runs(of: copy.grains, grainSizeBytes: map.grainSizeBytes, runBytesMax: UInt64(Self.copyRunBytesMax)).map {
            GrainPlanner.byteRange(of: $0, grainSizeBytes: map.grainSizeBytes, sizeBytes: volume.sizeBytes)
        }
    }

    /// Syncs `volumes` (each once, in order), with the lock released during the syncs. Must
    /// hold their gates and the lock.
    func syncVolumes(_ volumes: [VolumeID]) throws(StageFailure) {
        var work: [(VolumeID, BlockStore)] = []
        for volumeID in volumes {
            gates.requireHeld(volumeID, "a sync")
            guard let store = stores[volumeID] else { throw .unavailable(volumeID) }
            work.append((volumeID, store))
        }
        try unlocked { () throws(StageFailure) in
            for (volumeID, store) in work {
                do throws(BlockStoreError) { try store.sync() } catch { throw .volume(volumeID, error) }
            }
        }
    }

    /// Carries out one stage: its copies, a sync of every volume they wrote (and of `extra`: the
    /// volumes earlier unsynced copies wrote), then one durable commit of its marks with the
    /// events of `commands`. Must hold the gate exclusively.
    func perform(_ stage: GrainStage, syncing extra: [VolumeID] = [], commands: [Command] = []) throws(StageFailure) {
        let written = try performCopies(stage.copies)
        try syncVolumes(written + extra.filter { !written.contains($0) })
        guard !stage.marks.isEmpty || !commands.isEmpty else { return }
        do throws(ControllerError) { try commit(marks: stage.marks, commands: commands) } catch { throw .commit(error) }
    }

    /// Carries out `stages` in order (each durable before the next starts).
    func perform(_ stages: [GrainStage]) throws(StageFailure) {
        for stage in stages { try perform(stage) }
    }
}
