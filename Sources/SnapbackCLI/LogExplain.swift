import ArgumentParser
import Foundation
import SnapbackCore
import SnapbackLog

/// `snapback log explain MAP|VOLUME`: the story of one object in plain sentences, with the
/// sequence numbers as evidence.
struct LogExplain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain", abstract: "Tell the story of one lcmap or volume, with sequence numbers as evidence.")

    @OptionGroup var location: LogLocation
    @Argument(help: "An lcmap or a volume, by name (or id).") var object: String

    func run() throws {
        let log = try location.open()
        // The object is every id that ever carried the name (its history survives renames).
        let (volumeIDs, mapIDs) = try LogShow.identities(log, volume: object, map: object)
        var story = Story(object: object)
        story.volumeIDs = volumeIDs
        story.mapIDs = mapIDs
        var state = ControllerState()
        try log.scan { record in
            let stored = try EventLog.storedEvent(record)
            story.observe(stored, before: state)
            state.apply(stored.event, at: stored.timestampMilliseconds)
            return true
        }
        guard !story.lines.isEmpty else {
            throw CLIError(code: "unknown_object", message: "the log never mentions an lcmap or volume called \(object)")
        }
        story.lines.forEach { print($0) }
    }
}

/// Builds the sentences while the log is folded.
struct Story {
    let object: String
    var lines: [String] = []
    var mapIDs: Set<MapID> = []
    var volumeIDs: Set<VolumeID> = []
    /// Controller starts seen while a rollback of the object was running.
    var restartsDuringRollback: [MapID: Int] = [:]

    init(object: String) { self.object = object }

    mutating func observe(_ stored: StoredEvent, before state: ControllerState) {
        let seq = stored.sequence
        let time = EventText.time(stored.timestampMilliseconds)
        func say(_ sentence: String) { lines.append("seq \(seq)  \(time)  \(sentence)") }
        func volumeName(_ id: VolumeID) -> String { state.volumes[id]?.name ?? "#\(id)" }
        func mapName(_ id: MapID) -> String { state.maps[id]?.name ?? "#\(id)" }
        func forward(_ id: MapID) -> LCMap? { state.maps[id] }
        /// Forward maps of the object: the map itself, or the maps whose source is the volume.
        func concernsMap(_ id: MapID) -> Bool {
            if mapIDs.contains(id) { return true }
            guard let map = state.maps[id] else { return false }
            return volumeIDs.contains(map.sourceID) || volumeIDs.contains(map.targetID)
        }

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
            if concernsMap(id) { say("lcmap \(mapName(id)): autorestore set \(autorestore ? "on" : "off") by chlcmap") }
        case let .mapCopyRateChanged(id, copyRate):
            if concernsMap(id) { say("lcmap \(mapName(id)): copyrate set to \(copyRate) by chlcmap") }
        case let .mapStarted(id, _):
            if concernsMap(id) { say("lcmap \(mapName(id)) started by startlcmap: point-in-time image of \(volumeName(forward(id)?.sourceID ?? 0)) taken") }
        case let .mapCopyCompleted(id):
            if concernsMap(id) { say("lcmap \(mapName(id)): background copy completed; the target holds the whole image") }
        case let .mapStopped(id):
            if concernsMap(id) { say("lcmap \(mapName(id)) stopped: its image is no longer valid") }
        case let .mapRemoved(id):
            if concernsMap(id) { say("lcmap \(mapName(id)) removed by rmlcmap") }
        case let .volumeFaulted(id, faultID, cause, reason):
            let sourceOfObject = state.maps.values.contains { mapIDs.contains($0.id) && $0.role == .forward && $0.sourceID == id }
            if volumeIDs.contains(id) || sourceOfObject {
                let who = cause == .operator ? "reported by an operator (snapback fault)" : "detected by the controller (\(cause))"
                say("volume \(volumeName(id)) faulted (fault \(faultID)), \(who): \(reason)")
            }
        case let .rollbackStarted(id, trigger, faultID):
            if concernsMap(id) {
                restartsDuringRollback[id] = 0
                let cause = faultID.map { " because of fault \($0)" } ?? ""
                let how = trigger == .auto ? "automatically by the controller (autorestore on)\(cause)" : "by an operator (startlcmap -restore)\(cause)"
                say("rollback of lcmap \(mapName(id)) onto \(volumeName(forward(id)?.sourceID ?? 0)) started \(how)")
            }
        case let .rollbackCompleted(id):
            if concernsMap(id) {
                let restarts = restartsDuringRollback.removeValue(forKey: id) ?? 0
                let grains = state.maps[id]?.rollback.map { ", \($0.grainsToRestore) grains restored" } ?? ""
                say("rollback of lcmap \(mapName(id)) finished\(grains) after \(restarts) controller restart\(restarts == 1 ? "" : "s"); \(volumeName(forward(id)?.sourceID ?? 0)) online")
            }
        case let .rollbackStopped(id, reason):
            if concernsMap(id) {
                restartsDuringRollback[id] = nil
                say("rollback of lcmap \(mapName(id)) stopped before it finished (\(reason)); \(volumeName(forward(id)?.sourceID ?? 0)) left faulted")
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
                say("fault \(faultID) of volume \(volumeName(id)) says the damage began at \(EventText.time(onset)): only an image taken at or before it is rolled back")
            }
        case let .rollbackRestarted(id, faultID):
            if concernsMap(id) {
                say("rollback of lcmap \(mapName(id)) restarted for fault \(faultID) (a fault during the rollback): every grain written since the image is restored again")
            }
        case let .volumeSpaceRestored(id):
            if volumeIDs.contains(id) { say("volume \(volumeName(id)) has space again (a write succeeded): online") }
        case .controllerStarted:
            for id in restartsDuringRollback.keys { restartsDuringRollback[id, default: 0] += 1 }
        case .mapPreparing, .mapPrepared, .mapStopping, .mapCopyProgressed, .rollbackProgressed:
            break
        case .groupCreated, .groupRenamed, .groupAutorestoreChanged, .groupAutorestoreDelayChanged, .groupRemoved, .mapGroupChanged,
            .groupStarted, .groupRollbackStarted, .groupMemberRestored, .groupRollbackCompleted, .groupRollbackStopped,
            .groupRollbackScheduled:
            break
        }
    }
}
