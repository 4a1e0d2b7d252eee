/// Applies one event to the state. Never fails and never validates: events were validated by
/// ``decide(_:_:)`` before they were recorded. An event that names an object the state does not
/// hold changes nothing.
///
/// `timestampMilliseconds` is the event's record time (ms since 1970): a map's start time and a
/// hold window's deadline are taken from it. Replays pass each record's timestamp; previews
/// inside `decide` may pass nothing (0).
public func evolve(_ state: ControllerState, _ event: Event, at timestampMilliseconds: Int64 = 0) -> ControllerState {
    var next = state
    next.apply(event, at: timestampMilliseconds)
    return next
}

extension ControllerState {
    /// Applies one event in place; see ``evolve(_:_:at:)``.
    public mutating func apply(_ event: Event, at timestampMilliseconds: Int64 = 0) {
        eventsApplied += 1
        switch event {
        case let .volumeCreated(id, name, sizeBytes, path):
            volumes[id] = Volume(id: id, name: name, sizeBytes: sizeBytes, path: path)
            volumeIDsByName[name] = id
            nextVolumeID = max(nextVolumeID, id &+ 1)

        case let .volumeRemoved(id):
            guard let volume = volumes.removeValue(forKey: id) else { return }
            volumeIDsByName.removeValue(forKey: volume.name)

        case let .mapCreated(created):
            let sizeBytes = volumes[created.sourceID]?.sizeBytes ?? 0
            let grainsTotal = grainCount(sizeBytes: sizeBytes, grainSizeBytes: created.grainSizeBytes)
            maps[created.id] = LCMap(
                id: created.id, name: created.name, role: .forward, partnerID: created.reverseID,
                sourceID: created.sourceID, targetID: created.targetID, copyRate: created.copyRate,
                grainSizeBytes: created.grainSizeBytes, autorestore: created.autorestore, grainsTotal: grainsTotal)
            maps[created.reverseID] = LCMap(
                id: created.reverseID, name: created.reverseName, role: .reverse, partnerID: created.id,
                sourceID: created.targetID, targetID: created.sourceID, copyRate: Limits.copyRateMax,
                grainSizeBytes: created.grainSizeBytes, autorestore: created.autorestore, grainsTotal: grainsTotal)
            mapIDsByName[created.name] = created.id
            mapIDsByName[created.reverseName] = created.reverseID
            nextMapID = max(nextMapID, max(created.id, created.reverseID) &+ 1)

        case let .mapRenamed(id, name, reverseName):
            guard let map = maps[id] else { return }
            // Drop both old names before adding the new ones: the new forward name may be the
            // old reverse name.
            mapIDsByName.removeValue(forKey: map.name)
            if let partner = maps[map.partnerID] { mapIDsByName.removeValue(forKey: partner.name) }
            maps[id]?.name = name
            mapIDsByName[name] = id
            if maps[map.partnerID] != nil {
                maps[map.partnerID]?.name = reverseName
                mapIDsByName[reverseName] = map.partnerID
            }

        case let .mapAutorestoreChanged(id, autorestore):
            guard let map = maps[id] else { return }
            maps[id]?.autorestore = autorestore
            maps[map.partnerID]?.autorestore = autorestore
            // Autorestore off: no automatic rollback of this map waits any more.
            if !autorestore { maps[id]?.scheduledRollback = nil }

        case let .mapCopyRateChanged(id, copyRate):
            maps[id]?.copyRate = copyRate

        case let .mapRemoved(id):
            guard let map = maps.removeValue(forKey: id) else { return }
            // A group that loses a member cannot roll back to its images: no group rollback waits.
            if let group = map.groupID { groups[group]?.scheduledRollback = nil }
            mapIDsByName.removeValue(forKey: map.name)
            if let partner = maps.removeValue(forKey: map.partnerID) {
                mapIDsByName.removeValue(forKey: partner.name)
            }

        case let .mapPreparing(id):
            // Preparing a new point in time discards the old image.
            maps[id]?.state = .preparing
            maps[id]?.imageValid = false
            maps[id]?.scheduledRollback = nil
            if let group = maps[id]?.groupID { groups[group]?.scheduledRollback = nil }

        case let .mapPrepared(id):
            maps[id]?.state = .prepared

        case let .mapStarted(id, startOrdinal):
            guard maps[id] != nil else { return }
            maps[id]?.state = .copying
            maps[id]?.imageValid = true
            maps[id]?.startOrdinal = startOrdinal
            maps[id]?.startedAtMilliseconds = timestampMilliseconds
            maps[id]?.grainsCopied = 0
            nextStartOrdinal = max(nextStartOrdinal, startOrdinal &+ 1)

        case let .mapCopyProgressed(id, grainsCopied):
            maps[id]?.grainsCopied = grainsCopied

        case let .mapCopyCompleted(id):
            guard let map = maps[id] else { return }
            maps[id]?.grainsCopied = map.grainsTotal
            maps[id]?.state = .idleOrCopied

        case let .mapStopping(id):
            maps[id]?.state = .stopping

        case let .mapStopped(id):
            maps[id]?.state = .stopped
            maps[id]?.imageValid = false
            maps[id]?.scheduledRollback = nil
            if let group = maps[id]?.groupID { groups[group]?.scheduledRollback = nil }

        case let .volumeFaulted(id, faultID, cause, reason):
            guard let volume = volumes[id] else { return }
            nextFaultID = max(nextFaultID, faultID &+ 1)
            volumes[id]?.fault = Fault(id: faultID, cause: cause, reason: reason)
            if volume.status != .restoring {
                volumes[id]?.status = .faulted
            }
            // A faulted target no longer holds a trustworthy image: its maps stop (as IBM's do
            // when a target goes offline), unless a rollback is reading from it.
            for map in maps.values where map.role == .forward && map.targetID == id && map.rollback == nil {
                maps[map.id]?.imageValid = false
                maps[map.id]?.scheduledRollback = nil
                if let group = map.groupID { groups[group]?.scheduledRollback = nil }
                if map.state != .idleOrCopied || map.imageValid { maps[map.id]?.state = .stopped }
            }

        case let .rollbackStarted(id, trigger, faultID):
            guard let map = maps[id] else { return }
            // Any rollback onto the source (a scheduled one come due, or an operator's chosen
            // image) ends every wait for a hold window on it.
            cancelScheduledRollbacks(onto: map.sourceID)
            maps[id]?.rollback = Rollback(trigger: trigger, faultID: faultID)
            maps[map.partnerID]?.state = .copying
            maps[map.partnerID]?.grainsCopied = 0
            maps[map.partnerID]?.grainsTotal = map.grainsTotal
            volumes[map.sourceID]?.status = .restoring

        case let .rollbackRestarted(id, faultID):
            guard let map = maps[id], map.rollback != nil else { return }
            maps[id]?.rollback?.faultID = faultID
            maps[id]?.rollback?.grainsRestored = 0
            maps[id]?.rollback?.grainsToRestore = 0
            maps[id]?.rollback?.awaitingGroup = false
            maps[map.partnerID]?.grainsCopied = 0
            if let group = map.groupID, groups[group]?.rollback != nil { groups[group]?.rollback?.faultID = faultID }

        case let .rollbackProgressed(id, grainsRestored, grainsToRestore):
            guard let map = maps[id], map.rollback != nil else { return }
            maps[id]?.rollback?.grainsRestored = grainsRestored
            maps[id]?.rollback?.grainsToRestore = grainsToRestore
            maps[map.partnerID]?.grainsCopied = grainsRestored
            maps[map.partnerID]?.grainsTotal = grainsToRestore

        case let .rollbackCompleted(id):
            guard let map = maps[id] else { return }
            maps[id]?.rollback = nil
            maps[map.partnerID]?.state = .idleOrCopied
            if let partnerTotal = maps[map.partnerID]?.grainsTotal {
                maps[map.partnerID]?.grainsCopied = partnerTotal
            }
            volumes[map.sourceID]?.status = .online
            volumes[map.sourceID]?.fault = nil
            // A target that faulted while the rollback read from it holds no trustworthy image.
            if volumes[map.targetID]?.status == .faulted {
                maps[id]?.imageValid = false
                maps[id]?.state = .stopped
            }

        case let .rollbackStopped(id, reason):
            guard let map = maps[id] else { return }
            maps[id]?.rollback = nil
            maps[map.partnerID]?.state = .idleOrCopied
            // Half restored: the source's data is a mix of the image and what it held. It is
            // faulted; when no fault was recorded (a rollback of an online volume), the reason
            // the rollback stopped becomes its fault.
            volumes[map.sourceID]?.status = .faulted
            if volumes[map.sourceID] != nil && volumes[map.sourceID]?.fault == nil {
                volumes[map.sourceID]?.fault = Fault(id: nextFaultID, cause: .operator, reason: reason)
                // Wrapping, as `VolumeFaulted` does: a hand-made log may carry the largest ids, and
                // evolve never fails (found by the event-record fuzzer).
                nextFaultID &+= 1
            }
            if volumes[map.targetID]?.status == .faulted {
                maps[id]?.imageValid = false
                maps[id]?.state = .stopped
            }

        case let .volumeRecovered(id):
            volumes[id]?.status = .online
            volumes[id]?.fault = nil
            // The data is accepted as it is: no automatic rollback waits any more.
            cancelScheduledRollbacks(onto: id)

        case let .mapAutorestoreDelayChanged(id, seconds):
            maps[id]?.autorestoreDelaySeconds = seconds

        case let .rollbackScheduled(id, faultID):
            guard let map = maps[id] else { return }
            cancelScheduledRollbacks(onto: map.sourceID)
            let deadline = timestampMilliseconds &+ Int64(map.autorestoreDelaySeconds) * 1000
            maps[id]?.scheduledRollback = ScheduledRollback(faultID: faultID, atMilliseconds: deadline)

        case let .faultOnset(id, faultID, onset):
            if volumes[id]?.fault?.id == faultID { volumes[id]?.fault?.onsetMilliseconds = onset }

        case let .volumeOutOfSpace(id, _):
            if volumes[id]?.status == .online { volumes[id]?.status = .outOfSpace }

        case let .volumeSpaceRestored(id):
            if volumes[id]?.status == .outOfSpace { volumes[id]?.status = .online }

        case .controllerStarted:
            controllerStarts += 1

        case let .volumeRenamed(id, name):
            guard let volume = volumes[id] else { return }
            volumeIDsByName.removeValue(forKey: volume.name)
            volumes[id]?.name = name
            volumeIDsByName[name] = id

        case let .volumeDetectionChanged(id, enabled, sensitivity):
            volumes[id]?.detect = enabled
            volumes[id]?.sensitivity = sensitivity

        case .anomalyDetected:
            // Recorded for the audit; the `VolumeFaulted` that follows changes the volume.
            break

        case let .detectorBaselineSaved(id, baseline):
            volumes[id]?.detectorBaseline = baseline

        case let .groupCreated(id, name, autorestore, delay):
            groups[id] = LCGroup(id: id, name: name, autorestore: autorestore, autorestoreDelaySeconds: delay)
            groupIDsByName[name] = id
            nextGroupID = max(nextGroupID, id &+ 1)

        case let .groupRenamed(id, name):
            guard let group = groups[id] else { return }
            groupIDsByName.removeValue(forKey: group.name)
            groups[id]?.name = name
            groupIDsByName[name] = id

        case let .groupAutorestoreChanged(id, autorestore):
            groups[id]?.autorestore = autorestore
            if !autorestore { groups[id]?.scheduledRollback = nil }

        case let .groupAutorestoreDelayChanged(id, seconds):
            groups[id]?.autorestoreDelaySeconds = seconds

        case let .groupRemoved(id):
            guard let group = groups.removeValue(forKey: id) else { return }
            groupIDsByName.removeValue(forKey: group.name)
            for map in maps.values where map.groupID == id { maps[map.id]?.groupID = nil }

        case let .mapGroupChanged(id, group):
            guard let map = maps[id], map.role == .forward else { return }
            // Membership is part of the image: no group rollback waits for either group.
            if let old = map.groupID { groups[old]?.scheduledRollback = nil }
            if let group, groups[group] == nil { return }
            maps[id]?.groupID = group
            // Its group's autorestore governs it from now: no rollback of its own waits.
            maps[id]?.scheduledRollback = nil
            if let group { groups[group]?.scheduledRollback = nil }

        case let .groupStarted(id, startOrdinal, members):
            guard groups[id] != nil else { return }
            groups[id]?.startOrdinal = startOrdinal
            groups[id]?.startedAtMilliseconds = timestampMilliseconds
            groups[id]?.imageMembers = members.sorted()
            groups[id]?.scheduledRollback = nil
            nextStartOrdinal = max(nextStartOrdinal, startOrdinal &+ 1)

        case let .groupRollbackStarted(id, trigger, faultID):
            groups[id]?.rollback = GroupRollback(trigger: trigger, faultID: faultID)
            groups[id]?.scheduledRollback = nil

        case let .groupMemberRestored(id):
            if maps[id]?.rollback != nil { maps[id]?.rollback?.awaitingGroup = true }

        case let .groupRollbackCompleted(id), let .groupRollbackStopped(id, _):
            groups[id]?.rollback = nil

        case let .groupRollbackScheduled(id, faultID):
            guard let group = groups[id] else { return }
            // One rollback waits per source: this one replaces any other onto a member's source.
            for member in maps.values where member.groupID == id { cancelScheduledRollbacks(onto: member.sourceID) }
            let deadline = timestampMilliseconds &+ Int64(group.autorestoreDelaySeconds) * 1000
            groups[id]?.scheduledRollback = ScheduledRollback(faultID: faultID, atMilliseconds: deadline)
        }
    }

    /// Drops every automatic rollback waiting for a hold window onto `volume`, a map's or a
    /// group's of which it is a member's source.
    private mutating func cancelScheduledRollbacks(onto volume: VolumeID) {
        for map in maps.values where map.role == .forward && map.sourceID == volume {
            maps[map.id]?.scheduledRollback = nil
            if let group = map.groupID { groups[group]?.scheduledRollback = nil }
        }
    }
}
