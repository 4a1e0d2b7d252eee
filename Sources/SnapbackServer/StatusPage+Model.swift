import Foundation
import SnapbackAPI
import SnapbackController
import SnapbackCore
import SnapbackLog

// What the status page's templates render: plain values, built from one snapshot of the state.
// Names go into the templates as they are; `{{name}}` escapes them for HTML.

/// The status page: the controller, its volumes, lcmaps and lcgrps, and the timeline.
struct StatusView {
    struct Link {
        let kind: String
        let name: String
        let href: String
    }

    struct VolumeItem {
        let name: String
        let href: String
        let size: String
        let sizeBytes: UInt64
        let status: String
        let faulted: Bool
        /// `fault N: REASON` while faulted.
        let fault: String?
        /// Why no automatic rollback runs, or when one will.
        let note: String?
        /// Shown when any volume has detection on: `off` for one without.
        let anomalyScore: String
    }

    struct Progress {
        let percent: Int
        let detail: String
    }

    struct MapItem {
        let name: String
        let href: String
        let reverse: String
        let source: Link
        let target: Link
        let state: String
        let copy: Progress
        let autorestore: String
        let restoring: Bool
        let rollback: Progress?
        let rollbackTrigger: String
        let group: Link?
    }

    struct GroupItem {
        let name: String
        let href: String
        let status: String
        let autorestore: String
        let maps: [Link]
        let restoring: Bool
        let rollback: Progress?
    }

    struct TimelineItem {
        let sequence: UInt64
        let time: String
        let kind: String
        let kindClass: String
        let sentence: String
        /// The story page of the first object, at this event's line.
        let href: String
        let objects: [Link]
    }

    let version: String
    let health: String
    let healthReason: String
    let degraded: Bool
    let lastSequence: UInt64
    let now: String
    let refreshSeconds: Int
    let volumes: [VolumeItem]
    let detection: Bool
    let maps: [MapItem]
    let groups: [GroupItem]
    let timeline: [TimelineItem]
    let timelineMax: Int
    let style: String

    init(
        state: ControllerState, health: ControllerHealth, anomalyScore: (VolumeID) -> Int?, timeline entries: [StatusTimeline.Entry],
        version: String, nowMilliseconds: Int64, refreshSeconds: Int
    ) {
        func link(_ object: StoryObject) -> Link { Link(kind: object.kind.rawValue, name: object.name, href: object.path) }
        func volumeLink(_ id: VolumeID) -> Link { link(StoryObject(kind: .volume, name: state.volumes[id]?.name ?? String(id))) }

        self.version = version
        self.health = health.status.rawValue
        healthReason = health.reason ?? ""
        degraded = health.status == .degraded
        lastSequence = state.eventsApplied
        now = EventProse.time(nowMilliseconds)
        self.refreshSeconds = refreshSeconds
        volumes = state.volumesByID.map { volume in
            let score = volume.detect ? anomalyScore(volume.id) : nil
            let row = VolumeRow(volume, in: state, anomalyScore: score)
            return VolumeItem(
                name: volume.name, href: StoryObject(kind: .volume, name: volume.name).path, size: Self.size(volume.sizeBytes),
                sizeBytes: volume.sizeBytes, status: row.status, faulted: volume.status == .faulted,
                fault: row.fault_id.isEmpty ? nil : "fault \(row.fault_id): \(row.fault_reason)",
                note: row.rollback_note.isEmpty ? (row.rollback_at.isEmpty ? nil : "automatic rollback at \(row.rollback_at)") : row.rollback_note,
                anomalyScore: volume.detect ? String(score ?? 0) : "off")
        }
        detection = state.volumes.values.contains { $0.detect }
        maps = state.mapsByID.filter { $0.role == .forward }.map { map in
            let row = MapRow(map, in: state)
            let copied = min(map.grainsCopied, map.grainsTotal)
            let rollback = map.rollback.map { rollback in
                let restored = rollback.awaitingGroup ? rollback.grainsToRestore : min(rollback.grainsRestored, rollback.grainsToRestore)
                let detail =
                    rollback.grainsToRestore == 0 && restored == 0 ? "counting dirty grains" : "\(restored) of \(rollback.grainsToRestore) dirty grains"
                return Progress(percent: row.restore_progress, detail: detail + (rollback.awaitingGroup ? ", waiting for its lcgrp" : ""))
            }
            return MapItem(
                name: map.name, href: StoryObject(kind: .lcmap, name: map.name).path, reverse: row.partner,
                source: volumeLink(map.sourceID), target: volumeLink(map.targetID), state: row.status,
                copy: Progress(percent: row.progress, detail: "\(copied) of \(map.grainsTotal) grains, copyrate \(map.copyRate)"),
                autorestore: row.autorestore, restoring: rollback != nil, rollback: rollback, rollbackTrigger: row.restore_trigger,
                group: map.groupID.flatMap { state.groups[$0] }.map { link(StoryObject(kind: .lcgrp, name: $0.name)) })
        }
        groups = state.groupsByID.map { group in
            let row = GroupRow(group, in: state)
            return GroupItem(
                name: group.name, href: StoryObject(kind: .lcgrp, name: group.name).path, status: row.status, autorestore: row.autorestore,
                maps: row.lcmaps.map { link(StoryObject(kind: .lcmap, name: $0)) }, restoring: group.rollback != nil,
                rollback: group.rollback.map { _ in Progress(percent: row.restore_progress, detail: "over its \(row.maps) lcmaps' dirty grains") })
        }
        timeline = entries.map { entry in
            let first = entry.objects.first.map { $0.path + "#seq-\(entry.sequence)" } ?? ""
            return TimelineItem(
                sequence: entry.sequence, time: EventProse.time(entry.timestampMilliseconds), kind: entry.kind,
                kindClass: entry.kind.replacingOccurrences(of: " ", with: "-"), sentence: entry.sentence, href: first,
                objects: entry.objects.map(link))
        }
        timelineMax = StatusTimeline.entriesMax
        style = StatusTemplates.style
    }

    /// Bytes in binary units, as sizes are given to mkvolume (`64 MiB`, `1.5 GiB`).
    static func size(_ bytes: UInt64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) bytes" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded)) \(units[unit])" : "\(rounded) \(units[unit])"
    }
}

/// A story page: what `snapback log explain NAME` prints, one list item per line.
struct StoryView {
    struct Line {
        let sequence: UInt64
        let time: String
        let sentence: String
        /// The line exactly as `log explain` prints it.
        let text: String
    }

    let kind: String
    let name: String
    let lines: [Line]
    let found: Bool
    let style: String

    init(object: StoryObject, lines: [Story.Line]) {
        kind = object.kind.rawValue
        name = object.name
        self.lines = lines.map { Line(sequence: $0.sequence, time: EventProse.time($0.timestampMilliseconds), sentence: $0.sentence, text: $0.text) }
        found = !lines.isEmpty
        style = StatusTemplates.style
    }
}

/// A refusal (unknown page, wrong method) as a small page.
struct ProblemView {
    let status: Int
    let title: String
    let message: String
    let style: String

    init(status: Int, title: String, message: String) {
        self.status = status
        self.title = title
        self.message = message
        style = StatusTemplates.style
    }
}
