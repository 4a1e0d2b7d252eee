/// What a user, the controller or the data plane asks of the state machine. Operator commands
/// name objects as the user typed them (a name or a decimal id); the controller's own commands
/// carry ids.
public enum Command: Sendable, Equatable {
    /// `adopt`: a `path` that exists already (a file or a device) may be taken as it is; without
    /// it, an existing path is refused (`path_exists`) by the data plane when it creates the store.
    case createVolume(name: String, sizeBytes: UInt64, path: String?, adopt: Bool = false, detection: DetectionSensitivity? = nil)
    /// `chvolume`: a new name, the anomaly detector on or off, its sensitivity.
    case changeVolume(volume: String, newName: String?, detect: Bool?, sensitivity: DetectionSensitivity?)
    /// The detector fired on a volume (`Specs/detection.md`): recorded, and a fault of cause
    /// `detector` with the onset it found, which the automatic-rollback policy answers.
    case reportAnomaly(volume: VolumeID, verdict: DetectionVerdict)
    /// The detector saves what it learned of a volume's writes (so that a restart keeps it).
    case recordDetectorBaseline(volume: VolumeID, baseline: DetectorBaseline)
    case removeVolume(volume: String)
    case createMap(CreateMap)
    case changeMap(
        map: String, autorestore: Bool?, copyRate: Int?, newName: String?, autorestoreDelaySeconds: UInt32? = nil,
        group: MapGroupChange? = nil)
    /// Prepare without starting (IBM's prestartfcmap).
    case prepareMap(map: String)
    /// Start, preparing first when needed (`startlcmap [-prep]`).
    case startMap(map: String)
    /// Roll the map's image back onto its source (`startlcmap -restore`).
    case startRestore(map: String)
    case stopMap(map: String, force: Bool)
    case removeMap(map: String, force: Bool)
    /// `onsetMilliseconds`: when the damage began, if the report says (`-onset`).
    case reportFault(volume: String, cause: FaultCause, reason: String, onsetMilliseconds: Int64? = nil)
    /// The controller starts an automatic rollback whose hold window has passed.
    case startScheduledRollback(map: MapID)
    /// Accept a faulted volume's data as it is (`recovervolume`).
    case recoverVolume(volume: String)
    /// The data plane's background copy reached `grainsCopied` grains.
    case recordCopyProgress(map: MapID, grainsCopied: UInt64)
    /// The data plane's background copy finished.
    case completeCopy(map: MapID)
    /// The data plane restored `grainsRestored` of `grainsToRestore` dirty grains.
    case recordRollbackProgress(map: MapID, grainsRestored: UInt64, grainsToRestore: UInt64)
    /// The data plane restored every dirty grain and made the marks durable.
    case completeRollback(map: MapID)
    /// The controller gives up a rollback it cannot carry out (its source or target cannot be
    /// read or written).
    case abandonRollback(map: MapID, reason: String)
    /// A controller process started on this log.
    case recordControllerStart(version: String)
    /// The data plane met "no space" (ENOSPC, EDQUOT) writing an `online` volume's store.
    case reportOutOfSpace(volume: VolumeID, reason: String)
    /// A write to an `out_of_space` volume succeeded.
    case recordSpaceRestored(volume: VolumeID)

    // Consistency groups (`Specs/state-machine.md`, "Consistency groups").
    /// `mklcgrp`; a `nil` name picks `lcgrpN` with N the new group's id.
    case createGroup(name: String?, autorestore: Bool, autorestoreDelaySeconds: UInt32)
    /// `chlcgrp`.
    case changeGroup(group: String, newName: String?, autorestore: Bool?, autorestoreDelaySeconds: UInt32?)
    /// `rmlcgrp [-force]`: `-force` leaves its maps stand-alone.
    case removeGroup(group: String, force: Bool)
    /// `startlcgrp [-prep]`: every member's image at one instant, in one commit.
    case startGroup(group: String)
    /// `startlcgrp -restore`: every member rolled back to the group's images.
    case startGroupRestore(group: String)
    /// `stoplcgrp [-force]`.
    case stopGroup(group: String, force: Bool)
    /// The controller starts a group rollback whose hold window has passed.
    case startScheduledGroupRollback(group: GroupID)
    /// Every member of the group's rollback restored its grains: they complete together.
    case completeGroupRollback(group: GroupID)
}

/// The parameters of `mklcmap`.
public struct CreateMap: Sendable, Equatable {
    public var source: String
    public var target: String
    /// `nil` picks `lcmapN` with N the new map's id.
    public var name: String?
    public var autorestore: Bool
    public var copyRate: Int
    public var grainSizeBytes: UInt32
    /// The hold window of automatic rollbacks, 0–86400 s.
    public var autorestoreDelaySeconds: UInt32
    /// The consistency group the new map joins (`-lcgrp`).
    public var group: String?

    public init(
        source: String, target: String, name: String? = nil, autorestore: Bool = false,
        copyRate: Int = Limits.copyRateDefault, grainSizeBytes: UInt32 = Limits.grainSizeBytesDefault, autorestoreDelaySeconds: UInt32 = 0,
        group: String? = nil
    ) {
        self.group = group
        self.source = source
        self.target = target
        self.name = name
        self.autorestore = autorestore
        self.copyRate = copyRate
        self.grainSizeBytes = grainSizeBytes
        self.autorestoreDelaySeconds = autorestoreDelaySeconds
    }
}
