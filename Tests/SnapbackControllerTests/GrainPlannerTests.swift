@testable import SnapbackController
import SnapbackCore
import SnapbackData
import Testing

/// The grain planner is pure: plans are checked here without a disk, a log or a controller.
@Suite("grain planning")
struct GrainPlannerTests {
    static let grain: UInt64 = 64 << 10

    /// Volumes s and t (1 MiB: 16 grains of 64 KiB), map m (s → t) started; optionally faulted
    /// with autorestore on, so that a rollback of m runs.
    static func state(rollingBack: Bool = false, secondMap: Bool = false) throws -> ControllerState {
        var state = ControllerState()
        var commands: [Command] = [
            .createVolume(name: "s", sizeBytes: 1 << 20, path: nil),
            .createVolume(name: "t", sizeBytes: 1 << 20, path: nil),
            .createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)),
            .startMap(map: "m"),
        ]
        if secondMap {
            commands += [
                .createVolume(name: "u", sizeBytes: 1 << 20, path: nil),
                .createMap(CreateMap(source: "s", target: "u", name: "n", autorestore: false, copyRate: 0, grainSizeBytes: 64 << 10)),
                .startMap(map: "n"),
            ]
        }
        if rollingBack { commands.append(.reportFault(volume: "s", cause: .operator, reason: "test")) }
        for command in commands {
            for event in try decide(command, state) { state.apply(event) }
        }
        return state
    }

    static func bitmaps(_ state: ControllerState, _ edit: (inout [MapID: MapBitmaps]) -> Void = { _ in }) -> [MapID: MapBitmaps] {
        var bitmaps: [MapID: MapBitmaps] = [:]
        for map in state.mapsByID where map.role == .forward { bitmaps[map.id] = MapBitmaps(grainCount: map.grainsTotal) }
        edit(&bitmaps)
        return bitmaps
    }

    @Test("copy-on-write copies unsplit grains and marks split and dirty; split grains need only dirty")
    func copyOnWrite() throws {
        let state = try Self.state()
        let m = state.map("m")!
        var view = PlannedBitmaps(Self.bitmaps(state) { $0[m.id]!.split[1] = true })
        let copies = GrainPlanner.copyOnWrite(state, &view, source: m.sourceID, offset: 100, length: Int(2 * Self.grain))
        #expect(copies == [GrainCopy(map: m.id, from: m.sourceID, to: m.targetID, grains: [0, 2])])
        let marks = view.endStage()
        #expect(marks.planned(m.id, .split, 0) == true && marks.planned(m.id, .split, 2) == true && marks.planned(m.id, .split, 1) == nil)
        #expect((0...2).allSatisfy { marks.planned(m.id, .dirty, $0) == true } && marks.count == 5)
        // The same grains again in a later write of the plan (a batch): nothing more to copy or mark.
        let again = GrainPlanner.copyOnWrite(state, &view, source: m.sourceID, offset: 0, length: Int(3 * Self.grain))
        #expect(again.isEmpty && view.endStage().isEmpty)
    }

    @Test("a write to a volume that is no active map's source plans nothing")
    func noCopyOnWriteForTargets() throws {
        let state = try Self.state()
        let m = state.map("m")!
        var view = PlannedBitmaps(Self.bitmaps(state))
        #expect(GrainPlanner.copyOnWrite(state, &view, source: m.targetID, offset: 0, length: 4096).isEmpty && view.marks.isEmpty)
    }

    @Test("restore before write: dirty grains come back from the image, every touched grain is marked restored")
    func restoreBeforeWrite() throws {
        let state = try Self.state(rollingBack: true, secondMap: true)
        let m = state.map("m")!
        let n = state.map("n")!
        #expect(state.runningRollback(onto: m.sourceID)?.id == m.id)
        let bitmaps = Self.bitmaps(state) {
            for grain: UInt64 in [0, 1] {
                $0[m.id]!.split[grain] = true
                $0[m.id]!.dirty[grain] = true
            }
            $0[m.id]!.restored[1] = true
        }
        var view = PlannedBitmaps(bitmaps)
        let stages = GrainPlanner.restoreBeforeWrite(state, &view, m, offset: 0, length: Int(3 * Self.grain), sizeBytes: 1 << 20)
        #expect(stages.count == 2)
        // 1. The source's other map keeps its image: grain 0 is copied to n's target first.
        #expect(stages[0].copies == [GrainCopy(map: n.id, from: m.sourceID, to: n.targetID, grains: [0])])
        #expect(stages[0].marks.planned(n.id, .split, 0) == true && stages[0].marks.planned(n.id, .dirty, 0) == true)
        // 2. Grain 0 restored from the image; grains 0 and 2 marked restored (2 was clean), 0 clean.
        #expect(stages[1].copies == [GrainCopy(map: m.id, from: m.targetID, to: m.sourceID, grains: [0])])
        #expect(stages[1].marks.planned(m.id, .restored, 0) == true && stages[1].marks.planned(m.id, .restored, 2) == true)
        #expect(stages[1].marks.planned(m.id, .dirty, 0) == false && stages[1].marks.planned(m.id, .restored, 1) == nil)
    }

    @Test("rollback and copy steps pick grains from a cursor, skipping restored, split and unmarked ones")
    func stepsPickGrains() {
        var bitmaps = MapBitmaps(grainCount: 200_000)
        for grain: UInt64 in [3, 4, 5, 70_000, 150_000] { bitmaps.dirty[grain] = true }
        bitmaps.restored[4] = true
        let first = GrainPlanner.nextRollbackGrains(bitmaps, from: 0, grainsMax: 2, unmarked: [5])
        #expect(first.grains == [3, 70_000] && first.cursor == 70_001)
        let next = GrainPlanner.nextRollbackGrains(bitmaps, from: first.cursor, grainsMax: 10, unmarked: [])
        #expect(next.grains == [150_000] && GrainPlanner.nextRollbackGrains(bitmaps, from: next.cursor, grainsMax: 1, unmarked: []).grains.isEmpty)
        for grain: UInt64 in 0..<199_998 { bitmaps.split[grain] = true }
        let copy = GrainPlanner.nextCopyGrains(bitmaps, from: 199_999, grainsMax: 5, unmarked: [])
        #expect(copy.grains == [199_999])
        // Wrapping to the start once when nothing is left after the cursor.
        let wrapped = GrainPlanner.nextCopyGrains(bitmaps, from: 200_000, grainsMax: 5, unmarked: [199_999])
        #expect(wrapped.grains == [199_998])
    }

    @Test("runs of adjacent grains are cut at the largest single I/O")
    func runs() {
        let runs = GrainPlanner.runs(of: [0, 1, 2, 3, 4, 9, 10], grainSizeBytes: 64 << 10, runBytesMax: 256 << 10)
        #expect(runs == [0...3, 4...4, 9...10])
        #expect(GrainPlanner.byteRange(of: 15...16, grainSizeBytes: 64 << 10, sizeBytes: (1 << 20) + 512) == (15 * Self.grain, Int(Self.grain) + 512))
    }
}
