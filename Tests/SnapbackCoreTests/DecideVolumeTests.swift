@testable import SnapbackCore
import Testing

@Suite("decide: volumes")
struct DecideVolumeTests {
    // MARK: createVolume

    @Test("createVolume records VolumeCreated with the next id")
    func createVolumeAccepted() throws {
        var harness = Harness()
        expectAccepted(
            .createVolume(name: "v0", sizeBytes: 512, path: nil), harness.state,
            [.volumeCreated(id: 0, name: "v0", sizeBytes: 512, path: nil)])
        try harness.run(.createVolume(name: "v0", sizeBytes: 512, path: nil))
        expectAccepted(
            .createVolume(name: "v1", sizeBytes: 1 << 30, path: "/dev/sdb"), harness.state,
            [.volumeCreated(id: 1, name: "v1", sizeBytes: 1 << 30, path: "/dev/sdb")])
        // Ids are never reused, even after a removal.
        try harness.run(.createVolume(name: "v1", sizeBytes: 512, path: nil))
        try harness.run(.removeVolume(volume: "v0"))
        expectAccepted(
            .createVolume(name: "v0", sizeBytes: 512, path: nil), harness.state,
            [.volumeCreated(id: 2, name: "v0", sizeBytes: 512, path: nil)])
    }

    @Test("ids are not reused after a removal")
    func idsNotReused() throws {
        var harness = Harness()
        try harness.run(.createVolume(name: "a", sizeBytes: 512, path: nil))
        try harness.run(.createVolume(name: "b", sizeBytes: 512, path: nil))
        try harness.run(.removeVolume(volume: "b"))
        expectAccepted(
            .createVolume(name: "c", sizeBytes: 512, path: nil), harness.state,
            [.volumeCreated(id: 2, name: "c", sizeBytes: 512, path: nil)])
    }

    @Test("createVolume refuses a duplicate name")
    func createVolumeDuplicate() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createVolume(name: "src", sizeBytes: 512, path: nil), harness.state, .duplicateName)
        // Names are case-sensitive: "SRC" is another name.
        #expect(rejection(.createVolume(name: "SRC", sizeBytes: 512, path: nil), harness.state) == nil)
    }

    @Test(
        "createVolume refuses invalid names",
        arguments: [
            "", "0abc", "9", "-dash", ".dot", "a b", "a/b", "a:b", "é", "vol\u{0}", "a\tb", "ab*",
            String(repeating: "a", count: 64),
        ])
    func createVolumeInvalidName(name: String) {
        expectRejected(.createVolume(name: name, sizeBytes: 512, path: nil), ControllerState(), .invalidName)
    }

    @Test(
        "createVolume accepts valid names",
        arguments: ["a", "_", "_0", "Z", "vol-1.backup_2", "A0-._", String(repeating: "a", count: 63)])
    func createVolumeValidName(name: String) {
        expectAccepted(
            .createVolume(name: name, sizeBytes: 512, path: nil), ControllerState(),
            [.volumeCreated(id: 0, name: name, sizeBytes: 512, path: nil)])
    }

    @Test(
        "createVolume refuses invalid sizes",
        arguments: [0, 1, 511, 513, 1000, (256 << 40) + 512, (256 << 40) + 1, 257 << 40, UInt64.max] as [UInt64])
    func createVolumeInvalidSize(sizeBytes: UInt64) {
        expectRejected(.createVolume(name: "v", sizeBytes: sizeBytes, path: nil), ControllerState(), .invalidSize)
    }

    @Test("createVolume accepts sizes from 512 bytes to 256 TiB in whole sectors", arguments: [512, 1024, 64 << 20, 16 << 40, 256 << 40] as [UInt64])
    func createVolumeValidSize(sizeBytes: UInt64) {
        #expect(rejection(.createVolume(name: "v", sizeBytes: sizeBytes, path: nil), ControllerState()) == nil)
    }

    @Test(
        "createVolume refuses invalid paths",
        arguments: ["", "relative/file", "./file", "/with\u{0}nul", "/" + String(repeating: "p", count: 4096)])
    func createVolumeInvalidPath(path: String) {
        expectRejected(.createVolume(name: "v", sizeBytes: 512, path: path), ControllerState(), .invalidPath)
    }

    @Test("createVolume accepts an absolute path of 4096 bytes")
    func createVolumeLongestPath() {
        let path = "/" + String(repeating: "p", count: 4095)
        #expect(rejection(.createVolume(name: "v", sizeBytes: 512, path: path), ControllerState()) == nil)
    }

    @Test("createVolume refuses a backing path another volume uses")
    func createVolumeDuplicatePath() throws {
        var harness = Harness()
        try harness.run(.createVolume(name: "a", sizeBytes: 512, path: "/var/lib/a.img"))
        expectRejected(.createVolume(name: "b", sizeBytes: 512, path: "/var/lib/a.img"), harness.state, .pathExists)
        #expect(rejection(.createVolume(name: "b", sizeBytes: 512, path: "/var/lib/b.img"), harness.state) == nil)
        // Two sparse volumes (no path) never collide.
        try harness.run(.createVolume(name: "c", sizeBytes: 512, path: nil))
        #expect(rejection(.createVolume(name: "d", sizeBytes: 512, path: nil), harness.state) == nil)
    }

    @Test("the name is checked before the size, the size before the path")
    func createVolumeCheckOrder() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.createVolume(name: "9", sizeBytes: 0, path: "x"), harness.state, .invalidName)
        expectRejected(.createVolume(name: "src", sizeBytes: 0, path: "x"), harness.state, .duplicateName)
        expectRejected(.createVolume(name: "v", sizeBytes: 0, path: "x"), harness.state, .invalidSize)
    }

    @Test("createVolume refuses the 4097th volume")
    func createVolumeLimit() {
        var state = ControllerState()
        for index in 0..<Limits.volumesMax {
            state.apply(.volumeCreated(id: VolumeID(index), name: "v\(index)", sizeBytes: 512, path: nil))
        }
        expectRejected(.createVolume(name: "extra", sizeBytes: 512, path: nil), state, .limitReached)
        state.apply(.volumeRemoved(id: 0))
        #expect(rejection(.createVolume(name: "extra", sizeBytes: 512, path: nil), state) == nil)
    }

    // MARK: removeVolume

    @Test("removeVolume by name or by id records VolumeRemoved")
    func removeVolumeAccepted() throws {
        let harness = try Fixture.twoVolumes()
        expectAccepted(.removeVolume(volume: "src"), harness.state, [.volumeRemoved(id: 0)])
        expectAccepted(.removeVolume(volume: "1"), harness.state, [.volumeRemoved(id: 1)])
    }

    @Test("removeVolume refuses an unknown volume", arguments: ["nope", "2", "01", "-1", "", " 0", "4294967296"])
    func removeVolumeUnknown(reference: String) throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.removeVolume(volume: reference), harness.state, .unknownVolume)
    }

    @Test("removeVolume refuses a volume that is the source or the target of a map")
    func removeVolumeInMap() throws {
        var harness = try Fixture.mapped()
        expectRejected(.removeVolume(volume: "src"), harness.state, .volumeInMap)
        expectRejected(.removeVolume(volume: "tgt"), harness.state, .volumeInMap)
        try harness.run(.removeMap(map: "m", force: false))
        expectAccepted(.removeVolume(volume: "tgt"), harness.state, [.volumeRemoved(id: 1)])
    }

    // MARK: reportFault

    @Test("reportFault records VolumeFaulted with the next fault id, and no rollback without autorestore")
    func reportFaultAccepted() throws {
        var harness = try Fixture.started(autorestore: false)
        for cause in FaultCause.allCases {
            let faultID = harness.state.nextFaultID
            let events = try harness.run(.reportFault(volume: "src", cause: cause, reason: "disk \(cause)"))
            #expect(events == [.volumeFaulted(id: 0, faultID: faultID, cause: cause, reason: "disk \(cause)")])
        }
        let next = FaultID(FaultCause.allCases.count + 1)
        #expect(harness.state.nextFaultID == next)
        // Reporting against the target (by id) is accepted too.
        expectAccepted(
            .reportFault(volume: "1", cause: .ioError, reason: "EIO"), harness.state,
            [.volumeFaulted(id: 1, faultID: next, cause: .ioError, reason: "EIO")])
    }

    @Test("reportFault refuses an unknown volume")
    func reportFaultUnknown() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.reportFault(volume: "ghost", cause: .operator, reason: "x"), harness.state, .unknownVolume)
        // The volume is resolved before the reason is checked.
        expectRejected(.reportFault(volume: "ghost", cause: .operator, reason: ""), harness.state, .unknownVolume)
    }

    @Test(
        "reportFault refuses an empty, over-long or multi-line reason",
        arguments: [
            "", " ", "\u{3000}", "  \u{00A0} ", String(repeating: "r", count: 257), String(repeating: "é", count: 129),
            "line one\nline two", "carriage\rreturn", "tab\tseparated", "nul\u{0}", "bell\u{7}", "delete\u{7F}",
            "c1 control \u{85}", "\n",
        ])
    func reportFaultInvalidReason(reason: String) throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.reportFault(volume: "src", cause: .operator, reason: reason), harness.state, .invalidReason)
    }

    @Test(
        "reportFault accepts a one-line reason of 1 to 256 bytes",
        arguments: ["x", " padded ", "ransomware detected by monitor #3", String(repeating: "r", count: 256), String(repeating: "é", count: 128), "émoji 🔥"])
    func reportFaultValidReason(reason: String) throws {
        let harness = try Fixture.twoVolumes()
        expectAccepted(
            .reportFault(volume: "src", cause: .operator, reason: reason), harness.state,
            [.volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: reason)])
    }

    @Test("reportFault on a volume that is being restored records the fault and restarts the running rollback")
    func reportFaultWhileRestoring() throws {
        var harness = try Fixture.restoring()
        let running = try #require(harness.state.runningRollback(onto: 0))
        try harness.run(.recordRollbackProgress(map: running.id, grainsRestored: 1, grainsToRestore: 3))
        expectAccepted(
            .reportFault(volume: "src", cause: .ioError, reason: "again"), harness.state,
            [.volumeFaulted(id: 0, faultID: 2, cause: .ioError, reason: "again"), .rollbackRestarted(id: running.id, faultID: 2)])
        try harness.run(.reportFault(volume: "src", cause: .ioError, reason: "again"))
        let restarted = try #require(harness.state.maps[running.id]?.rollback)
        #expect(restarted.faultID == 2 && restarted.grainsRestored == 0 && restarted.grainsToRestore == 0)
        #expect(harness.state.volumes[0]?.status == .restoring && harness.state.volumes[0]?.fault?.id == 2)
    }

    @Test("reportFault on an already faulted volume records another fault")
    func reportFaultTwice() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.reportFault(volume: "src", cause: .operator, reason: "one"))
        expectAccepted(
            .reportFault(volume: "src", cause: .backingMissing, reason: "two"), harness.state,
            [.volumeFaulted(id: 0, faultID: 2, cause: .backingMissing, reason: "two")])
    }

    // MARK: recoverVolume

    @Test("recoverVolume accepts a faulted volume's data")
    func recoverVolumeFaulted() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"))
        expectAccepted(.recoverVolume(volume: "tgt"), harness.state, [.volumeRecovered(id: 1)])
        try harness.run(.recoverVolume(volume: "tgt"))
        #expect(harness.state.volumes[1]?.status == .online)
        #expect(harness.state.volumes[1]?.fault == nil)
    }

    @Test("recoverVolume refuses an online, a restoring or an unknown volume")
    func recoverVolumeRefused() throws {
        let online = try Fixture.twoVolumes()
        expectRejected(.recoverVolume(volume: "src"), online.state, .volumeNotFaulted)
        expectRejected(.recoverVolume(volume: "nope"), online.state, .unknownVolume)
        let restoring = try Fixture.restoring()
        #expect(restoring.state.volumes[0]?.status == .restoring)
        expectRejected(.recoverVolume(volume: "src"), restoring.state, .volumeRestoring)
    }

    // MARK: recordControllerStart

    @Test("recordControllerStart records the version", arguments: ["1", "0.1.0", String(repeating: "v", count: 64)])
    func controllerStartAccepted(version: String) {
        expectAccepted(.recordControllerStart(version: version), ControllerState(), [.controllerStarted(version: version)])
    }

    @Test("recordControllerStart refuses an empty or over-long version", arguments: ["", String(repeating: "v", count: 65)])
    func controllerStartRefused(version: String) {
        expectRejected(.recordControllerStart(version: version), ControllerState(), .invalidName)
    }

    // MARK: References

    @Test("volumes and maps resolve by name or by canonical decimal id only")
    func references() throws {
        let harness = try Fixture.mapped()
        let state = harness.state
        #expect(state.volume("src")?.id == 0)
        #expect(state.volume("0")?.name == "src")
        #expect(state.volume("1")?.name == "tgt")
        #expect(state.volume("00") == nil)
        #expect(state.volume("+1") == nil)
        #expect(state.volume("2") == nil)
        #expect(state.map("m")?.id == 0)
        #expect(state.map("m_rev")?.id == 1)
        #expect(state.map("1")?.name == "m_rev")
        #expect(state.map("01") == nil)
        #expect(state.map("lcmap0") == nil)
        #expect(state.forwardMaps(ofSource: 0).map(\.id) == [0])
        #expect(state.forwardMaps(ofSource: 1).isEmpty)
        #expect(state.maps(touching: 0).map(\.id) == [0, 1])
        #expect(state.volumesByID.map(\.id) == [0, 1])
        #expect(state.mapsByID.map(\.id) == [0, 1])
    }
}
