import Foundation
import SnapbackCore

/// Events in plain words, shared by the CLI (`snapback log show`, `log explain`) and snapbackd's
/// status page, so that both tell the same story.
public enum EventProse {
    /// One line in plain words; `state` is the state before the event (for names).
    public static func sentence(_ event: Event, _ state: ControllerState) -> String {
        func volume(_ id: VolumeID) -> String { "volume \(state.volumes[id]?.name ?? "#\(id)")" }
        func map(_ id: MapID) -> String { "lcmap \(state.maps[id]?.name ?? "#\(id)")" }
        func group(_ id: GroupID) -> String { "lcgrp \(state.groups[id]?.name ?? "#\(id)")" }
        switch event {
        case let .volumeCreated(_, name, sizeBytes, path):
            return "volume \(name) created, \(sizeBytes) bytes" + (path.map { ", backed by \($0)" } ?? "")
        case let .volumeRemoved(id): return "\(volume(id)) removed"
        case let .volumeRecovered(id): return "\(volume(id)) recovered: data accepted as it is (operator)"
        case let .volumeOutOfSpace(id, reason): return "\(volume(id)) out of space (not a fault, nothing rolled back): \(reason)"
        case let .mapAutorestoreDelayChanged(id, seconds): return "\(map(id)) autorestore hold window set to \(seconds) s"
        case let .rollbackScheduled(id, faultID):
            return "automatic rollback of \(map(id)) for fault \(faultID) scheduled after its hold window of \(state.maps[id]?.autorestoreDelaySeconds ?? 0) s"
        case let .faultOnset(id, faultID, onset):
            return "fault \(faultID) of \(volume(id)): the damage began at \(time(onset))"
        case let .rollbackRestarted(id, faultID):
            return "rollback of \(map(id)) restarted for fault \(faultID): every grain written since the image is restored again"
        case let .volumeSpaceRestored(id): return "\(volume(id)) has space again: a write succeeded; online"
        case let .mapCreated(created):
            return "lcmap \(created.name) created: \(volume(created.sourceID)) -> \(volume(created.targetID)), reverse map \(created.reverseName), copyrate \(created.copyRate), grainsize \(created.grainSizeBytes / 1024), autorestore \(created.autorestore ? "on" : "off")"
        case let .mapRenamed(id, name, _): return "\(map(id)) renamed to \(name)"
        case let .mapAutorestoreChanged(id, autorestore): return "\(map(id)) autorestore set \(autorestore ? "on" : "off")"
        case let .mapCopyRateChanged(id, copyRate): return "\(map(id)) copyrate set to \(copyRate)"
        case let .mapRemoved(id): return "\(map(id)) removed"
        case let .mapPreparing(id): return "\(map(id)) preparing"
        case let .mapPrepared(id): return "\(map(id)) prepared"
        case let .mapStarted(id, _): return "\(map(id)) started: point-in-time image taken"
        case let .mapCopyProgressed(id, grainsCopied):
            let total = state.maps[id]?.grainsTotal ?? 0
            return "\(map(id)) background copy at \(grainsCopied) of \(total) grains"
        case let .mapCopyCompleted(id): return "\(map(id)) background copy complete"
        case let .mapStopping(id): return "\(map(id)) stopping"
        case let .mapStopped(id): return "\(map(id)) stopped: image no longer valid"
        case let .volumeFaulted(id, faultID, cause, reason):
            return "\(volume(id)) faulted (fault \(faultID), cause \(cause)): \(reason)"
        case let .rollbackStarted(id, trigger, faultID):
            let who = trigger == .auto ? "automatically" : "by operator"
            let cause = faultID.map { " after fault \($0)" } ?? ""
            return "rollback of \(map(id)) onto its source started \(who)\(cause)"
        case let .rollbackProgressed(id, restored, toRestore):
            return "rollback of \(map(id)) at \(restored) of \(toRestore) dirty grains"
        case let .rollbackCompleted(id): return "rollback of \(map(id)) finished; source online"
        case let .controllerStarted(version): return "controller started (snapbackd \(version))"
        case let .rollbackStopped(id, reason): return "rollback of \(map(id)) stopped before it finished (\(reason)); source left faulted"
        case let .groupCreated(_, name, autorestore, delay):
            return "lcgrp \(name) created, autorestore \(autorestore ? "on" : "off"), hold window \(delay) s"
        case let .groupRenamed(id, name): return "\(group(id)) renamed to \(name)"
        case let .groupAutorestoreChanged(id, autorestore): return "\(group(id)) autorestore set \(autorestore ? "on" : "off")"
        case let .groupAutorestoreDelayChanged(id, seconds): return "\(group(id)) autorestore hold window set to \(seconds) s"
        case let .groupRemoved(id): return "\(group(id)) removed"
        case let .mapGroupChanged(id, newGroup):
            if let newGroup { return "\(map(id)) moved into \(group(newGroup))" }
            return "\(map(id)) moved out of \(state.maps[id]?.groupID.map(group) ?? "its group")"
        case let .groupStarted(id, _, members):
            return "\(group(id)) started: images of its \(members.count) lcmaps taken at one instant"
        case let .groupRollbackStarted(id, trigger, faultID):
            let who = trigger == .auto ? "automatically" : "by operator"
            return "rollback of \(group(id)) to its images started \(who)" + (faultID.map { " after fault \($0)" } ?? "")
        case let .groupMemberRestored(id): return "rollback of \(map(id)) restored every grain; its source waits for its group"
        case let .groupRollbackCompleted(id): return "rollback of \(group(id)) finished; every source online"
        case let .groupRollbackStopped(id, reason): return "rollback of \(group(id)) stopped before it finished (\(reason)); every source left faulted"
        case let .groupRollbackScheduled(id, faultID):
            return "automatic rollback of \(group(id)) for fault \(faultID) scheduled after its hold window of \(state.groups[id]?.autorestoreDelaySeconds ?? 0) s"
        case let .volumeRenamed(id, name): return "\(volume(id)) renamed to \(name)"
        case let .volumeDetectionChanged(id, enabled, sensitivity):
            return "\(volume(id)) anomaly detection \(enabled ? "on, sensitivity \(sensitivity)" : "off")"
        case let .anomalyDetected(id, score, onset, evidence):
            return "anomaly detected on \(volume(id)): score \(score), damage began no earlier than \(time(onset)) (\(evidence.count) intervals of evidence)"
        case let .detectorBaselineSaved(id, baseline):
            return "\(volume(id)) detector baseline saved (\(baseline.learnedIntervals) intervals learned)"
        }
    }

    /// Who asked for an event: `by uid 1000 (alice), pid 4242` (the user name as this machine
    /// knows the uid, left out when it knows none), or `by the controller` for an event with no
    /// caller (the controller's own, or one written before callers were recorded).
    public static func caller(_ caller: Caller?) -> String {
        guard let caller else { return "by the controller" }
        let name = userName(caller.uid).map { " (\($0))" } ?? ""
        return "by uid \(caller.uid)\(name), pid \(caller.pid)"
    }

    /// The name of user `uid` on this machine (`getpwuid_r`), or `nil`; remembered per uid, as a
    /// log names few users many times.
    public static func userName(_ uid: UInt32) -> String? {
        if let known = userNamesLock.withLock({ userNames[uid] }) { return known }
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let status = getpwuid_r(uid_t(uid), &entry, &buffer, buffer.count, &found)
        let name: String? = status == 0 && found != nil ? entry.pw_name.map { String(cString: $0) } : nil
        userNamesLock.withLock { userNames[uid] = .some(name) }
        return name
    }

    nonisolated(unsafe) private static var userNames: [UInt32: String?] = [:]
    private static let userNamesLock = NSLock()

    /// The time as ISO 8601 in UTC with milliseconds (`2025-01-31T09:30:00.250Z`).
    public static func time(_ timestampMilliseconds: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(timestampMilliseconds) / 1000)
        return timeFormatterLock.withLock { timeFormatter.string(from: date) }
    }

    /// One formatter for every line (`log show` and `log export` format a time per event),
    /// behind a lock: snapbackd's status page formats on several threads.
    nonisolated(unsafe) private static let timeFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter
    }()
    private static let timeFormatterLock = NSLock()
}
