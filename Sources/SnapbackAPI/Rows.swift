import Foundation
import SnapbackCore

/// RFC 3339 (UTC, seconds) of a controller time in ms since 1970; empty for none.
public func rfc3339(_ milliseconds: Int64?) -> String {
    guard let milliseconds else { return "" }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
}

/// Parses an RFC 3339 time (with or without fractional seconds) to ms since 1970.
public func parseRFC3339(_ text: String) -> Int64? {
    let formatter = ISO8601DateFormatter()
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]] {
        formatter.formatOptions = options
        if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    }
    return nil
}

/// One row of `lsvolume` / `GET /v1/volumes`: the same names and values in the CLI's table, its
/// `-json` output and the API.
public struct VolumeRow: Codable, Sendable, Equatable {
    public var id: Int
    public var name: String
    /// Bytes.
    public var size: UInt64
    /// `online`, `faulted` or `restoring`.
    public var status: String
    /// The backing file or device; empty for a sparse file in the data directory.
    public var path: String
    public var fault_id: String
    public var fault_reason: String
    /// When the fault says the damage began (RFC 3339, UTC); empty when it does not.
    public var fault_onset: String
    /// When an automatic rollback waiting for a hold window starts (RFC 3339, UTC); empty for none.
    public var rollback_at: String
    /// Why a faulted volume with autorestore maps is not being rolled back, when that is so.
    public var rollback_note: String
    /// `on` or `off`: the anomaly detector (`chvolume -detect`).
    public var detect: String
    /// `low`, `medium` or `high`.
    public var sensitivity: String
    /// The detector's current score, 0–100 (0 without detection, or when the daemon is not asked).
    public var anomaly_score: Int

    public static let columns = [
        "id", "name", "size", "status", "path", "fault_id", "fault_reason", "fault_onset", "rollback_at", "rollback_note", "detect",
        "sensitivity", "anomaly_score",
    ]

    public init(_ volume: Volume, in state: ControllerState, anomalyScore: Int? = nil) {
        detect = volume.detect ? "on" : "off"
        sensitivity = volume.sensitivity.description
        anomaly_score = anomalyScore ?? 0
        id = Int(volume.id)
        name = volume.name
        size = volume.sizeBytes
        status = volume.status.description
        path = volume.path ?? ""
        fault_id = volume.fault.map { String($0.id) } ?? ""
        fault_reason = volume.fault?.reason ?? ""
        fault_onset = rfc3339(volume.fault?.onsetMilliseconds)
        let maps = state.forwardMaps(ofSource: volume.id)
        let groups = maps.compactMap { $0.groupID.flatMap { state.groups[$0] } }
        rollback_at = rfc3339(
            (maps.compactMap { $0.scheduledRollback?.atMilliseconds } + groups.compactMap { $0.scheduledRollback?.atMilliseconds }).min())
        rollback_note = ""
        let autorestore = maps.contains { ($0.groupID.flatMap { state.groups[$0]?.autorestore } ?? $0.autorestore) && $0.imageValid }
        if volume.status == .faulted, let onset = volume.fault?.onsetMilliseconds, rollback_at.isEmpty, autorestore,
            automaticRollbackChoice(for: volume.id, in: state) == nil
        {
            rollback_note = "no automatic rollback: no image of an autorestore lcmap was taken at or before the onset \(rfc3339(onset))"
        }
        // A member of a group with autorestore on that was not rolled back: say why (its
        // membership changed, an image is gone...).
        if volume.status == .faulted, rollback_note.isEmpty, rollback_at.isEmpty,
            let group = groups.first(where: { $0.autorestore && $0.rollback == nil }), let blocker = groupRollbackBlocker(group, in: state)
        {
            rollback_note = "no automatic rollback of lcgrp \(group.name): \(blocker.code.rawValue): \(blocker.message)"
        }
    }

    /// The row's values as text, in ``columns`` order.
    public var cells: [String] {
        [
            String(id), name, String(size), status, path, fault_id, fault_reason, fault_onset, rollback_at, rollback_note, detect, sensitivity,
            String(anomaly_score),
        ]
    }
}

/// One row of `lslcmap` / `GET /v1/lcmaps`.
public struct MapRow: Codable, Sendable, Equatable {
    public var id: Int
    public var name: String
    /// Source volume name.
    public var source: String
    /// Target volume name.
    public var target: String
    /// The map state: idle_or_copied, preparing, prepared, copying, stopping, stopped.
    public var status: String
    /// Background-copy progress in whole percent (a reverse map: the rollback's progress).
    public var progress: Int
    public var copyrate: Int
    /// `on` or `off`.
    public var autorestore: String
    /// `yes` while a rollback of this map (or its partner) runs.
    public var restoring: String
    /// The partner map's name: the reverse map of a forward map, and the other way round.
    public var partner: String
    /// KiB.
    public var grainsize: Int
    /// `forward` or `reverse`.
    public var role: String
    /// The rollback's progress in whole percent (0 when none runs).
    public var restore_progress: Int
    /// `operator` or `auto` while a rollback runs, else empty.
    public var restore_trigger: String

    /// When the map's image was taken (its last start; RFC 3339, UTC); empty before any start.
    public var start_time: String
    /// The hold window of automatic rollbacks, in seconds (0: at once).
    public var autorestoredelay: Int
    /// When an automatic rollback waiting for the hold window starts (RFC 3339, UTC); empty for none.
    public var rollback_at: String
    /// The consistency group of the map (or of its forward map); empty for none.
    public var lcgrp: String

    public static let columns = [
        "id", "name", "source", "target", "status", "progress", "copyrate", "autorestore", "restoring", "partner",
        "grainsize", "role", "restore_progress", "restore_trigger", "start_time", "autorestoredelay", "rollback_at", "lcgrp",
    ]

    public init(_ map: LCMap, in state: ControllerState) {
        let forward = map.role == .forward ? map : state.maps[map.partnerID]
        let rollback = forward?.rollback
        id = Int(map.id)
        name = map.name
        source = state.volumes[map.sourceID]?.name ?? String(map.sourceID)
        target = state.volumes[map.targetID]?.name ?? String(map.targetID)
        status = map.state.description
        progress = map.progressPercent
        copyrate = map.copyRate
        autorestore = map.autorestore ? "on" : "off"
        restoring = rollback != nil ? "yes" : "no"
        partner = state.maps[map.partnerID]?.name ?? ""
        grainsize = Int(map.grainSizeBytes / 1024)
        role = map.role.description
        restore_progress = rollback?.progressPercent ?? 0
        restore_trigger = rollback?.trigger.description ?? ""
        start_time = rfc3339(forward?.startedAtMilliseconds)
        autorestoredelay = Int(forward?.autorestoreDelaySeconds ?? 0)
        rollback_at = rfc3339(forward?.scheduledRollback?.atMilliseconds)
        lcgrp = forward?.groupID.flatMap { state.groups[$0]?.name } ?? ""
    }

    public var cells: [String] {
        [
            String(id), name, source, target, status, String(progress), String(copyrate), autorestore, restoring, partner,
            String(grainsize), role, String(restore_progress), restore_trigger, start_time, String(autorestoredelay), rollback_at, lcgrp,
        ]
    }
}

/// One row of `lslcgrp` / `GET /v1/lcgroups`.
public struct GroupRow: Codable, Sendable, Equatable {
    public var id: Int
    public var name: String
    /// `empty`, or its members' state: idle_or_copied, preparing, prepared, copying, stopping, stopped.
    public var status: String
    /// `on` or `off`: governs the members' automatic rollbacks.
    public var autorestore: String
    /// The number of lcmaps in the group.
    public var maps: Int
    /// When the group's images were taken (its last start; RFC 3339, UTC); empty before any start.
    public var start_time: String
    /// `yes` while a group rollback runs.
    public var restoring: String
    /// The group rollback's progress in whole percent over every member's grains (0 when none runs).
    public var restore_progress: Int
    /// The hold window of automatic group rollbacks, in seconds.
    public var autorestoredelay: Int
    /// When a group rollback waiting for the hold window starts (RFC 3339, UTC); empty for none.
    public var rollback_at: String
    /// The names of its lcmaps, in id order.
    public var lcmaps: [String]

    public static let columns = [
        "id", "name", "status", "autorestore", "maps", "start_time", "restoring", "restore_progress", "autorestoredelay", "rollback_at",
    ]

    public init(_ group: LCGroup, in state: ControllerState) {
        let members = state.members(of: group.id)
        id = Int(group.id)
        name = group.name
        status = state.status(of: group).rawValue
        autorestore = group.autorestore ? "on" : "off"
        maps = members.count
        start_time = rfc3339(group.startedAtMilliseconds)
        restoring = group.rollback != nil ? "yes" : "no"
        let rollbacks = members.compactMap(\.rollback)
        let toRestore = rollbacks.reduce(UInt64(0)) { $0 + $1.grainsToRestore }
        let restored = rollbacks.reduce(UInt64(0)) { $0 + ($1.awaitingGroup ? $1.grainsToRestore : $1.grainsRestored) }
        restore_progress = group.rollback == nil || toRestore == 0 ? 0 : Int(min(restored, toRestore) * 100 / toRestore)
        autorestoredelay = Int(group.autorestoreDelaySeconds)
        rollback_at = rfc3339(group.scheduledRollback?.atMilliseconds)
        lcmaps = members.map(\.name)
    }
}

/// The body of every error response, and of the CLI's error line.
public struct ErrorBody: Codable, Sendable, Equatable, Error {
    /// A stable code (`Specs/errors.md`).
    public var code: String
    /// One line.
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// `POST /v1/volumes`.
public struct CreateVolumeRequest: Codable, Sendable {
    public var name: String
    /// Bytes.
    public var size: UInt64
    public var path: String?
    /// Take an existing `path` (file or device) and its bytes as the volume; without it, an
    /// existing path is refused (`path_exists`).
    public var adopt: Bool?
    /// `on` or `off` (default off): the anomaly detector.
    public var detect: String?
    /// `low`, `medium` (default) or `high`.
    public var sensitivity: String?
    public init(name: String, size: UInt64, path: String?, adopt: Bool? = nil, detect: String? = nil, sensitivity: String? = nil) {
        self.detect = detect
        self.sensitivity = sensitivity
        self.name = name
        self.size = size
        self.path = path
        self.adopt = adopt
    }
}

/// `PATCH /v1/volumes/{volume}` (`chvolume`).
public struct ChangeVolumeRequest: Codable, Sendable {
    public var name: String?
    public var detect: String?
    public var sensitivity: String?
    public init(name: String?, detect: String?, sensitivity: String?) {
        self.name = name
        self.detect = detect
        self.sensitivity = sensitivity
    }
}

/// `POST /v1/lcmaps`.
public struct CreateMapRequest: Codable, Sendable {
    public var source: String
    public var target: String
    public var name: String?
    /// `on` or `off` (default off).
    public var autorestore: String?
    /// 0–150 (default 50).
    public var copyrate: Int?
    /// 64 or 256 KiB (default 256).
    public var grainsize: Int?
    /// The hold window of automatic rollbacks, 0–86400 s (default 0).
    public var autorestoredelay: Int?
    /// The consistency group the map joins.
    public var lcgrp: String?
    public init(
        source: String, target: String, name: String?, autorestore: String?, copyrate: Int?, grainsize: Int?, autorestoredelay: Int? = nil,
        lcgrp: String? = nil
    ) {
        self.lcgrp = lcgrp
        self.autorestoredelay = autorestoredelay
        self.source = source
        self.target = target
        self.name = name
        self.autorestore = autorestore
        self.copyrate = copyrate
        self.grainsize = grainsize
    }
}

/// `PATCH /v1/lcmaps/{map}`.
public struct ChangeMapRequest: Codable, Sendable {
    public var autorestore: String?
    public var copyrate: Int?
    public var name: String?
    /// The hold window of automatic rollbacks, 0–86400 s.
    public var autorestoredelay: Int?
    /// Move the map into this consistency group.
    public var lcgrp: String?
    /// `true`: move the map out of its group.
    public var nolcgrp: Bool?
    public init(autorestore: String?, copyrate: Int?, name: String?, autorestoredelay: Int? = nil, lcgrp: String? = nil, nolcgrp: Bool? = nil) {
        self.lcgrp = lcgrp
        self.nolcgrp = nolcgrp
        self.autorestore = autorestore
        self.copyrate = copyrate
        self.name = name
        self.autorestoredelay = autorestoredelay
    }
}

/// `POST /v1/lcmaps/{map}/start`.
public struct StartMapRequest: Codable, Sendable {
    public var prep: Bool?
    public var restore: Bool?
    public init(prep: Bool?, restore: Bool?) {
        self.prep = prep
        self.restore = restore
    }
}

/// `POST /v1/lcgroups`.
public struct CreateGroupRequest: Codable, Sendable {
    public var name: String?
    /// `on` or `off` (default off).
    public var autorestore: String?
    /// The hold window of automatic group rollbacks, 0–86400 s (default 0).
    public var autorestoredelay: Int?
    public init(name: String?, autorestore: String?, autorestoredelay: Int?) {
        self.name = name
        self.autorestore = autorestore
        self.autorestoredelay = autorestoredelay
    }
}

/// `PATCH /v1/lcgroups/{group}`: the same fields, each changing that setting when present.
public typealias ChangeGroupRequest = CreateGroupRequest

/// `POST /v1/lcmaps/{map}/stop` options (`DELETE /v1/lcmaps/{map}` takes `?force=true`).
public struct ForceRequest: Codable, Sendable {
    public var force: Bool?
    public init(force: Bool?) { self.force = force }
}

/// `POST /v1/volumes/{volume}/fault`.
public struct FaultRequest: Codable, Sendable {
    public var reason: String
    /// When the damage began, RFC 3339 (`-onset`); absent: not said.
    public var onset: String?
    public init(reason: String, onset: String? = nil) {
        self.reason = reason
        self.onset = onset
    }
}

/// What a mutating request returns: the sequence numbers of the events it recorded.
public struct CommandResult: Codable, Sendable {
    public var events: [String]
    public var first_seq: UInt64?
    public var last_seq: UInt64?
    /// How long the command held host I/O of the volumes it touches, in ms (for a group start:
    /// the host-write hold of every member's source).
    public var held_ms: Double?
    public init(events: [String], firstSequence: UInt64?, lastSequence: UInt64?, heldMilliseconds: Double? = nil) {
        self.events = events
        first_seq = firstSequence
        last_seq = lastSequence
        held_ms = heldMilliseconds
    }
}

/// `on`/`off` to a Bool; anything else is `nil`.
public func parseOnOff(_ text: String) -> Bool? {
    switch text.lowercased() {
    case "on", "yes", "true": true
    case "off", "no", "false": false
    default: nil
    }
}

/// The HTTP status for a rejected command's code.
public func httpStatus(for code: CommandError.Code) -> Int {
    switch code {
    case .unknownVolume, .unknownMap, .unknownGroup: 404
    case .invalidName, .invalidSize, .invalidPath, .copyRateOutOfRange, .invalidGrainSize, .invalidReason,
        .invalidProgress, .nothingToChange:
        400
    // What depends on the state, not on the request alone, is a conflict (`Specs/openapi.yaml`:
    // a request valid by its schema is never answered 400).
    case .sameSourceTarget, .sizeMismatch, .duplicateName, .targetInUse, .volumeInMap, .mapAlreadyStarted, .mapNotStarted, .mapActive, .mapIsReverse,
        .noValidImage, .mapRestoring, .volumeRestoring, .volumeFaulted, .volumeNotFaulted, .invalidState, .limitReached,
        .pathExists, .backingUnavailable, .groupNotEmpty, .groupEmpty, .groupRestoring, .groupConflict, .groupChanged, .mapInGroup:
        409
    case .invalidDelay, .invalidOnset:
        400
    }
}

/// `GET /v1/lcmaps/{map}/rollback`: the last rollback of a forward map, as the log records it
/// (what `snapback wait` reports when a rollback ends or has ended).
public struct RollbackRow: Codable, Sendable, Equatable {
    /// The forward map's name.
    public var map: String
    /// `running`, `completed`, `abandoned`, or `none` (the map was never rolled back).
    public var outcome: String
    /// `operator` or `auto`; empty for `none`.
    public var trigger: String
    /// The fault that caused it; empty for none.
    public var fault_id: String
    /// Why it was abandoned (`RollbackStopped`'s reason); empty otherwise.
    public var reason: String
    /// Sequence numbers of its `RollbackStarted` and of the event that ended it (0 while running).
    public var started_seq: UInt64
    public var ended_seq: UInt64
    /// When it started and ended (RFC 3339, UTC); empty when not applicable.
    public var started_time: String
    public var ended_time: String

    public init(
        map: String, outcome: String, trigger: String = "", fault_id: String = "", reason: String = "", started_seq: UInt64 = 0,
        ended_seq: UInt64 = 0, started_time: String = "", ended_time: String = ""
    ) {
        self.map = map
        self.outcome = outcome
        self.trigger = trigger
        self.fault_id = fault_id
        self.reason = reason
        self.started_seq = started_seq
        self.ended_seq = ended_seq
        self.started_time = started_time
        self.ended_time = ended_time
    }
}

/// `lssystem` / `GET /v1/system`: the controller itself.
public struct SystemRow: Codable, Sendable, Equatable {
    /// `online`, or `degraded` while durable commits fail (the log's file system full, an I/O
    /// error); everything resumes by itself once they succeed again.
    public var status: String
    /// Why it is degraded: `storage_full: …` or `storage_error: …` with the store's own words
    /// (errno text included); empty when online.
    public var reason: String
    /// When it became degraded (RFC 3339, UTC); empty when online.
    public var degraded_since: String
    /// Durable commits that failed since snapbackd started.
    public var failed_commits: UInt64
    /// Bytes of the LMDB log's data file.
    public var log_size: UInt64
    /// The sequence number of the last committed event.
    public var last_sequence: UInt64
    /// snapbackd's version.
    public var version: String

    public static let columns = ["status", "reason", "degraded_since", "failed_commits", "log_size", "last_sequence", "version"]

    public init(
        status: String, reason: String, degraded_since: String, failed_commits: UInt64, log_size: UInt64, last_sequence: UInt64, version: String
    ) {
        self.status = status
        self.reason = reason
        self.degraded_since = degraded_since
        self.failed_commits = failed_commits
        self.log_size = log_size
        self.last_sequence = last_sequence
        self.version = version
    }
}
