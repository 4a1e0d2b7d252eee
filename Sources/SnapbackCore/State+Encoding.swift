/// The binary encoding of a whole ``ControllerState``, used by checkpoints (`Specs/events.md`,
/// "Checkpoint state encoding"). Deterministic: volumes and maps are written in id order, so equal
/// states encode to equal bytes.
extension ControllerState {
    /// The version of this encoding; a decoder refuses any other. Version 2 added the maps'
    /// start times, hold windows and scheduled rollbacks, and faults' onsets; version 3 the
    /// consistency groups, the maps' groups and the rollbacks' `awaitingGroup`. A checkpoint of
    /// an older version is superseded (replay starts before it; `log verify` skips it).
    public static let encodingVersion: UInt8 = 3

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + volumes.count * 48 + maps.count * 96)
        writer.write(Self.encodingVersion)
        writer.write(eventsApplied)
        writer.write(nextVolumeID)
        writer.write(nextMapID)
        writer.write(nextFaultID)
        writer.write(nextStartOrdinal)
        writer.write(controllerStarts)
        writer.write(nextGroupID)
        writer.write(UInt32(volumes.count))
        for volume in volumesByID {
            writer.write(volume.id)
            writer.write(volume.name)
            writer.write(volume.sizeBytes)
            writer.write(volume.path)
            writer.write(volume.status.rawValue)
            writer.write(volume.fault != nil)
            if let fault = volume.fault {
                writer.write(fault.id)
                writer.write(fault.cause.rawValue)
                writer.write(fault.reason)
                writer.write(fault.onsetMilliseconds.map { UInt64(bitPattern: $0) })
            }
            writer.write(volume.detect)
            writer.write(volume.sensitivity.rawValue)
            writer.write(volume.detectorBaseline != nil)
            volume.detectorBaseline?.encode(into: &writer)
        }
        writer.write(UInt32(maps.count))
        for map in mapsByID {
            writer.write(map.id)
            writer.write(map.name)
            writer.write(map.role.rawValue)
            writer.write(map.partnerID)
            writer.write(map.sourceID)
            writer.write(map.targetID)
            writer.write(UInt8(map.copyRate))
            writer.write(map.grainSizeBytes)
            writer.write(map.autorestore)
            writer.write(map.state.rawValue)
            writer.write(map.imageValid)
            writer.write(map.startOrdinal)
            writer.write(map.grainsCopied)
            writer.write(map.grainsTotal)
            writer.write(map.rollback != nil)
            if let rollback = map.rollback {
                writer.write(rollback.trigger.rawValue)
                writer.write(rollback.faultID)
                writer.write(rollback.grainsRestored)
                writer.write(rollback.grainsToRestore)
                writer.write(rollback.awaitingGroup)
            }
            writer.write(map.startedAtMilliseconds.map { UInt64(bitPattern: $0) })
            writer.write(map.autorestoreDelaySeconds)
            Self.write(map.scheduledRollback, &writer)
            writer.write(map.groupID.map(UInt64.init))
        }
        writer.write(UInt32(groups.count))
        for group in groupsByID {
            writer.write(group.id)
            writer.write(group.name)
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
            Self.write(group.scheduledRollback, &writer)
        }
        return writer.bytes
    }

    /// A presence byte, then a scheduled rollback's fault id and deadline.
    private static func write(_ scheduled: ScheduledRollback?, _ writer: inout ByteWriter) {
        writer.write(scheduled != nil)
        if let scheduled {
            writer.write(scheduled.faultID)
            writer.write(scheduled.atMilliseconds)
        }
    }

    private static func readScheduled(_ reader: inout ByteReader, _ owner: String) throws(DecodeError) -> ScheduledRollback? {
        guard try reader.readBool("\(owner).scheduledRollback") else { return nil }
        let faultID = try reader.readUInt64("\(owner).scheduled.faultID")
        return ScheduledRollback(faultID: faultID, atMilliseconds: try reader.readInt64("\(owner).scheduled.at"))
    }

    /// Decodes what ``encoded()`` wrote.
    /// - Throws: ``DecodeError`` for another version, a truncated buffer, trailing bytes or a value
    ///   outside its domain.
    public static func decode(_ buffer: UnsafeRawBufferPointer) throws(DecodeError) -> ControllerState {
        var reader = ByteReader(buffer)
        let version = try reader.readUInt8("version")
        guard version == encodingVersion else { throw .invalidValue(field: "version", value: UInt64(version)) }
        var state = ControllerState()
        state.eventsApplied = try reader.readUInt64("eventsApplied")
        state.nextVolumeID = try reader.readUInt32("nextVolumeID")
        state.nextMapID = try reader.readUInt32("nextMapID")
        state.nextFaultID = try reader.readUInt64("nextFaultID")
        state.nextStartOrdinal = try reader.readUInt64("nextStartOrdinal")
        state.controllerStarts = try reader.readUInt64("controllerStarts")
        state.nextGroupID = try reader.readUInt32("nextGroupID")
        let volumeCount = try reader.readUInt32("volumeCount")
        guard volumeCount <= Limits.volumesMax else { throw .invalidValue(field: "volumeCount", value: UInt64(volumeCount)) }
        for _ in 0..<volumeCount {
            let id = try reader.readUInt32("volume.id")
            let name = try reader.readString("volume.name")
            let sizeBytes = try reader.readUInt64("volume.sizeBytes")
            let path = try reader.readOptionalString("volume.path")
            let statusCode = try reader.readUInt8("volume.status")
            guard let status = VolumeStatus(rawValue: statusCode) else {
                throw .invalidValue(field: "volume.status", value: UInt64(statusCode))
            }
            var fault: Fault?
            if try reader.readBool("volume.fault") {
                let faultID = try reader.readUInt64("fault.id")
                let causeCode = try reader.readUInt8("fault.cause")
                guard let cause = FaultCause(rawValue: causeCode) else {
                    throw .invalidValue(field: "fault.cause", value: UInt64(causeCode))
                }
                let reason = try reader.readString("fault.reason")
                let onset = try reader.readOptionalUInt64("fault.onset").map { Int64(bitPattern: $0) }
                fault = Fault(id: faultID, cause: cause, reason: reason, onsetMilliseconds: onset)
            }
            let detect = try reader.readBool("volume.detect")
            let sensitivityCode = try reader.readUInt8("volume.sensitivity")
            guard let sensitivity = DetectionSensitivity(rawValue: sensitivityCode) else {
                throw .invalidValue(field: "volume.sensitivity", value: UInt64(sensitivityCode))
            }
            let baseline = try reader.readBool("volume.detectorBaseline") ? try DetectorBaseline.decode(from: &reader) : nil
            // Canonical: ids strictly increasing, names unique.
            guard state.volumes.keys.allSatisfy({ $0 < id }), state.volumeIDsByName[name] == nil else {
                throw .invalidValue(field: "volume.id", value: UInt64(id))
            }
            state.volumes[id] = Volume(id: id, name: name, sizeBytes: sizeBytes, path: path, status: status, fault: fault)
            state.volumes[id]?.detect = detect
            state.volumes[id]?.sensitivity = sensitivity
            state.volumes[id]?.detectorBaseline = baseline
            state.volumeIDsByName[name] = id
        }
        let mapCount = try reader.readUInt32("mapCount")
        guard mapCount <= Limits.mapsMax else { throw .invalidValue(field: "mapCount", value: UInt64(mapCount)) }
        for _ in 0..<mapCount {
            let id = try reader.readUInt32("map.id")
            let name = try reader.readString("map.name")
            let roleCode = try reader.readUInt8("map.role")
            guard let role = MapRole(rawValue: roleCode) else { throw .invalidValue(field: "map.role", value: UInt64(roleCode)) }
            let partnerID = try reader.readUInt32("map.partnerID")
            let sourceID = try reader.readUInt32("map.sourceID")
            let targetID = try reader.readUInt32("map.targetID")
            let copyRate = try reader.readUInt8("map.copyRate")
            guard Int(copyRate) <= Limits.copyRateMax else { throw .invalidValue(field: "map.copyRate", value: UInt64(copyRate)) }
            let grainSizeBytes = try reader.readUInt32("map.grainSizeBytes")
            guard Limits.grainSizesBytes.contains(grainSizeBytes) else {
                throw .invalidValue(field: "map.grainSizeBytes", value: UInt64(grainSizeBytes))
            }
            let autorestore = try reader.readBool("map.autorestore")
            let stateCode = try reader.readUInt8("map.state")
            guard let mapState = MapState(rawValue: stateCode) else { throw .invalidValue(field: "map.state", value: UInt64(stateCode)) }
            let imageValid = try reader.readBool("map.imageValid")
            let startOrdinal = try reader.readOptionalUInt64("map.startOrdinal")
            let grainsCopied = try reader.readUInt64("map.grainsCopied")
            let grainsTotal = try reader.readUInt64("map.grainsTotal")
            var rollback: Rollback?
            if try reader.readBool("map.rollback") {
                let triggerCode = try reader.readUInt8("rollback.trigger")
                guard let trigger = RollbackTrigger(rawValue: triggerCode) else {
                    throw .invalidValue(field: "rollback.trigger", value: UInt64(triggerCode))
                }
                let faultID = try reader.readOptionalUInt64("rollback.faultID")
                let restored = try reader.readUInt64("rollback.grainsRestored")
                let toRestore = try reader.readUInt64("rollback.grainsToRestore")
                rollback = Rollback(trigger: trigger, faultID: faultID, grainsRestored: restored, grainsToRestore: toRestore)
                rollback?.awaitingGroup = try reader.readBool("rollback.awaitingGroup")
            }
            let startedAt = try reader.readOptionalUInt64("map.startedAt").map { Int64(bitPattern: $0) }
            let delay = try reader.readUInt32("map.autorestoreDelay")
            guard delay <= Limits.autorestoreDelaySecondsMax else { throw .invalidValue(field: "map.autorestoreDelay", value: UInt64(delay)) }
            let scheduled = try readScheduled(&reader, "map")
            let groupID = try reader.readOptionalUInt64("map.group")
            guard groupID.map({ $0 <= UInt64(UInt32.max) }) ?? true, groupID == nil || role == .forward else {
                throw .invalidValue(field: "map.group", value: groupID ?? 0)
            }
            guard state.maps.keys.allSatisfy({ $0 < id }), state.mapIDsByName[name] == nil else {
                throw .invalidValue(field: "map.id", value: UInt64(id))
            }
            state.maps[id] = LCMap(
                id: id, name: name, role: role, partnerID: partnerID, sourceID: sourceID, targetID: targetID,
                copyRate: Int(copyRate), grainSizeBytes: grainSizeBytes, autorestore: autorestore, state: mapState,
                imageValid: imageValid, startOrdinal: startOrdinal, grainsCopied: grainsCopied, grainsTotal: grainsTotal,
                rollback: rollback)
            state.maps[id]?.startedAtMilliseconds = startedAt
            state.maps[id]?.autorestoreDelaySeconds = delay
            state.maps[id]?.scheduledRollback = scheduled
            state.maps[id]?.groupID = groupID.map { GroupID($0) }
            state.mapIDsByName[name] = id
        }
        let groupCount = try reader.readUInt32("groupCount")
        guard groupCount <= Limits.groupsMax else { throw .invalidValue(field: "groupCount", value: UInt64(groupCount)) }
        for _ in 0..<groupCount {
            let id = try reader.readUInt32("group.id")
            let name = try reader.readString("group.name")
            let autorestore = try reader.readBool("group.autorestore")
            let delay = try reader.readUInt32("group.autorestoreDelay")
            guard delay <= Limits.autorestoreDelaySecondsMax else { throw .invalidValue(field: "group.autorestoreDelay", value: UInt64(delay)) }
            var group = LCGroup(id: id, name: name, autorestore: autorestore, autorestoreDelaySeconds: delay)
            group.startOrdinal = try reader.readOptionalUInt64("group.startOrdinal")
            group.startedAtMilliseconds = try reader.readOptionalUInt64("group.startedAt").map { Int64(bitPattern: $0) }
            let memberCount = try reader.readUInt32("group.memberCount")
            guard memberCount <= Limits.groupMapsMax else { throw .invalidValue(field: "group.memberCount", value: UInt64(memberCount)) }
            for _ in 0..<memberCount { group.imageMembers.append(try reader.readUInt32("group.member")) }
            if try reader.readBool("group.rollback") {
                let triggerCode = try reader.readUInt8("group.rollback.trigger")
                guard let trigger = RollbackTrigger(rawValue: triggerCode) else {
                    throw .invalidValue(field: "group.rollback.trigger", value: UInt64(triggerCode))
                }
                group.rollback = GroupRollback(trigger: trigger, faultID: try reader.readOptionalUInt64("group.rollback.faultID"))
            }
            group.scheduledRollback = try readScheduled(&reader, "group")
            guard state.groups.keys.allSatisfy({ $0 < id }), state.groupIDsByName[name] == nil else {
                throw .invalidValue(field: "group.id", value: UInt64(id))
            }
            state.groups[id] = group
            state.groupIDsByName[name] = id
        }
        try reader.expectEnd()
        for map in state.maps.values {
            if let group = map.groupID, state.groups[group] == nil {
                throw .invalidValue(field: "map.group", value: UInt64(map.id))
            }
        }
        // References between records must hold: a map's volumes and its partner exist, and the
        // partner points back with the other role.
        for map in state.maps.values {
            guard state.volumes[map.sourceID] != nil, state.volumes[map.targetID] != nil else {
                throw .invalidValue(field: "map.volume", value: UInt64(map.id))
            }
            guard let partner = state.maps[map.partnerID], partner.partnerID == map.id, partner.role != map.role,
                partner.sourceID == map.targetID, partner.targetID == map.sourceID
            else {
                throw .invalidValue(field: "map.partnerID", value: UInt64(map.id))
            }
        }
        return state
    }
}
