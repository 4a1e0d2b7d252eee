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
    static func sentence(_ event: Event, _ state: ControllerState) -> String { EventProse.sentence(event, state) }

    /// The time as ISO 8601 in UTC with milliseconds.
    static func time(_ timestampMilliseconds: Int64) -> String { EventProse.time(timestampMilliseconds) }

    /// One JSON object (a single line) for `log show -json` and `log export -format jsonl`.
    static func jsonLine(_ stored: StoredEvent) -> String {
        var object: [String: Any] = [
            "seq": stored.sequence, "time": time(stored.timestampMilliseconds),
            "timestampMilliseconds": stored.timestampMilliseconds, "type": stored.event.type.description,
        ]
        for (name, field) in fields(stored.event) { object[name] = field.json }
        // Who asked for it; absent for the controller's own events.
        if let caller = stored.caller {
            object["uid"] = caller.uid
            object["gid"] = caller.gid
            object["pid"] = caller.pid
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
