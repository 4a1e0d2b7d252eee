@testable import SnapbackCore
import Testing

private func created(
    id: MapID = 0, name: String = "m", source: VolumeID = 0, target: VolumeID = 1, copyRate: Int = 50,
    grainSizeBytes: UInt32 = 256 << 10, autorestore: Bool = false
) -> Event {
    .mapCreated(
        MapCreated(
            id: id, name: name, reverseID: id + 1, reverseName: name + "_rev", sourceID: source, targetID: target,
            copyRate: copyRate, grainSizeBytes: grainSizeBytes, autorestore: autorestore))
}

@Suite("decide: createMap")
struct DecideCreateMapTests {
    @Test("createMap records MapCreated with the forward and reverse ids and names")
    func accepted() throws {
        let harness = try Fixture.twoVolumes()
        expectAccepted(
            .createMap(CreateMap(source: "src", target: "tgt", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)),
            harness.state, [created(copyRate: 0, grainSizeBytes: 64 << 10, autorestore: true)])
        // Defaults: name lcmapN, autorestore off, copyrate 50, grain 256 KiB; volumes by id.
        expectAccepted(.createMap(CreateMap(source: "0", target: "1")), harness.state, [created(name: "lcmap0")])
        expectAccepted(
            .createMap(CreateMap(source: "src", target: "tgt", name: "m", copyRate: 150)), harness.state,
            [created(copyRate: 150)])
    }

    @Test("the default name follows the next map id")
    func defaultName() throws {
        var harness = try Fixture.mapped()
        try harness.run(.createVolume(name: "t2", sizeBytes: Fixture.mebibyte, path: nil))
        expectAccepted(.createMap(CreateMap(source: "src", target: "t2")), harness.state, [created(id: 2, name: "lcmap2", target: 2)])
    }

    @Test("one source may have several maps (multiple targets)")
    func multipleTargets() throws {
        var harness = try Fixture.mapped()
        try harness.run(.createVolume(name: "t2", sizeBytes: Fixture.mebibyte, path: nil))
        expectAccepted(
            .createMap(CreateMap(source: "src", target: "t2", name: "n")), harness.state, [created(id: 2, name: "n", target: 2)])
    }

    @Test("createMap refuses unknown volumes")
    func unknownVolumes() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createMap(CreateMap(source: "nope", target: "tgt")), harness.state, .unknownVolume)
        expectRejected(.createMap(CreateMap(source: "src", target: "nope")), harness.state, .unknownVolume)
        expectRejected(.createMap(CreateMap(source: "src", target: "7")), harness.state, .unknownVolume)
    }

    @Test("createMap refuses the same volume as source and target, by name or id")
    func sameSourceTarget() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createMap(CreateMap(source: "src", target: "src")), harness.state, .sameSourceTarget)
        expectRejected(.createMap(CreateMap(source: "src", target: "0")), harness.state, .sameSourceTarget)
    }

    @Test("createMap refuses volumes of different sizes")
    func sizeMismatch() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.createVolume(name: "small", sizeBytes: Fixture.mebibyte - 512, path: nil))
        expectRejected(.createMap(CreateMap(source: "src", target: "small")), harness.state, .sizeMismatch)
        expectRejected(.createMap(CreateMap(source: "small", target: "src")), harness.state, .sizeMismatch)
    }

    @Test("a volume is the target of at most one map, and never both a source and a target")
    func targetInUse() throws {
        var harness = try Fixture.mapped()  // src → tgt
        for name in ["a", "b"] { try harness.run(.createVolume(name: name, sizeBytes: Fixture.mebibyte, path: nil)) }
        // tgt is already a target.
        expectRejected(.createMap(CreateMap(source: "a", target: "tgt")), harness.state, .targetInUse)
        // src is a source: it cannot become a target.
        expectRejected(.createMap(CreateMap(source: "a", target: "src")), harness.state, .targetInUse)
        // tgt is a target: it cannot become a source (no cascades).
        expectRejected(.createMap(CreateMap(source: "tgt", target: "a")), harness.state, .targetInUse)
        // The reverse map tgt → src does not count as a forward map.
        #expect(rejection(.createMap(CreateMap(source: "a", target: "b", name: "n")), harness.state) == nil)
        // After the map is removed, tgt is free again.
        try harness.run(.removeMap(map: "m", force: false))
        #expect(rejection(.createMap(CreateMap(source: "a", target: "tgt")), harness.state) == nil)
        #expect(rejection(.createMap(CreateMap(source: "tgt", target: "a")), harness.state) == nil)
    }

    @Test("createMap refuses a copy rate outside 0–150", arguments: [-1, 151, Int.min, Int.max, 256])
    func copyRateOutOfRange(copyRate: Int) throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", copyRate: copyRate)), harness.state, .copyRateOutOfRange)
    }

    @Test("createMap refuses grain sizes other than 64 and 256 KiB", arguments: [0, 1, 64, 256, 32 << 10, 128 << 10, 512 << 10, 1 << 20, UInt32.max] as [UInt32])
    func invalidGrainSize(grainSizeBytes: UInt32) throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(
            .createMap(CreateMap(source: "src", target: "tgt", grainSizeBytes: grainSizeBytes)), harness.state, .invalidGrainSize)
    }

    @Test(
        "createMap refuses invalid names; map names leave room for _rev",
        arguments: ["", "1m", "m m", "-m", "m/", String(repeating: "m", count: 60), String(repeating: "m", count: 64)])
    func invalidName(name: String) throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", name: name)), harness.state, .invalidName)
    }

    @Test("a map name of 59 bytes is accepted and its reverse name has 63")
    func longestName() throws {
        let name = String(repeating: "m", count: Limits.mapNameBytesMax)
        #expect(Limits.mapNameBytesMax == 59)
        let harness = try Fixture.twoVolumes()
        expectAccepted(.createMap(CreateMap(source: "src", target: "tgt", name: name)), harness.state, [created(name: name)])
    }

    @Test("createMap refuses a name or a derived _rev name that another map holds")
    func duplicateNames() throws {
        var harness = try Fixture.mapped()  // m, m_rev
        for name in ["a", "b", "c", "d"] { try harness.run(.createVolume(name: name, sizeBytes: Fixture.mebibyte, path: nil)) }
        expectRejected(.createMap(CreateMap(source: "a", target: "b", name: "m")), harness.state, .duplicateName)
        // The new forward name equals an existing reverse name.
        expectRejected(.createMap(CreateMap(source: "a", target: "b", name: "m_rev")), harness.state, .duplicateName)
        // The derived reverse name equals an existing forward name.
        try harness.run(.createMap(CreateMap(source: "a", target: "b", name: "x_rev")))
        expectRejected(.createMap(CreateMap(source: "c", target: "d", name: "x")), harness.state, .duplicateName)
        // A map name may equal a volume name: they are separate namespaces.
        #expect(rejection(.createMap(CreateMap(source: "c", target: "d", name: "src")), harness.state) == nil)
    }

    @Test("checks run in order: copy rate, grain size, volumes, same, size, target, name")
    func checkOrder() throws {
        let harness = try Fixture.mapped()
        expectRejected(.createMap(CreateMap(source: "src", target: "src", name: "9", copyRate: 999, grainSizeBytes: 1)), harness.state, .copyRateOutOfRange)
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", name: "9", copyRate: 50, grainSizeBytes: 1)), harness.state, .invalidGrainSize)
        expectRejected(.createMap(CreateMap(source: "src", target: "src", name: "9")), harness.state, .sameSourceTarget)
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", name: "9")), harness.state, .targetInUse)
    }

    @Test("createMap refuses when the map table is full")
    func mapLimit() throws {
        // 4096 volumes allow at most 4095 forward maps, so the limit is reached only through a
        // state built directly; the fake maps use volumes outside the state.
        var harness = try Fixture.twoVolumes()
        var id: MapID = 0
        while harness.state.maps.count + 2 <= Limits.mapsMax {
            harness.force(created(id: id, name: "f\(id)", source: 100_000, target: 100_001 + id))
            id += 2
        }
        #expect(harness.state.maps.count == Limits.mapsMax)
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", name: "m")), harness.state, .limitReached)
        harness.force(.mapRemoved(id: 0))
        #expect(rejection(.createMap(CreateMap(source: "src", target: "tgt", name: "m")), harness.state) == nil)
    }
}

@Suite("decide: changeMap")
struct DecideChangeMapTests {
    @Test("changeMap records one event per changed parameter, in the order rename, copy rate, autorestore")
    func accepted() throws {
        let harness = try Fixture.mapped(autorestore: false, copyRate: 50)
        expectAccepted(
            .changeMap(map: "m", autorestore: true, copyRate: 0, newName: "n"), harness.state,
            [
                .mapRenamed(id: 0, name: "n", reverseName: "n_rev"), .mapCopyRateChanged(id: 0, copyRate: 0),
                .mapAutorestoreChanged(id: 0, autorestore: true),
            ])
        expectAccepted(.changeMap(map: "0", autorestore: true, copyRate: nil, newName: nil), harness.state, [.mapAutorestoreChanged(id: 0, autorestore: true)])
        expectAccepted(.changeMap(map: "m", autorestore: nil, copyRate: 150, newName: nil), harness.state, [.mapCopyRateChanged(id: 0, copyRate: 150)])
        expectAccepted(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "p"), harness.state, [.mapRenamed(id: 0, name: "p", reverseName: "p_rev")])
    }

    @Test("changeMap records nothing for values equal to the current ones")
    func unchangedValues() throws {
        let harness = try Fixture.mapped(autorestore: true, copyRate: 70)
        expectAccepted(.changeMap(map: "m", autorestore: true, copyRate: 70, newName: "m"), harness.state, [])
    }

    @Test("changeMap needs at least one parameter")
    func nothingToChange() throws {
        let harness = try Fixture.mapped()
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: nil), harness.state, .nothingToChange)
    }

    @Test("changeMap refuses an unknown map and a reverse map")
    func unknownAndReverse() throws {
        let harness = try Fixture.mapped()
        expectRejected(.changeMap(map: "nope", autorestore: true, copyRate: nil, newName: nil), harness.state, .unknownMap)
        expectRejected(.changeMap(map: "2", autorestore: true, copyRate: nil, newName: nil), harness.state, .unknownMap)
        expectRejected(.changeMap(map: "m_rev", autorestore: true, copyRate: nil, newName: nil), harness.state, .mapIsReverse)
        expectRejected(.changeMap(map: "1", autorestore: nil, copyRate: nil, newName: nil), harness.state, .mapIsReverse)
    }

    @Test("changeMap refuses a copy rate outside 0–150", arguments: [-1, 151])
    func copyRateOutOfRange(copyRate: Int) throws {
        let harness = try Fixture.mapped()
        expectRejected(.changeMap(map: "m", autorestore: true, copyRate: copyRate, newName: nil), harness.state, .copyRateOutOfRange)
    }

    @Test("changeMap refuses invalid new names", arguments: ["", "0m", "m!", String(repeating: "n", count: 60)])
    func invalidName(name: String) throws {
        let harness = try Fixture.mapped()
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: name), harness.state, .invalidName)
    }

    @Test("changeMap refuses a new name or derived _rev name held by another map")
    func duplicateNames() throws {
        var harness = try Fixture.mapped()
        for name in ["a", "b"] { try harness.run(.createVolume(name: name, sizeBytes: Fixture.mebibyte, path: nil)) }
        try harness.run(.createMap(CreateMap(source: "a", target: "b", name: "x")))  // x, x_rev
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "x"), harness.state, .duplicateName)
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "x_rev"), harness.state, .duplicateName)
        // Renaming "x" to "x_rev" would clash only with its own reverse map: allowed by decide.
        #expect(rejection(.changeMap(map: "x", autorestore: nil, copyRate: nil, newName: "x_rev"), harness.state) == nil)
    }

    @Test("a map may be renamed to its own reverse map's name; both indexes stay consistent")
    func renameToOwnReverseName() throws {
        var harness = try Fixture.mapped()  // m, m_rev
        expectAccepted(
            .changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "m_rev"), harness.state,
            [.mapRenamed(id: 0, name: "m_rev", reverseName: "m_rev_rev")])
        try harness.run(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "m_rev"))
        #expect(harness.state.map("m_rev")?.id == 0)
        #expect(harness.state.map("m_rev_rev")?.id == 1)
        #expect(harness.state.map("m") == nil)
        #expect(harness.state.mapIDsByName == ["m_rev": 0, "m_rev_rev": 1])
        checkInvariants(harness.state)
        #expect(try ControllerState.decode(harness.state.encoded()) == harness.state)
    }

    @Test("a map may take its reverse map's suffix-less name back")
    func renameWithinPair() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.createMap(CreateMap(source: "src", target: "tgt", name: "b_rev")))  // b_rev, b_rev_rev
        try harness.run(.changeMap(map: "b_rev", autorestore: nil, copyRate: nil, newName: "b"))
        #expect(harness.state.map("b")?.id == 0)
        #expect(harness.state.map("b_rev")?.id == 1)
        #expect(harness.state.map("b_rev_rev") == nil)
        checkInvariants(harness.state)
    }

    @Test("the whole change is refused when one part is invalid")
    func atomic() throws {
        let harness = try Fixture.mapped()
        expectRejected(.changeMap(map: "m", autorestore: true, copyRate: 151, newName: "n"), harness.state, .copyRateOutOfRange)
        expectRejected(.changeMap(map: "m", autorestore: true, copyRate: 10, newName: "9"), harness.state, .invalidName)
    }
}

@Suite("decide: prepare and start")
struct DecideStartTests {
    @Test("startMap of an idle map prepares and starts it with the next start ordinal")
    func startIdle() throws {
        var harness = try Fixture.mapped()
        expectAccepted(.startMap(map: "m"), harness.state, [.mapPreparing(id: 0), .mapPrepared(id: 0), .mapStarted(id: 0, startOrdinal: 1)])
        try harness.run(.startMap(map: "m"))
        try harness.run(.stopMap(map: "m", force: false))
        expectAccepted(.startMap(map: "0"), harness.state, [.mapPreparing(id: 0), .mapPrepared(id: 0), .mapStarted(id: 0, startOrdinal: 2)])
    }

    @Test("prepareMap then startMap: the second start records only MapStarted")
    func prepareThenStart() throws {
        var harness = try Fixture.mapped()
        expectAccepted(.prepareMap(map: "m"), harness.state, [.mapPreparing(id: 0), .mapPrepared(id: 0)])
        try harness.run(.prepareMap(map: "m"))
        #expect(harness.state.maps[0]?.state == .prepared)
        expectRejected(.prepareMap(map: "m"), harness.state, .invalidState)
        expectAccepted(.startMap(map: "m"), harness.state, [.mapStarted(id: 0, startOrdinal: 1)])
    }

    @Test("a copied map may be started again (a new point in time)")
    func restartCopied() throws {
        let harness = try Fixture.copied()
        expectAccepted(.startMap(map: "m"), harness.state, [.mapPreparing(id: 0), .mapPrepared(id: 0), .mapStarted(id: 0, startOrdinal: 2)])
        expectAccepted(.prepareMap(map: "m"), harness.state, [.mapPreparing(id: 0), .mapPrepared(id: 0)])
    }

    @Test("start and prepare refuse a map that is already started")
    func alreadyStarted() throws {
        var harness = try Fixture.started()
        expectRejected(.startMap(map: "m"), harness.state, .mapAlreadyStarted)
        expectRejected(.prepareMap(map: "m"), harness.state, .mapAlreadyStarted)
        // The transient states refuse too (reachable only through events).
        harness.force(.mapPreparing(id: 0))
        expectRejected(.startMap(map: "m"), harness.state, .mapAlreadyStarted)
        harness.force(.mapStopping(id: 0))
        expectRejected(.startMap(map: "m"), harness.state, .mapAlreadyStarted)
    }

    @Test("start and prepare refuse unknown and reverse maps")
    func unknownAndReverse() throws {
        let harness = try Fixture.mapped()
        for command in [Command.startMap(map: "nope"), .prepareMap(map: "nope"), .startMap(map: "9")] {
            expectRejected(command, harness.state, .unknownMap)
        }
        for command in [Command.startMap(map: "m_rev"), .prepareMap(map: "m_rev"), .startMap(map: "1")] {
            expectRejected(command, harness.state, .mapIsReverse)
        }
    }

    @Test("start refuses a faulted source or target")
    func faultedVolumes() throws {
        for volume in ["src", "tgt"] {
            var harness = try Fixture.mapped()
            try harness.run(.reportFault(volume: volume, cause: .ioError, reason: "EIO"))
            expectRejected(.startMap(map: "m"), harness.state, .volumeFaulted)
            expectRejected(.prepareMap(map: "m"), harness.state, .volumeFaulted)
            try harness.run(.recoverVolume(volume: volume))
            #expect(rejection(.startMap(map: "m"), harness.state) == nil)
        }
    }

    @Test("start refuses a map whose source is being restored, and the map that is rolling back")
    func restoringVolumes() throws {
        var harness = try Fixture.restoring()
        try harness.run(.createVolume(name: "t2", sizeBytes: Fixture.mebibyte, path: nil))
        try harness.run(.createMap(CreateMap(source: "src", target: "t2", name: "n")))
        expectRejected(.startMap(map: "n"), harness.state, .volumeRestoring)
        expectRejected(.prepareMap(map: "n"), harness.state, .volumeRestoring)
        // The rolling-back map itself is copying: its rollback is reported first.
        expectRejected(.startMap(map: "m"), harness.state, .mapRestoring)
        // After the rollback, both may start (m is still copying, so it reports that).
        try harness.run(.completeRollback(map: 0))
        #expect(rejection(.startMap(map: "n"), harness.state) == nil)
        expectRejected(.startMap(map: "m"), harness.state, .mapAlreadyStarted)
    }
}

@Suite("decide: startRestore")
struct DecideRestoreTests {
    @Test("startRestore after a fault records an operator rollback naming the fault")
    func manualRollbackAfterFault() throws {
        var harness = try Fixture.started(autorestore: false)
        try harness.run(.reportFault(volume: "src", cause: .operator, reason: "ransomware"))
        expectAccepted(.startRestore(map: "m"), harness.state, [.rollbackStarted(id: 0, trigger: .operator, faultID: 1)])
        // Naming the reverse map rolls back through the same forward map.
        expectAccepted(.startRestore(map: "m_rev"), harness.state, [.rollbackStarted(id: 0, trigger: .operator, faultID: 1)])
        expectAccepted(.startRestore(map: "1"), harness.state, [.rollbackStarted(id: 0, trigger: .operator, faultID: 1)])
    }

    @Test("startRestore of an online source records no fault")
    func manualRollbackOnline() throws {
        let copying = try Fixture.started()
        expectAccepted(.startRestore(map: "m"), copying.state, [.rollbackStarted(id: 0, trigger: .operator, faultID: nil)])
        let copied = try Fixture.copied()
        expectAccepted(.startRestore(map: "m"), copied.state, [.rollbackStarted(id: 0, trigger: .operator, faultID: nil)])
    }

    @Test("startRestore refuses an unknown map")
    func unknownMap() throws {
        let harness = try Fixture.started()
        expectRejected(.startRestore(map: "nope"), harness.state, .unknownMap)
    }

    @Test("startRestore refuses a map without a valid image: never started, prepared, stopped, target faulted")
    func noValidImage() throws {
        var harness = try Fixture.mapped()
        expectRejected(.startRestore(map: "m"), harness.state, .noValidImage)
        try harness.run(.prepareMap(map: "m"))
        expectRejected(.startRestore(map: "m"), harness.state, .noValidImage)
        try harness.run(.startMap(map: "m"))
        #expect(rejection(.startRestore(map: "m"), harness.state) == nil)
        try harness.run(.stopMap(map: "m", force: true))
        expectRejected(.startRestore(map: "m"), harness.state, .noValidImage)

        var faultedTarget = try Fixture.started()
        try faultedTarget.run(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"))
        expectRejected(.startRestore(map: "m"), faultedTarget.state, .noValidImage)
        // Recovering the target does not make its image trustworthy again.
        try faultedTarget.run(.recoverVolume(volume: "tgt"))
        expectRejected(.startRestore(map: "m"), faultedTarget.state, .noValidImage)

        // A copied map that is prepared again has discarded its image for restore purposes.
        var reprepared = try Fixture.copied()
        try reprepared.run(.prepareMap(map: "m"))
        expectRejected(.startRestore(map: "m"), reprepared.state, .noValidImage)
    }

    @Test("startRestore refuses the target's status being other than online even if imageValid is set")
    func targetNotOnline() throws {
        // Reachable only through events: a map with a valid image whose target is faulted.
        var harness = try Fixture.started()
        harness.state.volumes[1]?.status = .faulted
        expectRejected(.startRestore(map: "m"), harness.state, .noValidImage)
    }

    @Test("startRestore refuses while the map, or another map of the same source, rolls back")
    func alreadyRestoring() throws {
        var harness = try Fixture.restoring()
        expectRejected(.startRestore(map: "m"), harness.state, .mapRestoring)
        expectRejected(.startRestore(map: "m_rev"), harness.state, .mapRestoring)
        try harness.run(.createVolume(name: "t2", sizeBytes: Fixture.mebibyte, path: nil))
        try harness.run(.createMap(CreateMap(source: "src", target: "t2", name: "n")))
        // n never started: but the running rollback is reported first.
        expectRejected(.startRestore(map: "n"), harness.state, .volumeRestoring)
    }
}

@Suite("decide: stopMap and removeMap")
struct DecideStopRemoveTests {
    @Test("stopMap of a copying map: stopping then stopped, or stopped at once with force")
    func stopCopying() throws {
        let harness = try Fixture.started()
        expectAccepted(.stopMap(map: "m", force: false), harness.state, [.mapStopping(id: 0), .mapStopped(id: 0)])
        expectAccepted(.stopMap(map: "m", force: true), harness.state, [.mapStopped(id: 0)])
    }

    @Test("stopMap of a prepared or preparing map, or of a copied map with an image")
    func stopOtherStates() throws {
        var prepared = try Fixture.mapped()
        try prepared.run(.prepareMap(map: "m"))
        expectAccepted(.stopMap(map: "m", force: false), prepared.state, [.mapStopped(id: 0)])
        prepared.force(.mapPreparing(id: 0))
        expectAccepted(.stopMap(map: "m", force: false), prepared.state, [.mapStopped(id: 0)])
        let copied = try Fixture.copied()
        expectAccepted(.stopMap(map: "m", force: false), copied.state, [.mapStopped(id: 0)])
    }

    @Test("stopMap refuses a map with nothing to stop")
    func stopNothing() throws {
        var harness = try Fixture.mapped()
        expectRejected(.stopMap(map: "m", force: false), harness.state, .mapNotStarted)
        expectRejected(.stopMap(map: "m", force: true), harness.state, .mapNotStarted)
        try harness.run(.startMap(map: "m"))
        try harness.run(.stopMap(map: "m", force: false))
        expectRejected(.stopMap(map: "m", force: false), harness.state, .mapNotStarted)
        harness.force(.mapStopping(id: 0))
        expectRejected(.stopMap(map: "m", force: true), harness.state, .mapNotStarted)
    }

    @Test("stopMap and removeMap refuse unknown and reverse maps")
    func unknownAndReverse() throws {
        let harness = try Fixture.started()
        for force in [false, true] {
            expectRejected(.stopMap(map: "nope", force: force), harness.state, .unknownMap)
            expectRejected(.removeMap(map: "nope", force: force), harness.state, .unknownMap)
            expectRejected(.stopMap(map: "m_rev", force: force), harness.state, .mapIsReverse)
            expectRejected(.removeMap(map: "1", force: force), harness.state, .mapIsReverse)
        }
    }

    @Test("removeMap refuses a map that is rolling back, even with force; stopMap needs force, which abandons the rollback")
    func rollingBack() throws {
        let harness = try Fixture.restoring()
        for force in [false, true] {
            expectRejected(.removeMap(map: "m", force: force), harness.state, .mapRestoring)
        }
        expectRejected(.stopMap(map: "m", force: false), harness.state, .mapRestoring)
        expectAccepted(
            .stopMap(map: "m", force: true), harness.state,
            [.rollbackStopped(id: 0, reason: "stopped by operator (stoplcmap -force)")])
    }

    @Test("removeMap of an idle or stopped map; an active one needs force")
    func remove() throws {
        var harness = try Fixture.mapped()
        expectAccepted(.removeMap(map: "m", force: false), harness.state, [.mapRemoved(id: 0)])
        try harness.run(.prepareMap(map: "m"))
        expectRejected(.removeMap(map: "m", force: false), harness.state, .mapActive)
        expectAccepted(.removeMap(map: "m", force: true), harness.state, [.mapRemoved(id: 0)])
        try harness.run(.startMap(map: "m"))
        expectRejected(.removeMap(map: "m", force: false), harness.state, .mapActive)
        expectAccepted(.removeMap(map: "0", force: true), harness.state, [.mapRemoved(id: 0)])
        try harness.run(.completeCopy(map: 0))
        expectRejected(.removeMap(map: "m", force: false), harness.state, .mapActive)
        expectAccepted(.removeMap(map: "m", force: true), harness.state, [.mapRemoved(id: 0)])
        try harness.run(.stopMap(map: "m", force: false))
        expectAccepted(.removeMap(map: "m", force: false), harness.state, [.mapRemoved(id: 0)])
    }

    @Test("a removed map frees both names and both volumes")
    func removeFreesNames() throws {
        var harness = try Fixture.mapped()
        try harness.run(.removeMap(map: "m", force: false))
        #expect(harness.state.maps.isEmpty)
        #expect(harness.state.mapIDsByName.isEmpty)
        expectAccepted(
            .createMap(CreateMap(source: "tgt", target: "src", name: "m")), harness.state,
            [created(id: 2, name: "m", source: 1, target: 0)])
    }
}

@Suite("decide: data-plane progress")
struct DecideProgressTests {
    @Test("recordCopyProgress records forward progress, nothing for a repeat")
    func copyProgress() throws {
        var harness = try Fixture.started()
        #expect(harness.state.maps[0]?.grainsTotal == 4)
        expectAccepted(.recordCopyProgress(map: 0, grainsCopied: 0), harness.state, [])
        expectAccepted(.recordCopyProgress(map: 0, grainsCopied: 2), harness.state, [.mapCopyProgressed(id: 0, grainsCopied: 2)])
        expectAccepted(.recordCopyProgress(map: 0, grainsCopied: 4), harness.state, [.mapCopyProgressed(id: 0, grainsCopied: 4)])
        try harness.run(.recordCopyProgress(map: 0, grainsCopied: 3))
        expectAccepted(.recordCopyProgress(map: 0, grainsCopied: 3), harness.state, [])
        expectRejected(.recordCopyProgress(map: 0, grainsCopied: 2), harness.state, .invalidProgress)
        expectRejected(.recordCopyProgress(map: 0, grainsCopied: 5), harness.state, .invalidProgress)
        expectRejected(.recordCopyProgress(map: 0, grainsCopied: .max), harness.state, .invalidProgress)
    }

    @Test("copy progress and completion need a copying forward map")
    func copyWrongState() throws {
        var harness = try Fixture.mapped()
        expectRejected(.recordCopyProgress(map: 0, grainsCopied: 1), harness.state, .invalidState)
        expectRejected(.completeCopy(map: 0), harness.state, .invalidState)
        expectRejected(.recordCopyProgress(map: 7, grainsCopied: 1), harness.state, .unknownMap)
        expectRejected(.completeCopy(map: 7), harness.state, .unknownMap)
        try harness.run(.prepareMap(map: "m"))
        expectRejected(.completeCopy(map: 0), harness.state, .invalidState)
        try harness.run(.startMap(map: "m"))
        expectAccepted(.completeCopy(map: 0), harness.state, [.mapCopyCompleted(id: 0)])
        // The reverse map is never the subject of background-copy progress, even while rolling back.
        try harness.run(.startRestore(map: "m"))
        #expect(harness.state.maps[1]?.state == .copying)
        expectRejected(.recordCopyProgress(map: 1, grainsCopied: 1), harness.state, .invalidState)
        expectRejected(.completeCopy(map: 1), harness.state, .invalidState)
        try harness.run(.completeCopy(map: 0))
        expectRejected(.completeCopy(map: 0), harness.state, .invalidState)
        expectRejected(.recordCopyProgress(map: 0, grainsCopied: 4), harness.state, .invalidState)
    }

    @Test("recordRollbackProgress records consistent progress")
    func rollbackProgress() throws {
        var harness = try Fixture.restoring()
        expectAccepted(.recordRollbackProgress(map: 0, grainsRestored: 0, grainsToRestore: 0), harness.state, [])
        expectAccepted(
            .recordRollbackProgress(map: 0, grainsRestored: 0, grainsToRestore: 3), harness.state,
            [.rollbackProgressed(id: 0, grainsRestored: 0, grainsToRestore: 3)])
        try harness.run(.recordRollbackProgress(map: 0, grainsRestored: 2, grainsToRestore: 3))
        expectAccepted(.recordRollbackProgress(map: 0, grainsRestored: 2, grainsToRestore: 3), harness.state, [])
        expectAccepted(
            .recordRollbackProgress(map: 0, grainsRestored: 3, grainsToRestore: 3), harness.state,
            [.rollbackProgressed(id: 0, grainsRestored: 3, grainsToRestore: 3)])
        // Backwards with the same total.
        expectRejected(.recordRollbackProgress(map: 0, grainsRestored: 1, grainsToRestore: 3), harness.state, .invalidProgress)
        // Restored past the count, or a count past the map's grains.
        expectRejected(.recordRollbackProgress(map: 0, grainsRestored: 4, grainsToRestore: 3), harness.state, .invalidProgress)
        expectRejected(.recordRollbackProgress(map: 0, grainsRestored: 2, grainsToRestore: 5), harness.state, .invalidProgress)
        // A recount (different total) may restart the count.
        expectAccepted(
            .recordRollbackProgress(map: 0, grainsRestored: 1, grainsToRestore: 4), harness.state,
            [.rollbackProgressed(id: 0, grainsRestored: 1, grainsToRestore: 4)])
    }

    @Test("rollback progress and completion need a running rollback on a forward map")
    func rollbackWrongState() throws {
        var harness = try Fixture.started()
        expectRejected(.recordRollbackProgress(map: 0, grainsRestored: 0, grainsToRestore: 1), harness.state, .invalidState)
        expectRejected(.completeRollback(map: 0), harness.state, .invalidState)
        expectRejected(.recordRollbackProgress(map: 9, grainsRestored: 0, grainsToRestore: 1), harness.state, .unknownMap)
        expectRejected(.completeRollback(map: 9), harness.state, .unknownMap)
        try harness.run(.startRestore(map: "m"))
        expectRejected(.recordRollbackProgress(map: 1, grainsRestored: 0, grainsToRestore: 1), harness.state, .invalidState)
        expectRejected(.completeRollback(map: 1), harness.state, .invalidState)
        expectAccepted(.completeRollback(map: 0), harness.state, [.rollbackCompleted(id: 0)])
        try harness.run(.completeRollback(map: 0))
        expectRejected(.completeRollback(map: 0), harness.state, .invalidState)
    }
}
