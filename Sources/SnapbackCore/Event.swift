/// A fact recorded in the log. Events are past tense; each has a stable numeric type code
/// (see `Specs/events.md`) that never changes meaning.
public enum Event: Sendable, Equatable {
    case volumeCreated(id: VolumeID, name: String, sizeBytes: UInt64, path: String?)
    case volumeRemoved(id: VolumeID)
    case mapCreated(MapCreated)
    case mapRenamed(id: MapID, name: String, reverseName: String)
    case mapAutorestoreChanged(id: MapID, autorestore: Bool)
    case mapCopyRateChanged(id: MapID, copyRate: Int)
    /// Removes the forward map and its reverse map.
    case mapRemoved(id: MapID)
    case mapPreparing(id: MapID)
    case mapPrepared(id: MapID)
    case mapStarted(id: MapID, startOrdinal: UInt64)
    case mapCopyProgressed(id: MapID, grainsCopied: UInt64)
    case mapCopyCompleted(id: MapID)
    case mapStopping(id: MapID)
    case mapStopped(id: MapID)
    case volumeFaulted(id: VolumeID, faultID: FaultID, cause: FaultCause, reason: String)
    case rollbackStarted(id: MapID, trigger: RollbackTrigger, faultID: FaultID?)
    case rollbackProgressed(id: MapID, grainsRestored: UInt64, grainsToRestore: UInt64)
    case rollbackCompleted(id: MapID)
    /// A rollback abandoned before it finished (`stoplcmap -force`, or a source or target that
    /// cannot be read or written): the source is left faulted, its data a mix.
    case rollbackStopped(id: MapID, reason: String)
    case volumeRecovered(id: VolumeID)
    case controllerStarted(version: String)
    /// The volume's backing store answered a write with "no space" (ENOSPC, EDQUOT): it becomes
    /// `out_of_space`. Not a fault.
    case volumeOutOfSpace(id: VolumeID, reason: String)
    /// A write to an `out_of_space` volume succeeded again: it is `online`.
    case volumeSpaceRestored(id: VolumeID)
    /// A fault was reported on the source of map `id` while its rollback ran: the rollback
    /// starts over for that fault, restoring again every grain written since the image.
    case rollbackRestarted(id: MapID, faultID: FaultID)
    /// The hold window of map `id`'s automatic rollbacks (`-autorestoredelay`).
    case mapAutorestoreDelayChanged(id: MapID, seconds: UInt32)
    /// An automatic rollback of map `id` for fault `faultID` waits for the map's hold window: it
    /// starts at this record's time plus the delay.
    case rollbackScheduled(id: MapID, faultID: FaultID)
    /// Fault `faultID` of volume `id` says when the damage began (ms since 1970).
    case faultOnset(id: VolumeID, faultID: FaultID, onsetMilliseconds: Int64)
    /// A consistency group (`mklcgrp`).
    case groupCreated(id: GroupID, name: String, autorestore: Bool, autorestoreDelaySeconds: UInt32)
    case groupRenamed(id: GroupID, name: String)
    case groupAutorestoreChanged(id: GroupID, autorestore: Bool)
    case groupAutorestoreDelayChanged(id: GroupID, seconds: UInt32)
    case groupRemoved(id: GroupID)
    /// Forward map `id` joined group `group`, or left its group (`nil`).
    case mapGroupChanged(id: MapID, group: GroupID?)
    /// Group `id` started: the `MapStarted` records of `members` (every member, ascending), in
    /// the same commit, took their images at one instant with ordinal `startOrdinal`.
    case groupStarted(id: GroupID, startOrdinal: UInt64, members: [MapID])
    /// Every member of group `id` rolls back to the group's images (their `RollbackStarted`
    /// records follow in the same commit).
    case groupRollbackStarted(id: GroupID, trigger: RollbackTrigger, faultID: FaultID?)
    /// Member map `id` of a group rollback restored every grain; its source stays `restoring`
    /// until every member's are.
    case groupMemberRestored(id: MapID)
    /// Every member restored: their `RollbackCompleted` records precede this in the same commit.
    case groupRollbackCompleted(id: GroupID)
    /// Group `id`'s rollback was abandoned: every member's `RollbackStopped` precedes this.
    case groupRollbackStopped(id: GroupID, reason: String)
    /// A group rollback for fault `faultID` waits for the group's hold window.
    case groupRollbackScheduled(id: GroupID, faultID: FaultID)
    case volumeRenamed(id: VolumeID, name: String)
    /// The anomaly detector of volume `id` turned on or off, at `sensitivity`.
    case volumeDetectionChanged(id: VolumeID, enabled: Bool, sensitivity: DetectionSensitivity)
    /// The detector found volume `id`'s writes anomalous: `score` 0–100, the damage began
    /// no earlier than `onsetMilliseconds`, and `evidence` the interval statistics that tripped it.
    /// A `VolumeFaulted` of cause `detector` follows in the same commit.
    case anomalyDetected(id: VolumeID, score: UInt8, onsetMilliseconds: Int64, evidence: [IntervalStatistics])
    /// What the detector learned of volume `id`'s writes.
    case detectorBaselineSaved(id: VolumeID, baseline: DetectorBaseline)
}

/// The facts of `mklcmap`: the forward map and the reverse map created with it.
public struct MapCreated: Sendable, Equatable {
    public var id: MapID
    public var name: String
    public var reverseID: MapID
    public var reverseName: String
    public var sourceID: VolumeID
    public var targetID: VolumeID
    public var copyRate: Int
    public var grainSizeBytes: UInt32
    public var autorestore: Bool

    public init(
        id: MapID, name: String, reverseID: MapID, reverseName: String, sourceID: VolumeID,
        targetID: VolumeID, copyRate: Int, grainSizeBytes: UInt32, autorestore: Bool
    ) {
        self.id = id
        self.name = name
        self.reverseID = reverseID
        self.reverseName = reverseName
        self.sourceID = sourceID
        self.targetID = targetID
        self.copyRate = copyRate
        self.grainSizeBytes = grainSizeBytes
        self.autorestore = autorestore
    }
}

/// The stable numeric code of each event type, stored in every log record.
public enum EventType: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case volumeCreated = 1
    case volumeRemoved = 2
    case mapCreated = 3
    case mapRenamed = 4
    case mapAutorestoreChanged = 5
    case mapCopyRateChanged = 6
    case mapRemoved = 7
    case mapPreparing = 8
    case mapPrepared = 9
    case mapStarted = 10
    case mapCopyProgressed = 11
    case mapCopyCompleted = 12
    case mapStopping = 13
    case mapStopped = 14
    case volumeFaulted = 15
    case rollbackStarted = 16
    case rollbackProgressed = 17
    case rollbackCompleted = 18
    case volumeRecovered = 19
    case controllerStarted = 20
    case rollbackStopped = 21
    case volumeOutOfSpace = 22
    case volumeSpaceRestored = 23
    case rollbackRestarted = 24
    case mapAutorestoreDelayChanged = 25
    case rollbackScheduled = 26
    case faultOnset = 27
    case groupCreated = 28
    case groupRenamed = 29
    case groupAutorestoreChanged = 30
    case groupAutorestoreDelayChanged = 31
    case groupRemoved = 32
    case mapGroupChanged = 33
    case groupStarted = 34
    case groupRollbackStarted = 35
    case groupMemberRestored = 36
    case groupRollbackCompleted = 37
    case groupRollbackStopped = 38
    case groupRollbackScheduled = 39
    case volumeRenamed = 40
    case volumeDetectionChanged = 41
    case anomalyDetected = 42
    case detectorBaselineSaved = 43

    /// The name used in `Specs/events.md`, `snapback log` and the JSON export.
    public var description: String {
        switch self {
        case .volumeCreated: "VolumeCreated"
        case .volumeRemoved: "VolumeRemoved"
        case .mapCreated: "MapCreated"
        case .mapRenamed: "MapRenamed"
        case .mapAutorestoreChanged: "MapAutorestoreChanged"
        case .mapCopyRateChanged: "MapCopyRateChanged"
        case .mapRemoved: "MapRemoved"
        case .mapPreparing: "MapPreparing"
        case .mapPrepared: "MapPrepared"
        case .mapStarted: "MapStarted"
        case .mapCopyProgressed: "MapCopyProgressed"
        case .mapCopyCompleted: "MapCopyCompleted"
        case .mapStopping: "MapStopping"
        case .mapStopped: "MapStopped"
        case .volumeFaulted: "VolumeFaulted"
        case .rollbackStarted: "RollbackStarted"
        case .rollbackProgressed: "RollbackProgressed"
        case .rollbackCompleted: "RollbackCompleted"
        case .volumeRecovered: "VolumeRecovered"
        case .controllerStarted: "ControllerStarted"
        case .rollbackStopped: "RollbackStopped"
        case .volumeOutOfSpace: "VolumeOutOfSpace"
        case .volumeSpaceRestored: "VolumeSpaceRestored"
        case .rollbackRestarted: "RollbackRestarted"
        case .mapAutorestoreDelayChanged: "MapAutorestoreDelayChanged"
        case .rollbackScheduled: "RollbackScheduled"
        case .faultOnset: "FaultOnset"
        case .groupCreated: "GroupCreated"
        case .groupRenamed: "GroupRenamed"
        case .groupAutorestoreChanged: "GroupAutorestoreChanged"
        case .groupAutorestoreDelayChanged: "GroupAutorestoreDelayChanged"
        case .groupRemoved: "GroupRemoved"
        case .mapGroupChanged: "MapGroupChanged"
        case .groupStarted: "GroupStarted"
        case .groupRollbackStarted: "GroupRollbackStarted"
        case .groupMemberRestored: "GroupMemberRestored"
        case .groupRollbackCompleted: "GroupRollbackCompleted"
        case .groupRollbackStopped: "GroupRollbackStopped"
        case .groupRollbackScheduled: "GroupRollbackScheduled"
        case .volumeRenamed: "VolumeRenamed"
        case .volumeDetectionChanged: "VolumeDetectionChanged"
        case .anomalyDetected: "AnomalyDetected"
        case .detectorBaselineSaved: "DetectorBaselineSaved"
        }
    }

    /// The type called `name` (as printed by ``description``), case-insensitively.
    public init?(name: String) {
        guard let match = EventType.allCases.first(where: { $0.description.lowercased() == name.lowercased() }) else {
            return nil
        }
        self = match
    }
}

extension Event {
    public var type: EventType {
        switch self {
        case .volumeCreated: .volumeCreated
        case .volumeRemoved: .volumeRemoved
        case .mapCreated: .mapCreated
        case .mapRenamed: .mapRenamed
        case .mapAutorestoreChanged: .mapAutorestoreChanged
        case .mapCopyRateChanged: .mapCopyRateChanged
        case .mapRemoved: .mapRemoved
        case .mapPreparing: .mapPreparing
        case .mapPrepared: .mapPrepared
        case .mapStarted: .mapStarted
        case .mapCopyProgressed: .mapCopyProgressed
        case .mapCopyCompleted: .mapCopyCompleted
        case .mapStopping: .mapStopping
        case .mapStopped: .mapStopped
        case .volumeFaulted: .volumeFaulted
        case .rollbackStarted: .rollbackStarted
        case .rollbackProgressed: .rollbackProgressed
        case .rollbackCompleted: .rollbackCompleted
        case .volumeRecovered: .volumeRecovered
        case .controllerStarted: .controllerStarted
        case .rollbackStopped: .rollbackStopped
        case .volumeOutOfSpace: .volumeOutOfSpace
        case .volumeSpaceRestored: .volumeSpaceRestored
        case .rollbackRestarted: .rollbackRestarted
        case .mapAutorestoreDelayChanged: .mapAutorestoreDelayChanged
        case .rollbackScheduled: .rollbackScheduled
        case .faultOnset: .faultOnset
        case .groupCreated: .groupCreated
        case .groupRenamed: .groupRenamed
        case .groupAutorestoreChanged: .groupAutorestoreChanged
        case .groupAutorestoreDelayChanged: .groupAutorestoreDelayChanged
        case .groupRemoved: .groupRemoved
        case .mapGroupChanged: .mapGroupChanged
        case .groupStarted: .groupStarted
        case .groupRollbackStarted: .groupRollbackStarted
        case .groupMemberRestored: .groupMemberRestored
        case .groupRollbackCompleted: .groupRollbackCompleted
        case .groupRollbackStopped: .groupRollbackStopped
        case .groupRollbackScheduled: .groupRollbackScheduled
        case .volumeRenamed: .volumeRenamed
        case .volumeDetectionChanged: .volumeDetectionChanged
        case .anomalyDetected: .anomalyDetected
        case .detectorBaselineSaved: .detectorBaselineSaved
        }
    }
}
