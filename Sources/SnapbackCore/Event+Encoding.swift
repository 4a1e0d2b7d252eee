/// The binary payload of each event (format version 1). Field order and widths are normative:
/// `Specs/events.md` lists them. Integers are little-endian; strings are a UInt16 byte count
/// followed by UTF-8; optionals are a presence byte followed by the value.
extension Event {
    /// The payload bytes of this event, without the record header.
    public func encodedPayload() -> [UInt8] {
        var writer = ByteWriter()
        encodePayload(into: &writer)
        return writer.bytes
    }

    public func encodePayload(into writer: inout ByteWriter) {
        switch self {
        case let .volumeCreated(id, name, sizeBytes, path):
            writer.write(id)
            writer.write(name)
            writer.write(sizeBytes)
            writer.write(path)
        case let .volumeRemoved(id), let .volumeRecovered(id), let .volumeSpaceRestored(id):
            writer.write(id)
        case let .volumeOutOfSpace(id, reason):
            writer.write(id)
            writer.write(reason)
        case let .rollbackRestarted(id, faultID), let .rollbackScheduled(id, faultID):
            writer.write(id)
            writer.write(faultID)
        case let .mapAutorestoreDelayChanged(id, seconds):
            writer.write(id)
            writer.write(seconds)
        case let .faultOnset(id, faultID, onset):
            writer.write(id)
            writer.write(faultID)
            writer.write(onset)
        case let .mapCreated(created):
            writer.write(created.id)
            writer.write(created.name)
            writer.write(created.reverseID)
            writer.write(created.reverseName)
            writer.write(created.sourceID)
            writer.write(created.targetID)
            writer.write(UInt8(created.copyRate))
            writer.write(created.grainSizeBytes)
            writer.write(created.autorestore)
        case let .mapRenamed(id, name, reverseName):
            writer.write(id)
            writer.write(name)
            writer.write(reverseName)
        case let .mapAutorestoreChanged(id, autorestore):
            writer.write(id)
            writer.write(autorestore)
        case let .mapCopyRateChanged(id, copyRate):
            writer.write(id)
            writer.write(UInt8(copyRate))
        case let .mapRemoved(id), let .mapPreparing(id), let .mapPrepared(id), let .mapCopyCompleted(id),
            let .mapStopping(id), let .mapStopped(id), let .rollbackCompleted(id):
            writer.write(id)
        case let .mapStarted(id, startOrdinal):
            writer.write(id)
            writer.write(startOrdinal)
        case let .mapCopyProgressed(id, grainsCopied):
            writer.write(id)
            writer.write(grainsCopied)
        case let .volumeFaulted(id, faultID, cause, reason):
            writer.write(id)
            writer.write(faultID)
            writer.write(cause.rawValue)
            writer.write(reason)
        case let .rollbackStarted(id, trigger, faultID):
            writer.write(id)
            writer.write(trigger.rawValue)
            writer.write(faultID)
        case let .rollbackProgressed(id, grainsRestored, grainsToRestore):
            writer.write(id)
            writer.write(grainsRestored)
            writer.write(grainsToRestore)
        case let .controllerStarted(version):
            writer.write(version)
        case let .rollbackStopped(id, reason), let .groupRollbackStopped(id, reason), let .groupRenamed(id, reason):
            writer.write(id)
            writer.write(reason)
        case let .groupCreated(id, name, autorestore, delay):
            writer.write(id)
            writer.write(name)
            writer.write(autorestore)
            writer.write(delay)
        case let .groupAutorestoreChanged(id, autorestore):
            writer.write(id)
            writer.write(autorestore)
        case let .groupAutorestoreDelayChanged(id, seconds):
            writer.write(id)
            writer.write(seconds)
        case let .groupRemoved(id), let .groupMemberRestored(id), let .groupRollbackCompleted(id):
            writer.write(id)
        case let .mapGroupChanged(id, group):
            writer.write(id)
            writer.write(group.map(UInt64.init))
        case let .groupStarted(id, startOrdinal, members):
            writer.write(id)
            writer.write(startOrdinal)
            writer.write(UInt32(members.count))
            for member in members { writer.write(member) }
        case let .groupRollbackStarted(id, trigger, faultID):
            writer.write(id)
            writer.write(trigger.rawValue)
            writer.write(faultID)
        case let .groupRollbackScheduled(id, faultID):
            writer.write(id)
            writer.write(faultID)
        case let .volumeRenamed(id, name):
            writer.write(id)
            writer.write(name)
        case let .volumeDetectionChanged(id, enabled, sensitivity):
            writer.write(id)
            writer.write(enabled)
            writer.write(sensitivity.rawValue)
        case let .anomalyDetected(id, score, onset, evidence):
            writer.write(id)
            writer.write(score)
            writer.write(onset)
            writer.write(UInt8(evidence.count))
            for interval in evidence { interval.encode(into: &writer) }
        case let .detectorBaselineSaved(id, baseline):
            writer.write(id)
            baseline.encode(into: &writer)
        }
    }

    /// Decodes the payload of an event of type code `typeCode`.
    /// - Throws: ``DecodeError`` for an unknown type, a truncated or over-long payload, or a
    ///   field outside its domain. Nothing is guessed.
    public static func decode(typeCode: UInt16, payload: UnsafeRawBufferPointer) throws(DecodeError) -> Event {
        guard let type = EventType(rawValue: typeCode) else { throw .unknownEventType(typeCode) }
        var reader = ByteReader(payload)
        let event: Event
        switch type {
        case .volumeCreated:
            let id = try reader.readUInt32("id")
            let name = try reader.readString("name")
            let sizeBytes = try reader.readUInt64("sizeBytes")
            let path = try reader.readOptionalString("path")
            event = .volumeCreated(id: id, name: name, sizeBytes: sizeBytes, path: path)
        case .volumeRemoved:
            event = .volumeRemoved(id: try reader.readUInt32("id"))
        case .volumeRecovered:
            event = .volumeRecovered(id: try reader.readUInt32("id"))
        case .volumeOutOfSpace:
            let id = try reader.readUInt32("id")
            event = .volumeOutOfSpace(id: id, reason: try reader.readString("reason"))
        case .volumeSpaceRestored:
            event = .volumeSpaceRestored(id: try reader.readUInt32("id"))
        case .rollbackRestarted:
            let id = try reader.readUInt32("id")
            event = .rollbackRestarted(id: id, faultID: try reader.readUInt64("faultID"))
        case .rollbackScheduled:
            let id = try reader.readUInt32("id")
            event = .rollbackScheduled(id: id, faultID: try reader.readUInt64("faultID"))
        case .mapAutorestoreDelayChanged:
            let id = try reader.readUInt32("id")
            event = .mapAutorestoreDelayChanged(id: id, seconds: try readDelay(&reader))
        case .faultOnset:
            let id = try reader.readUInt32("id")
            let faultID = try reader.readUInt64("faultID")
            event = .faultOnset(id: id, faultID: faultID, onsetMilliseconds: try reader.readInt64("onsetMilliseconds"))
        case .mapCreated:
            let id = try reader.readUInt32("id")
            let name = try reader.readString("name")
            let reverseID = try reader.readUInt32("reverseID")
            let reverseName = try reader.readString("reverseName")
            let sourceID = try reader.readUInt32("sourceID")
            let targetID = try reader.readUInt32("targetID")
            let copyRate = try readCopyRate(&reader)
            let grainSizeBytes = try reader.readUInt32("grainSizeBytes")
            guard Limits.grainSizesBytes.contains(grainSizeBytes) else {
                throw .invalidValue(field: "grainSizeBytes", value: UInt64(grainSizeBytes))
            }
            let autorestore = try reader.readBool("autorestore")
            event = .mapCreated(
                MapCreated(
                    id: id, name: name, reverseID: reverseID, reverseName: reverseName, sourceID: sourceID,
                    targetID: targetID, copyRate: copyRate, grainSizeBytes: grainSizeBytes, autorestore: autorestore))
        case .mapRenamed:
            let id = try reader.readUInt32("id")
            let name = try reader.readString("name")
            let reverseName = try reader.readString("reverseName")
            event = .mapRenamed(id: id, name: name, reverseName: reverseName)
        case .mapAutorestoreChanged:
            let id = try reader.readUInt32("id")
            event = .mapAutorestoreChanged(id: id, autorestore: try reader.readBool("autorestore"))
        case .mapCopyRateChanged:
            let id = try reader.readUInt32("id")
            event = .mapCopyRateChanged(id: id, copyRate: try readCopyRate(&reader))
        case .mapRemoved: event = .mapRemoved(id: try reader.readUInt32("id"))
        case .mapPreparing: event = .mapPreparing(id: try reader.readUInt32("id"))
        case .mapPrepared: event = .mapPrepared(id: try reader.readUInt32("id"))
        case .mapCopyCompleted: event = .mapCopyCompleted(id: try reader.readUInt32("id"))
        case .mapStopping: event = .mapStopping(id: try reader.readUInt32("id"))
        case .mapStopped: event = .mapStopped(id: try reader.readUInt32("id"))
        case .rollbackCompleted: event = .rollbackCompleted(id: try reader.readUInt32("id"))
        case .mapStarted:
            let id = try reader.readUInt32("id")
            event = .mapStarted(id: id, startOrdinal: try reader.readUInt64("startOrdinal"))
        case .mapCopyProgressed:
            let id = try reader.readUInt32("id")
            event = .mapCopyProgressed(id: id, grainsCopied: try reader.readUInt64("grainsCopied"))
        case .volumeFaulted:
            let id = try reader.readUInt32("id")
            let faultID = try reader.readUInt64("faultID")
            let causeCode = try reader.readUInt8("cause")
            guard let cause = FaultCause(rawValue: causeCode) else {
                throw .invalidValue(field: "cause", value: UInt64(causeCode))
            }
            let reason = try reader.readString("reason")
            event = .volumeFaulted(id: id, faultID: faultID, cause: cause, reason: reason)
        case .rollbackStarted:
            let id = try reader.readUInt32("id")
            let triggerCode = try reader.readUInt8("trigger")
            guard let trigger = RollbackTrigger(rawValue: triggerCode) else {
                throw .invalidValue(field: "trigger", value: UInt64(triggerCode))
            }
            event = .rollbackStarted(id: id, trigger: trigger, faultID: try reader.readOptionalUInt64("faultID"))
        case .rollbackProgressed:
            let id = try reader.readUInt32("id")
            let grainsRestored = try reader.readUInt64("grainsRestored")
            let grainsToRestore = try reader.readUInt64("grainsToRestore")
            guard grainsRestored <= grainsToRestore else {
                throw .invalidValue(field: "grainsRestored", value: grainsRestored)
            }
            event = .rollbackProgressed(id: id, grainsRestored: grainsRestored, grainsToRestore: grainsToRestore)
        case .controllerStarted:
            event = .controllerStarted(version: try reader.readString("version"))
        case .rollbackStopped:
            let id = try reader.readUInt32("id")
            event = .rollbackStopped(id: id, reason: try reader.readString("reason"))
        case .groupCreated:
            let id = try reader.readUInt32("id")
            let name = try reader.readString("name")
            let autorestore = try reader.readBool("autorestore")
            let delay = try readDelay(&reader)
            event = .groupCreated(id: id, name: name, autorestore: autorestore, autorestoreDelaySeconds: delay)
        case .groupRenamed:
            let id = try reader.readUInt32("id")
            event = .groupRenamed(id: id, name: try reader.readString("name"))
        case .groupAutorestoreChanged:
            let id = try reader.readUInt32("id")
            event = .groupAutorestoreChanged(id: id, autorestore: try reader.readBool("autorestore"))
        case .groupAutorestoreDelayChanged:
            let id = try reader.readUInt32("id")
            event = .groupAutorestoreDelayChanged(id: id, seconds: try readDelay(&reader))
        case .groupRemoved: event = .groupRemoved(id: try reader.readUInt32("id"))
        case .groupMemberRestored: event = .groupMemberRestored(id: try reader.readUInt32("id"))
        case .groupRollbackCompleted: event = .groupRollbackCompleted(id: try reader.readUInt32("id"))
        case .mapGroupChanged:
            let id = try reader.readUInt32("id")
            let group = try reader.readOptionalUInt64("group")
            if let group, group > UInt64(UInt32.max) { throw .invalidValue(field: "group", value: group) }
            event = .mapGroupChanged(id: id, group: group.map { GroupID($0) })
        case .groupStarted:
            let id = try reader.readUInt32("id")
            let startOrdinal = try reader.readUInt64("startOrdinal")
            let count = try reader.readUInt32("memberCount")
            guard count <= Limits.groupMapsMax else { throw .invalidValue(field: "memberCount", value: UInt64(count)) }
            var members: [MapID] = []
            for _ in 0..<count { members.append(try reader.readUInt32("member")) }
            event = .groupStarted(id: id, startOrdinal: startOrdinal, members: members)
        case .groupRollbackStarted:
            let id = try reader.readUInt32("id")
            let triggerCode = try reader.readUInt8("trigger")
            guard let trigger = RollbackTrigger(rawValue: triggerCode) else {
                throw .invalidValue(field: "trigger", value: UInt64(triggerCode))
            }
            event = .groupRollbackStarted(id: id, trigger: trigger, faultID: try reader.readOptionalUInt64("faultID"))
        case .groupRollbackStopped:
            let id = try reader.readUInt32("id")
            event = .groupRollbackStopped(id: id, reason: try reader.readString("reason"))
        case .groupRollbackScheduled:
            let id = try reader.readUInt32("id")
            event = .groupRollbackScheduled(id: id, faultID: try reader.readUInt64("faultID"))
        case .volumeRenamed:
            let id = try reader.readUInt32("id")
            event = .volumeRenamed(id: id, name: try reader.readString("name"))
        case .volumeDetectionChanged:
            let id = try reader.readUInt32("id")
            let enabled = try reader.readBool("enabled")
            let code = try reader.readUInt8("sensitivity")
            guard let sensitivity = DetectionSensitivity(rawValue: code) else { throw .invalidValue(field: "sensitivity", value: UInt64(code)) }
            event = .volumeDetectionChanged(id: id, enabled: enabled, sensitivity: sensitivity)
        case .anomalyDetected:
            let id = try reader.readUInt32("id")
            let score = try reader.readUInt8("score")
            guard score <= 100 else { throw .invalidValue(field: "score", value: UInt64(score)) }
            let onset = try reader.readInt64("onsetMilliseconds")
            let count = try reader.readUInt8("evidenceCount")
            guard Int(count) <= DetectionLimits.evidenceIntervalsMax else { throw .invalidValue(field: "evidenceCount", value: UInt64(count)) }
            var evidence: [IntervalStatistics] = []
            for _ in 0..<count { evidence.append(try IntervalStatistics.decode(from: &reader)) }
            event = .anomalyDetected(id: id, score: score, onsetMilliseconds: onset, evidence: evidence)
        case .detectorBaselineSaved:
            let id = try reader.readUInt32("id")
            event = .detectorBaselineSaved(id: id, baseline: try DetectorBaseline.decode(from: &reader))
        }
        try reader.expectEnd()
        return event
    }

    private static func readDelay(_ reader: inout ByteReader) throws(DecodeError) -> UInt32 {
        let seconds = try reader.readUInt32("seconds")
        guard seconds <= Limits.autorestoreDelaySecondsMax else { throw .invalidValue(field: "seconds", value: UInt64(seconds)) }
        return seconds
    }

    private static func readCopyRate(_ reader: inout ByteReader) throws(DecodeError) -> Int {
        let copyRate = try reader.readUInt8("copyRate")
        guard Int(copyRate) <= Limits.copyRateMax else { throw .invalidValue(field: "copyRate", value: UInt64(copyRate)) }
        return Int(copyRate)
    }

    /// The volumes and maps this event names, for filtering (`snapback log show -volume/-map`).
    public var mapIDs: [MapID] {
        switch self {
        case let .mapCreated(created): [created.id, created.reverseID]
        case let .mapRenamed(id, _, _), let .mapAutorestoreChanged(id, _), let .mapCopyRateChanged(id, _),
            let .mapRemoved(id), let .mapPreparing(id), let .mapPrepared(id), let .mapStarted(id, _),
            let .mapCopyProgressed(id, _), let .mapCopyCompleted(id), let .mapStopping(id), let .mapStopped(id),
            let .rollbackStarted(id, _, _), let .rollbackProgressed(id, _, _), let .rollbackCompleted(id),
            let .rollbackStopped(id, _), let .rollbackRestarted(id, _), let .mapAutorestoreDelayChanged(id, _), let .rollbackScheduled(id, _),
            let .mapGroupChanged(id, _), let .groupMemberRestored(id):
            [id]
        case let .groupStarted(_, _, members): members
        case .volumeCreated, .volumeRemoved, .volumeFaulted, .volumeRecovered, .controllerStarted, .volumeOutOfSpace,
            .volumeSpaceRestored, .faultOnset, .volumeRenamed, .volumeDetectionChanged, .anomalyDetected, .detectorBaselineSaved, .groupCreated, .groupRenamed, .groupAutorestoreChanged, .groupAutorestoreDelayChanged,
            .groupRemoved, .groupRollbackStarted, .groupRollbackCompleted, .groupRollbackStopped, .groupRollbackScheduled:
            []
        }
    }

    /// The consistency groups this event names directly (`snapback log show -group`).
    public var groupIDs: [GroupID] {
        switch self {
        case let .groupCreated(id, _, _, _), let .groupRenamed(id, _), let .groupAutorestoreChanged(id, _),
            let .groupAutorestoreDelayChanged(id, _), let .groupRemoved(id), let .groupStarted(id, _, _),
            let .groupRollbackStarted(id, _, _), let .groupRollbackCompleted(id), let .groupRollbackStopped(id, _),
            let .groupRollbackScheduled(id, _):
            [id]
        case let .mapGroupChanged(_, group): group.map { [$0] } ?? []
        default: []
        }
    }

    /// The volumes this event names directly.
    public var volumeIDs: [VolumeID] {
        switch self {
        case let .volumeCreated(id, _, _, _), let .volumeRemoved(id), let .volumeFaulted(id, _, _, _),
            let .volumeRecovered(id), let .volumeOutOfSpace(id, _), let .volumeSpaceRestored(id), let .faultOnset(id, _, _),
            let .volumeRenamed(id, _), let .volumeDetectionChanged(id, _, _), let .anomalyDetected(id, _, _, _), let .detectorBaselineSaved(id, _):
            [id]
        case let .mapCreated(created): [created.sourceID, created.targetID]
        default: []
        }
    }
}
