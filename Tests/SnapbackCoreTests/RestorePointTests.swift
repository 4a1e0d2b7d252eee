@testable import SnapbackCore
import Testing

/// Issue 12: restore points by onset and hold windows, as pure decisions. Each command is applied
/// at a time of its own (the record's timestamp), as the controller and a replay do.
@Suite("restore points and hold windows (decide)")
struct RestorePointDecideTests {
    struct Timed {
        var state = ControllerState()

        @discardableResult
        mutating func run(_ command: Command, at time: Int64) throws(CommandError) -> [Event] {
            let events = try decide(command, state)
            for event in events { state.apply(event, at: time) }
            return events
        }
    }

    /// src with maps a (src → t1, started at 1000) and b (src → t2, started at 2000), autorestore on.
    static func twoImages(delayB: UInt32 = 0) throws -> Timed {
        var timed = Timed()
        for name in ["src", "t1", "t2"] { try timed.run(.createVolume(name: name, sizeBytes: 1 << 20, path: nil), at: 10) }
        try timed.run(.createMap(CreateMap(source: "src", target: "t1", name: "a", autorestore: true)), at: 20)
        try timed.run(.createMap(CreateMap(source: "src", target: "t2", name: "b", autorestore: true, autorestoreDelaySeconds: delayB)), at: 30)
        try timed.run(.startMap(map: "a"), at: 1000)
        try timed.run(.startMap(map: "b"), at: 2000)
        return timed
    }

    @Test("the start time is the record's; the onset picks the newest image taken at or before it")
    func onsetChoosesOlderImage() throws {
        var timed = try Self.twoImages()
        let (a, b) = (timed.state.map("a")!, timed.state.map("b")!)
        #expect(a.startedAtMilliseconds == 1000 && b.startedAtMilliseconds == 2000)
        let events = try timed.run(.reportFault(volume: "src", cause: .operator, reason: "late", onsetMilliseconds: 1999), at: 5000)
        #expect(events == [
            .volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: "late"), .faultOnset(id: 0, faultID: 1, onsetMilliseconds: 1999),
            .rollbackStarted(id: a.id, trigger: .auto, faultID: 1),
        ])
        // At the start time itself, the image counts as before the onset.
        var again = try Self.twoImages()
        let onTime = try again.run(.reportFault(volume: "src", cause: .operator, reason: "x", onsetMilliseconds: 2000), at: 5000)
        #expect(onTime.last == .rollbackStarted(id: b.id, trigger: .auto, faultID: 1))
    }

    @Test("no image before the onset: no rollback, the volume stays faulted with its onset")
    func onsetBeforeEveryImage() throws {
        var timed = try Self.twoImages()
        let events = try timed.run(.reportFault(volume: "src", cause: .operator, reason: "old", onsetMilliseconds: 999), at: 5000)
        #expect(events.count == 2)
        #expect(timed.state.volumes[0]?.status == .faulted && timed.state.volumes[0]?.fault?.onsetMilliseconds == 999)
        expectRejected(.reportFault(volume: "src", cause: .operator, reason: "x", onsetMilliseconds: -1), timed.state, .invalidOnset)
    }

    @Test("a fault whose onset precedes the running image switches the rollback to an older image")
    func onsetSwitchesRunningRollback() throws {
        var timed = try Self.twoImages()
        let (a, b) = (timed.state.map("a")!, timed.state.map("b")!)
        try timed.run(.reportFault(volume: "src", cause: .operator, reason: "first"), at: 3000)
        #expect(timed.state.runningRollback(onto: 0)?.id == b.id)
        let events = try timed.run(.reportFault(volume: "src", cause: .operator, reason: "began earlier", onsetMilliseconds: 1500), at: 4000)
        #expect(events.count == 4)
        #expect(events[2] == .rollbackStopped(id: b.id, reason: "switched: its image postdates the onset of fault 2"))
        #expect(events[3] == .rollbackStarted(id: a.id, trigger: .auto, faultID: 2))
        #expect(timed.state.runningRollback(onto: 0)?.id == a.id && timed.state.volumes[0]?.status == .restoring)
        // An onset after the running image restarts it instead.
        let later = try timed.run(.reportFault(volume: "src", cause: .operator, reason: "more", onsetMilliseconds: 1800), at: 4500)
        #expect(later.last == .rollbackRestarted(id: a.id, faultID: 3))
    }

    @Test("a hold window schedules the rollback at the fault's time plus the delay; it starts only when asked after")
    func holdWindowSchedules() throws {
        var timed = try Self.twoImages(delayB: 60)
        let b = timed.state.map("b")!
        let events = try timed.run(.reportFault(volume: "src", cause: .operator, reason: "suspicious"), at: 10_000)
        #expect(events.last == .rollbackScheduled(id: b.id, faultID: 1))
        #expect(timed.state.maps[b.id]?.scheduledRollback == ScheduledRollback(faultID: 1, atMilliseconds: 70_000))
        #expect(timed.state.volumes[0]?.status == .faulted)
        let started = try timed.run(.startScheduledRollback(map: b.id), at: 70_000)
        #expect(started == [.rollbackStarted(id: b.id, trigger: .auto, faultID: 1)])
        #expect(timed.state.maps[b.id]?.scheduledRollback == nil)
        expectRejected(.startScheduledRollback(map: b.id), timed.state, .invalidState)
    }

    @Test("recovervolume, an operator's restore, autorestore off and a lost image each drop the schedule")
    func scheduleEnds() throws {
        let fault = Command.reportFault(volume: "src", cause: .operator, reason: "suspicious")
        var recovered = try Self.twoImages(delayB: 60)
        let b = recovered.state.map("b")!
        try recovered.run(fault, at: 10_000)
        try recovered.run(.recoverVolume(volume: "src"), at: 11_000)
        #expect(recovered.state.maps[b.id]?.scheduledRollback == nil && recovered.state.volumes[0]?.status == .online)

        var chosen = try Self.twoImages(delayB: 60)
        try chosen.run(fault, at: 10_000)
        let restore = try chosen.run(.startRestore(map: "a"), at: 11_000)
        #expect(restore.count == 1 && chosen.state.maps[b.id]?.scheduledRollback == nil)

        var off = try Self.twoImages(delayB: 60)
        try off.run(fault, at: 10_000)
        try off.run(.changeMap(map: "b", autorestore: false, copyRate: nil, newName: nil), at: 11_000)
        #expect(off.state.maps[b.id]?.scheduledRollback == nil)

        var stopped = try Self.twoImages(delayB: 60)
        try stopped.run(fault, at: 10_000)
        try stopped.run(.stopMap(map: "b", force: false), at: 11_000)
        #expect(stopped.state.maps[b.id]?.scheduledRollback == nil)
    }

    @Test("autorestoredelay: 0–86400 s on mklcmap and chlcmap, invalid_delay otherwise")
    func delayBounds() throws {
        var timed = try Self.twoImages(delayB: 86_400)
        #expect(timed.state.map("b")?.autorestoreDelaySeconds == 86_400)
        expectRejected(.changeMap(map: "a", autorestore: nil, copyRate: nil, newName: nil, autorestoreDelaySeconds: 86_401), timed.state, .invalidDelay)
        expectRejected(
            .createMap(CreateMap(source: "t1", target: "t2", autorestoreDelaySeconds: 86_401)), timed.state, .invalidDelay)
        let changed = try timed.run(.changeMap(map: "a", autorestore: nil, copyRate: nil, newName: nil, autorestoreDelaySeconds: 5), at: 3000)
        #expect(changed == [.mapAutorestoreDelayChanged(id: 0, seconds: 5)])
        #expect(try decide(.changeMap(map: "a", autorestore: nil, copyRate: nil, newName: nil, autorestoreDelaySeconds: 5), timed.state).isEmpty)
    }
}
