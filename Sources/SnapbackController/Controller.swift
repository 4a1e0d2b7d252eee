import Foundation
import SnapbackCore
import SnapbackData

/// Why a host read or write was refused. Nothing was written.
public enum HostIOError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknownVolume(String)
    case outOfRange(offset: UInt64, length: Int, sizeBytes: UInt64)
    /// The volume is a target whose map has autorestore on (or is being read for a rollback).
    case readOnly(volume: String)
    /// The volume is faulted: offline to hosts.
    case faulted(volume: String)
    /// An I/O error; the volume has been faulted.
    case io(volume: String, detail: String)
    /// The marks the write needs could not be made durable: the log's file system is full.
    /// Nothing was written; the volume stays online.
    case noSpace(volume: String, detail: String)
    /// The volume's backing store is out of space (ENOSPC, EDQUOT): the write failed, the volume
    /// is `out_of_space`; nothing was rolled back.
    case outOfSpace(volume: String, detail: String)
    /// A write of a connection opened before a rollback started onto the volume (its connection
    /// was closed then): the host issued it on the data the rollback replaced, so it is refused.
    case superseded(volume: String)

    public var description: String {
        switch self {
        case let .unknownVolume(name): "volume \(name) does not exist"
        case let .outOfRange(offset, length, size): "range \(offset)+\(length) is outside the volume's \(size) bytes"
        case let .readOnly(volume): "volume \(volume) is read-only to hosts"
        case let .faulted(volume): "volume \(volume) is faulted"
        case let .io(volume, detail): "I/O error on volume \(volume): \(detail)"
        case let .noSpace(volume, detail): "no space to record the write on volume \(volume): \(detail)"
        case let .outOfSpace(volume, detail): "volume \(volume) is out of space: \(detail)"
        case let .superseded(volume): "volume \(volume) was rolled back since this connection opened; reconnect"
        }
    }
}

/// A command refused by the controller: by the state machine, or because its effects could not
/// be made durable. Nothing changed.
public enum ControllerError: Error, Sendable, CustomStringConvertible {
    case rejected(CommandError)
    /// The log or a backing store failed; the command was not recorded.
    case storage(String)
    /// The log's file system (or its LMDB map, grown to its bound) is full; nothing was recorded.
    case storageFull(String)
    /// The durable store refuses this node's commits: a cluster node that does not lead
    /// (`not_leader`) or cannot reach its cluster (`cluster_unavailable`); nothing was recorded
    /// (see ``StorageFailure/unavailableCode``).
    case unavailable(code: String, detail: String)

    public var code: String {
        switch self {
        case let .rejected(error): error.code.rawValue
        case .storage: "storage_error"
        case .storageFull: "storage_full"
        case let .unavailable(code, _): code
        }
    }

    public var description: String {
        switch self {
        case let .rejected(error): error.description
        case let .storage(detail): "storage_error: \(detail)"
        case let .storageFull(detail): "storage_full: \(detail)"
        case let .unavailable(code, detail): detail.hasPrefix(code + ": ") ? detail : "\(code): \(detail)"
        }
    }
}

/// The controller: the committed state, the durable store, the volumes' bytes and the maps'
/// bitmaps, and the rules that carry the state machine's decisions out on the bytes (brief
/// sections 2 and 3).
///
/// Concurrency (`FamilyGates`, `Specs/data-plane.md`): work on one volume family (volumes
/// connected by maps) never holds what I/O on another family needs. Plain host I/O (no copy,
/// restore or mark owed) holds its volume's gate shared and does its disk I/O outside the state
/// lock. Commands, background steps, faults, coordinated writes and image reads hold their
/// family's gates exclusively; they release the state lock during grain copies, syncs, source
/// writes and durable commits. Durable commits go through one queue whose leader decides, commits
/// and applies a whole group with one fsync, so the state is always `reduce(log)`. In the
/// simulator one seeded thread calls everything, so the outcome depends only on the order of
/// calls. Time comes in through `clock`; nothing here reads a
/// clock, a random source or a file directly except through the ports.
public final class Controller: @unchecked Sendable {
    /// Runs `body` under the controller's lock, keeping its typed error. For reads and for
    /// decisions; whatever commits holds the gate too (``exclusive(_:)``).
    func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Runs `body` holding exclusively the gates of the family of the volumes `seeds` names
    /// (computed under the lock; `nil`: every volume), then the lock: no plain host I/O on those
    /// volumes is in flight, and none starts until it ends. I/O on other families goes on.
    /// `seeds` is evaluated again once the gates are held; if the family grew meanwhile (a map
    /// joined it), the gates are released and taken again. Faults met on the held volumes are
    /// recorded first.
    func exclusive<T, E: Error>(
        volumes seeds: () -> Set<VolumeID>?, background: Bool = false, _ body: () throws(E) -> T
    ) throws(E) -> T {
        while true {
            let (wanted, everyVolume) = locked { () -> (Set<VolumeID>, Bool) in
                let named = seeds()
                return (named.map(familyLocked) ?? Set(committed.volumes.keys), named == nil)
            }
            gates.holdExclusively(wanted, all: everyVolume, background: background)
            lock.lock()
            let now = seeds().map(familyLocked) ?? Set(committed.volumes.keys)
            if now.isSubset(of: wanted) { break }
            lock.unlock()
            gates.release()
        }
        defer {
            lock.unlock()
            gates.release()
        }
        recordPendingFaultsLocked()
        return try body()
    }

    /// ``exclusive(volumes:background:_:)`` on every volume (start-up, checkpoints, tests).
    func exclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try exclusive(volumes: { nil }, body)
    }

    /// The volumes connected to `volumes` through forward maps and consistency groups (the
    /// family: a group's members are started, faulted and rolled back together, so their volumes
    /// are one family). Must hold the lock.
    func familyLocked(_ volumes: Set<VolumeID>) -> Set<VolumeID> {
        var family = volumes
        var grew = !family.isEmpty
        var groupsIn: Set<GroupID> = []
        while grew {
            grew = false
            for map in committed.maps.values where map.role == .forward {
                let touches = family.contains(map.sourceID) || family.contains(map.targetID) || map.groupID.map(groupsIn.contains) == true
                guard touches else { continue }
                if family.insert(map.sourceID).inserted { grew = true }
                if family.insert(map.targetID).inserted { grew = true }
                if let group = map.groupID, groupsIn.insert(group).inserted { grew = true }
            }
        }
        return family
    }

    /// Runs `body` (I/O on volumes whose gates this thread holds exclusively) with the lock
    /// released, so that other families are not kept waiting; takes the lock again after.
    func unlocked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock.unlock()
        defer { lock.lock() }
        return try body()
    }

    /// The committed state: always `reduce(durable log)`.
    /// Read without the controller's lock (from a copy published at every change), so that
    /// the API and the NBD handshake never wait for a command or a copy-on-write in progress.
    public var state: ControllerState { publishedLock.withLock { published } }

    let durable: DurableStore
    let marksCoalescing: MarksCoalescing
    /// Whether host I/O or a command waits for a family's gates (a rollback step then stops
    /// early). `nil`: the gates say (snapbackd); the simulator passes a seeded choice, since its
    /// one thread never waits.
    let waitsForFamily: (@Sendable (Set<VolumeID>) -> Bool)?
    let volumeProvider: VolumeProvider
    let clock: @Sendable () -> Int64
    /// A monotonic clock in ns, for how long commands hold host I/O (reported, never decided on).
    let monotonic: @Sendable () -> UInt64
    /// The state lock (see ``FamilyGates``): brief holds only.
    let lock = NSLock()
    /// Durable commits waiting for the next group, and whether a thread leads one (guarded by
    /// `lock`; see `Controller+GroupCommit.swift`).
    var commitQueue: [CommitRequest] = []
    var committing = false
    /// Told of every group commit's events (see ``observeCommits(_:)``; guarded by `lock`).
    var commitObserver: (@Sendable ([Event], ControllerState) -> Void)?
    let gates = FamilyGates()

    /// True when the calling thread holds a family's gates (and the lock).
    var exclusivelyHeld: Bool { gates.holdsAny }
    /// Faults met under the lock alone (by host reads), recorded by the next exclusive holder,
    /// which the reader becomes before it reports the error.
    var pendingFaults: [PendingFault] = []
    /// Coordinated host writes waiting for the next batch of their family's lane, and the lanes
    /// in which a thread is making one (guarded by `batchCondition`; see
    /// `Controller+WriteBatch.swift`).
    let batchCondition = NSCondition()
    var waitingWrites: [VolumeID: [WaitingWrite]] = [:]
    var batchesInProgress: Set<VolumeID> = []
    var batchStatistics = (batches: 0, writes: 0)
    var committed: ControllerState
    /// `committed` as of the end of the last commit (never halfway through a command's events),
    /// for readers that must not wait (see `state`).
    private var published: ControllerState
    /// The controller's own state, published like `published`.
    var publishedHealth = ControllerHealth()
    let publishedLock = NSLock()
    var stores: [VolumeID: BlockStore] = [:]
    /// Each volume's host epoch: it grows when a rollback starts (or restarts) onto the volume,
    /// as its NBD connections are closed. A write carrying an older epoch (from a request read
    /// before) is refused (``HostIOError/superseded(volume:)``). Guarded by `lock`, published with
    /// the state.
    var hostEpochs: [VolumeID: UInt64] = [:]
    /// The anomaly detectors of the volumes with detection on (`Controller+Detection.swift`),
    /// guarded by `detectorsLock` (plain writes sample them outside the state lock).
    var detectors: [VolumeID: VolumeDetector] = [:]
    let detectorsLock = NSLock()
    var publishedHostEpochs: [VolumeID: UInt64] = [:]
    var bitmaps: [MapID: MapBitmaps] = [:]
    /// Where each map's background copy resumes its scan.
    var copyCursors: [MapID: UInt64] = [:]
    /// Where each running rollback resumes its scan.
    var rollbackCursors: [MapID: UInt64] = [:]
    /// Each running rollback's adaptive step (see `step(rollbackBudgetBytes:copyBudgetsBytes:)`).
    var rollbackStepBytes: [MapID: UInt64] = [:]
    /// Host I/O and commands on volumes outside the families with background work, counted at
    /// the last step (``FamilyGates/takerCount(outside:)``). Only the background loop uses it.
    var takersOutsideAtLastStep: UInt64 = 0
    /// Grains a background copy wrote to the target whose `split` marks wait for the next
    /// coalesced commit, and since when (controller clock).
    var unmarkedCopies: [MapID: (grains: Set<UInt64>, sinceMilliseconds: Int64)] = [:]
    /// Grains a rollback restored whose `restored` marks wait for the next coalesced commit.
    var unmarkedRestores: [MapID: (grains: Set<UInt64>, sinceMilliseconds: Int64)] = [:]
    /// Backoff of background work whose durable commit failed (progress, completion, abandon,
    /// faults), so that a full disk is retried, not spun on.
    var backgroundBackoff = CommitBackoff()
    var faultBackoff = CommitBackoff()
    /// Volumes whose backing store failed to open at start-up (faulted by `start`).
    public private(set) var backingProblems: [VolumeID: BackingProblem] = [:]

    /// Recovers from the durable store: replays the log, opens every volume (faulting those whose
    /// backing store is missing or resized, which may start automatic rollbacks), loads the
    /// bitmaps and records the start. Interrupted copies and rollbacks resume with ``step(budgetBytes:)``.
    public init(
        durable: DurableStore, volumes: VolumeProvider, clock: @escaping @Sendable () -> Int64, version: String,
        marksCoalescing: MarksCoalescing = .daemon, waitsForFamily: (@Sendable (Set<VolumeID>) -> Bool)? = nil,
        monotonic: @escaping @Sendable () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }
    ) throws {
        self.monotonic = monotonic
        self.marksCoalescing = marksCoalescing
        self.waitsForFamily = waitsForFamily
        self.durable = durable
        volumeProvider = volumes
        self.clock = clock
        let replayed = try durable.replayState()
        published = replayed
        committed = replayed
        try exclusive {
            for volume in committed.volumesByID {
                do throws(BackingProblem) {
                    stores[volume.id] = try volumeProvider.open(volume)
                } catch {
                    backingProblems[volume.id] = error
                }
            }
            for map in committed.mapsByID where map.role == .forward {
                var loaded = MapBitmaps(grainCount: map.grainsTotal)
                for kind in BitmapKind.allCases {
                    loaded[kind] = try durable.loadBitmap(map: map.id, kind: kind, grainCount: map.grainsTotal)
                }
                bitmaps[map.id] = loaded
            }
            startDetectorsLocked()
            _ = try commitLocked(.recordControllerStart(version: version))
            for (volumeID, problem) in backingProblems.sorted(by: { $0.key < $1.key }) {
                guard let volume = committed.volumes[volumeID], volume.status != .faulted else { continue }
                let reason = String(problem.description.prefix(Limits.reasonBytesMax / 4))
                _ = try commitLocked(.reportFault(volume: String(volumeID), cause: problem.faultCause, reason: reason))
            }
        }
    }

    // MARK: - Commands

    /// Decides `command` against the committed state and, when accepted, makes its events (and
    /// the bitmap changes and backing stores they need) durable before returning them. Its
    /// events record `caller` (who asked), except those the controller decides by itself.
    /// - Throws: ``ControllerError``; on error nothing was recorded or changed.
    @discardableResult
    public func execute(_ command: Command, caller: Caller? = nil) throws(ControllerError) -> [Event] {
        try executeRecorded(command, caller: caller).events
    }

    /// ``execute(_:caller:)``, also returning the sequence number of the last event the command
    /// recorded (the log's last sequence number when it recorded none).
    public func executeRecorded(_ command: Command, caller: Caller? = nil) throws(ControllerError) -> (events: [Event], lastSequence: UInt64) {
        let outcome = try executeTimed(command, caller: caller)
        return (outcome.events, outcome.lastSequence)
    }

    /// ``executeRecorded(_:caller:)``, also returning how long the command held host I/O of the
    /// volumes it touches, by `monotonic`: from the moment it asks for their gates (a write that
    /// arrives then waits) to the moment it releases them, so including its wait for the gates
    /// and for the group commit.
    ///
    /// A group start (`startlcgrp`) first syncs every member's source without holding anything,
    /// so that the syncs of the start itself, under the gates, find little to write: the hold
    /// is short whatever the group's size (`tools/bench groups`).
    public func executeTimed(
        _ command: Command, caller: Caller? = nil
    ) throws(ControllerError) -> (events: [Event], lastSequence: UInt64, heldNanoseconds: UInt64) {
        if case let .startGroup(name) = command { syncMemberSources(of: name) }
        let began = monotonic()
        let (events, last) = try exclusive(volumes: { volumesNamedLocked(by: command) }) { () throws(ControllerError) -> ([Event], UInt64) in
            let events = try commitLocked(command, caller: caller)
            return (events, committed.eventsApplied)
        }
        return (events, last, monotonic() &- began)
    }

    /// Syncs the sources of group `name`'s members, holding neither gates nor the lock during
    /// the syncs (host I/O goes on). A failed sync changes nothing: the start syncs again under
    /// the gates and reports a failure there.
    private func syncMemberSources(of name: String) {
        let sources = locked { () -> [BlockStore] in
            guard let group = committed.group(name) else { return [] }
            return committed.members(of: group.id).compactMap { stores[$0.sourceID] }
        }
        _ = Self.syncAll(sources)
    }

    /// Decides `command` and commits its events (with `extra` bitmap changes) in the next group
    /// commit, then applies them; they record `caller`. Must hold the lock and a family's gates.
    func commitLocked(_ command: Command, caller: Caller? = nil, bitmapChanges extra: [BitmapChange] = []) throws(ControllerError) -> [Event] {
        try commitGrouped(CommitRequest(.commit(commands: [command], marks: BitmapMarks(), extra: extra), caller: caller))
    }

    /// Calls `observer` after every durable commit with its events and the state after them (for
    /// snapbackd: a rollback that starts closes the NBD connections to its source). It runs under
    /// the controller's lock: it must not block or call the controller.
    public func observeCommits(_ observer: @escaping @Sendable ([Event], ControllerState) -> Void) {
        locked { commitObserver = observer }
    }

    /// Publishes `committed` for readers that must not wait (see `state`).
    func publishState() {
        publishedLock.withLock {
            published = committed
            publishedHostEpochs = hostEpochs
        }
    }

    /// The host epoch of `volume` as last published (see ``hostEpochs``): an NBD connection takes
    /// it when it opens the export.
    public func hostEpoch(of volume: VolumeID) -> UInt64 {
        publishedLock.withLock { publishedHostEpochs[volume] ?? 0 }
    }

    /// Refuses a write that carries an epoch older than the volume's. Must hold the lock.
    func checkHostEpochLocked(_ volume: Volume, _ epoch: UInt64?) throws(HostIOError) {
        guard let epoch, epoch != hostEpochs[volume.id] ?? 0 else { return }
        throw .superseded(volume: volume.name)
    }

    /// Mirrors a committed event onto the in-memory bytes and bitmaps.
    func applyCommitted(_ event: Event, at timestamp: Int64, created: [VolumeID: BlockStore]) {
        let before = committed
        committed.apply(event, at: timestamp)
        updateDetectorsLocked(after: event)
        switch event {
        case let .volumeCreated(id, _, _, _):
            stores[id] = created[id]
        case let .volumeRecovered(id):
            if let store = created[id] {
                stores[id] = store
                backingProblems[id] = nil
            }
        case let .volumeRemoved(id):
            stores[id] = nil
            if let volume = before.volumes[id] { volumeProvider.remove(volume) }
        case let .mapCreated(created):
            bitmaps[created.id] = MapBitmaps(grainCount: committed.maps[created.id]?.grainsTotal ?? 0)
        case let .mapStarted(id, _):
            bitmaps[id] = MapBitmaps(grainCount: committed.maps[id]?.grainsTotal ?? 0)
            forgetUnmarkedLocked(id)
            copyCursors[id] = 0
        case let .mapRemoved(id):
            bitmaps[id] = nil
            forgetUnmarkedLocked(id)
            copyCursors[id] = nil
        case let .rollbackCompleted(id), let .rollbackStopped(id, _), let .rollbackRestarted(id, _):
            bitmaps[id]?.restored.clearAll()
            forgetUnmarkedLocked(id)
            if case .rollbackRestarted = event, let source = committed.maps[id]?.sourceID { hostEpochs[source, default: 0] += 1 }
        case let .rollbackStarted(id, _, _):
            forgetUnmarkedLocked(id)
            if let source = committed.maps[id]?.sourceID { hostEpochs[source, default: 0] += 1 }
        case let .mapStopped(id), let .mapStopping(id), let .mapCopyCompleted(id):
            forgetUnmarkedLocked(id)
        default:
            break
        }
    }

    /// Drops the marks `map`'s copy or rollback has not made yet, and its rollback's cursor: an
    /// event changed what they would mean (the copies are simply made again if still owed).
    func forgetUnmarkedLocked(_ map: MapID) {
        unmarkedCopies[map] = nil
        unmarkedRestores[map] = nil
        rollbackCursors[map] = nil
        rollbackStepBytes[map] = nil
    }

    /// Commits `marks` with the events of `commands` (decided in order, each against the state
    /// the ones before it leave) in the next group commit, writing only the bitmap chunks the
    /// marks touch; then applies the marks in place and the events. Must hold the lock and a
    /// family's gates.
    func commit(marks: BitmapMarks, commands: [Command] = []) throws(ControllerError) {
        _ = try commitGrouped(CommitRequest(.commit(commands: commands, marks: marks, extra: [])))
    }

    /// A copy of `map`'s bitmaps (for tests and the simulator's invariants).
    public func bitmaps(of map: MapID) -> (split: GrainBitmap, dirty: GrainBitmap, restored: GrainBitmap)? {
        locked { bitmaps[map].map { ($0.split, $0.dirty, $0.restored) } }
    }

    /// Saves a checkpoint of the committed state (between two commits: `reduce` of a prefix).
    public func checkpoint() throws {
        try locked { () throws(ControllerError) in _ = try commitGrouped(CommitRequest(.checkpoint)) }
    }

    /// The volumes a command names (by name or id), as the committed state resolves them; the
    /// command holds their family. Must hold the lock.
    func volumesNamedLocked(by command: Command) -> Set<VolumeID> {
        func volume(_ name: String) -> [VolumeID] { committed.volume(name).map { [$0.id] } ?? [] }
        func map(_ name: String) -> [VolumeID] { committed.map(name).map { [$0.sourceID, $0.targetID] } ?? [] }
        func map(_ id: MapID) -> [VolumeID] { committed.maps[id].map { [$0.sourceID, $0.targetID] } ?? [] }
        func group(_ id: GroupID?) -> [VolumeID] {
            guard let id else { return [] }
            return committed.members(of: id).flatMap { [$0.sourceID, $0.targetID] }
        }
        func group(_ name: String) -> [VolumeID] { group(committed.group(name)?.id) }
        switch command {
        case .createVolume, .recordControllerStart:
            return []
        case let .removeVolume(name), let .reportFault(name, _, _, _), let .recoverVolume(name), let .changeVolume(name, _, _, _):
            return Set(volume(name))
        case let .reportAnomaly(id, _), let .recordDetectorBaseline(id, _):
            return committed.volumes[id] == nil ? [] : [id]
        case let .createMap(created):
            return Set(volume(created.source) + volume(created.target) + (created.group.map(group) ?? []))
        case let .changeMap(name, _, _, _, _, change):
            var joined: [VolumeID] = []
            if case let .join(name) = change { joined = group(name) }
            return Set(map(name) + joined)
        case let .prepareMap(name), let .startMap(name), let .startRestore(name), let .stopMap(name, _), let .removeMap(name, _):
            return Set(map(name))
        case .createGroup:
            return []
        case let .changeGroup(name, _, _, _), let .removeGroup(name, _), let .startGroup(name), let .startGroupRestore(name),
            let .stopGroup(name, _):
            return Set(group(name))
        case let .startScheduledGroupRollback(id), let .completeGroupRollback(id):
            return Set(group(id))
        case let .recordCopyProgress(id, _), let .completeCopy(id), let .recordRollbackProgress(id, _, _), let .completeRollback(id),
            let .abandonRollback(id, _), let .startScheduledRollback(id):
            return Set(map(id))
        case let .reportOutOfSpace(id, _), let .recordSpaceRestored(id):
            return committed.volumes[id] == nil ? [] : [id]
        }
    }
}
