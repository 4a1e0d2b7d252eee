/// Identifier of a volume, assigned by the state machine in creation order (0, 1, 2, ...).
public typealias VolumeID = UInt32
/// Identifier of an lcmap, assigned by the state machine in creation order. A forward map and its
/// reverse map each have their own identifier.
public typealias MapID = UInt32
/// Identifier of a recorded fault, assigned in the order faults are recorded (1, 2, ...).
public typealias FaultID = UInt64

/// How a volume may be used by hosts (brief section 1).
public enum VolumeStatus: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// Readable and writable.
    case online = 0
    /// Offline to hosts: its data is not trusted.
    case faulted = 1
    /// Online; a rollback is copying the snapshot back and reads of grains not yet restored are
    /// served from the image.
    case restoring = 2
    /// Online, but its backing store ran out of space (ENOSPC, EDQUOT): host writes that fail
    /// answer ENOSPC, reads work. Not a fault: nothing is rolled back and nothing is lost.
    case outOfSpace = 3

    public var description: String {
        switch self {
        case .online: "online"
        case .faulted: "faulted"
        case .restoring: "restoring"
        case .outOfSpace: "out_of_space"
        }
    }
}

/// The states of an lcmap, as in IBM FlashCopy.
public enum MapState: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case idleOrCopied = 0
    case preparing = 1
    case prepared = 2
    case copying = 3
    case stopping = 4
    case stopped = 5

    /// The spelling used by the CLI, the API and the specification.
    public var description: String {
        switch self {
        case .idleOrCopied: "idle_or_copied"
        case .preparing: "preparing"
        case .prepared: "prepared"
        case .copying: "copying"
        case .stopping: "stopping"
        case .stopped: "stopped"
        }
    }
}

/// Whether a map is the forward map (source → target) or the reverse map created with it.
public enum MapRole: UInt8, Sendable, Equatable, CustomStringConvertible {
    case forward = 0
    case reverse = 1

    public var description: String { self == .forward ? "forward" : "reverse" }
}

/// Where a fault came from.
public enum FaultCause: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// Reported by an operator or a monitor (`snapback fault`).
    case `operator` = 0
    /// An I/O error on the volume's backing store.
    case ioError = 1
    /// The backing store was missing at start-up.
    case backingMissing = 2
    /// The backing store's size differed from the recorded size at start-up.
    case backingResized = 3
    /// A rollback onto the volume was abandoned (`stoplcmap -force`, or the controller could not
    /// finish it): the volume holds a mix of the image and what it held.
    case rollbackAbandoned = 4
    /// The controller's own anomaly detector (`Specs/detection.md`): writes that look like
    /// ransomware encrypting the volume in place.
    case detector = 5

    public var description: String {
        switch self {
        case .operator: "operator"
        case .ioError: "io_error"
        case .backingMissing: "backing_missing"
        case .backingResized: "backing_resized"
        case .rollbackAbandoned: "rollback_abandoned"
        case .detector: "detector"
        }
    }
}

/// Who decided a rollback.
public enum RollbackTrigger: UInt8, Sendable, Equatable, CustomStringConvertible {
    /// `startlcmap -restore` by an operator.
    case `operator` = 0
    /// The controller itself, following the automatic-rollback policy after a fault.
    case auto = 1

    public var description: String { self == .operator ? "operator" : "auto" }
}

/// A fault recorded against a volume.
public struct Fault: Sendable, Equatable {
    public var id: FaultID
    public var cause: FaultCause
    public var reason: String
    /// When the damage began (controller clock, ms since 1970), when the report said
    /// (`snapback fault -onset`): the automatic rollback restores only an image taken at or
    /// before it. `nil`: not said (the newest image is restored).
    public var onsetMilliseconds: Int64?

    public init(id: FaultID, cause: FaultCause, reason: String, onsetMilliseconds: Int64? = nil) {
        self.id = id
        self.cause = cause
        self.reason = reason
        self.onsetMilliseconds = onsetMilliseconds
    }
}

/// An automatic rollback that waits for a map's hold window (`-autorestoredelay`).
public struct ScheduledRollback: Sendable, Equatable {
    /// The fault it answers.
    public var faultID: FaultID
    /// When it starts (controller clock, ms since 1970): the fault's time plus the delay.
    public var atMilliseconds: Int64

    public init(faultID: FaultID, atMilliseconds: Int64) {
        self.faultID = faultID
        self.atMilliseconds = atMilliseconds
    }
}

/// A volume: a fixed-size block device.
public struct Volume: Sendable, Equatable {
    public var id: VolumeID
    public var name: String
    public var sizeBytes: UInt64
    /// The backing file or block device given at creation; `nil` for a sparse file that the data
    /// plane keeps in the data directory.
    public var path: String?
    public var status: VolumeStatus
    /// The most recent fault, while the volume is faulted or being restored because of it.
    public var fault: Fault?
    /// Whether the anomaly detector watches the volume's writes (`chvolume -detect`), and how
    /// readily it fires.
    public var detect = false
    public var sensitivity = DetectionSensitivity.medium
    /// What the detector learned of the volume's writes, as last saved in the log.
    public var detectorBaseline: DetectorBaseline?

    public init(id: VolumeID, name: String, sizeBytes: UInt64, path: String?, status: VolumeStatus = .online, fault: Fault? = nil) {
        self.id = id
        self.name = name
        self.sizeBytes = sizeBytes
        self.path = path
        self.status = status
        self.fault = fault
    }
}

/// A rollback in progress on a forward map.
public struct Rollback: Sendable, Equatable {
    public var trigger: RollbackTrigger
    /// The fault that caused it; `nil` for an operator's rollback of a volume that was not faulted.
    public var faultID: FaultID?
    public var grainsRestored: UInt64
    /// The number of dirty grains when the rollback started; 0 until the data plane reports it.
    public var grainsToRestore: UInt64
    /// A member of a group rollback whose grains are all restored: its source stays `restoring`
    /// until every member's are (`GroupMemberRestored`), then all go online together.
    public var awaitingGroup = false

    public init(trigger: RollbackTrigger, faultID: FaultID?, grainsRestored: UInt64 = 0, grainsToRestore: UInt64 = 0) {
        self.trigger = trigger
        self.faultID = faultID
        self.grainsRestored = grainsRestored
        self.grainsToRestore = grainsToRestore
    }

    /// Whole percent done, rounded down; 0 before the data plane has counted the grains.
    public var progressPercent: Int {
        grainsToRestore == 0 ? 0 : percent(grainsRestored, of: grainsToRestore)
    }
}

/// An lcmap (local copy map).
public struct LCMap: Sendable, Equatable {
    public var id: MapID
    public var name: String
    public var role: MapRole
    /// The forward map's reverse map, or the reverse map's forward map.
    public var partnerID: MapID
    public var sourceID: VolumeID
    public var targetID: VolumeID
    /// 0–150; see ``CopyRate``.
    public var copyRate: Int
    public var grainSizeBytes: UInt32
    public var autorestore: Bool
    public var state: MapState
    /// True while the target holds (with the source) a valid point-in-time image.
    public var imageValid: Bool
    /// Increases with every start across all maps; the most recently started valid map wins the
    /// automatic-rollback choice. `nil` before the first start.
    public var startOrdinal: UInt64?
    /// Background-copy progress, in grains.
    public var grainsCopied: UInt64
    public var grainsTotal: UInt64
    /// The rollback running through this forward map's reverse map.
    public var rollback: Rollback?
    /// When the map last started (its image's time: the `MapStarted` record's timestamp, ms since
    /// 1970); `nil` before the first start.
    public var startedAtMilliseconds: Int64?
    /// The hold window of its automatic rollbacks, 0–86400 s (0: at once, the patent's way).
    public var autorestoreDelaySeconds: UInt32 = 0
    /// An automatic rollback waiting for the hold window.
    public var scheduledRollback: ScheduledRollback?
    /// The consistency group of a forward map (`-lcgrp`); its group's autorestore governs it, and
    /// it is started, stopped and restored only with the group.
    public var groupID: GroupID?

    public init(
        id: MapID, name: String, role: MapRole, partnerID: MapID, sourceID: VolumeID, targetID: VolumeID,
        copyRate: Int, grainSizeBytes: UInt32, autorestore: Bool, state: MapState = .idleOrCopied,
        imageValid: Bool = false, startOrdinal: UInt64? = nil, grainsCopied: UInt64 = 0, grainsTotal: UInt64,
        rollback: Rollback? = nil
    ) {
        self.id = id
        self.name = name
        self.role = role
        self.partnerID = partnerID
        self.sourceID = sourceID
        self.targetID = targetID
        self.copyRate = copyRate
        self.grainSizeBytes = grainSizeBytes
        self.autorestore = autorestore
        self.state = state
        self.imageValid = imageValid
        self.startOrdinal = startOrdinal
        self.grainsCopied = grainsCopied
        self.grainsTotal = grainsTotal
        self.rollback = rollback
    }

    /// Background-copy progress in whole percent, rounded down. A copied map shows 100.
    public var progressPercent: Int {
        grainsTotal == 0 ? 100 : percent(grainsCopied, of: grainsTotal)
    }

    /// True for a map whose copy-on-write must run on source writes: started and not stopped.
    public var isActive: Bool {
        role == .forward && imageValid
    }
}

/// Limits of the domain. Everything that grows has one.
public enum Limits {
    public static let volumesMax = 4096
    /// Forward and reverse maps together.
    public static let mapsMax = 8192
    public static let nameBytesMax = 63
    /// A forward map's name leaves room for the reverse map's suffix.
    public static let mapNameBytesMax = nameBytesMax - reverseNameSuffix.utf8.count
    public static let reverseNameSuffix = "_rev"
    public static let volumeSizeBytesMin: UInt64 = 512
    public static let volumeSizeBytesMax: UInt64 = 256 << 40
    public static let sectorBytes: UInt64 = 512
    public static let pathBytesMax = 4096
    public static let reasonBytesMax = 256
    public static let versionBytesMax = 64
    public static let grainSizesBytes: [UInt32] = [64 << 10, 256 << 10]
    public static let grainSizeBytesDefault: UInt32 = 256 << 10
    public static let copyRateMax = 150
    public static let copyRateDefault = 50
    /// The longest hold window of an automatic rollback (`-autorestoredelay`): one day.
    public static let autorestoreDelaySecondsMax: UInt32 = 86_400
    /// Consistency groups, and maps in one group (IBM's limits: 500 and 512).
    public static let groupsMax = 500
    public static let groupMapsMax = 512
}

/// IBM's copy-rate table: 1–10 → 128 KiB/s, doubling every band of ten, 91–100 → 64 MiB/s,
/// 101–150 continue doubling to 2 GiB/s; 0 means no background copy.
public enum CopyRate {
    /// Bytes per second for a copy rate of 0–150.
    public static func bytesPerSecond(_ copyRate: Int) -> UInt64 {
        precondition((0...Limits.copyRateMax).contains(copyRate), "copy rate \(copyRate) outside 0–150")
        if copyRate == 0 { return 0 }
        let band = (copyRate - 1) / 10
        return (128 << 10) << UInt64(band)
    }
}

/// Whole grains covering `sizeBytes` (the last one may be partial).
public func grainCount(sizeBytes: UInt64, grainSizeBytes: UInt32) -> UInt64 {
    precondition(grainSizeBytes > 0)
    // Not `(sizeBytes + grainSizeBytes - 1) / grainSizeBytes`: `evolve` calls this with any size a
    // decodable log holds, and that sum overflows near UInt64.max.
    let grainSize = UInt64(grainSizeBytes)
    return sizeBytes / grainSize + (sizeBytes % grainSize == 0 ? 0 : 1)
}

/// `part` as whole percent of `whole` (> 0), rounded down; 100 once `part` reaches `whole`.
/// Total over UInt64: a state decoded from a log or a checkpoint may hold any counts, so
/// `part * 100` must not overflow (`decide` keeps `part <= whole`, where nothing changes).
func percent(_ part: UInt64, of whole: UInt64) -> Int {
    precondition(whole > 0)
    guard part < whole else { return 100 }
    // part * 100 < whole * 100, so the quotient is below 100.
    return Int(whole.dividingFullWidth(part.multipliedFullWidth(by: 100)).quotient)
}
