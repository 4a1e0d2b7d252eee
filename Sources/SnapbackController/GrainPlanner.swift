import SnapbackCore
import SnapbackData

/// A grain copy a plan asks for: grains `grains` (ascending) of map `map`, copied from volume
/// `from` to volume `to` at the same offsets.
struct GrainCopy: Sendable, Equatable {
    var map: MapID
    var from: VolumeID
    var to: VolumeID
    var grains: [UInt64]
}

/// One durable stage of a plan: the copies, then a sync of every volume they wrote, then one
/// commit of the marks (with whatever events go with them). A later stage may rely on an
/// earlier one being durable.
struct GrainStage: Sendable, Equatable {
    var copies: [GrainCopy] = []
    var marks = BitmapMarks()

    var isEmpty: Bool { copies.isEmpty && marks.isEmpty }
}

/// The bitmaps as a plan sees them: the controller's, with the marks of the stages planned so
/// far applied on top. Planning never changes the controller's bitmaps.
struct PlannedBitmaps {
    let base: [MapID: MapBitmaps]
    /// Marks of earlier stages of the plan (visible to later ones).
    private(set) var earlier = BitmapMarks()
    /// Marks of the stage being planned.
    var marks = BitmapMarks()

    init(_ base: [MapID: MapBitmaps]) { self.base = base }

    func has(_ map: MapID) -> Bool { base[map] != nil }

    /// The grain's bit once the planned marks are made.
    func bit(_ map: MapID, _ kind: BitmapKind, _ grain: UInt64) -> Bool {
        if let value = marks.planned(map, kind, grain) ?? earlier.planned(map, kind, grain) { return value }
        guard let bitmaps = base[map] else { return false }
        switch kind {
        case .split: return bitmaps.split[grain]
        case .dirty: return bitmaps.dirty[grain]
        case .restored: return bitmaps.restored[grain]
        }
    }

    mutating func mark(_ map: MapID, _ kind: BitmapKind, _ grain: UInt64, _ value: Bool) {
        if bit(map, kind, grain) != value { marks.set(map, kind, grain, value) }
    }

    /// Ends the stage being planned: returns its marks, which later stages then see as made.
    mutating func endStage() -> BitmapMarks {
        let stage = marks
        earlier.merge(stage)
        marks = BitmapMarks()
        return stage
    }
}

/// The pure planning of every grain movement (`Specs/data-plane.md`): host writes (copy-on-write,
/// restore before write, target writes), rollback steps and background-copy steps. Each takes the
/// committed state and the bitmaps (with the plan's marks so far) and returns copies and marks;
/// the controller's one executor carries them out in the durability order. No I/O, no clock.
enum GrainPlanner {
    /// The grains of `map` that `offset..<offset+length` touches.
    static func grains(of map: LCMap, _ offset: UInt64, _ length: Int) -> ClosedRange<UInt64>? {
        guard length > 0 else { return nil }
        let grainBytes = UInt64(map.grainSizeBytes)
        return (offset / grainBytes)...((offset + UInt64(length) - 1) / grainBytes)
    }

    /// Copy-on-write for a write of `length` bytes at `offset` on `source`: for every active
    /// forward map of the source (but `excluded`), the touched grains not split are copied to the
    /// target and marked split, and every touched grain is marked dirty (brief section 3).
    static func copyOnWrite(
        _ state: ControllerState, _ view: inout PlannedBitmaps, source: VolumeID, offset: UInt64, length: Int, excluding excluded: MapID? = nil
    ) -> [GrainCopy] {
        var copies: [GrainCopy] = []
        for map in state.forwardMaps(ofSource: source) where map.isActive && map.id != excluded && view.has(map.id) {
            guard let range = grains(of: map, offset, length) else { continue }
            let unsplit = range.filter { !view.bit(map.id, .split, $0) }
            if !unsplit.isEmpty {
                copies.append(GrainCopy(map: map.id, from: map.sourceID, to: map.targetID, grains: unsplit))
                for grain in unsplit { view.mark(map.id, .split, grain, true) }
            }
            for grain in range { view.mark(map.id, .dirty, grain, true) }
        }
        return copies
    }

    /// Restores `grains` (dirty, not restored, ascending) of the rolling-back `map` onto its
    /// source: stage 1 copies-on-write for the source's other active maps (their images survive
    /// the rollback, like any write); stage 2 copies the grains target → source and marks them
    /// restored and clean when `marking` (a rollback step may make its marks later, coalesced).
    static func restore(
        _ state: ControllerState, _ view: inout PlannedBitmaps, _ map: LCMap, grains restoring: [UInt64], sizeBytes: UInt64, marking: Bool
    ) -> [GrainStage] {
        guard !restoring.isEmpty else { return [] }
        var first = GrainStage()
        for run in runs(of: restoring, grainSizeBytes: map.grainSizeBytes, runBytesMax: UInt64.max) {
            let (offset, length) = byteRange(of: run, grainSizeBytes: map.grainSizeBytes, sizeBytes: sizeBytes)
            first.copies += copyOnWrite(state, &view, source: map.sourceID, offset: offset, length: length, excluding: map.id)
        }
        first.marks = view.endStage()
        var second = GrainStage(copies: [GrainCopy(map: map.id, from: map.targetID, to: map.sourceID, grains: restoring)])
        if marking {
            for grain in restoring {
                view.mark(map.id, .restored, grain, true)
                view.mark(map.id, .dirty, grain, false)
            }
        }
        second.marks = view.endStage()
        return [first, second].filter { !$0.isEmpty }
    }

    /// Before a host write during `map`'s rollback: every touched grain not yet restored is
    /// settled: dirty ones are restored (see ``restore``), then all of them are marked restored,
    /// so that no later rollback step copies over the write. (Found by the Promela model: marking
    /// only the dirty grains let a write to a clean grain become dirty, unrestored, and be
    /// overwritten by a later step.) Grains a rollback step copied but has not marked yet are
    /// neither restored nor clean in the bitmaps, so they are simply restored again.
    static func restoreBeforeWrite(
        _ state: ControllerState, _ view: inout PlannedBitmaps, _ map: LCMap, offset: UInt64, length: Int, sizeBytes: UInt64
    ) -> [GrainStage] {
        guard view.has(map.id), let range = grains(of: map, offset, length) else { return [] }
        let touched = range.filter { !view.bit(map.id, .restored, $0) }
        guard !touched.isEmpty else { return [] }
        let pending = touched.filter { view.bit(map.id, .dirty, $0) }
        var stages = restore(state, &view, map, grains: pending, sizeBytes: sizeBytes, marking: true)
        for grain in touched { view.mark(map.id, .restored, grain, true) }
        let marks = view.endStage()
        if !marks.isEmpty {
            if stages.last?.copies.first?.to == map.sourceID {
                stages[stages.count - 1].marks.merge(marks)
            } else {
                stages.append(GrainStage(marks: marks))
            }
        }
        return stages
    }

    /// The next grains of `map`'s rollback: dirty, not restored and not in `unmarked`, from
    /// `cursor` on, at most `grainsMax`. Returns them and where the next scan starts.
    static func nextRollbackGrains(
        _ bitmaps: MapBitmaps, from cursor: UInt64, grainsMax: Int, unmarked: Set<UInt64>
    ) -> (grains: [UInt64], cursor: UInt64) {
        var batch: [UInt64] = []
        var next = cursor
        while batch.count < grainsMax, let grain = bitmaps.dirty.nextSet(from: next) {
            if !bitmaps.restored[grain], !unmarked.contains(grain) { batch.append(grain) }
            next = grain + 1
        }
        return (batch, next)
    }

    /// The next grains of `map`'s background copy: not split and not in `unmarked`, from
    /// `cursor` on (wrapping once to the start), at most `grainsMax`.
    static func nextCopyGrains(_ bitmaps: MapBitmaps, from cursor: UInt64, grainsMax: Int, unmarked: Set<UInt64>) -> (grains: [UInt64], cursor: UInt64) {
        var batch: [UInt64] = []
        var next = cursor
        var wrapped = cursor == 0
        while batch.count < grainsMax {
            guard let grain = bitmaps.split.nextClear(from: next) else {
                if wrapped || !batch.isEmpty { break }
                wrapped = true
                next = 0
                continue
            }
            if !unmarked.contains(grain) { batch.append(grain) }
            next = grain + 1
        }
        return (batch, next)
    }

    /// Ascending `grains` as runs of adjacent grains of at most `runBytesMax` bytes each.
    static func runs(of grains: [UInt64], grainSizeBytes: UInt32, runBytesMax: UInt64) -> [ClosedRange<UInt64>] {
        let grainsPerRun = max(1, runBytesMax / UInt64(grainSizeBytes))
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

    /// The bytes of a run of grains (the volume's last grain may be short).
    static func byteRange(of run: ClosedRange<UInt64>, grainSizeBytes: UInt32, sizeBytes: UInt64) -> (offset: UInt64, length: Int) {
        let offset = run.lowerBound * UInt64(grainSizeBytes)
        return (offset, Int(min(UInt64(run.count) * UInt64(grainSizeBytes), sizeBytes - offset)))
    }
}
