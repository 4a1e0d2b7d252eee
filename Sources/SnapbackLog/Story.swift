import Foundation
import SnapbackCore

/// The story of one object (an lcmap, an lcgrp or a volume, by name or id): what
/// `snapback log explain` prints and the status page's story pages show. Built while the log is
/// folded: ``observe(_:before:)`` gets every event with the state before it.
public struct Story: Sendable {
    /// One sentence with its evidence: the sequence number and time of the event it tells.
    public struct Line: Sendable, Equatable {
        public let sequence: UInt64
        public let timestampMilliseconds: Int64
        public let sentence: String

        /// The line as `log explain` prints it: `seq N  TIME  SENTENCE`.
        public var text: String { "seq \(sequence)  \(EventProse.time(timestampMilliseconds))  \(sentence)" }
    }

    /// The name (or decimal id) the story is about.
    public let object: String
    /// The sentences so far, in log order.
    public private(set) var lines: [Line] = []
    var mapIDs: Set<MapID> = []
    var volumeIDs: Set<VolumeID> = []
    var groupIDs: Set<GroupID> = []
    /// Controller starts seen while a rollback of the object was running.
    var restartsDuringRollback: [MapID: Int] = [:]
    /// Controller starts seen while a rollback of the object's group was running.
    var restartsDuringGroupRollback: [GroupID: Int] = [:]
    /// The event before this one: `MapCreated` just before a map's `MapGroupChanged`, with the
    /// same time, is `mklcmap -lcgrp`.
    var previous: StoredEvent?
    /// Maps that just left a group, one after the other with the same time: followed by the
    /// group's `GroupRemoved`, they are `rmlcgrp -force`'s.
    var leaving: (groupID: GroupID, count: Int)?

    /// A story about `object` whose ids the log already named (see ``EventLog/identities(volume:map:group:)``):
    /// the object's history survives renames.
    public init(object: String, identities: LogIdentities) {
        self.object = object
        volumeIDs = identities.volumeIDs
        mapIDs = identities.mapIDs
        groupIDs = identities.groupIDs
    }

    /// Takes the next event of the log; `state` is the state before it.
    public mutating func observe(_ stored: StoredEvent, before state: ControllerState) {
        let seq = stored.sequence
        // A command's sentence ends with who ran it; the controller's own say so themselves.
        let who = stored.caller.map { "; \(EventProse.caller($0))" } ?? ""
        func say(_ sentence: String) {
            lines.append(Line(sequence: seq, timestampMilliseconds: stored.timestampMilliseconds, sentence: sentence + who))
        }
        let previous = self.previous
        let leaving = self.leaving
        self.previous = stored
        self.leaving = nil
        // The previous event was recorded in the same commit (at the same time, just before).
        let sameCommitAsPrevious = previous.map { $0.sequence + 1 == seq && $0.timestampMilliseconds == stored.timestampMilliseconds } ?? false
        func volumeName(_ id: VolumeID) -> String { state.volumes[id]?.name ?? "#\(id)" }
        func mapName(_ id: MapID) -> String { state.maps[id]?.name ?? "#\(id)" }
        func groupName(_ id: GroupID) -> String { state.groups[id]?.name ?? "#\(id)" }
        func forward(_ id: MapID) -> LCMap? { state.maps[id] }
        func sourceName(_ id: MapID) -> String { volumeName(forward(id)?.sourceID ?? 0) }
        /// Forward maps of the object: the map itself, or the maps whose source is the volume.
        func concernsMap(_ id: MapID) -> Bool {
            if mapIDs.contains(id) { return true }
            guard let map = state.maps[id] else { return false }
            return volumeIDs.contains(map.sourceID) || volumeIDs.contains(map.targetID)
        }
        /// A member of one of the object's groups: its key events (started, stopped, rolled
        /// back) belong to the group's story while it is a member.
        func isMember(_ id: MapID) -> Bool { state.maps[id]?.groupID.map(groupIDs.contains) ?? false }
        /// " with lcgrp G" for a member of a group, else "".
        func withGroup(_ id: MapID) -> String { state.maps[id]?.groupID.map { " with lcgrp \(groupName($0))" } ?? "" }
        /// Maps of the object in group `id`: the group's events belong to their story.
        func concernsGroupOfMap(_ id: GroupID) -> Bool { state.members(of: id).contains { concernsMap($0.id) } }
        /// "fault N on volume V": the volume whose current fault is `faultID`.
        func faultText(_ faultID: FaultID) -> String {
            guard let volume = state.volumes.values.first(where: { $0.fault?.id == faultID }) else { return "fault \(faultID)" }
            return "fault \(faultID) on volume \(volume.name)"
        }
        /// The group holds images of one start of exactly its lcmaps: a change of membership
        /// keeps it from rolling back until it is started again (`group_changed`).
        func holdsImages(_ id: GroupID) -> Bool {
            guard let group = state.groups[id], let ordinal = group.startOrdinal else { return false }
            let members = state.members(of: id)
            return members.map(\.id) == group.imageMembers && members.allSatisfy { $0.imageValid && $0.startOrdinal == ordinal }
        }
        func names(_ maps: [LCMap]) -> String { maps.map(\.name).joined(separator: ", ") }
        func sources(_ maps: [LCMap]) -> String { maps.map { volumeName($0.sourceID) }.joined(separator: ", ") }
        func restarts(_ count: Int) -> String { "\(count) controller restart\(count == 1 ? "" : "s")" }

        switch stored.event {
        case let .volumeCreated(id, name, sizeBytes, path):
            if name == object || String(id) == object {
                volumeIDs.insert(id)
                say("volume \(name) created by mkvolume, \(sizeBytes) bytes" + (path.map { ", backed by \($0)" } ?? ""))
            }
        case let .mapCreated(created):
            if created.name == object || created.reverseName == object || String(created.id) == object {
                mapIDs.formUnion([created.id, created.reverseID])
            }
            if mapIDs.contains(created.id) || volumeIDs.contains(created.sourceID) || volumeIDs.contains(created.targetID) {
                say(
                    "lcmap \(created.name) created by mklcmap from \(volumeName(created.sourceID)) to \(volumeName(created.targetID)) with autorestore \(created.autorestore ? "on" : "off"), copyrate \(created.copyRate); reverse map \(created.reverseName)")
            }
        case let .mapRenamed(id, name, _):
            if concernsMap(id) { say("lcmap \(mapName(id)) renamed to \(name) by chlcmap") }
        case let .mapAutorestoreChanged(id, autorestore):
            if concernsMap(id) {
                let governed = state.maps[id]?.groupID.map { " (lcgrp \(groupName($0))'s autorestore governs it while it is a member)" } ?? ""
                say("lcmap \(mapName(id)): autorestore set \(autorestore ? "on" : "off") by chlcmap\(governed)")
            }
        case let .mapCopyRateChanged(id, copyRate):
            if concernsMap(id) { say("lcmap \(mapName(id)): copyrate set to \(copyRate) by chlcmap") }
        case let .mapStarted(id, _):
            if concernsMap(id) || isMember(id) {
                let how = state.maps[id]?.groupID.map { "with lcgrp \(groupName($0)) by startlcgrp" } ?? "by startlcmap"
                say("lcmap \(mapName(id)) started \(how): point-in-time image of \(sourceName(id)) taken")
            }
        case let .mapCopyCompleted(id):
            if concernsMap(id) { say("lcmap \(mapName(id)): background copy completed; the target holds the whole image") }
        case let .mapStopped(id):
            if concernsMap(id) || isMember(id) { say("lcmap \(mapName(id)) stopped\(withGroup(id)): its image is no longer valid") }
        case let .mapRemoved(id):
            if concernsMap(id) || isMember(id) {
                let leaves = state.maps[id]?.groupID.map { "; it leaves lcgrp \(groupName($0))" } ?? ""
                say("lcmap \(mapName(id)) removed by rmlcmap\(leaves)")
            }
        case let .volumeFaulted(id, faultID, cause, reason):
            let forwards = state.maps.values.filter { $0.role == .forward }
            let sourceOfObject = forwards.contains { mapIDs.contains($0.id) && $0.sourceID == id }
            let volumeOfMember = forwards.contains { isMember($0.id) && ($0.sourceID == id || $0.targetID == id) }
            if volumeIDs.contains(id) || sourceOfObject || volumeOfMember {
                let who = cause == .operator ? "reported by an operator (snapback fault)" : "detected by the controller (\(cause))"
                say("volume \(volumeName(id)) faulted (fault \(faultID)), \(who): \(reason)")
            }
        case let .rollbackStarted(id, trigger, faultID):
            if concernsMap(id) || isMember(id) {
                restartsDuringRollback[id] = 0
                let cause = faultID.map { " because of fault \($0)" } ?? ""
                let how: String
                if let group = state.maps[id]?.groupID {
                    // The group's record precedes its members' in the same commit.
                    let who = trigger == .auto ? "automatically (lcgrp \(groupName(group))'s autorestore on)" : "by an operator (startlcgrp -restore)"
                    how = "with lcgrp \(groupName(group)) \(who)\(cause)"
                } else {
                    how = trigger == .auto ? "automatically by the controller (autorestore on)\(cause)" : "by an operator (startlcmap -restore)\(cause)"
                }
                let image = state.maps[id]?.startedAtMilliseconds.map { "; the image restored was taken at \(EventProse.time($0))" } ?? ""
                say("rollback of lcmap \(mapName(id)) onto \(sourceName(id)) started \(how)\(image)")
            }
        case let .rollbackCompleted(id):
            if concernsMap(id) || isMember(id) {
                let count = restartsDuringRollback.removeValue(forKey: id) ?? 0
                let grains = state.maps[id]?.rollback.map { ", \($0.grainsToRestore) grains restored" } ?? ""
                say("rollback of lcmap \(mapName(id)) finished\(withGroup(id))\(grains) after \(restarts(count)); \(sourceName(id)) online")
            }
        case let .rollbackStopped(id, reason):
            if concernsMap(id) || isMember(id) {
                restartsDuringRollback[id] = nil
                say("rollback of lcmap \(mapName(id)) stopped\(withGroup(id)) before it finished (\(reason)); \(sourceName(id)) left faulted")
            }
        case let .volumeRecovered(id):
            if volumeIDs.contains(id) { say("volume \(volumeName(id)) recovered by recovervolume: its data accepted as it was") }
        case let .volumeRemoved(id):
            if volumeIDs.contains(id) { say("volume \(volumeName(id)) removed by rmvolume") }
        case let .volumeOutOfSpace(id, reason):
            if volumeIDs.contains(id) {
                say("volume \(volumeName(id)) ran out of space (\(reason)): writes answer ENOSPC, reads work; not a fault, nothing rolled back")
            }
        case let .mapAutorestoreDelayChanged(id, seconds):
            if concernsMap(id) { say("lcmap \(mapName(id)): autorestore hold window set to \(seconds) s") }
        case let .rollbackScheduled(id, faultID):
            if concernsMap(id) {
                let delay = state.maps[id]?.autorestoreDelaySeconds ?? 0
                say("automatic rollback of lcmap \(mapName(id)) for fault \(faultID) scheduled in \(delay) s (its hold window); recovervolume cancels it, startlcmap -restore starts a chosen image now")
            }
        case let .faultOnset(id, faultID, onset):
            if volumeIDs.contains(id) {
                say("fault \(faultID) of volume \(volumeName(id)) says the damage began at \(EventProse.time(onset)): only an image taken at or before it is rolled back")
            }
        case let .rollbackRestarted(id, faultID):
            if concernsMap(id) || isMember(id) {
                say("rollback of lcmap \(mapName(id)) restarted\(withGroup(id)) for fault \(faultID) (a fault during the rollback): every grain written since the image is restored again")
            }
        case let .volumeSpaceRestored(id):
            if volumeIDs.contains(id) { say("volume \(volumeName(id)) has space again (a write succeeded): online") }
        case .controllerStarted:
            for id in restartsDuringRollback.keys { restartsDuringRollback[id, default: 0] += 1 }
            for id in restartsDuringGroupRollback.keys { restartsDuringGroupRollback[id, default: 0] += 1 }
        case .mapPreparing, .mapPrepared, .mapStopping, .mapCopyProgressed, .rollbackProgressed, .detectorBaselineSaved:
            break

        // The anomaly detector (Specs/detection.md).
        case let .volumeRenamed(id, name):
            if name == object { volumeIDs.insert(id) }
            if volumeIDs.contains(id) { say("volume \(volumeName(id)) renamed to \(name) by chvolume") }
        case let .volumeDetectionChanged(id, enabled, sensitivity):
            if volumeIDs.contains(id) {
                say("volume \(volumeName(id)): anomaly detection " + (enabled ? "turned on, sensitivity \(sensitivity)" : "turned off"))
            }
        case let .anomalyDetected(id, score, onset, evidence):
            if volumeIDs.contains(id) {
                let first = evidence.first.map { ", first anomalous interval at \(EventProse.time($0.startMilliseconds))" } ?? ""
                let increases = evidence.reduce(0) { $0 + Int($1.entropyIncreases) }
                let overwrites = evidence.reduce(0) { $0 + Int($1.overwriteSamples) }
                say("the controller's anomaly detector fired on volume \(volumeName(id)): score \(score) of 100, \(increases) of \(overwrites) sampled overwrites over \(evidence.count) intervals replaced plain data with high-entropy data\(first); the damage began no earlier than \(EventProse.time(onset)), so only an image taken at or before it is rolled back")
            }

        // Consistency groups: the group's own story, and the group events of its members'.
        case let .groupCreated(id, name, autorestore, delay):
            if name == object || String(id) == object { groupIDs.insert(id) }
            if groupIDs.contains(id) {
                say("lcgrp \(name) created by mklcgrp with autorestore \(autorestore ? "on" : "off"), hold window \(delay) s")
            }
        case let .groupRenamed(id, name):
            if groupIDs.contains(id) { say("lcgrp \(groupName(id)) renamed to \(name) by chlcgrp") }
        case let .groupAutorestoreChanged(id, autorestore):
            if groupIDs.contains(id) {
                say("lcgrp \(groupName(id)): autorestore set \(autorestore ? "on" : "off") by chlcgrp (it governs the automatic rollbacks of its lcmaps)")
            }
        case let .groupAutorestoreDelayChanged(id, seconds):
            if groupIDs.contains(id) { say("lcgrp \(groupName(id)): autorestore hold window set to \(seconds) s by chlcgrp") }
        case let .mapGroupChanged(id, group):
            let old = state.maps[id]?.groupID
            guard concernsMap(id) || group.map(groupIDs.contains) == true || old.map(groupIDs.contains) == true else { break }
            let map = state.maps[id]
            let volumes = map.map { " (\(volumeName($0.sourceID)) -> \(volumeName($0.targetID)))" } ?? ""
            if let group {
                // mklcmap -lcgrp records the map and its move in one commit.
                var how = "by chlcmap -lcgrp"
                if case let .mapCreated(made) = previous?.event, made.id == id, sameCommitAsPrevious { how = "by mklcmap -lcgrp" }
                let from = old.map { " from lcgrp \(groupName($0))" } ?? ""
                let note = holdsImages(group) ? "; lcgrp \(groupName(group))'s images no longer match its lcmaps: it cannot be rolled back until it is started again" : ""
                say("lcmap \(mapName(id))\(volumes) moved into lcgrp \(groupName(group))\(from) \(how)\(note)")
            } else if let old {
                let count = leaving.map { $0.groupID == old && sameCommitAsPrevious ? $0.count : 0 } ?? 0
                self.leaving = (old, count + 1)
                let note = holdsImages(old) ? "; lcgrp \(groupName(old))'s images no longer match its lcmaps: it cannot be rolled back until it is started again" : ""
                say("lcmap \(mapName(id))\(volumes) moved out of lcgrp \(groupName(old))\(note)")
            }
        case let .groupStarted(id, _, members):
            if groupIDs.contains(id) {
                let maps = members.compactMap { state.maps[$0] }
                say("lcgrp \(groupName(id)) started by startlcgrp: images of its \(members.count) lcmap\(members.count == 1 ? "" : "s") \(names(maps)) taken at one instant")
            }
        case let .groupRollbackStarted(id, trigger, faultID):
            if groupIDs.contains(id) {
                restartsDuringGroupRollback[id] = 0
                let members = state.members(of: id)
                let how: String
                if trigger == .auto {
                    how = "automatically by the controller (the group's autorestore on)" + (faultID.map { " because of \(faultText($0))" } ?? "")
                } else {
                    how = "by an operator (startlcgrp -restore)" + (faultID.map { " after \(faultText($0))" } ?? "")
                }
                say("rollback of lcgrp \(groupName(id)) to its images started \(how): every lcmap (\(names(members))) rolls back, sources that did not fault too")
            }
        case let .groupMemberRestored(id):
            if concernsMap(id) || isMember(id) {
                let group = state.maps[id]?.groupID.map { "lcgrp \(groupName($0))" } ?? "its lcgrp"
                let grains = state.maps[id]?.rollback.map { " (\($0.grainsToRestore) grains)" } ?? ""
                say("rollback of lcmap \(mapName(id)) restored every grain\(grains); \(sourceName(id)) stays restoring until every lcmap of \(group) has")
            }
        case let .groupRollbackCompleted(id):
            if groupIDs.contains(id) {
                let count = restartsDuringGroupRollback.removeValue(forKey: id) ?? 0
                // Its members' RollbackCompleted records precede it in the same commit.
                say("rollback of lcgrp \(groupName(id)) finished after \(restarts(count)): every source online together (\(sources(state.members(of: id))))")
            }
        case let .groupRollbackStopped(id, reason):
            if groupIDs.contains(id) {
                restartsDuringGroupRollback[id] = nil
                // Its members' RollbackStopped records precede it: their rollbacks are gone.
                say("rollback of lcgrp \(groupName(id)) stopped before it finished (\(reason)); every source left faulted (\(sources(state.members(of: id))))")
            }
        case let .groupRollbackScheduled(id, faultID):
            if groupIDs.contains(id) || concernsGroupOfMap(id) {
                let delay = state.groups[id]?.autorestoreDelaySeconds ?? 0
                say("automatic rollback of lcgrp \(groupName(id)) for \(faultText(faultID)) scheduled in \(delay) s (its hold window); recovervolume cancels it, startlcgrp -restore starts it now")
            }
        case let .groupRemoved(id):
            if groupIDs.contains(id) {
                // rmlcgrp -force moves the members out in the same commit, just before.
                if let leaving, leaving.groupID == id, sameCommitAsPrevious {
                    say("lcgrp \(groupName(id)) removed by rmlcgrp -force; its \(leaving.count) lcmap\(leaving.count == 1 ? "" : "s") left stand-alone")
                } else {
                    say("lcgrp \(groupName(id)) removed by rmlcgrp")
                }
            }
        }
    }
}

/// The objects a story or a filter is about: every id that ever carried a name.
public struct LogIdentities: Sendable, Equatable {
    public var volumeIDs: Set<VolumeID> = []
    public var mapIDs: Set<MapID> = []
    public var groupIDs: Set<GroupID> = []

    public init(volumeIDs: Set<VolumeID> = [], mapIDs: Set<MapID> = [], groupIDs: Set<GroupID> = []) {
        self.volumeIDs = volumeIDs
        self.mapIDs = mapIDs
        self.groupIDs = groupIDs
    }
}

extension EventLog {
    /// The ids that ever carried the given volume, map and group names (or are those decimal
    /// ids): one pass over the log. Throws what ``scan(from:through:_:)`` throws.
    public func identities(volume: String?, map: String?, group: String? = nil) throws -> LogIdentities {
        var found = LogIdentities()
        if let volume, let id = VolumeID(volume), String(id) == volume { found.volumeIDs.insert(id) }
        if let map, let id = MapID(map), String(id) == map { found.mapIDs.insert(id) }
        if let group, let id = GroupID(group), String(id) == group { found.groupIDs.insert(id) }
        guard volume != nil || map != nil || group != nil else { return found }
        try scan { record in
            switch try EventLog.storedEvent(record).event {
            case let .volumeCreated(id, name, _, _) where name == volume, let .volumeRenamed(id, name) where name == volume:
                found.volumeIDs.insert(id)
            case let .mapCreated(created):
                // A map's events name the forward id; include partners so either name finds both.
                if created.name == map || created.reverseName == map { found.mapIDs.formUnion([created.id, created.reverseID]) }
            case let .mapRenamed(id, name, reverseName):
                if name == map || reverseName == map { found.mapIDs.insert(id) }
            case let .groupCreated(id, name, _, _) where name == group:
                found.groupIDs.insert(id)
            case let .groupRenamed(id, name) where name == group:
                found.groupIDs.insert(id)
            default:
                break
            }
            return true
        }
        return found
    }

    /// The story of the lcmap, lcgrp or volume called `object` (or with that id), as
    /// `snapback log explain` tells it: two passes over the whole log (the names, then the fold).
    /// Empty when the log never mentions such an object. Throws what reading the log throws.
    public func story(of object: String) throws -> [Story.Line] {
        var story = Story(object: object, identities: try identities(volume: object, map: object, group: object))
        var state = ControllerState()
        try scan { record in
            let stored = try EventLog.storedEvent(record)
            story.observe(stored, before: state)
            state.apply(stored.event, at: stored.timestampMilliseconds)
            return true
        }
        return story.lines
    }
}
