@testable import SnapbackCore
import Testing
import SnapbackRandom

/// Source "src" (id 0) with targets "t1" (id 1) and "t2" (id 2); maps "a" (id 0, reverse 1)
/// src → t1 and "b" (id 2, reverse 3) src → t2.
private func twoMaps(autorestoreA: Bool = true, autorestoreB: Bool = true) throws -> Harness {
    var harness = Harness()
    for name in ["src", "t1", "t2"] { try harness.run(.createVolume(name: name, sizeBytes: Fixture.mebibyte, path: nil)) }
    try harness.run(.createMap(CreateMap(source: "src", target: "t1", name: "a", autorestore: autorestoreA)))
    try harness.run(.createMap(CreateMap(source: "src", target: "t2", name: "b", autorestore: autorestoreB)))
    return harness
}

/// The state right after `volume` faulted, as `decide(.reportFault)` evaluates the policy.
private func faulted(_ harness: Harness, _ volume: VolumeID = 0) -> ControllerState {
    evolve(harness.state, .volumeFaulted(id: volume, faultID: harness.state.nextFaultID, cause: .operator, reason: "x"))
}

@Suite("automatic-rollback policy")
struct PolicyTests {
    @Test("a started map with autorestore on is chosen; with autorestore off it is not")
    func autorestoreOnOff() throws {
        for autorestore in [false, true] {
            let harness = try Fixture.started(autorestore: autorestore)
            let choice = automaticRollbackChoice(for: 0, in: faulted(harness))
            #expect(choice?.id == (autorestore ? 0 : nil))
            let events = try decide(.reportFault(volume: "src", cause: .ioError, reason: "EIO"), harness.state)
            let fault = Event.volumeFaulted(id: 0, faultID: 1, cause: .ioError, reason: "EIO")
            #expect(events == (autorestore ? [fault, .rollbackStarted(id: 0, trigger: .auto, faultID: 1)] : [fault]))
        }
    }

    @Test("autorestore changed by chlcmap takes effect")
    func autorestoreChanged() throws {
        var harness = try Fixture.started(autorestore: false)
        try harness.run(.changeMap(map: "m", autorestore: true, copyRate: nil, newName: nil))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.id == 0)
        try harness.run(.changeMap(map: "m", autorestore: false, copyRate: nil, newName: nil))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
    }

    @Test("a map that was never started, or only prepared, is not chosen")
    func notStarted() throws {
        var harness = try Fixture.mapped(autorestore: true)
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: "x"), harness.state,
            [.volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: "x")])
        try harness.run(.prepareMap(map: "m"))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
    }

    @Test("a copied map (idle_or_copied with its image) is chosen")
    func copied() throws {
        let harness = try Fixture.copied(autorestore: true)
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.id == 0)
    }

    @Test("a stopped map is not chosen")
    func stopped() throws {
        var harness = try Fixture.started(autorestore: true)
        try harness.run(.stopMap(map: "m", force: false))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: "x"), harness.state,
            [.volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: "x")])
    }

    @Test("of two started maps on one source, the most recently started wins")
    func mostRecentlyStarted() throws {
        var harness = try twoMaps()
        try harness.run(.startMap(map: "a"))
        try harness.run(.startMap(map: "b"))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.name == "b")
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: "x"), harness.state,
            [.volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: "x"), .rollbackStarted(id: 2, trigger: .auto, faultID: 1)])
        // Restarting a takes a newer point in time: a wins.
        try harness.run(.stopMap(map: "a", force: true))
        try harness.run(.startMap(map: "a"))
        #expect(harness.state.maps[0]?.startOrdinal == 3)
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.name == "a")
        // Without autorestore on a, the older b is chosen.
        try harness.run(.changeMap(map: "a", autorestore: false, copyRate: nil, newName: nil))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.name == "b")
        // Stopping b leaves none.
        try harness.run(.stopMap(map: "b", force: true))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
    }

    @Test("the choice does not depend on map ids or creation order")
    func orderIndependent() throws {
        var harness = try twoMaps()
        try harness.run(.startMap(map: "b"))
        try harness.run(.startMap(map: "a"))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.name == "a")
    }

    @Test("a map whose target is faulted is not chosen; the other map is")
    func targetFaulted() throws {
        var harness = try twoMaps()
        try harness.run(.startMap(map: "a"))
        try harness.run(.startMap(map: "b"))
        try harness.run(.reportFault(volume: "t2", cause: .ioError, reason: "EIO"))
        #expect(harness.state.maps[2]?.imageValid == false)
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness))?.name == "a")
        // Even a map whose image still claims to be valid is skipped while its target is not online.
        var inconsistent = harness
        inconsistent.state.maps[2]?.imageValid = true
        #expect(automaticRollbackChoice(for: 0, in: faulted(inconsistent))?.name == "a")
        try harness.run(.reportFault(volume: "t1", cause: .ioError, reason: "EIO"))
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
    }

    @Test("a volume that is already being restored gets no second rollback: the running one restarts")
    func alreadyRestoring() throws {
        var harness = try twoMaps()
        try harness.run(.startMap(map: "a"))
        try harness.run(.startMap(map: "b"))
        let events = try harness.run(.reportFault(volume: "src", cause: .operator, reason: "first"))
        #expect(events.last == .rollbackStarted(id: 2, trigger: .auto, faultID: 1))
        #expect(harness.state.volumes[0]?.status == .restoring)
        #expect(automaticRollbackChoice(for: 0, in: faulted(harness)) == nil)
        expectAccepted(
            .reportFault(volume: "src", cause: .ioError, reason: "second"), harness.state,
            [.volumeFaulted(id: 0, faultID: 2, cause: .ioError, reason: "second"), .rollbackRestarted(id: 2, faultID: 2)])
    }

    @Test("an unknown volume, or a volume with no maps, gets no rollback")
    func noCandidates() throws {
        let harness = try Fixture.started(autorestore: true)
        #expect(automaticRollbackChoice(for: 99, in: harness.state) == nil)
        // The target has no forward maps of its own.
        #expect(automaticRollbackChoice(for: 1, in: faulted(harness, 1)) == nil)
        let events = try decide(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"), harness.state)
        #expect(events == [.volumeFaulted(id: 1, faultID: 1, cause: .ioError, reason: "EIO")])
    }

    @Test("after a completed rollback the map keeps its image and a second fault rolls back again")
    func secondFault() throws {
        var harness = try Fixture.started(autorestore: true)
        #expect(try harness.run(.reportFault(volume: "src", cause: .operator, reason: "one")).count == 2)
        try harness.run(.completeRollback(map: 0))
        #expect(harness.state.volumes[0]?.status == .online)
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: "two"), harness.state,
            [.volumeFaulted(id: 0, faultID: 2, cause: .operator, reason: "two"), .rollbackStarted(id: 0, trigger: .auto, faultID: 2)])
    }

    @Test("after recovervolume, a new fault is decided afresh")
    func afterRecover() throws {
        var harness = try Fixture.started(autorestore: false)
        try harness.run(.reportFault(volume: "src", cause: .operator, reason: "one"))
        try harness.run(.recoverVolume(volume: "src"))
        try harness.run(.changeMap(map: "m", autorestore: true, copyRate: nil, newName: nil))
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: "two"), harness.state,
            [.volumeFaulted(id: 0, faultID: 2, cause: .operator, reason: "two"), .rollbackStarted(id: 0, trigger: .auto, faultID: 2)])
    }

    /// For many random two-map configurations, `decide(.reportFault)` appends the automatic
    /// rollback exactly when the policy picks a map, and picks the most recently started
    /// eligible one.
    @Test("reportFault appends rollbackStarted(.auto) exactly when the policy picks a map")
    func randomConfigurations() throws {
        var random = SeededRandom(seed: 0xFA17)
        for _ in 0..<300 {
            var harness = try twoMaps(autorestoreA: random.chance(50), autorestoreB: random.chance(50))
            for _ in 0..<random.int(0...6) {
                let map = random.pick(["a", "b"])
                let command: Command = switch random.int(0...5) {
                case 0: .startMap(map: map)
                case 1: .stopMap(map: map, force: random.chance(50))
                case 2: .completeCopy(map: map == "a" ? 0 : 2)
                case 3: .changeMap(map: map, autorestore: random.chance(50), copyRate: nil, newName: nil)
                case 4: .prepareMap(map: map)
                default: .reportFault(volume: random.pick(["t1", "t2"]), cause: .ioError, reason: "EIO")
                }
                _ = try? harness.run(command)
            }
            let events = try decide(.reportFault(volume: "src", cause: .operator, reason: "x"), harness.state)
            let after = evolve(harness.state, events[0])
            let choice = automaticRollbackChoice(for: 0, in: after)
            if let choice {
                #expect(events.count == 2)
                #expect(events.last == .rollbackStarted(id: choice.id, trigger: .auto, faultID: harness.state.nextFaultID))
            } else {
                #expect(events.count == 1)
            }
            // Reference model of the policy.
            let eligible = harness.state.forwardMaps(ofSource: 0).filter { map in
                map.autorestore && map.imageValid && map.startOrdinal != nil
                    && (map.state == .copying || map.state == .idleOrCopied)
                    && harness.state.volumes[map.targetID]?.status == .online
            }
            let expected = eligible.max { $0.startOrdinal! < $1.startOrdinal! }
            #expect(choice?.id == expected?.id)
        }
    }
}
