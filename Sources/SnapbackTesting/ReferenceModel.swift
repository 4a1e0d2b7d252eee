import SnapbackCore

/// The simulator's reference model: what every volume must read as, kept from acknowledged host
/// operations and from the events of the durable log, never from the controller's memory.
///
/// Its rules are the product's contract, stated simply:
/// - a new volume reads as zeroes;
/// - a host write is read back until a crash; it survives a crash once FUA or a flush made it
///   durable (``ByteModel``);
/// - when a forward map starts, the source's acknowledged writes become durable (a start syncs
///   the source) and its target reads as the source did at that moment (the image), and keeps
///   reading so while the map stays active (`imageValid`);
/// - when a rollback starts, the source reads as the image, and keeps doing so (with the host
///   writes made since) through the rollback and after it;
/// - when a map stops (or is removed, or its target faults), its target's bytes are unknown;
/// - when a rollback is abandoned (`RollbackStopped`), its source's bytes are unknown.
public struct ReferenceModel: Sendable {
    /// What each volume must read as (a target of an active map: its image).
    public internal(set) var volumes: [VolumeID: ByteModel] = [:]
    /// Each active forward map's image as it was recorded when the map started: the source's
    /// bytes at that moment.
    public internal(set) var snapshots: [MapID: ByteModel] = [:]
    /// The state reduced from the durable events the model has read so far.
    public internal(set) var replayed = ControllerState()
    /// Durable events read so far.
    public internal(set) var eventsRead = 0
    /// Rollbacks completed since the driver last looked (their sources must be checked whole).
    var completedRollbacks: [MapID] = []
    /// Volumes whose bytes changed as a whole (image taken, rollback started) since the driver last
    /// looked; they are read whole at the next check.
    var changedWhole: Set<VolumeID> = []
    /// Rollbacks started and completed, as the log tells.
    public internal(set) var rollbacksStarted = 0
    public internal(set) var rollbacksCompleted = 0
    /// Automatic rollbacks that chose an image after the fault's onset, or started before their
    /// hold window passed (the `restore-point-respected` invariant).
    var restorePointViolations: [String] = []
    /// Group rollbacks whose members' images are not all of the group's last start, or whose
    /// members do not go online together (the `group-at-one-instant` invariant).
    var groupViolations: [String] = []

    /// An empty machine: no volumes, no events read.
    public init() {}

    /// Reads the durable events not read yet, in order, and applies their effects on the bytes.
    mutating func read(_ events: [StoredEvent]) {
        while eventsRead < events.count {
            apply(events[eventsRead].event, at: events[eventsRead].timestampMilliseconds)
            eventsRead += 1
            // Between commits (a commit's events share a timestamp and end before the next
            // record of another time), a group rollback holds every member restoring.
            let commitEnds = eventsRead == events.count || events[eventsRead].timestampMilliseconds != events[eventsRead - 1].timestampMilliseconds
            if commitEnds { checkGroups() }
        }
    }

    /// Every member of a running group rollback rolls back, its source `restoring`.
    private mutating func checkGroups() {
        for group in replayed.groupsByID where group.rollback != nil {
            for member in replayed.members(of: group.id) {
                if member.rollback == nil {
                    groupViolations.append("lcgrp \(group.name) rolls back but its member \(member.name) does not")
                } else if replayed.volumes[member.sourceID]?.status != .restoring {
                    groupViolations.append("lcgrp \(group.name) rolls back but the source of \(member.name) is \(replayed.volumes[member.sourceID]?.status.description ?? "gone")")
                }
            }
        }
    }

    private mutating func apply(_ event: Event, at timestamp: Int64) {
        let before = replayed
        if case let .rollbackStarted(id, _, _) = event, let map = before.maps[id], let group = map.groupID.flatMap({ before.groups[$0] }),
            group.rollback != nil
        {
            // A member of a group rollback: its image is of the group's last start, and the
            // group's members are those of that start.
            if map.startOrdinal != group.startOrdinal || !map.imageValid {
                groupViolations.append("lcgrp \(group.name) rolls back \(map.name) to an image of ordinal \(map.startOrdinal ?? 0), not of the group's start \(group.startOrdinal ?? 0)")
            }
            if before.members(of: group.id).map(\.id) != group.imageMembers {
                groupViolations.append("lcgrp \(group.name) rolls back with members \(before.members(of: group.id).map(\.id)), its images were of \(group.imageMembers)")
            }
        } else if case let .groupRollbackStarted(id, .auto, faultID) = event, let group = before.groups[id] {
            if let scheduled = group.scheduledRollback, scheduled.faultID == faultID, scheduled.atMilliseconds > timestamp {
                restorePointViolations.append("the automatic rollback of lcgrp \(group.name) started at \(timestamp), before its hold window ended at \(scheduled.atMilliseconds)")
            }
            for member in before.members(of: id) {
                if let fault = before.volumes[member.sourceID]?.fault, fault.id == faultID, let onset = fault.onsetMilliseconds,
                    (group.startedAtMilliseconds ?? .max) > onset
                {
                    restorePointViolations.append("the automatic rollback of lcgrp \(group.name) restores images of \(group.startedAtMilliseconds ?? -1), after the onset \(onset)")
                }
            }
        } else if case let .rollbackStarted(id, .auto, faultID) = event, let map = before.maps[id] {
            let fault = before.volumes[map.sourceID]?.fault
            if let onset = fault?.onsetMilliseconds, fault?.id == faultID, (map.startedAtMilliseconds ?? .max) > onset {
                restorePointViolations.append("the automatic rollback of map \(id) restores an image of \(map.startedAtMilliseconds ?? -1), after the onset \(onset)")
            }
            if let chosen = automaticRollbackChoice(for: map.sourceID, in: before, ignoringRunning: true), chosen.id != id {
                restorePointViolations.append("the automatic rollback restores map \(id)'s image, but the newest qualifying one is map \(chosen.id)'s")
            }
            if let scheduled = map.scheduledRollback, scheduled.faultID == faultID, scheduled.atMilliseconds > timestamp {
                restorePointViolations.append("the automatic rollback of map \(id) started at \(timestamp), before its hold window ended at \(scheduled.atMilliseconds)")
            }
        }
        replayed.apply(event, at: timestamp)
        switch event {
        case let .volumeCreated(id, _, sizeBytes, _):
            volumes[id] = ByteModel(sizeBytes: Int(sizeBytes))
        case let .volumeRemoved(id):
            volumes[id] = nil
        case let .mapStarted(id, _):
            if let map = replayed.maps[id], var source = volumes[map.sourceID] {
                // A start syncs the source first (Specs/data-plane.md, "Starting a map").
                source.flush()
                volumes[map.sourceID] = source
                volumes[map.targetID] = source
                snapshots[id] = source
                changedWhole.insert(map.targetID)
            }
        case let .rollbackStarted(id, _, _), let .rollbackRestarted(id, _):
            if let map = replayed.maps[id], let image = volumes[map.targetID] {
                volumes[map.sourceID] = image
                changedWhole.insert(map.sourceID)
            }
            if case .rollbackStarted = event { rollbacksStarted += 1 }
        case let .rollbackCompleted(id):
            completedRollbacks.append(id)
            rollbacksCompleted += 1
        case let .rollbackStopped(id, _):
            // Abandoned half way: the source holds a mix of the image and its old bytes.
            if let map = replayed.maps[id] { volumes[map.sourceID]?.makeWild() }
        default:
            break
        }
        // A map that stops holding an image leaves its target with an unknown mixture of grains.
        for map in before.maps.values where map.role == .forward && map.imageValid && replayed.maps[map.id]?.imageValid != true {
            volumes[map.targetID]?.makeWild()
            snapshots[map.id] = nil
        }
    }

    /// The forward map whose image volume `volumeID` shows, if it is an active target.
    func activeMap(targeting volumeID: VolumeID) -> LCMap? {
        replayed.maps.values.first { $0.role == .forward && $0.targetID == volumeID && $0.imageValid }
    }

    /// An acknowledged host write.
    mutating func hostWrite(_ volumeID: VolumeID, at offset: Int, _ bytes: [UInt8], fua: Bool) {
        volumes[volumeID]?.write(at: offset, bytes, fua: fua)
    }

    /// A host write that failed (it may or may not have landed).
    mutating func hostWriteFailed(_ volumeID: VolumeID, at offset: Int, _ bytes: [UInt8]) {
        volumes[volumeID]?.failedWrite(at: offset, bytes)
    }

    /// An acknowledged flush.
    mutating func hostFlush(_ volumeID: VolumeID) {
        volumes[volumeID]?.flush()
        // The image of a map of this source holds the source's bytes of its start: those that
        // were not durable then are durable now (on the source, or synced to the target by a
        // grain copy).
        for map in replayed.forwardMaps(ofSource: volumeID) where map.imageValid {
            snapshots[map.id]?.flush()
        }
    }
}
