/// Validates `command` against `state` and returns the events that record it, in order.
///
/// All business rules live here. The returned events are recorded atomically (one log
/// transaction); applying them with ``evolve(_:_:)`` gives the new state.
/// - Throws: ``CommandError`` with a stable code when the command is rejected; nothing changes.
public func decide(_ command: Command, _ state: ControllerState) throws(CommandError) -> [Event] {
    switch command {
    case let .createVolume(name, sizeBytes, path, _, detection):
        try validateName(name, bytesMax: Limits.nameBytesMax, kind: "volume")
        guard state.volumeIDsByName[name] == nil else {
            throw CommandError(.duplicateName, "a volume named \"\(name)\" already exists")
        }
        guard state.volumes.count < Limits.volumesMax else {
            throw CommandError(.limitReached, "the controller already holds \(Limits.volumesMax) volumes")
        }
        guard sizeBytes >= Limits.volumeSizeBytesMin, sizeBytes <= Limits.volumeSizeBytesMax,
            sizeBytes % Limits.sectorBytes == 0
        else {
            throw CommandError(
                .invalidSize,
                "volume size \(sizeBytes) bytes must be a multiple of 512 between 512 bytes and 256 TiB")
        }
        if let path {
            guard path.hasPrefix("/"), path.utf8.count <= Limits.pathBytesMax,
                !path.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw CommandError(.invalidPath, "backing path must be absolute, at most 4096 bytes, without control characters")
            }
            if let other = state.volumes.values.first(where: { $0.path == path }) {
                throw CommandError(.pathExists, "backing path \(shown(path)) is already used by volume \(other.name)")
            }
        }
        let created = Event.volumeCreated(id: state.nextVolumeID, name: name, sizeBytes: sizeBytes, path: path)
        guard let detection else { return [created] }
        return [created, .volumeDetectionChanged(id: state.nextVolumeID, enabled: true, sensitivity: detection)]

    case let .changeVolume(reference, newName, detect, sensitivity):
        let volume = try resolveVolume(reference, state)
        guard newName != nil || detect != nil || sensitivity != nil else {
            throw CommandError(.nothingToChange, "chvolume needs -name, -detect or -sensitivity")
        }
        var events: [Event] = []
        if let newName, newName != volume.name {
            try validateName(newName, bytesMax: Limits.nameBytesMax, kind: "volume")
            guard state.volumeIDsByName[newName] == nil else {
                throw CommandError(.duplicateName, "a volume named \"\(newName)\" already exists")
            }
            events.append(.volumeRenamed(id: volume.id, name: newName))
        }
        let enabled = detect ?? volume.detect
        let level = sensitivity ?? volume.sensitivity
        if sensitivity != nil && !enabled {
            throw CommandError(.invalidState, "volume \(volume.name) has no anomaly detection; -sensitivity needs -detect on")
        }
        if enabled != volume.detect || level != volume.sensitivity {
            events.append(.volumeDetectionChanged(id: volume.id, enabled: enabled, sensitivity: level))
        }
        return events

    case let .reportAnomaly(id, verdict):
        guard let volume = state.volumes[id] else { throw CommandError(.unknownVolume, "volume \(id) does not exist") }
        guard volume.detect else { throw CommandError(.invalidState, "volume \(volume.name) has no anomaly detection") }
        guard volume.status == .online || volume.status == .outOfSpace else {
            throw CommandError(.invalidState, "volume \(volume.name) is \(volume.status); the detector reports only on an online volume")
        }
        guard (0...100).contains(verdict.score), verdict.onsetMilliseconds >= 0, verdict.evidence.count <= DetectionLimits.evidenceIntervalsMax else {
            throw CommandError(.invalidProgress, "anomaly verdict for volume \(volume.name) out of range: score \(verdict.score), \(verdict.evidence.count) intervals")
        }
        let anomaly = Event.anomalyDetected(
            id: id, score: UInt8(verdict.score), onsetMilliseconds: verdict.onsetMilliseconds, evidence: verdict.evidence)
        let increases = verdict.evidence.reduce(0) { $0 + Int($1.entropyIncreases) }
        let overwrites = verdict.evidence.reduce(0) { $0 + Int($1.overwriteSamples) }
        let reason = "anomaly score \(verdict.score): \(increases) of \(overwrites) sampled overwrites raised the entropy of plain data"
        // Then a fault like any other, with the onset the detector found: the policy chooses.
        return [anomaly] + (try decide(.reportFault(volume: volume.name, cause: .detector, reason: reason, onsetMilliseconds: verdict.onsetMilliseconds), evolve(state, anomaly)))

    case let .recordDetectorBaseline(id, baseline):
        guard let volume = state.volumes[id] else { throw CommandError(.unknownVolume, "volume \(id) does not exist") }
        guard volume.detect else { throw CommandError(.invalidState, "volume \(volume.name) has no anomaly detection") }
        return [.detectorBaselineSaved(id: id, baseline: baseline)]

    case let .removeVolume(reference):
        let volume = try resolveVolume(reference, state)
        if let map = state.maps(touching: volume.id).first {
            throw CommandError(.volumeInMap, "volume \(volume.name) is in lcmap \(map.name); remove the map first")
        }
        return [.volumeRemoved(id: volume.id)]

    case let .createMap(spec):
        return try decideCreateMap(spec, state)

    case let .changeMap(reference, autorestore, copyRate, newName, delay, groupChange):
        let map = try resolveMap(reference, state)
        guard map.role == .forward else {
            throw CommandError(.mapIsReverse, "lcmap \(map.name) is a reverse map; change its forward map \(partnerName(map, state))")
        }
        guard autorestore != nil || copyRate != nil || newName != nil || delay != nil || groupChange != nil else {
            throw CommandError(.nothingToChange, "chlcmap needs -autorestore, -autorestoredelay, -copyrate, -name, -lcgrp or -nolcgrp")
        }
        if let delay { try validateDelay(delay) }
        var events: [Event] = []
        if let newName, newName != map.name {
            try validateName(newName, bytesMax: Limits.mapNameBytesMax, kind: "lcmap")
            let reverseName = newName + Limits.reverseNameSuffix
            for candidate in [newName, reverseName] {
                if let holder = state.mapIDsByName[candidate], holder != map.id, holder != map.partnerID {
                    throw CommandError(.duplicateName, "an lcmap named \"\(candidate)\" already exists")
                }
                if state.groupIDsByName[candidate] != nil {
                    throw CommandError(.duplicateName, "an lcgrp is named \"\(candidate)\"; an lcmap's name differs from every lcgrp's")
                }
            }
            events.append(.mapRenamed(id: map.id, name: newName, reverseName: reverseName))
        }
        if let copyRate {
            try validateCopyRate(copyRate)
            if copyRate != map.copyRate { events.append(.mapCopyRateChanged(id: map.id, copyRate: copyRate)) }
        }
        if let autorestore, autorestore != map.autorestore {
            events.append(.mapAutorestoreChanged(id: map.id, autorestore: autorestore))
        }
        if let delay, delay != map.autorestoreDelaySeconds {
            events.append(.mapAutorestoreDelayChanged(id: map.id, seconds: delay))
        }
        if let groupChange { events += try decideMapGroupChange(map, groupChange, state) }
        return events

    case let .prepareMap(reference):
        try requireNotGrouped(try resolveForward(reference, state, verb: "prepare"), state, verb: "prepare")
        let map = try resolveStartable(reference, state)
        guard map.state != .prepared else {
            throw CommandError(.invalidState, "lcmap \(map.name) is already prepared")
        }
        return [.mapPreparing(id: map.id), .mapPrepared(id: map.id)]

    case let .startMap(reference):
        try requireNotGrouped(try resolveForward(reference, state, verb: "start"), state, verb: "start")
        let map = try resolveStartable(reference, state)
        let started = Event.mapStarted(id: map.id, startOrdinal: state.nextStartOrdinal)
        if map.state == .prepared { return [started] }
        return [.mapPreparing(id: map.id), .mapPrepared(id: map.id), started]

    case let .startRestore(reference):
        var map = try resolveMap(reference, state)
        if map.role == .reverse, let forward = state.maps[map.partnerID] { map = forward }
        try requireNotGrouped(map, state, verb: "restore")
        let source = state.volumes[map.sourceID]!
        if map.rollback != nil {
            throw CommandError(.mapRestoring, "lcmap \(map.name) is already rolling back onto \(source.name)")
        }
        if let running = state.runningRollback(onto: source.id) {
            throw CommandError(.volumeRestoring, "volume \(source.name) is being restored from lcmap \(running.name)")
        }
        try requireValidImage(map, state)
        return [.rollbackStarted(id: map.id, trigger: .operator, faultID: source.fault?.id)]

    case let .stopMap(reference, force):
        let map = try resolveForward(reference, state, verb: "stop")
        try requireNotGrouped(map, state, verb: "stop")
        if map.rollback != nil {
            // Abandoning a rollback leaves the source half restored: only with -force.
            guard force else {
                throw CommandError(.mapRestoring, "lcmap \(map.name) is rolling back; -force abandons the rollback and leaves the source faulted")
            }
            return abandonment(of: map, reason: "stopped by operator (stoplcmap -force)", state)
        }
        guard let events = stopEvents(map, force: force) else {
            throw CommandError(.mapNotStarted, "lcmap \(map.name) is \(map.state) and has nothing to stop")
        }
        return events

    case let .removeMap(reference, force):
        let map = try resolveForward(reference, state, verb: "remove")
        if map.rollback != nil {
            throw CommandError(.mapRestoring, "lcmap \(map.name) is rolling back; it cannot be removed until the rollback ends")
        }
        let idle = map.state == .stopped || (map.state == .idleOrCopied && !map.imageValid)
        if !idle && !force {
            throw CommandError(.mapActive, "lcmap \(map.name) is \(map.state); stop it first or use -force")
        }
        return [.mapRemoved(id: map.id)]

    case let .reportFault(reference, cause, reason, onset):
        let volume = try resolveVolume(reference, state)
        try validateReason(reason, what: "a fault reason", blankAllowed: false)
        if let onset, onset < 0 {
            throw CommandError(.invalidOnset, "an onset is a time after 1970, not \(onset) ms")
        }
        let faultID = state.nextFaultID
        var events = [Event.volumeFaulted(id: volume.id, faultID: faultID, cause: cause, reason: reason)]
        if let onset { events.append(.faultOnset(id: volume.id, faultID: faultID, onsetMilliseconds: onset)) }
        let faulted = events.reduce(state) { evolve($0, $1) }
        if let member = state.maps.values.first(where: { $0.role == .forward && $0.targetID == volume.id && state.groupRollback(of: $0) != nil }),
            let group = state.groupRollback(of: member)
        {
            // A group rollback reads every member's image: without one, no member may go on
            // alone (consistency before availability). Every source is left faulted.
            let reason = "stopped: target \(volume.name) of lcmap \(member.name) faulted (fault \(faultID))"
            return events + groupAbandonment(group, reason: reason, faulted)
        }
        if let running = state.runningRollback(onto: volume.id), let group = state.groupRollback(of: running) {
            if let onset, let imageTime = group.startedAtMilliseconds, imageTime > onset {
                // The group's images postdate the damage: the group rollback stops (a group has
                // one image), and the policy chooses again for this volume alone.
                let reason = "stopped: the images of lcgrp \(group.name) postdate the onset of fault \(faultID)"
                events += groupAbandonment(group, reason: reason, faulted)
                let stopped = events.reduce(state) { evolve($0, $1) }
                if let older = automaticRollbackChoice(for: volume.id, in: stopped, ignoringRunning: true) {
                    events += rollbackForFault(older, faultID: faultID, stopped, holdWindow: false)
                }
            } else {
                // Every member starts over: writes made during the rollback, on any member, are
                // restored again, so the members stay at one instant.
                events += state.members(of: group.id).filter { $0.rollback != nil }.map { .rollbackRestarted(id: $0.id, faultID: faultID) }
            }
            return events
        }
        if let running = state.runningRollback(onto: volume.id) {
            if let onset, let imageTime = running.startedAtMilliseconds, imageTime > onset {
                // The running image postdates the damage: switch to the newest image before the
                // onset, or, with none, stop (the source is left faulted, and says why).
                let reason = "switched: its image postdates the onset of fault \(faultID)"
                events.append(.rollbackStopped(id: running.id, reason: reason))
                if let older = automaticRollbackChoice(for: volume.id, in: faulted, ignoringRunning: true) {
                    events += rollbackForFault(older, faultID: faultID, evolve(faulted, events.last!), holdWindow: false)
                }
            } else {
                // A fault during a rollback is never lost: the rollback starts over for it, so that
                // grains written meanwhile (including during the rollback) are restored again.
                events.append(.rollbackRestarted(id: running.id, faultID: faultID))
            }
        } else if let map = automaticRollbackChoice(for: volume.id, in: faulted) {
            events += rollbackForFault(map, faultID: faultID, faulted, holdWindow: true)
        }
        return events

    case let .startScheduledRollback(id):
        let map = try resolveInternal(id, state)
        guard let scheduled = map.scheduledRollback else {
            throw CommandError(.invalidState, "lcmap \(map.name) has no automatic rollback waiting")
        }
        try requireNotGrouped(map, state, verb: "restore")
        if state.runningRollback(onto: map.sourceID) != nil {
            throw CommandError(.volumeRestoring, "a rollback already runs onto the source of lcmap \(map.name)")
        }
        try requireValidImage(map, state)
        return [.rollbackStarted(id: map.id, trigger: .auto, faultID: scheduled.faultID)]

    case let .recoverVolume(reference):
        let volume = try resolveVolume(reference, state)
        switch volume.status {
        case .faulted, .outOfSpace: return [.volumeRecovered(id: volume.id)]
        case .restoring:
            throw CommandError(.volumeRestoring, "volume \(volume.name) is being restored; wait for the rollback to finish")
        case .online:
            throw CommandError(.volumeNotFaulted, "volume \(volume.name) is online, not faulted")
        }

    case let .recordCopyProgress(id, grainsCopied):
        let map = try resolveInternal(id, state)
        guard map.role == .forward, map.state == .copying else {
            throw CommandError(.invalidState, "lcmap \(map.name) is \(map.state), not copying")
        }
        guard grainsCopied >= map.grainsCopied, grainsCopied <= map.grainsTotal else {
            throw CommandError(.invalidProgress, "copy progress \(grainsCopied) of \(map.grainsTotal) grains for lcmap \(map.name) goes backwards or past the end")
        }
        return grainsCopied == map.grainsCopied ? [] : [.mapCopyProgressed(id: id, grainsCopied: grainsCopied)]

    case let .completeCopy(id):
        let map = try resolveInternal(id, state)
        guard map.role == .forward, map.state == .copying else {
            throw CommandError(.invalidState, "lcmap \(map.name) is \(map.state), not copying")
        }
        return [.mapCopyCompleted(id: id)]

    case let .recordRollbackProgress(id, grainsRestored, grainsToRestore):
        let map = try resolveInternal(id, state)
        guard let rollback = map.rollback else {
            throw CommandError(.invalidState, "lcmap \(map.name) is not rolling back")
        }
        guard grainsRestored <= grainsToRestore, grainsToRestore <= map.grainsTotal,
            grainsRestored >= rollback.grainsRestored || grainsToRestore != rollback.grainsToRestore
        else {
            throw CommandError(.invalidProgress, "rollback progress \(grainsRestored) of \(grainsToRestore) grains for lcmap \(map.name) is inconsistent")
        }
        if grainsRestored == rollback.grainsRestored && grainsToRestore == rollback.grainsToRestore { return [] }
        return [.rollbackProgressed(id: id, grainsRestored: grainsRestored, grainsToRestore: grainsToRestore)]

    case let .completeRollback(id):
        let map = try resolveInternal(id, state)
        guard let rollback = map.rollback else {
            throw CommandError(.invalidState, "lcmap \(map.name) is not rolling back")
        }
        if state.groupRollback(of: map) != nil {
            // A member waits for the others (`completeGroupRollback`).
            guard !rollback.awaitingGroup else {
                throw CommandError(.invalidState, "lcmap \(map.name) already restored its grains and waits for its group")
            }
            return [.groupMemberRestored(id: id)]
        }
        return [.rollbackCompleted(id: id)]

    case let .abandonRollback(id, reason):
        let map = try resolveInternal(id, state)
        guard map.rollback != nil else {
            throw CommandError(.invalidState, "lcmap \(map.name) is not rolling back")
        }
        try validateReason(reason)
        if let group = state.groupRollback(of: map) {
            return groupAbandonment(group, reason: reason, state)
        }
        return abandonment(of: map, reason: reason, state)

    case let .reportOutOfSpace(id, reason):
        guard let volume = state.volumes[id] else { throw CommandError(.unknownVolume, "volume \(id) does not exist") }
        guard volume.status == .online else {
            throw CommandError(.invalidState, "volume \(volume.name) is \(volume.status), not online")
        }
        try validateReason(reason)
        return [.volumeOutOfSpace(id: id, reason: reason)]

    case let .recordSpaceRestored(id):
        guard let volume = state.volumes[id] else { throw CommandError(.unknownVolume, "volume \(id) does not exist") }
        guard volume.status == .outOfSpace else {
            throw CommandError(.invalidState, "volume \(volume.name) is \(volume.status), not out_of_space")
        }
        return [.volumeSpaceRestored(id: id)]

    case let .createGroup(name, autorestore, delay):
        return try decideCreateGroup(name: name, autorestore: autorestore, delay: delay, state)
    case let .changeGroup(reference, newName, autorestore, delay):
        return try decideChangeGroup(reference, newName: newName, autorestore: autorestore, delay: delay, state)
    case let .removeGroup(reference, force):
        return try decideRemoveGroup(reference, force: force, state)
    case let .startGroup(reference):
        return try decideStartGroup(reference, state)
    case let .startGroupRestore(reference):
        return try decideStartGroupRestore(reference, state)
    case let .stopGroup(reference, force):
        return try decideStopGroup(reference, force: force, state)
    case let .startScheduledGroupRollback(id):
        return try decideStartScheduledGroupRollback(id, state)
    case let .completeGroupRollback(id):
        return try decideCompleteGroupRollback(id, state)

    case let .recordControllerStart(version):
        guard !version.isEmpty, version.utf8.count <= Limits.versionBytesMax else {
            throw CommandError(.invalidName, "controller version must be 1 to \(Limits.versionBytesMax) bytes")
        }
        return [.controllerStarted(version: version)]
    }
}

/// The events that abandon `map`'s rollback: the source is left half restored, so it stays
/// faulted; when it had no fault (a rollback of an online volume), one of cause
/// `rollback_abandoned` is recorded first, with the stop's reason.
/// The automatic rollback of `map` for fault `faultID`: a member's fault rolls back its whole
/// group, in the same commit (waiting for the group's hold window, if it has one); a map alone
/// waits for its own hold window when `holdWindow` (a first choice: `snapback recovervolume`
/// cancels it), and starts at once otherwise (a switch to an older image).
private func rollbackForFault(_ map: LCMap, faultID: FaultID, _ state: ControllerState, holdWindow: Bool) -> [Event] {
    if let group = map.groupID.flatMap({ state.groups[$0] }) { return groupRollbackForFault(group, faultID: faultID, state) }
    if holdWindow && map.autorestoreDelaySeconds > 0 { return [.rollbackScheduled(id: map.id, faultID: faultID)] }
    return [.rollbackStarted(id: map.id, trigger: .auto, faultID: faultID)]
}

func abandonment(of map: LCMap, reason: String, _ state: ControllerState) -> [Event] {
    let stop = Event.rollbackStopped(id: map.id, reason: reason)
    guard state.volumes[map.sourceID]?.fault == nil else { return [stop] }
    return [.volumeFaulted(id: map.sourceID, faultID: state.nextFaultID, cause: .rollbackAbandoned, reason: reason), stop]
}

private func decideCreateMap(_ spec: CreateMap, _ state: ControllerState) throws(CommandError) -> [Event] {
    // Values out of range are refused before anything is looked up (as IBM's CLI does).
    try validateCopyRate(spec.copyRate)
    try validateDelay(spec.autorestoreDelaySeconds)
    guard Limits.grainSizesBytes.contains(spec.grainSizeBytes) else {
        throw CommandError(.invalidGrainSize, "grain size must be 64 or 256 (KiB), not \(spec.grainSizeBytes / 1024)")
    }
    let source = try resolveVolume(spec.source, state)
    let target = try resolveVolume(spec.target, state)
    guard source.id != target.id else {
        throw CommandError(.sameSourceTarget, "source and target are the same volume \(source.name)")
    }
    guard source.sizeBytes == target.sizeBytes else {
        throw CommandError(.sizeMismatch, "source \(source.name) has \(source.sizeBytes) bytes and target \(target.name) has \(target.sizeBytes)")
    }
    if let map = state.maps.values.first(where: { $0.role == .forward && $0.targetID == target.id }) {
        throw CommandError(.targetInUse, "volume \(target.name) is already the target of lcmap \(map.name)")
    }
    if let map = state.maps.values.first(where: { $0.role == .forward && $0.sourceID == target.id }) {
        throw CommandError(.targetInUse, "volume \(target.name) is the source of lcmap \(map.name) and cannot be a target")
    }
    if let map = state.maps.values.first(where: { $0.role == .forward && $0.targetID == source.id }) {
        throw CommandError(.targetInUse, "volume \(source.name) is the target of lcmap \(map.name) and cannot be a source")
    }
    guard state.maps.count + 2 <= Limits.mapsMax else {
        throw CommandError(.limitReached, "the controller already holds \(Limits.mapsMax) lcmaps")
    }
    let id = state.nextMapID
    let name = spec.name ?? "lcmap\(id)"
    try validateName(name, bytesMax: Limits.mapNameBytesMax, kind: "lcmap")
    let reverseName = name + Limits.reverseNameSuffix
    for candidate in [name, reverseName] where state.mapIDsByName[candidate] != nil {
        throw CommandError(.duplicateName, "an lcmap named \"\(candidate)\" already exists")
    }
    for candidate in [name, reverseName] where state.groupIDsByName[candidate] != nil {
        throw CommandError(.duplicateName, "an lcgrp is named \"\(candidate)\"; an lcmap's name differs from every lcgrp's")
    }
    let created = Event.mapCreated(
        MapCreated(
            id: id, name: name, reverseID: id + 1, reverseName: reverseName, sourceID: source.id,
            targetID: target.id, copyRate: spec.copyRate, grainSizeBytes: spec.grainSizeBytes,
            autorestore: spec.autorestore))
    var events = [created]
    if spec.autorestoreDelaySeconds > 0 { events.append(.mapAutorestoreDelayChanged(id: id, seconds: spec.autorestoreDelaySeconds)) }
    if let groupReference = spec.group {
        let group = try resolveGroup(groupReference, state)
        let preview = events.reduce(state) { evolve($0, $1) }
        try requireMayJoin(preview.maps[id]!, group, preview)
        events.append(.mapGroupChanged(id: id, group: group.id))
    }
    return events
}

/// A reason (of a fault, an abandoned rollback, a full store): one line of 1 to 256 bytes; a
/// fault's may not be only whitespace.
func validateReason(_ reason: String, what: String = "a reason", blankAllowed: Bool = true) throws(CommandError) {
    let blank = blankAllowed ? reason.isEmpty : reason.trimmingWhitespace.isEmpty
    guard !blank, reason.utf8.count <= Limits.reasonBytesMax,
        !reason.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
    else {
        throw CommandError(.invalidReason, "\(what) is one line of 1 to \(Limits.reasonBytesMax) bytes")
    }
}

/// A hold window: 0–86400 s.
func validateDelay(_ seconds: UInt32) throws(CommandError) {
    guard seconds <= Limits.autorestoreDelaySecondsMax else {
        throw CommandError(.invalidDelay, "autorestoredelay \(seconds) s is outside 0–\(Limits.autorestoreDelaySecondsMax)")
    }
}

// MARK: - Validation helpers

/// Names: 1–`bytesMax` bytes of ASCII letters, digits, `_`, `-` and `.`, starting with a letter
/// or `_` (so a name never reads as an id).
func validateName(_ name: String, bytesMax: Int, kind: String) throws(CommandError) {
    let bytes = Array(name.utf8)
    func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }
    func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    guard let first = bytes.first, bytes.count <= bytesMax, isLetter(first) || first == 0x5F,
        bytes.allSatisfy({ isLetter($0) || isDigit($0) || $0 == 0x5F || $0 == 0x2D || $0 == 0x2E })
    else {
        throw CommandError(
            .invalidName,
            "\(kind) name \(shown(name)) must be 1 to \(bytesMax) letters, digits, _ - or ., starting with a letter or _")
    }
}

func validateCopyRate(_ copyRate: Int) throws(CommandError) {
    guard (0...Limits.copyRateMax).contains(copyRate) else {
        throw CommandError(.copyRateOutOfRange, "copyrate \(copyRate) is outside 0–150")
    }
}

func resolveVolume(_ reference: String, _ state: ControllerState) throws(CommandError) -> Volume {
    guard let volume = state.volume(reference) else {
        throw CommandError(.unknownVolume, "volume \(shown(reference)) does not exist")
    }
    return volume
}

func resolveMap(_ reference: String, _ state: ControllerState) throws(CommandError) -> LCMap {
    guard let map = state.map(reference) else {
        throw CommandError(.unknownMap, "lcmap \(shown(reference)) does not exist")
    }
    return map
}

private func resolveInternal(_ id: MapID, _ state: ControllerState) throws(CommandError) -> LCMap {
    guard let map = state.maps[id] else { throw CommandError(.unknownMap, "lcmap id \(id) does not exist") }
    return map
}

private func resolveForward(_ reference: String, _ state: ControllerState, verb: String) throws(CommandError) -> LCMap {
    let map = try resolveMap(reference, state)
    guard map.role == .forward else {
        throw CommandError(.mapIsReverse, "lcmap \(map.name) is a reverse map; \(verb) its forward map \(partnerName(map, state))")
    }
    return map
}

private func partnerName(_ map: LCMap, _ state: ControllerState) -> String {
    state.maps[map.partnerID]?.name ?? String(map.partnerID)
}

/// A forward map that may be prepared or started: not running, no rollback, both volumes usable.
private func resolveStartable(_ reference: String, _ state: ControllerState) throws(CommandError) -> LCMap {
    let map = try resolveForward(reference, state, verb: "start")
    try requireStartable(map, state)
    return map
}

/// Refuses a forward map that may not be prepared or started.
func requireStartable(_ map: LCMap, _ state: ControllerState) throws(CommandError) {
    if map.rollback != nil {
        throw CommandError(.mapRestoring, "lcmap \(map.name) is rolling back onto its source")
    }
    switch map.state {
    case .idleOrCopied, .stopped, .prepared: break
    case .preparing, .copying, .stopping:
        throw CommandError(.mapAlreadyStarted, "lcmap \(map.name) is already \(map.state)")
    }
    for volumeID in [map.sourceID, map.targetID] {
        let volume = state.volumes[volumeID]!
        switch volume.status {
        case .online, .outOfSpace: continue
        case .faulted:
            throw CommandError(.volumeFaulted, "volume \(volume.name) is faulted; recover or restore it before starting lcmap \(map.name)")
        case .restoring:
            throw CommandError(.volumeRestoring, "volume \(volume.name) is being restored; wait for the rollback to finish")
        }
    }
}

/// The events that stop `map` (not rolling back), or `nil` when it has nothing to stop.
func stopEvents(_ map: LCMap, force: Bool) -> [Event]? {
    switch map.state {
    case .preparing, .prepared:
        return [.mapStopped(id: map.id)]
    case .copying:
        return force ? [.mapStopped(id: map.id)] : [.mapStopping(id: map.id), .mapStopped(id: map.id)]
    case .idleOrCopied where map.imageValid:
        return [.mapStopped(id: map.id)]
    case .idleOrCopied, .stopped, .stopping:
        return nil
    }
}

private func requireValidImage(_ map: LCMap, _ state: ControllerState) throws(CommandError) {
    guard map.imageValid, map.startOrdinal != nil, map.state == .copying || map.state == .idleOrCopied else {
        throw CommandError(.noValidImage, "lcmap \(map.name) is \(map.state) and holds no valid point-in-time image")
    }
    let target = state.volumes[map.targetID]!
    guard target.status == .online || target.status == .outOfSpace else {
        throw CommandError(.noValidImage, "target \(target.name) of lcmap \(map.name) is \(target.status)")
    }
}

/// User input as it may appear in a one-line message: quoted, at most 80 characters, control
/// characters escaped.
func shown(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars.prefix(80) {
        if scalar.properties.generalCategory == .control || scalar == "\"" {
            result += scalar.escaped(asASCII: true)
        } else {
            result.unicodeScalars.append(scalar)
        }
    }
    return result + (text.unicodeScalars.count > 80 ? "...\"" : "\"")
}

extension String {
    var trimmingWhitespace: Substring {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return Substring(scalars[first...last])
    }
}
