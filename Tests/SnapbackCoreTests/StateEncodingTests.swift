@testable import SnapbackCore
import Testing

/// An independent writer of the checkpoint format (`Specs/events.md`, "Checkpoint state
/// encoding"), field by field with raw values, so tests can pin the layout and build encodings
/// that `ControllerState.encoded()` never writes.
struct RawState {
    struct RawFault {
        var id: UInt64
        var cause: UInt8
        var reason: [UInt8]
        var onset: Int64?
    }

    struct RawVolume {
        var id: UInt32
        var name: [UInt8]
        var sizeBytes: UInt64
        var pathFlag: UInt8
        var path: [UInt8]
        var status: UInt8
        var faultFlag: UInt8
        var fault: RawFault?
    }

    struct RawRollback {
        var trigger: UInt8
        var faultIDFlag: UInt8
        var faultID: UInt64
        var grainsRestored: UInt64
        var grainsToRestore: UInt64
        var awaitingGroup: UInt8 = 0
    }

    struct RawMap {
        var id: UInt32
        var name: [UInt8]
        var role: UInt8
        var partnerID: UInt32
        var sourceID: UInt32
        var targetID: UInt32
        var copyRate: UInt8
        var grainSizeBytes: UInt32
        var autorestore: UInt8
        var state: UInt8
        var imageValid: UInt8
        var startOrdinalFlag: UInt8
        var startOrdinal: UInt64
        var grainsCopied: UInt64
        var grainsTotal: UInt64
        var rollbackFlag: UInt8
        var rollback: RawRollback?
        var startedAt: Int64?
        var autorestoreDelay: UInt32 = 0
        var scheduled: ScheduledRollback?
        var group: UInt32?
    }

    var version: UInt8 = 3
    var eventsApplied: UInt64 = 0
    var nextVolumeID: UInt32 = 0
    var nextMapID: UInt32 = 0
    var nextFaultID: UInt64 = 1
    var nextStartOrdinal: UInt64 = 1
    var controllerStarts: UInt64 = 0
    var nextGroupID: UInt32 = 0
    var volumeCount: UInt32?
    var volumes: [RawVolume] = []
    var mapCount: UInt32?
    var maps: [RawMap] = []
    var groupCount: UInt32?
    var groups: [LCGroup] = []

    init(_ state: ControllerState) {
        eventsApplied = state.eventsApplied
        nextVolumeID = state.nextVolumeID
        nextMapID = state.nextMapID
        nextFaultID = state.nextFaultID
        nextStartOrdinal = state.nextStartOrdinal
        controllerStarts = state.controllerStarts
        nextGroupID = state.nextGroupID
        groups = state.groupsByID
        volumes = state.volumesByID.map { volume in
            RawVolume(
                id: volume.id, name: Array(volume.name.utf8), sizeBytes: volume.sizeBytes, pathFlag: volume.path == nil ? 0 : 1,
                path: Array((volume.path ?? "").utf8), status: volume.status.rawValue, faultFlag: volume.fault == nil ? 0 : 1,
                fault: volume.fault.map { RawFault(id: $0.id, cause: $0.cause.rawValue, reason: Array($0.reason.utf8), onset: $0.onsetMilliseconds) })
        }
        maps = state.mapsByID.map { map in
            RawMap(
                id: map.id, name: Array(map.name.utf8), role: map.role.rawValue, partnerID: map.partnerID, sourceID: map.sourceID,
                targetID: map.targetID, copyRate: UInt8(map.copyRate), grainSizeBytes: map.grainSizeBytes,
                autorestore: map.autorestore ? 1 : 0, state: map.state.rawValue, imageValid: map.imageValid ? 1 : 0,
                startOrdinalFlag: map.startOrdinal == nil ? 0 : 1, startOrdinal: map.startOrdinal ?? 0, grainsCopied: map.grainsCopied,
                grainsTotal: map.grainsTotal, rollbackFlag: map.rollback == nil ? 0 : 1,
                rollback: map.rollback.map {
                    RawRollback(
                        trigger: $0.trigger.rawValue, faultIDFlag: $0.faultID == nil ? 0 : 1, faultID: $0.faultID ?? 0,
                        grainsRestored: $0.grainsRestored, grainsToRestore: $0.grainsToRestore, awaitingGroup: $0.awaitingGroup ? 1 : 0)
                }, startedAt: map.startedAtMilliseconds, autorestoreDelay: map.autorestoreDelaySeconds, scheduled: map.scheduledRollback,
                group: map.groupID)
        }
    }

    var bytes: [UInt8] {
        var writer = ByteWriter()
        func string(_ bytes: [UInt8]) {
            writer.write(UInt16(bytes.count))
            writer.write(bytes: bytes)
        }
        writer.write(version)
        writer.write(eventsApplied)
        writer.write(nextVolumeID)
        writer.write(nextMapID)
        writer.write(nextFaultID)
        writer.write(nextStartOrdinal)
        writer.write(controllerStarts)
        writer.write(nextGroupID)
        writer.write(volumeCount ?? UInt32(volumes.count))
        for volume in volumes {
            writer.write(volume.id)
            string(volume.name)
            writer.write(volume.sizeBytes)
            writer.write(volume.pathFlag)
            if volume.pathFlag == 1 { string(volume.path) }
            writer.write(volume.status)
            writer.write(volume.faultFlag)
            if volume.faultFlag == 1, let fault = volume.fault {
                writer.write(fault.id)
                writer.write(fault.cause)
                string(fault.reason)
                writer.write(fault.onset.map { UInt64(bitPattern: $0) })
            }
        }
        writer.write(mapCount ?? UInt32(maps.count))
        for map in maps {
            writer.write(map.id)
            string(map.name)
            writer.write(map.role)
            writer.write(map.partnerID)
            writer.write(map.sourceID)
            writer.write(map.targetID)
            writer.write(map.copyRate)
            writer.write(map.grainSizeBytes)
            writer.write(map.autorestore)
            writer.write(map.state)
            writer.write(map.imageValid)
            writer.write(map.startOrdinalFlag)
            if map.startOrdinalFlag == 1 { writer.write(map.startOrdinal) }
            writer.write(map.grainsCopied)
            writer.write(map.grainsTotal)
            writer.write(map.rollbackFlag)
            if map.rollbackFlag == 1, let rollback = map.rollback {
                writer.write(rollback.trigger)
                writer.write(rollback.faultIDFlag)
                if rollback.faultIDFlag == 1 { writer.write(rollback.faultID) }
                writer.write(rollback.grainsRestored)
                writer.write(rollback.grainsToRestore)
                writer.write(rollback.awaitingGroup)
            }
            writer.write(map.startedAt.map { UInt64(bitPattern: $0) })
            writer.write(map.autorestoreDelay)
            writer.write(map.scheduled != nil)
            if let scheduled = map.scheduled {
                writer.write(scheduled.faultID)
                writer.write(scheduled.atMilliseconds)
            }
            writer.write(map.group.map(UInt64.init))
        }
        writer.write(groupCount ?? UInt32(groups.count))
        for group in groups {
            writer.write(group.id)
            string(Array(group.name.utf8))
            writer.write(group.autorestore)
            writer.write(group.autorestoreDelaySeconds)
            writer.write(group.startOrdinal)
            writer.write(group.startedAtMilliseconds.map { UInt64(bitPattern: $0) })
            writer.write(UInt32(group.imageMembers.count))
            for member in group.imageMembers { writer.write(member) }
            writer.write(group.rollback != nil)
            if let rollback = group.rollback {
                writer.write(rollback.trigger.rawValue)
                writer.write(rollback.faultID)
            }
            writer.write(group.scheduledRollback != nil)
            if let scheduled = group.scheduledRollback {
                writer.write(scheduled.faultID)
                writer.write(scheduled.atMilliseconds)
            }
        }
        return writer.bytes
    }
}

/// A state with every optional present somewhere: a path, a fault, a rollback with and without
/// a fault id, a start ordinal.
private func richState() throws -> ControllerState {
    var harness = Harness()
    try harness.run(.recordControllerStart(version: "1"))
    try harness.run(.createVolume(name: "src", sizeBytes: Fixture.mebibyte, path: "/srv/src.img"))
    try harness.run(.createVolume(name: "tgt", sizeBytes: Fixture.mebibyte, path: nil))
    try harness.run(.createVolume(name: "src2", sizeBytes: Fixture.mebibyte, path: nil))
    try harness.run(.createVolume(name: "tgt2", sizeBytes: Fixture.mebibyte, path: nil))
    try harness.run(.createVolume(name: "lonely", sizeBytes: 512, path: nil))
    try harness.run(.createMap(CreateMap(source: "src", target: "tgt", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)))
    try harness.run(.createMap(CreateMap(source: "src2", target: "tgt2", name: "n")))
    try harness.run(.startMap(map: "m"))
    try harness.run(.startMap(map: "n"))
    try harness.run(.reportFault(volume: "src", cause: .backingMissing, reason: "gone"))
    try harness.run(.recordRollbackProgress(map: 0, grainsRestored: 1, grainsToRestore: 5))
    try harness.run(.startRestore(map: "n"))
    try harness.run(.reportFault(volume: "lonely", cause: .ioError, reason: "EIO ✗"))
    return harness.state
}

@Suite("state encoding")
struct StateEncodingTests {
    @Test("the rich state round-trips and has the documented layout")
    func roundTripAndLayout() throws {
        let state = try richState()
        #expect(state.maps[0]?.rollback?.faultID == 1)
        #expect(state.maps[2]?.rollback?.faultID == nil)
        let bytes = state.encoded()
        #expect(bytes == RawState(state).bytes)
        #expect(try ControllerState.decode(bytes) == state)
        #expect(bytes.first == ControllerState.encodingVersion)
    }

    @Test("the empty state encodes to its header and three zero counts")
    func empty() throws {
        let bytes = ControllerState().encoded()
        // Version, eventsApplied, nextVolumeID, nextMapID, nextFaultID, nextStartOrdinal,
        // controllerStarts, nextGroupID; then the volume, map and group counts.
        let header: [UInt8] =
            [3] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 0] + [0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0]
            + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 0]
        #expect(bytes == header + [0, 0, 0, 0] + [0, 0, 0, 0] + [0, 0, 0, 0])
        #expect(try ControllerState.decode(bytes) == ControllerState())
    }

    @Test("equal states encode to equal bytes, whatever order they were built in")
    func deterministic() throws {
        var first = ControllerState()
        var second = ControllerState()
        let events: [Event] = (0..<20).map { .volumeCreated(id: VolumeID($0), name: "v\($0)", sizeBytes: 512, path: nil) }
        for event in events { first.apply(event) }
        for event in events.reversed() { second.apply(event) }
        #expect(first == second)
        #expect(first.encoded() == second.encoded())
    }

    @Test("the decoded state's indexes are rebuilt from the records")
    func indexes() throws {
        let state = try richState()
        let decoded = try ControllerState.decode(state.encoded())
        #expect(decoded.volumeIDsByName == state.volumeIDsByName)
        #expect(decoded.mapIDsByName == state.mapIDsByName)
        #expect(decoded.map("m_rev")?.id == 1)
        #expect(decoded.volume("lonely")?.fault?.reason == "EIO ✗")
    }

    @Test("every strict prefix is refused as truncated, and trailing bytes are refused")
    func truncationAndTrailing() throws {
        let bytes = try richState().encoded()
        for length in 0..<bytes.count {
            let result = decodeResult { () throws(DecodeError) in try ControllerState.decode(Array(bytes[..<length])) }
            guard case .failure(.truncated) = result else {
                Issue.record("prefix \(length)/\(bytes.count): \(result)")
                continue
            }
        }
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(bytes + [0]) } == .failure(.trailingBytes(count: 1)))
    }

    @Test("other encoding versions are refused", arguments: [0, 1, 2, 4, 255] as [UInt8])
    func version(version: UInt8) throws {
        var raw = RawState(try richState())
        raw.version = version
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) } == .failure(.invalidValue(field: "version", value: UInt64(version))))
    }

    @Test("counts above the limits are refused before anything is read")
    func counts() throws {
        var raw = RawState(ControllerState())
        raw.volumeCount = UInt32(Limits.volumesMax + 1)
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) } == .failure(.invalidValue(field: "volumeCount", value: 4097)))
        raw.volumeCount = .max
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) } == .failure(.invalidValue(field: "volumeCount", value: UInt64(UInt32.max))))
        raw.volumeCount = nil
        raw.mapCount = UInt32(Limits.mapsMax + 1)
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) } == .failure(.invalidValue(field: "mapCount", value: 8193)))
        // A count larger than the records present is truncation.
        raw.mapCount = 1
        guard case .failure(.truncated) = decodeResult({ () throws(DecodeError) in try ControllerState.decode(raw.bytes) }) else {
            Issue.record("expected truncation")
            return
        }
    }

    /// Each mutation of one raw field, and the field the decoder must name.
    static let invalidFields: [(String, @Sendable (inout RawState) -> Void)] = [
        ("volume.status", { $0.volumes[0].status = 4 }),
        ("volume.path", { $0.volumes[0].pathFlag = 2 }),
        ("volume.fault", { $0.volumes[1].faultFlag = 2 }),
        ("fault.cause", { $0.volumes[0].fault!.cause = 5 }),
        ("volume.id", { $0.volumes[1].id = $0.volumes[0].id }),
        ("volume.id", { $0.volumes[1].name = $0.volumes[0].name }),
        ("map.role", { $0.maps[0].role = 2 }),
        ("map.copyRate", { $0.maps[0].copyRate = 151 }),
        ("map.grainSizeBytes", { $0.maps[0].grainSizeBytes = 128 << 10 }),
        ("map.autorestore", { $0.maps[0].autorestore = 2 }),
        ("map.state", { $0.maps[0].state = 6 }),
        ("map.imageValid", { $0.maps[0].imageValid = 0xFF }),
        ("map.startOrdinal", { $0.maps[0].startOrdinalFlag = 2 }),
        ("map.rollback", { $0.maps[0].rollbackFlag = 2 }),
        ("rollback.trigger", { $0.maps[0].rollback!.trigger = 2 }),
        ("rollback.faultID", { $0.maps[0].rollback!.faultIDFlag = 2 }),
        ("map.id", { $0.maps[1].id = $0.maps[0].id }),
        ("map.id", { $0.maps[1].name = $0.maps[0].name }),
    ]

    @Test("fields outside their domains, and duplicate ids or names, are refused")
    func invalidValues() throws {
        let state = try richState()
        #expect(state.volumes[0]?.fault != nil && state.maps[0]?.rollback != nil)
        for (index, (field, mutate)) in Self.invalidFields.enumerated() {
            var raw = RawState(state)
            mutate(&raw)
            let result = decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) }
            guard case let .failure(.invalidValue(actual, _)) = result else {
                Issue.record("mutation \(index) (\(field)): \(result)")
                continue
            }
            #expect(actual == field, "mutation \(index)")
        }
    }

    @Test("strings that are not valid UTF-8 are refused")
    func invalidUTF8() throws {
        let state = try richState()
        let mutations: [(String, (inout RawState) -> Void)] = [
            ("volume.name", { $0.volumes[0].name = [0x73, 0xFF] }),
            ("volume.path", { $0.volumes[0].path = [0x2F, 0xC0, 0x80] }),
            ("fault.reason", { $0.volumes[0].fault!.reason = [0xED, 0xA0, 0x80] }),
            ("map.name", { $0.maps[0].name = [0x80] }),
        ]
        for (field, mutate) in mutations {
            var raw = RawState(state)
            mutate(&raw)
            #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) } == .failure(.invalidUTF8(field: field)))
        }
    }

    @Test("random states reached by random commands round-trip, and every truncation throws")
    func randomStates() {
        for seed in UInt64(1000)..<1040 {
            let run = RandomRun(seed: seed, commands: 80)
            let bytes = run.state.encoded()
            #expect(bytes == RawState(run.state).bytes, "seed \(seed)")
            #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(bytes) } == .success(run.state), "seed \(seed)")
            for length in 0..<bytes.count {
                guard case .failure(.truncated) = decodeResult({ () throws(DecodeError) in try ControllerState.decode(Array(bytes[..<length])) }) else {
                    Issue.record("seed \(seed): prefix \(length)/\(bytes.count) did not throw truncated")
                    break
                }
            }
        }
    }
}
