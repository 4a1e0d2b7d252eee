@testable import SnapbackCore
import Testing

@Suite("evolve")
struct EvolveTests {
    @Test("a whole life: create, map, start, copy, complete, fault, automatic rollback, second fault")
    func scenario() throws {
        var harness = Harness()
        try harness.run(.recordControllerStart(version: "1.0"))
        #expect(harness.state.controllerStarts == 1)

        // Create two 1 MiB volumes and a 64 KiB-grain map: 16 grains.
        try harness.run(.createVolume(name: "db", sizeBytes: Fixture.mebibyte, path: "/srv/db.img"))
        try harness.run(.createVolume(name: "snap", sizeBytes: Fixture.mebibyte, path: nil))
        #expect(harness.state.volumes[0] == Volume(id: 0, name: "db", sizeBytes: Fixture.mebibyte, path: "/srv/db.img"))
        try harness.run(.createMap(CreateMap(source: "db", target: "snap", name: "daily", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)))
        let forward = try #require(harness.state.maps[0])
        let reverse = try #require(harness.state.maps[1])
        #expect(forward == LCMap(id: 0, name: "daily", role: .forward, partnerID: 1, sourceID: 0, targetID: 1, copyRate: 0, grainSizeBytes: 64 << 10, autorestore: true, grainsTotal: 16))
        #expect(reverse == LCMap(id: 1, name: "daily_rev", role: .reverse, partnerID: 0, sourceID: 1, targetID: 0, copyRate: 150, grainSizeBytes: 64 << 10, autorestore: true, grainsTotal: 16))
        #expect(!forward.isActive && forward.progressPercent == 0)
        #expect(harness.state.nextMapID == 2)

        // Start: copying, image valid, ordinal 1.
        try harness.run(.startMap(map: "daily"))
        var map = try #require(harness.state.maps[0])
        #expect(map.state == .copying && map.imageValid && map.startOrdinal == 1 && map.isActive)
        #expect(harness.state.nextStartOrdinal == 2)
        try harness.run(.recordCopyProgress(map: 0, grainsCopied: 8))
        #expect(harness.state.maps[0]?.progressPercent == 50)
        try harness.run(.completeCopy(map: 0))
        map = try #require(harness.state.maps[0])
        #expect(map.state == .idleOrCopied && map.imageValid && map.grainsCopied == 16 && map.progressPercent == 100)

        // Fault: autorestore starts the rollback in the same command.
        let events = try harness.run(.reportFault(volume: "db", cause: .operator, reason: "ransomware"))
        #expect(events == [
            .volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: "ransomware"),
            .rollbackStarted(id: 0, trigger: .auto, faultID: 1),
        ])
        var volume = try #require(harness.state.volumes[0])
        #expect(volume.status == .restoring)
        #expect(volume.fault == Fault(id: 1, cause: .operator, reason: "ransomware"))
        #expect(harness.state.maps[0]?.rollback == Rollback(trigger: .auto, faultID: 1))
        #expect(harness.state.maps[1]?.state == .copying)
        #expect(harness.state.maps[1]?.grainsCopied == 0)
        #expect(harness.state.maps[1]?.grainsTotal == 16)
        #expect(harness.state.runningRollback(onto: 0)?.id == 0)
        // The target is untouched.
        #expect(harness.state.volumes[1]?.status == .online)

        try harness.run(.recordRollbackProgress(map: 0, grainsRestored: 1, grainsToRestore: 4))
        #expect(harness.state.maps[0]?.rollback?.progressPercent == 25)
        #expect(harness.state.maps[1]?.grainsCopied == 1)
        #expect(harness.state.maps[1]?.grainsTotal == 4)
        #expect(harness.state.maps[1]?.progressPercent == 25)
        try harness.run(.recordRollbackProgress(map: 0, grainsRestored: 4, grainsToRestore: 4))
        try harness.run(.completeRollback(map: 0))
        volume = try #require(harness.state.volumes[0])
        #expect(volume.status == .online && volume.fault == nil)
        map = try #require(harness.state.maps[0])
        #expect(map.rollback == nil)
        #expect(map.imageValid && map.state == .idleOrCopied && map.startOrdinal == 1)
        #expect(harness.state.maps[1]?.state == .idleOrCopied)
        #expect(harness.state.maps[1]?.grainsCopied == harness.state.maps[1]?.grainsTotal)
        #expect(harness.state.runningRollback(onto: 0) == nil)

        // A second fault rolls back again from the same snapshot.
        let second = try harness.run(.reportFault(volume: "db", cause: .ioError, reason: "EIO"))
        #expect(second.last == .rollbackStarted(id: 0, trigger: .auto, faultID: 2))
        #expect(harness.state.volumes[0]?.status == .restoring)
        try harness.run(.completeRollback(map: 0))
        #expect(harness.state.volumes[0]?.status == .online)

        checkInvariants(harness.state)
        #expect(harness.state.eventsApplied == UInt64(harness.log.count))
        // Replaying the log from scratch gives the same state.
        #expect(harness.log.reduce(ControllerState()) { evolve($0, $1) } == harness.state)
    }

    @Test("volume status online → faulted → restoring → online with a manual rollback")
    func manualRollback() throws {
        var harness = try Fixture.started(autorestore: false)
        #expect(harness.state.volumes[0]?.status == .online)
        try harness.run(.reportFault(volume: "src", cause: .ioError, reason: "EIO"))
        #expect(harness.state.volumes[0]?.status == .faulted)
        #expect(harness.state.maps[0]?.rollback == nil)
        try harness.run(.startRestore(map: "m"))
        #expect(harness.state.volumes[0]?.status == .restoring)
        #expect(harness.state.maps[0]?.rollback == Rollback(trigger: .operator, faultID: 1))
        #expect(harness.state.maps[1]?.state == .copying)
        try harness.run(.completeRollback(map: 0))
        #expect(harness.state.volumes[0]?.status == .online)
        #expect(harness.state.volumes[0]?.fault == nil)
        checkInvariants(harness.state)
    }

    @Test("a fault during a rollback keeps the volume restoring, records the newest fault and restarts the rollback for it")
    func faultWhileRestoring() throws {
        var harness = try Fixture.restoring()
        try harness.run(.reportFault(volume: "src", cause: .ioError, reason: "EIO"))
        #expect(harness.state.volumes[0]?.status == .restoring)
        #expect(harness.state.volumes[0]?.fault?.id == 2)
        #expect(harness.state.maps[0]?.rollback?.faultID == 2)
    }

    @Test("a faulted target stops the map writing it and invalidates its image")
    func targetFault() throws {
        for fixture in [Fixture.started, Fixture.copied] {
            var harness = try fixture(false)
            try harness.run(.reportFault(volume: "tgt", cause: .backingResized, reason: "resized"))
            #expect(harness.state.volumes[1]?.status == .faulted)
            #expect(harness.state.maps[0]?.imageValid == false)
            #expect(harness.state.maps[0]?.state == .stopped)
            #expect(harness.state.maps[0]?.isActive == false)
            // The source is untouched.
            #expect(harness.state.volumes[0]?.status == .online)
            checkInvariants(harness.state)
        }
        // A map that never started has nothing to stop.
        var idle = try Fixture.mapped()
        try idle.run(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"))
        #expect(idle.state.maps[0]?.state == .idleOrCopied)
        #expect(idle.state.maps[0]?.imageValid == false)
    }

    @Test("a target fault during a rollback leaves the rollback that reads from it running")
    func targetFaultDuringRollback() throws {
        var harness = try Fixture.restoring()
        try harness.run(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"))
        #expect(harness.state.volumes[1]?.status == .faulted)
        #expect(harness.state.maps[0]?.rollback != nil)
        #expect(harness.state.maps[0]?.state == .copying)
        #expect(harness.state.volumes[0]?.status == .restoring)
        checkInvariants(harness.state)
    }

    @Test("stopping a map invalidates its image; restarting resets its progress")
    func stopAndRestart() throws {
        var harness = try Fixture.started()
        try harness.run(.recordCopyProgress(map: 0, grainsCopied: 3))
        try harness.run(.stopMap(map: "m", force: false))
        #expect(harness.state.maps[0]?.state == .stopped)
        #expect(harness.state.maps[0]?.imageValid == false)
        #expect(harness.state.maps[0]?.isActive == false)
        try harness.run(.startMap(map: "m"))
        #expect(harness.state.maps[0]?.grainsCopied == 0)
        #expect(harness.state.maps[0]?.startOrdinal == 2)
    }

    @Test("rename, autorestore and copy-rate changes reach the forward and reverse maps as documented")
    func changes() throws {
        var harness = try Fixture.mapped(autorestore: false, copyRate: 50)
        try harness.run(.changeMap(map: "m", autorestore: true, copyRate: 7, newName: "n"))
        #expect(harness.state.maps[0]?.name == "n")
        #expect(harness.state.maps[1]?.name == "n_rev")
        #expect(harness.state.mapIDsByName == ["n": 0, "n_rev": 1])
        #expect(harness.state.maps[0]?.autorestore == true)
        #expect(harness.state.maps[1]?.autorestore == true)
        #expect(harness.state.maps[0]?.copyRate == 7)
        // The reverse map always copies at the top rate.
        #expect(harness.state.maps[1]?.copyRate == 150)
        checkInvariants(harness.state)
    }

    @Test("removing a map removes its reverse map and both names; removing a volume frees its name")
    func removals() throws {
        var harness = try Fixture.mapped()
        try harness.run(.removeMap(map: "m", force: false))
        #expect(harness.state.maps.isEmpty && harness.state.mapIDsByName.isEmpty)
        #expect(harness.state.nextMapID == 2)
        try harness.run(.removeVolume(volume: "src"))
        #expect(harness.state.volumes.keys.sorted() == [1])
        #expect(harness.state.volumeIDsByName == ["tgt": 1])
        #expect(harness.state.nextVolumeID == 2)
    }

    @Test("recovering a volume clears its fault")
    func recover() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.reportFault(volume: "src", cause: .ioError, reason: "EIO"))
        try harness.run(.recoverVolume(volume: "src"))
        #expect(harness.state.volumes[0] == Volume(id: 0, name: "src", sizeBytes: Fixture.mebibyte, path: nil))
    }

    @Test("evolve and apply agree, and evolve leaves its input untouched")
    func evolveIsPure() throws {
        let harness = try Fixture.started()
        let before = harness.state
        let event = Event.mapCopyProgressed(id: 0, grainsCopied: 2)
        let after = evolve(before, event)
        var applied = before
        applied.apply(event)
        #expect(after == applied)
        #expect(before == harness.state)
        #expect(after != before)
    }

    /// Every event that names an object the state does not hold; each must change only
    /// `eventsApplied`.
    static let eventsNamingUnknownIDs: [Event] = [
        .volumeRemoved(id: 42),
        .mapRenamed(id: 42, name: "x", reverseName: "x_rev"),
        .mapAutorestoreChanged(id: 42, autorestore: true),
        .mapCopyRateChanged(id: 42, copyRate: 1),
        .mapRemoved(id: 42),
        .mapPreparing(id: 42),
        .mapPrepared(id: 42),
        .mapStarted(id: 42, startOrdinal: 99),
        .mapCopyProgressed(id: 42, grainsCopied: 1),
        .mapCopyCompleted(id: 42),
        .mapStopping(id: 42),
        .mapStopped(id: 42),
        .rollbackStarted(id: 42, trigger: .auto, faultID: 1),
        .rollbackProgressed(id: 42, grainsRestored: 1, grainsToRestore: 2),
        .rollbackCompleted(id: 42),
        .volumeRecovered(id: 42),
    ]

    @Test("events naming unknown ids change nothing but eventsApplied", arguments: eventsNamingUnknownIDs)
    func unknownIDs(event: Event) throws {
        for base in [ControllerState(), try Fixture.restoring().state] {
            let after = evolve(base, event)
            var expected = base
            expected.eventsApplied += 1
            #expect(after == expected, "\(event)")
        }
    }

    @Test("rollback progress on a map with no rollback changes nothing but eventsApplied")
    func progressWithoutRollback() throws {
        let base = try Fixture.started().state
        var expected = base
        expected.eventsApplied += 1
        #expect(evolve(base, .rollbackProgressed(id: 0, grainsRestored: 1, grainsToRestore: 2)) == expected)
    }

    @Test("eventsApplied counts every event, including controller starts")
    func eventsApplied() throws {
        var state = ControllerState()
        for index in 1...5 {
            state.apply(.controllerStarted(version: "v\(index)"))
            #expect(state.eventsApplied == UInt64(index))
        }
        #expect(state.controllerStarts == 5)
    }

    @Test("id counters only move forward, whatever order events carry")
    func countersMonotonic() {
        var state = ControllerState()
        state.apply(.volumeCreated(id: 7, name: "a", sizeBytes: 512, path: nil))
        state.apply(.volumeCreated(id: 3, name: "b", sizeBytes: 512, path: nil))
        #expect(state.nextVolumeID == 8)
        state.apply(.mapCreated(MapCreated(id: 10, name: "m", reverseID: 11, reverseName: "m_rev", sourceID: 7, targetID: 3, copyRate: 0, grainSizeBytes: 64 << 10, autorestore: false)))
        #expect(state.nextMapID == 12)
        state.apply(.mapStarted(id: 10, startOrdinal: 5))
        state.apply(.mapStarted(id: 10, startOrdinal: 2))
        #expect(state.nextStartOrdinal == 6)
        state.apply(.volumeFaulted(id: 7, faultID: 9, cause: .operator, reason: "x"))
        state.apply(.volumeFaulted(id: 7, faultID: 4, cause: .operator, reason: "y"))
        #expect(state.nextFaultID == 10)
    }
}
