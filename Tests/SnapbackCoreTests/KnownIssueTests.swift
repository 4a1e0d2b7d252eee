@testable import SnapbackCore
import Testing

/// Regression tests for defects found in SnapbackCore (all fixed).
@Suite("fixed defects")
struct KnownIssueTests {
    // fixed: `CommandError.init` preconditions that its message is one line, but several messages
    // quote user input verbatim (`validateName`'s name, `resolveVolume`/`resolveMap`'s reference,
    // the duplicate backing path). A name or reference containing "\n" (e.g. `snapback rmvolume
    // $'a\nb'`, or a JSON request) therefore traps the controller process instead of being refused
    // with `invalid_name` / `unknown_volume`. Brief section 6: "every malformed command ... gets a
    // clear error and changes nothing".
    @Test("fixed: a refused name containing a newline traps instead of being refused (createVolume)")
    func newlineInInvalidName() async {
        do {
            await #expect(processExitsWith: .success) {
                let refused = rejection(.createVolume(name: "bad\nname", sizeBytes: 512, path: nil), ControllerState())
                precondition(refused == .invalidName)
            }
        }
    }

    @Test("fixed: an unknown reference containing a newline traps instead of being refused (removeVolume, startMap)")
    func newlineInReference() async {
        do {
            await #expect(processExitsWith: .success) {
                precondition(rejection(.removeVolume(volume: "no\nsuch"), ControllerState()) == .unknownVolume)
                precondition(rejection(.startMap(map: "no\nsuch"), ControllerState()) == .unknownMap)
            }
        }
    }

    // Was a bug (same cause): a backing path may contain "\n" (only "/", the length and NUL are
    // checked), and the duplicate-path message quotes it, so the second volume on that path traps.
    @Test("fixed: a duplicate backing path containing a newline traps instead of being refused")
    func newlineInDuplicatePath() async {
        do {
            await #expect(processExitsWith: .success) {
                // Control characters in a path are now refused outright, with a one-line message.
                precondition(rejection(.createVolume(name: "a", sizeBytes: 512, path: "/srv/a\nb.img"), ControllerState()) == .invalidPath)
            }
        }
    }

    // Was a bug (minor, documentation vs. code): `evolve`'s contract says "An event that names an object
    // the state does not hold changes nothing", but `VolumeFaulted` for an unknown volume still
    // advances `nextFaultID`. Either the doc or the code should change (`decide` never emits such
    // an event, so only a hand-made or damaged log can show it).
    @Test("fixed: VolumeFaulted naming an unknown volume still advances nextFaultID")
    func faultOfUnknownVolume() throws {
        let base = try Fixture.twoVolumes().state
        var expected = base
        expected.eventsApplied += 1
        let after = evolve(base, .volumeFaulted(id: 42, faultID: 7, cause: .operator, reason: "x"))
        do {
            #expect(after == expected)
        }
        #expect(after.volumes == base.volumes && after.maps == base.maps)
    }

    // fixed: the checkpoint decoder accepts volume and map records in any id order, although the
    // encoder writes them sorted and the format is meant to be canonical ("equal states encode to
    // equal bytes"; "the decoder never guesses: any deviation is an error"). A damaged checkpoint
    // whose ids were altered decodes to a state whose encoding differs from the bytes read, so
    // the byte-flip law "decodes to a value that re-encodes to the same bytes" fails for states.
    @Test("fixed: ControllerState.decode accepts records out of id order (a non-canonical encoding)")
    func stateDecodeAcceptsUnsortedRecords() throws {
        var harness = try Fixture.twoVolumes()
        try harness.run(.createVolume(name: "third", sizeBytes: 512, path: nil))
        var raw = RawState(harness.state)
        raw.volumes[0].id = 9  // ids 9, 1, 2: out of order
        let bytes = raw.bytes
        let decoded = decodeResult { () throws(DecodeError) in try ControllerState.decode(bytes) }
        guard case .failure = decoded else {
            Issue.record("decoded to a state that re-encodes differently: \(String(describing: try? decoded.get().volumesByID.map(\.id)))")
            return
        }
    }

    // fixed: the checkpoint decoder checks each field's domain but not the references between
    // records: a map may name a volume or a partner map that does not exist. `decide` then traps
    // on its force-unwraps (`state.volumes[map.sourceID]!` in startRestore and in
    // resolveStartable). A checkpoint is trusted input only after it is verified against the log,
    // but the decoder is the boundary check (STYLE: "check data twice where it crosses a boundary").
    @Test("fixed: a checkpoint naming a missing volume decodes, and decide then traps")
    func stateDecodeAcceptsDanglingReferences() async {
        do {
            await #expect(processExitsWith: .success) {
                var raw = RawState(try Fixture.started().state)
                raw.maps[0].sourceID = 99
                let bytes = raw.bytes
                // Either the decoder refuses the dangling reference, or decide refuses the command.
                if case let .success(state) = decodeResult({ () throws(DecodeError) in try ControllerState.decode(bytes) }) {
                    _ = rejection(.startRestore(map: "m"), state)
                    _ = rejection(.startMap(map: "m"), state)
                }
            }
        }
    }

    // fixed: a target that faults while a rollback reads from it keeps its map's image valid (by
    // design, so the rollback can finish), but nothing invalidates it when the rollback ends. The
    // map then stays `copying` with `imageValid` and `isActive` (copy-on-write keeps writing into
    // a faulted target), and once the target is recovered the automatic-rollback policy picks the
    // map again — whereas a target that faults outside a rollback stops its map for good
    // (`EvolveTests.targetFault`).
    @Test("fixed: a target faulted during a rollback still holds a valid image after the rollback ends")
    func targetFaultedDuringRollbackStaysValid() throws {
        var harness = try Fixture.restoring(autorestore: true)
        try harness.run(.reportFault(volume: "tgt", cause: .ioError, reason: "EIO"))
        try harness.run(.completeRollback(map: 0))
        #expect(harness.state.volumes[0]?.status == .online)
        do {
            #expect(harness.state.maps[0]?.imageValid == false)
            #expect(harness.state.maps[0]?.state == .stopped)
        }
        try harness.run(.recoverVolume(volume: "tgt"))
        let events = try decide(.reportFault(volume: "src", cause: .operator, reason: "again"), harness.state)
        do {
            #expect(events.count == 1)
        }
    }
}
