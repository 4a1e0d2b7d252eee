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

    /// A `DetectorBaseline`, 33 bytes (`Specs/events.md` section 2).
    struct RawBaseline {
        var version: UInt8 = 1
        var learnedIntervals: UInt32
        var learnedOverwriteIntervals: UInt32
        var highEntropyShareMean: UInt32
        var highEntropyShareDeviation: UInt32
        var increaseShareMean: UInt32
        var increaseShareDeviation: UInt32
        var bytesWrittenMean: UInt64

        init(_ baseline: DetectorBaseline) {
            learnedIntervals = baseline.learnedIntervals
            learnedOverwriteIntervals = baseline.learnedOverwriteIntervals
            highEntropyShareMean = baseline.highEntropyShareMeanPartsPerMillion
            highEntropyShareDeviation = baseline.highEntropyShareDeviationPartsPerMillion
            increaseShareMean = baseline.increaseShareMeanPartsPerMillion
            increaseShareDeviation = baseline.increaseShareDeviationPartsPerMillion
            bytesWrittenMean = baseline.bytesWrittenMean
        }
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
        /// Volume fields 11–14: detection on, its sensitivity, a baseline's presence byte and value.
        var detect: UInt8 = 0
        var sensitivity: UInt8 = 1
        var baselineFlag: UInt8 = 0
        var baseline: RawBaseline?
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
    /// False: the volumes are written as before the detection fields (volume fields 11–14).
    var detectionFields = true
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
                fault: volume.fault.map { RawFault(id: $0.id, cause: $0.cause.rawValue, reason: Array($0.reason.utf8), onset: $0.onsetMilliseconds) },
                detect: volume.detect ? 1 : 0, sensitivity: volume.sensitivity.rawValue, baselineFlag: volume.detectorBaseline == nil ? 0 : 1,
                baseline: volume.detectorBaseline.map(RawBaseline.init))
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
            guard detectionFields else { continue }
            writer.write(volume.detect)
            writer.write(volume.sensitivity)
            writer.write(volume.baselineFlag)
            if volume.baselineFlag == 1, let baseline = volume.baseline {
                writer.write(baseline.version)
                writer.write(baseline.learnedIntervals)
                writer.write(baseline.learnedOverwriteIntervals)
                writer.write(baseline.highEntropyShareMean)
                writer.write(baseline.highEntropyShareDeviation)
                writer.write(baseline.increaseShareMean)
                writer.write(baseline.increaseShareDeviation)
                writer.write(baseline.bytesWrittenMean)
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

/// A baseline with distinct, non-zero fields.
private let learnedBaseline = DetectorBaseline(
    learnedIntervals: 4000, learnedOverwriteIntervals: 1200, highEntropyShareMeanPartsPerMillion: 61_000,
    highEntropyShareDeviationPartsPerMillion: 23_500, increaseShareMeanPartsPerMillion: 4_200, increaseShareDeviationPartsPerMillion: 3_100,
    bytesWrittenMean: 7 << 20)

/// A state with every optional present somewhere: a path, a fault, a rollback with and without
/// a fault id, a start ordinal, a renamed volume, detection on at each sensitivity and off at a
/// non-default one, a detector baseline, a fault of cause `detector` with its onset.
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
    // Anomaly detection: src (restoring) at high with a baseline, tgt2 off at low, a renamed
    // volume at low, and one at medium that the detector faulted.
    try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: .high))
    try harness.run(.recordDetectorBaseline(volume: 0, baseline: learnedBaseline))
    try harness.run(.changeVolume(volume: "tgt2", newName: nil, detect: true, sensitivity: .low))
    try harness.run(.changeVolume(volume: "tgt2", newName: nil, detect: false, sensitivity: nil))
    try harness.run(.createVolume(name: "watched", sizeBytes: 512, path: nil, detection: .low))
    try harness.run(.changeVolume(volume: "watched", newName: "watched-2", detect: nil, sensitivity: nil))
    try harness.run(.createVolume(name: "attacked", sizeBytes: 512, path: nil, detection: .medium))
    let interval = IntervalStatistics(
        startMilliseconds: 1_790_000_000_000, bytesWritten: 20 << 20, sampledBlocks: 320, highEntropyBlocks: 300, overwriteSamples: 290,
        entropyIncreases: 280)
    try harness.run(.reportAnomaly(volume: 6, verdict: DetectionVerdict(score: 93, onsetMilliseconds: 1_789_999_999_000, evidence: [interval])))
    return harness.state
}

@Suite("state encoding")
struct StateEncodingTests {
    @Test("the rich state round-trips and has the documented layout")
    func roundTripAndLayout() throws {
        let state = try richState()
        #expect(state.maps[0]?.rollback?.faultID == 1)
        #expect(state.maps[2]?.rollback?.faultID == nil)
        #expect(state.volumes[0]?.detect == true && state.volumes[0]?.sensitivity == .high && state.volumes[0]?.detectorBaseline == learnedBaseline)
        #expect(state.volumes[3]?.detect == false && state.volumes[3]?.sensitivity == .low && state.volumes[3]?.detectorBaseline == nil)
        #expect(state.volume("watched-2")?.id == 5 && state.volume("watched") == nil)
        #expect(state.volumes[6]?.fault?.cause == .detector && state.volumes[6]?.fault?.onsetMilliseconds == 1_789_999_999_000)
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

    @Test("a volume's detection fields follow its fault: detect, sensitivity, a presence byte and the 33-byte baseline")
    func detectionLayout() throws {
        var harness = Harness()
        try harness.run(.createVolume(name: "a", sizeBytes: 512, path: nil))
        // Header: version, eventsApplied 1, nextVolumeID 1, nextMapID 0, nextFaultID 1,
        // nextStartOrdinal 1, controllerStarts 0, nextGroupID 0; one volume.
        func header(eventsApplied: UInt8) -> [UInt8] {
            [3, eventsApplied, 0, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0] + [0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0]
                + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 0] + [1, 0, 0, 0]
        }
        // id 0, name "a", 512 bytes, no path, online, no fault.
        let volume: [UInt8] = [0, 0, 0, 0, 1, 0, 0x61, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        let noMapsNoGroups: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0]
        // Never turned on: off, medium, no baseline.
        #expect(harness.state.encoded() == header(eventsApplied: 1) + volume + [0, 1, 0] + noMapsNoGroups)

        try harness.run(.changeVolume(volume: "a", newName: nil, detect: true, sensitivity: .high))
        try harness.run(.recordDetectorBaseline(volume: 0, baseline: DetectorBaseline()))
        // An empty baseline: version 1 and 32 zero bytes.
        let empty = harness.state.encoded()
        #expect(empty == header(eventsApplied: 3) + volume + [1, 2, 1] + [1] + [UInt8](repeating: 0, count: 32) + noMapsNoGroups)
        #expect(try ControllerState.decode(empty) == harness.state)

        try harness.run(.recordDetectorBaseline(volume: 0, baseline: learnedBaseline))
        let learned = harness.state.encoded()
        #expect(learned == header(eventsApplied: 4) + volume + [1, 2, 1] + learnedBaseline.encoded() + noMapsNoGroups)
        #expect(learned == RawState(harness.state).bytes)
        let decoded = try ControllerState.decode(learned)
        #expect(decoded == harness.state && decoded.volumes[0]?.detectorBaseline == learnedBaseline)

        // Turned off: the sensitivity and the baseline are kept.
        try harness.run(.changeVolume(volume: "a", newName: nil, detect: false, sensitivity: nil))
        #expect(harness.state.encoded() == header(eventsApplied: 5) + volume + [0, 2, 1] + learnedBaseline.encoded() + noMapsNoGroups)
        #expect(try ControllerState.decode(harness.state.encoded()) == harness.state)
    }

    @Test("a version-3 checkpoint written before the detection fields does not decode")
    func checkpointWithoutDetectionFields() throws {
        // The fields were added within version 3 (`Specs/events.md` 4.2): such a checkpoint must
        // be rejected, never read as another state.
        var harness = Harness()
        try harness.run(.createVolume(name: "a", sizeBytes: 512, path: nil))
        var single = RawState(harness.state)
        single.detectionFields = false
        var rich = RawState(try richState())
        rich.detectionFields = false
        for raw in [single, rich] {
            let result = decodeResult { () throws(DecodeError) in try ControllerState.decode(raw.bytes) }
            guard case .failure = result else {
                Issue.record("a checkpoint without the detection fields decoded: \(result)")
                continue
            }
        }
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
        ("fault.cause", { $0.volumes[0].fault!.cause = 6 }),
        ("fault.cause", { $0.volumes[0].fault!.cause = 0xFF }),
        ("volume.detect", { $0.volumes[0].detect = 2 }),
        ("volume.sensitivity", { $0.volumes[0].sensitivity = 3 }),
        ("volume.sensitivity", { $0.volumes[1].sensitivity = 0xFF }),
        ("volume.detectorBaseline", { $0.volumes[0].baselineFlag = 2 }),
        ("baseline.version", { $0.volumes[0].baseline!.version = 0 }),
        ("baseline.version", { $0.volumes[0].baseline!.version = 2 }),
        ("baseline.learnedOverwriteIntervals", { $0.volumes[0].baseline!.learnedOverwriteIntervals = 4001 }),
        ("baseline.highEntropyShareMean", { $0.volumes[0].baseline!.highEntropyShareMean = 1_000_001 }),
        ("baseline.increaseShareDeviation", { $0.volumes[0].baseline!.increaseShareDeviation = .max }),
        ("baseline.bytesWrittenMean", { $0.volumes[0].baseline!.bytesWrittenMean = (1 << 40) + 1 }),
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
        #expect(state.volumes[0]?.fault != nil && state.maps[0]?.rollback != nil && state.volumes[0]?.detectorBaseline != nil)
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
