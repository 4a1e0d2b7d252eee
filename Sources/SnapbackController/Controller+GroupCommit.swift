import Foundation
import Synchronization
import SnapbackCore
import SnapbackData

/// One durable commit asked for by a holder of a family's gates (or a checkpoint): commands
/// decided in order, all or none, with the bitmap marks and changes that go with them.
final class CommitRequest: @unchecked Sendable {
    enum Work {
        case commit(commands: [Command], marks: BitmapMarks, extra: [BitmapChange])
        case checkpoint
    }

    let work: Work
    /// Who asked for the commit (through the control socket): its events record it, except
    /// those the controller decides by itself (`Event.isDecidedByController`).
    let caller: Caller?
    /// Set by the thread that leads the group commit carrying this request (under the lock).
    var outcome: Result<[Event], ControllerError>?
    /// Signalled when `outcome` is set, or when this request's thread is to lead the next group.
    let wake = DispatchSemaphore(value: 0)

    init(_ work: Work, caller: Caller? = nil) {
        self.work = work
        self.caller = caller
    }
}

/// Group commit (`Specs/data-plane.md`, "Group commit"): commands, faults and marks of different
/// families that ask for a durable commit while one is in flight queue up, and the next leader
/// decides them all, in order, against the state the ones before leave, and makes them durable
/// in one log transaction, one fsync. The queue is the one serializer of durable commits: no
/// decision is made against a state that a commit in flight changes, so the state is always
/// `reduce(log)`.
extension Controller {
    /// Commits `request` in the next group and returns its events. Must hold the lock (and, for
    /// a commit, a family's gates); the lock is released while waiting and during the fsync.
    func commitGrouped(_ request: CommitRequest) throws(ControllerError) -> [Event] {
        if case .commit = request.work {
            precondition(exclusivelyHeld, "a commit without holding a family's gates")
        }
        commitQueue.append(request)
        if committing {
            // The leader answers this request, or hands the lead to it.
            unlocked { request.wake.wait() }
        } else {
            committing = true
        }
        if request.outcome == nil {
            let group = commitQueue
            commitQueue.removeAll()
            commitGroupLocked(group)
            for other in group where other !== request { other.wake.signal() }
            if let next = commitQueue.first {
                next.wake.signal()
            } else {
                committing = false
            }
        }
        guard let outcome = request.outcome else { preconditionFailure("a group commit left a request unanswered") }
        return try outcome.get()
    }

    /// Leads one group: checkpoints first (the state is `reduce(log)` between groups), then
    /// decides each commit against the preview the ones before leave (a rejected one is answered
    /// alone), commits the accepted ones' events and bitmap changes in one durable commit, and
    /// applies them in order. A failed durable commit fails every accepted request of the group.
    private func commitGroupLocked(_ group: [CommitRequest]) {
        var accepted: [(request: CommitRequest, events: [Event], marks: BitmapMarks)] = []
        var events: [Event] = []
        // Parallel to `events` once a request of the group has a caller; empty (no allocation)
        // while none has, as for the data plane's marks and the controller's own commits.
        var callers: [Caller?] = []
        var changes: [BitmapChange] = []
        var created: [VolumeID: BlockStore] = [:]
        var reopened: [VolumeID: BlockStore] = [:]
        var preview = committed
        // One time for the group: its records carry it, and the state applies it (start times,
        // hold-window deadlines), exactly as a replay of the log will.
        let timestamp = clock()
        for request in group {
            switch request.work {
            case .checkpoint:
                request.outcome = Result { () throws(ControllerError) -> [Event] in
                    do { try durable.checkpoint(committed) } catch { throw .storage("saving a checkpoint failed: \(error)") }
                    return []
                }
            case let .commit(commands, marks, extra):
                var requestPreview = preview
                var requestCreated: [VolumeID: BlockStore] = [:]
                do throws(ControllerError) {
                    let decided = try decideInOrder(commands, &requestPreview)
                    let sideChanges = try prepareLocked(
                        decided, from: preview, adopting: commands.contains(where: \.adopts), created: &requestCreated, reopened: &reopened)
                    preview = requestPreview
                    if request.caller != nil || !callers.isEmpty {
                        if callers.isEmpty { callers = Array(repeating: nil, count: events.count) }
                        callers += decided.map { $0.isDecidedByController ? nil : request.caller }
                    }
                    events += decided
                    changes += marks.changes(against: bitmaps) + extra + sideChanges
                    created.merge(requestCreated) { first, _ in first }
                    accepted.append((request, decided, marks))
                } catch {
                    removeCreatedStores(requestCreated, preview: requestPreview)
                    request.outcome = .failure(error)
                }
            }
        }
        guard !events.isEmpty || !changes.isEmpty else {
            for (request, _, _) in accepted { request.outcome = .success([]) }
            return
        }
        let outcome = unlocked { () -> Result<Void, any Error> in
            // Other families' I/O goes on meanwhile; commits queue for the next group.
            Result { _ = try durable.commit(events: events, callers: callers, bitmapChanges: changes, timestampMilliseconds: timestamp) }
        }
        do {
            try outcome.get()
        } catch {
            // A commit whose outcome is unknown may be recorded after all: the files it made
            // stay, so that whoever replays it finds them (`Specs/cluster.md` 1.3).
            if (error as? StorageFailure)?.outcomeUnknown != true { removeCreatedStores(created, preview: preview) }
            let failure = noteCommitFailure(error)
            for (request, _, _) in accepted { request.outcome = .failure(failure) }
            return
        }
        noteCommitSuccess()
        let opened = created.merging(reopened) { first, _ in first }
        for (request, decided, marks) in accepted {
            marks.apply(to: &bitmaps)
            for event in decided { applyCommitted(event, at: timestamp, created: opened) }
            request.outcome = .success(decided)
        }
        if !events.isEmpty {
            publishState()
            commitObserver?(events, committed)
        }
    }

    /// Decides `commands` in order, each against the state the ones before it leave.
    private func decideInOrder(_ commands: [Command], _ preview: inout ControllerState) throws(ControllerError) -> [Event] {
        var events: [Event] = []
        for command in commands {
            do throws(CommandError) {
                let decided = try decide(command, preview)
                decided.forEach { preview.apply($0) }
                events += decided
            } catch {
                throw .rejected(error)
            }
        }
        return events
    }

    /// The side effects decided events need before their commit: backing stores of new volumes
    /// (in `created`), the store of a recovered volume that had none (in `reopened`: a store
    /// missing at start-up is opened again, or the recovery is refused with the reason), the
    /// source sync of a map start, and the bitmap clears of starts, removals and ended
    /// rollbacks. Must hold the lock.
    private func prepareLocked(
        _ events: [Event], from state: ControllerState, adopting: Bool, created: inout [VolumeID: BlockStore],
        reopened: inout [VolumeID: BlockStore]
    ) throws(ControllerError) -> [BitmapChange] {
        var changes: [BitmapChange] = []
        var sourcesToSync: [BlockStore] = []
        var preview = state
        for event in events {
            switch event {
            case let .volumeCreated(id, name, sizeBytes, path):
                do {
                    created[id] = try volumeProvider.create(Volume(id: id, name: name, sizeBytes: sizeBytes, path: path), adopt: adopting)
                } catch let exists as PathExists {
                    throw .rejected(CommandError(.pathExists, "cannot create volume \(name): \(exists)"))
                } catch {
                    throw .rejected(CommandError(.backingUnavailable, "cannot create the backing store of volume \(name): \(error)"))
                }
            case let .mapStarted(id, _):
                // A new point in time: the bitmaps start clear, atomically with the start. The
                // source is synced first, so that the image cannot change after the fact when an
                // unsynced write before the start is lost in a crash (found by the Promela model).
                changes += BitmapKind.allCases.map { .clear(map: id, kind: $0) }
                if let sourceID = preview.maps[id]?.sourceID, let store = stores[sourceID] { sourcesToSync.append(store) }
            case let .volumeRecovered(id):
                guard stores[id] == nil, let volume = preview.volumes[id] else { break }
                do throws(BackingProblem) {
                    reopened[id] = try volumeProvider.open(volume)
                } catch {
                    throw .rejected(CommandError(.backingUnavailable, "cannot recover volume \(volume.name): \(error)"))
                }
            case let .mapRemoved(id):
                changes += BitmapKind.allCases.map { .clear(map: id, kind: $0) }
            case let .rollbackCompleted(id), let .rollbackStopped(id, _), let .rollbackRestarted(id, _):
                // The marks belong to this rollback only (found by the simulator, seed 33); a
                // restarted rollback restores every dirty grain again.
                changes.append(.clear(map: id, kind: .restored))
            default:
                break
            }
            preview.apply(event)
        }
        // The sources of the starts, all at once (a group start syncs every member's source
        // while host writes to all of them wait).
        if let error = Self.syncAll(sourcesToSync) {
            throw .storage("syncing the source before the start failed: \(error)")
        }
        return changes
    }

    /// The most syncs one start issues at once.
    static let parallelSyncsMax = 16

    /// Syncs `stores` concurrently, on up to ``parallelSyncsMax`` threads (the syncs wait on the
    /// disk, not the processor), and returns the first error, or `nil`.
    static func syncAll(_ stores: [BlockStore]) -> BlockStoreError? {
        if stores.count <= 1 {
            do throws(BlockStoreError) { try stores.first?.sync() } catch { return error }
            return nil
        }
        let workers = min(parallelSyncsMax, stores.count)
        let failures = Mutex<[BlockStoreError]>([])
        let done = DispatchGroup()
        for worker in 0..<workers {
            done.enter()
            Thread.detachNewThread {
                for index in stride(from: worker, to: stores.count, by: workers) {
                    do throws(BlockStoreError) { try stores[index].sync() } catch { failures.withLock { $0.append(error) } }
                }
                done.leave()
            }
        }
        done.wait()
        return failures.withLock { $0.first }
    }

    /// Removes the backing stores made for volumes whose creation did not commit.
    private func removeCreatedStores(_ created: [VolumeID: BlockStore], preview: ControllerState) {
        for (id, _) in created {
            if let volume = preview.volumes[id] { volumeProvider.remove(volume) }
        }
    }
}

extension Command {
    /// True for a `createVolume` that may adopt an existing path.
    var adopts: Bool {
        if case .createVolume(_, _, _, true, _) = self { return true }
        return false
    }
}
