import Foundation
import SnapbackCore
import SnapbackLog

/// The status page's timeline: the last faults and rollbacks of the log, each with its sequence
/// number, its sentence (`snapback log show`'s words) and the objects whose stories it belongs
/// to. The log is folded once, on the first request, then only the records committed since the
/// last request are read: a page refreshed every second costs what was committed in that
/// second, not the size of the log.
final class StatusTimeline: @unchecked Sendable {
    /// One fault or rollback event.
    struct Entry: Sendable, Equatable {
        /// `fault`, `rollback started`, `rollback finished`...
        let kind: String
        let sequence: UInt64
        let timestampMilliseconds: Int64
        let sentence: String
        /// The objects it concerns, the one whose story it belongs to first.
        let objects: [StoryObject]
    }

    /// The entries kept: the newest ones.
    static let entriesMax = 30

    private let log: EventLog
    /// Guards ``state``, ``cursor`` and ``entries``: one fold of the log at a time.
    private let foldLock = NSLock()
    /// The state after record ``cursor`` (for names: an event is told with the state before it).
    private var state = ControllerState()
    private var cursor: UInt64 = 0
    /// Oldest first, at most ``entriesMax``.
    private var entries: [Entry] = []

    init(log: EventLog) { self.log = log }

    /// The newest entries first, after reading what the log committed since the last call.
    /// Throws what reading the log throws (a damaged record).
    func newest() throws -> [Entry] {
        try foldLock.withLock {
            let last = log.lastSequence
            if last > cursor {
                try log.scan(from: cursor + 1, through: last) { record in
                    let stored = try EventLog.storedEvent(record)
                    if let entry = Self.entry(stored, before: state) {
                        entries.append(entry)
                        if entries.count > Self.entriesMax { entries.removeFirst(entries.count - Self.entriesMax) }
                    }
                    state.apply(stored.event, at: stored.timestampMilliseconds)
                    cursor = stored.sequence
                    return true
                }
            }
            return entries.reversed()
        }
    }

    /// The timeline's entry for a fault or rollback event, `nil` for any other. A member's own
    /// rollback events are left out: its group's entry names it.
    static func entry(_ stored: StoredEvent, before state: ControllerState) -> Entry? {
        func volume(_ id: VolumeID) -> StoryObject { StoryObject(kind: .volume, name: state.volumes[id]?.name ?? String(id)) }
        func map(_ id: MapID) -> StoryObject { StoryObject(kind: .lcmap, name: state.maps[id]?.name ?? String(id)) }
        func group(_ id: GroupID) -> StoryObject { StoryObject(kind: .lcgrp, name: state.groups[id]?.name ?? String(id)) }
        /// A stand-alone map's rollback: the map, then its source.
        func rollback(_ id: MapID) -> [StoryObject]? {
            guard state.maps[id]?.groupID == nil else { return nil }
            return [map(id)] + (state.maps[id].map { [volume($0.sourceID)] } ?? [])
        }
        /// A group's rollback: the group, then its lcmaps.
        func groupRollback(_ id: GroupID) -> [StoryObject] { [group(id)] + state.members(of: id).map { map($0.id) } }

        let kind: String
        let objects: [StoryObject]
        switch stored.event {
        case let .volumeFaulted(id, _, _, _):
            (kind, objects) = ("fault", [volume(id)])
        case let .rollbackScheduled(id, _):
            guard let maps = rollback(id) else { return nil }
            (kind, objects) = ("rollback scheduled", maps)
        case let .rollbackStarted(id, _, _):
            guard let maps = rollback(id) else { return nil }
            (kind, objects) = ("rollback started", maps)
        case let .rollbackRestarted(id, _):
            guard let maps = rollback(id) else { return nil }
            (kind, objects) = ("rollback restarted", maps)
        case let .rollbackCompleted(id):
            guard let maps = rollback(id) else { return nil }
            (kind, objects) = ("rollback finished", maps)
        case let .rollbackStopped(id, _):
            guard let maps = rollback(id) else { return nil }
            (kind, objects) = ("rollback stopped", maps)
        case let .groupRollbackScheduled(id, _):
            (kind, objects) = ("rollback scheduled", groupRollback(id))
        case let .groupRollbackStarted(id, _, _):
            (kind, objects) = ("rollback started", groupRollback(id))
        case let .groupRollbackCompleted(id):
            (kind, objects) = ("rollback finished", groupRollback(id))
        case let .groupRollbackStopped(id, _):
            (kind, objects) = ("rollback stopped", groupRollback(id))
        default:
            return nil
        }
        return Entry(
            kind: kind, sequence: stored.sequence, timestampMilliseconds: stored.timestampMilliseconds,
            sentence: EventProse.sentence(stored.event, state), objects: objects)
    }
}

/// An object with a story page (`/explain/KIND/NAME`).
struct StoryObject: Sendable, Equatable {
    /// The path segment of its story page, as the CLI names the kind.
    enum Kind: String, Sendable, CaseIterable {
        case volume, lcmap, lcgrp
    }

    let kind: Kind
    let name: String

    /// `/explain/KIND/NAME`, the name percent-encoded.
    var path: String { "/explain/\(kind.rawValue)/\(Self.percentEncoded(name))" }

    /// `name` with everything but unreserved URL characters percent-encoded (names are letters,
    /// digits, `_`, `-` and `.` today; this keeps a link a link if that ever changes).
    static func percentEncoded(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}
