import Foundation
import SnapbackCore
import SnapbackLog

/// How `snapback log` presents events: fields for JSON and CSV, and one human-readable line.
enum EventText {
    /// The event's fields by name, in encoding order (the names of `Specs/events.md`).
    static func fields(_ event: Event) -> [(String, Listing.Field)] {
        switch event {
        case let .volumeCreated(id, name, sizeBytes, path):
            return [("volumeID", .number(UInt64(id))), ("name", .text(name)), ("sizeBytes", .number(sizeBytes))]
                + (path.map { [("path", .text($0))] } ?? [])
        case let .volumeRemoved(id), let .volumeRecovered(id), let .volumeSpaceRestored(id):
            return [("volumeID", .number(UInt64(id)))]
        case let .volumeOutOfSpace(id, reason):
            return [("volumeID", .number(UInt64(id))), ("reason", .text(reason))]
        case let .rollbackRestarted(id, faultID), let .rollbackScheduled(id, faultID):
            return [("mapID", .number(UInt64(id))), ("faultID", .number(faultID))]
        case let .mapAutorestoreDelayChanged(id, seconds):
            return [("mapID", .number(UInt64(id))), ("seconds", .number(UInt64(seconds)))]
        case let .faultOnset(id, faultID, onset):
            return [("volumeID", .number(UInt64(id))), ("faultID", .number(faultID)), ("onsetMilliseconds", .number(UInt64(max(0, onset))))]
        case let .mapCreated(created):
            return [
                ("mapID", .number(UInt64(created.id))), ("name", .text(created.name)),
                ("reverseID", .number(UInt64(created.reverseID))), ("reverseName", .text(created.reverseName)),
                ("sourceID", .number(UInt64(created.sourceID))), ("targetID", .number(UInt64(created.targetID))),
                ("copyRate", .number(UInt64(created.copyRate))), ("grainSizeBytes", .number(UInt64(created.grainSizeBytes))),
                ("autorestore", .text(created.autorestore ? "on" : "off")),
            ]
        case let .mapRenamed(id, name, reverseName):
            return [("mapID", .number(UInt64(id))), ("name", .text(name)), ("reverseName", .text(reverseName))]
        case let .mapAutorestoreChanged(id, autorestore):
            return [("mapID", .number(UInt64(id))), ("autorestore", .text(autorestore ? "on" : "off"))]
        case let .mapCopyRateChanged(id, copyRate):
            return [("mapID", .number(UInt64(id))), ("copyRate", .number(UInt64(copyRate)))]
        case let .mapRemoved(id), let .mapPreparing(id), let .mapPrepared(id), let .mapCopyCompleted(id),
            let .mapStopping(id), let .mapStopped(id), let .rollbackCompleted(id):
            return [("mapID", .number(UInt64(id)))]
        case let .mapStarted(id, startOrdinal):
            return [("mapID", .number(UInt64(id))), ("startOrdinal", .number(startOrdinal))]
        case let .mapCopyProgressed(id, grainsCopied):
            return [("mapID", .number(UInt64(id))), ("grainsCopied", .number(grainsCopied))]
        case let .volumeFaulted(id, faultID, cause, reason):
            return [
                ("volumeID", .number(UInt64(id))), ("faultID", .number(faultID)), ("cause", .text(cause.description)),
                ("reason", .text(reason)),
            ]
        case let .rollbackStarted(id, trigger, faultID):
            return [("mapID", .number(UInt64(id))), ("trigger", .text(trigger.description))]
                + (faultID.map { [("faultID", .number($0))] } ?? [])
        case let .rollbackProgressed(id, grainsRestored, grainsToRestore):
            return [
                ("mapID", .number(UInt64(id))), ("grainsRestored", .number(grainsRestored)),
                ("grainsToRestore", .number(grainsToRestore)),
            ]
        case let .controllerStarted(version):
            return [("version", .text(version))]
        case let .rollbackStopped(id, reason):
            return [("mapID", .number(UInt64(id))), ("reason", .text(reason))]
        case let .groupCreated(id, name, autorestore, delay):
            return [
                ("groupID", .number(UInt64(id))), ("name", .text(name)), ("autorestore", .text(autorestore ? "on" : "off")),
                ("seconds", .number(UInt64(delay))),
            ]
        case let .groupRenamed(id, name):
            return [("groupID", .number(UInt64(id))), ("name", .text(name))]
        case let .groupAutorestoreChanged(id, autorestore):
            return [("groupID", .number(UInt64(id))), ("autorestore", .text(autorestore ? "on" : "off"))]
        case let .groupAutorestoreDelayChanged(id, seconds):
            return [("groupID", .number(UInt64(id))), ("seconds", .number(UInt64(seconds)))]
        case let .groupRemoved(id), let .groupRollbackCompleted(id):
            return [("groupID", .number(UInt64(id)))]
        case let .mapGroupChanged(id, group):
            return [("mapID", .number(UInt64(id)))] + (group.map { [("groupID", .number(UInt64($0)))] } ?? [])
        case let .groupStarted(id, startOrdinal, members):
            return [
                ("groupID", .number(UInt64(id))), ("startOrdinal", .number(startOrdinal)),
                ("members", .text(members.map(String.init).joined(separator: " "))),
            ]
        case let .groupRollbackStarted(id, trigger, faultID):
            return [("groupID", .number(UInt64(id))), ("trigger", .text(trigger.description))]
                + (faultID.map { [("faultID", .number($0))] } ?? [])
        case let .groupMemberRestored(id):
            return [("mapID", .number(UInt64(id)))]
        case let .groupRollbackStopped(id, reason):
            return [("groupID", .number(UInt64(id))), ("reason", .text(reason))]
        case let .groupRollbackScheduled(id, faultID):
            return [("groupID", .number(UInt64(id))), ("faultID", .number(faultID))]
        case let .volumeRenamed(id, name):
            return [("volumeID", .number(UInt64(id))), ("name", .text(name))]
        case let .volumeDetectionChanged(id, enabled, sensitivity):
            return [("volumeID", .number(UInt64(id))), ("detect", .text(enabled ? "on" : "off")), ("sensitivity", .text(sensitivity.description))]
        case let .anomalyDetected(id, score, onset, evidence):
            return [
                ("volumeID", .number(UInt64(id))), ("score", .number(UInt64(score))), ("onsetMilliseconds", .number(UInt64(max(0, onset)))),
                ("evidence", .text(evidence.map(intervalText).joined(separator: "; "))),
            ]
        case let .detectorBaselineSaved(id, baseline):
            return [
                ("volumeID", .number(UInt64(id))), ("learnedIntervals", .number(UInt64(baseline.learnedIntervals))),
                ("highEntropySharePpm", .number(UInt64(baseline.highEntropyShareMeanPartsPerMillion))),
                ("increaseSharePpm", .number(UInt64(baseline.increaseShareMeanPartsPerMillion))),
            ]
        }
    }

    /// One interval of a detector's evidence, in words.
    static func intervalText(_ interval: IntervalStatistics) -> String {
        "\(time(interval.startMilliseconds)): \(interval.bytesWritten) bytes, \(interval.highEntropyBlocks)/\(interval.sampledBlocks) sampled blocks high-entropy, \(interval.entropyIncreases)/\(interval.overwriteSamples) overwrites raised entropy"
    }

    /// One line in plain words; `state` is the state before the event (for names).
    static func sentence(_ event: Event, _ state: ControllerState) -> String {
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

    /// The time as ISO 8601 in UTC with milliseconds.
    static func time(_ timestampMilliseconds: Int64) -> String {
        timeFormatter.string(from: Date(timeIntervalSince1970: Double(timestampMilliseconds) / 1000))
    }

    /// One formatter for every line (`log show` and `log export` format a time per event); the
    /// CLI formats on one thread.
    nonisolated(unsafe) private static let timeFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter
    }()

    /// One JSON object (a single line) for `log show -json` and `log export -format jsonl`.
    static func jsonLine(_ stored: StoredEvent) -> String {
        var object: [String: Any] = [
            "seq": stored.sequence, "time": time(stored.timestampMilliseconds),
            "timestampMilliseconds": stored.timestampMilliseconds, "type": stored.event.type.description,
        ]
        for (name, field) in fields(stored.event) { object[name] = field.json }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
