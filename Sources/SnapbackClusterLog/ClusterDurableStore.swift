import Foundation
import SnapbackCore
import SnapbackData
import SnapbackLog

/// The cluster log store: the durable-store port on etcd (`Specs/cluster.md`). Records are the
/// LMDB log's records (``LogRecord``: the same encoding, checksum and hash chain), one key per
/// event; the head, bitmap parts and checkpoints are keys beside them.
///
/// Each commit is one etcd transaction that compares the head key's mod revision (nobody
/// appended since this node's last commit) and the leader key's lease (this node still leads),
/// so only the current leader appends, and a deposed leader's commit fails with
/// ``ClusterStoreError/notLeader(_:)``. After a commit fails for any reason but a plain refusal,
/// the store is *fenced*: it appends nothing more (the node steps down; the next leader replays).
///
/// A standby uses the same store to follow: ``catchUp()`` reads the records after its warm
/// state, checking each as `snapback log verify` does, so a takeover only replays the tail.
public final class ClusterDurableStore: DurableStore, @unchecked Sendable {
    public let client: any EtcdTransport
    public let keys: ClusterKeys
    /// A bound on etcd operations per transaction (etcd's `--max-txn-ops` must be at least this).
    public let transactionOperationsMax: Int
    /// Records read per range request.
    static let pageRecords = 512
    /// Checkpoints kept, as in the LMDB log.
    static let checkpointsKept = 2

    /// Serializes commits and guards everything below.
    private let lock = NSLock()
    /// The state after the records read so far (followers and replay), with its chain.
    private var chain: RecordChain
    /// The head this node last saw or wrote, and the head key's mod revision then.
    private var head: (sequence: UInt64, hash: [UInt8], modRevision: Int64) = (0, LogRecord.zeroHash, 0)
    /// ``compactHistory()``'s memory: the head's revision at its last call (compacted to at the
    /// next), and the revision it last compacted to.
    private var compaction: (next: Int64?, done: Int64) = (nil, 0)
    /// Guards the leadership and the fence below (never held while calling etcd), so that NBD's
    /// check on every request and the lease guard do not wait for a commit in flight, which
    /// holds `lock` for as long as etcd takes to answer.
    private let fenceLock = NSLock()
    /// The leadership this node commits under; `nil` while it follows.
    private var leadershipStorage: (lease: ClusterLease, term: UInt64)?
    private var fencedReasonStorage: String?
    /// When the store was fenced by a commit whose outcome is unknown (etcd did not answer it),
    /// `nil` when it was fenced for another reason or not at all.
    private var fencedByUnknownOutcomeAtStorage: ContinuousClock.Instant?
    private var leadership: (lease: ClusterLease, term: UInt64)? {
        get { fenceLock.withLock { leadershipStorage } }
        set { fenceLock.withLock { leadershipStorage = newValue } }
    }
    private var fencedReason: String? {
        get { fenceLock.withLock { fencedReasonStorage } }
        set { fenceLock.withLock { fencedReasonStorage = newValue } }
    }
    private var fencedByUnknownOutcomeAt: ContinuousClock.Instant? {
        get { fenceLock.withLock { fencedByUnknownOutcomeAtStorage } }
        set { fenceLock.withLock { fencedByUnknownOutcomeAtStorage = newValue } }
    }
    /// Told how long each successful commit took.
    private let commitObserver: (@Sendable (Duration) -> Void)?

    public init(client: any EtcdTransport, keys: ClusterKeys, transactionOperationsMax: Int = 4096, commitObserver: (@Sendable (Duration) -> Void)? = nil) {
        precondition(transactionOperationsMax >= 8)
        self.client = client
        self.keys = keys
        self.transactionOperationsMax = transactionOperationsMax
        self.commitObserver = commitObserver
        chain = RecordChain()
    }

    // MARK: - Following

    /// The last sequence number read (followers) or written (the leader).
    public var lastSequence: UInt64 { lock.withLock { max(head.sequence, chain.report.lastSequence) } }

    /// The warm state: `reduce` of the records read so far.
    public var followedState: ControllerState { lock.withLock { chain.state } }

    /// The checkpoints that the first catch-up skipped, newest first, each with the reason (as
    /// the LMDB log's ``Replay/checkpointsRejected``): the replay started from an older
    /// checkpoint, or from the first record. Empty when none was skipped.
    public var checkpointsRejected: [String] { lock.withLock { rejectedCheckpoints } }
    private var rejectedCheckpoints: [String] = []

    /// Reads the records after the warm state up to the head (one consistent etcd revision),
    /// checking each, and folds them in. The first call starts from the newest checkpoint that
    /// matches the log. Returns the head's etcd revision.
    /// - Throws: ``ClusterStoreError``: ``ClusterStoreError/damaged(_:)`` at the first bad record.
    @discardableResult
    public func catchUp() throws(ClusterStoreError) -> Int64 {
        try locked { () throws(ClusterStoreError) -> Int64 in try catchUpLocked() }
    }

    private func catchUpLocked() throws(ClusterStoreError) -> Int64 {
        let headAnswer = try call("/v3/kv/range", ["key": Etcd.base64(keys.head)])
        guard let revision = Etcd.int((headAnswer["header"] as? JSONObject)?["revision"]) else {
            throw .refused(.malformed("a range answer without a revision"))
        }
        let headKV = (headAnswer["kvs"] as? [JSONObject])?.first
        let stored = try Self.decodeHead(try bytes(headKV?["value"]))
        if chain.report.lastSequence == 0 && stored.sequence > 0 { try startFromCheckpointLocked(revision: revision, through: stored.sequence) }
        if stored.sequence > chain.report.lastSequence {
            try readRecordsLocked(from: chain.nextSequence, through: stored.sequence, revision: revision) { _ in }
        }
        chain.checkHead(sequence: stored.sequence, hash: stored.hash)
        if let problem = chain.report.problem { throw .damaged(problem) }
        head = (stored.sequence, stored.hash, Etcd.int(headKV?["mod_revision"]) ?? 0)
        return revision
    }

    /// Starts the chain from the newest checkpoint that passes the checks of `EventLog.replay`
    /// (``Checkpoint/checkedState(sequence:stored:recordHash:)``: it decodes, and it follows the
    /// log's record at its sequence number, at most `last`). Each one skipped is recorded in
    /// ``checkpointsRejected`` with the reason; with none left, the chain starts at the first record.
    private func startFromCheckpointLocked(revision: Int64, through last: UInt64) throws(ClusterStoreError) {
        let answer = try call(
            "/v3/kv/range",
            [
                "key": Etcd.base64(keys.checkpointsPrefix), "range_end": Etcd.base64(Etcd.prefixEnd(keys.checkpointsPrefix)),
                "revision": String(revision), "sort_order": "DESCEND", "sort_target": "KEY", "limit": "4",
            ])
        var rejected: [String] = []
        defer { rejectedCheckpoints = rejected }
        for kv in answer["kvs"] as? [JSONObject] ?? [] {
            let key = try bytes(kv["key"])
            guard let sequence = keys.sequence(ofCheckpointKey: key) else {
                rejected.append(LogError.checkpointRejected(keys.notACheckpointKey(key)).description)
                continue
            }
            let stored = try bytes(kv["value"])
            var recordHash: [UInt8]?
            do {
                let state = try stored.withUnsafeBytes { storedBytes in
                    try Checkpoint.checkedState(sequence: sequence, stored: storedBytes) { () throws(ClusterStoreError) -> [UInt8]? in
                        guard sequence <= last else { return nil }  // past the head: not a record of the log
                        let record = try call("/v3/kv/range", ["key": Etcd.base64(keys.event(sequence)), "revision": String(revision)])
                        guard let value = (record["kvs"] as? [JSONObject])?.first?["value"] else { return nil }
                        recordHash = try bytes(value).withUnsafeBytes { LogRecord.hash(sequence: sequence, value: $0) }
                        return recordHash
                    }
                }
                chain = RecordChain(after: sequence, hash: recordHash!, state: state)
                return
            } catch let error as LogError {
                rejected.append(error.description)
            } catch let error as ClusterStoreError {
                throw error
            } catch {
                preconditionFailure("a checkpoint's check threw neither a LogError nor a ClusterStoreError: \(error)")
            }
        }
    }

    /// Reads records `first...last` at `revision`, page by page, into the chain; `body` sees each.
    private func readRecordsLocked(
        from first: UInt64, through last: UInt64, revision: Int64, _ body: (StoredEvent) -> Void
    ) throws(ClusterStoreError) {
        var next = first
        while next <= last {
            let answer = try call(
                "/v3/kv/range",
                [
                    "key": Etcd.base64(keys.event(next)), "range_end": Etcd.base64(keys.event(last + 1)),
                    "revision": String(revision), "limit": String(Self.pageRecords),
                ])
            let kvs = answer["kvs"] as? [JSONObject] ?? []
            guard !kvs.isEmpty else {
                chain.fail(.gap, sequence: next, "record \(next) is missing (the head says \(last))")
                return
            }
            for kv in kvs {
                let key = try bytes(kv["key"])
                guard let sequence = keys.sequence(ofEventKey: key) else {
                    chain.fail(.malformed, sequence: next, "an event key that is not a sequence number")
                    return
                }
                let value = try bytes(kv["value"])
                guard let stored = value.withUnsafeBytes({ chain.append(sequence: sequence, value: $0) }) else { return }
                body(stored)
                next = sequence + 1
            }
        }
    }

    // MARK: - Leading

    /// Makes this store commit under `lease` for `term`: catches up to the head (which no other
    /// node can move while this node holds the leader key) and unfences.
    /// - Throws: ``ClusterStoreError``.
    public func beginLeading(lease: ClusterLease, term: UInt64) throws(ClusterStoreError) {
        try locked { () throws(ClusterStoreError) in
            _ = try catchUpLocked()
            fenceLock.withLock {
                leadershipStorage = (lease, term)
                fencedReasonStorage = nil
                fencedByUnknownOutcomeAtStorage = nil
            }
        }
    }

    /// When a commit whose outcome is unknown fenced the store, or `nil` when nothing did or
    /// something else did. The node may go on serving what needs no commit until etcd decides
    /// that outcome (`Specs/cluster.md`, 3.3).
    public var fencedByUnknownOutcome: ContinuousClock.Instant? {
        fenceLock.withLock { fencedReasonStorage == nil ? nil : fencedByUnknownOutcomeAtStorage }
    }

    /// Stops appending for good (until ``beginLeading(lease:term:)``): every later commit fails
    /// with ``ClusterStoreError/notLeader(_:)``.
    public func fence(_ reason: String) {
        fenceLock.withLock { if fencedReasonStorage == nil { fencedReasonStorage = reason } }
    }

    /// Fences the store after a commit whose outcome is unknown (etcd did not say whether it
    /// applied it): nothing more is sent, and the node may serve what needs no commit until etcd
    /// answers again (`Specs/cluster.md`, 3.3).
    private func fenceForUnknownOutcome(_ reason: String) {
        fenceLock.withLock {
            fencedReasonStorage = reason
            fencedByUnknownOutcomeAtStorage = .now
        }
    }

    /// Why the store appends nothing, or `nil` while it leads.
    public var fenced: String? {
        let (reason, leadership) = fenceLock.withLock { (fencedReasonStorage, leadershipStorage) }
        if let reason { return reason }
        guard let leadership else { return "this node is a standby" }
        return leadership.lease.invalidReason
    }

    /// The term this store commits in, when leading.
    public var term: UInt64? { leadership?.term }

    public func commit(events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
        precondition(callers.isEmpty || callers.count == events.count, "one caller (or nil) per event")
        let started = ContinuousClock.now
        let receipt = try locked { () throws(ClusterStoreError) -> AppendReceipt in
            let before = head
            do throws(ClusterStoreError) {
                return try commitLocked(events: events, callers: callers, bitmapChanges: bitmapChanges, timestampMilliseconds: timestampMilliseconds)
            } catch where error.isOutOfSpace {
                return try outcomeOfOutOfSpaceLocked(error, before: before, events: events, callers: callers, timestampMilliseconds: timestampMilliseconds)
            }
        }
        commitObserver?(started.duration(to: .now))
        return receipt
    }

    private func commitLocked(
        events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64
    ) throws(ClusterStoreError) -> AppendReceipt {
        try checkMayCommitLocked()
        guard let (lease, term) = leadership else { throw .notLeader("this node is a standby") }
        let (records, (sequence, hash)) = Self.encodeRecords(
            after: (head.sequence, head.hash), events: events, callers: callers, timestampMilliseconds: timestampMilliseconds)
        var operations: [JSONObject] = records.map { record in
            ["request_put": ["key": Etcd.base64(keys.event(record.sequence)), "value": Etcd.base64(record.value)]]
        }
        operations += Self.bitmapOperations(bitmapChanges, keys: keys)
        operations.append(["request_put": ["key": Etcd.base64(keys.head), "value": Etcd.base64(Self.encodeHead(sequence: sequence, hash: hash, term: term))]])
        guard operations.count <= transactionOperationsMax else {
            throw .commitTooLarge(operations: operations.count, operationsMax: transactionOperationsMax)
        }
        let answer: JSONObject
        do {
            answer = try client.call(
                "/v3/kv/txn",
                [
                    "compare": [
                        ["key": Etcd.base64(keys.head), "target": "MOD", "result": "EQUAL", "mod_revision": String(head.modRevision)],
                        ["key": Etcd.base64(keys.leader), "target": "LEASE", "result": "EQUAL", "lease": String(lease.id)],
                    ],
                    "success": operations,
                    "failure": [
                        ["request_range": ["key": Etcd.base64(keys.leader)]], ["request_range": ["key": Etcd.base64(keys.head)]],
                    ],
                ])
        } catch {
            switch error {
            case let .unavailable(detail):
                // The transaction may still be applied: this node cannot know its own log any
                // more. It appends nothing else; the next leader replays what etcd holds.
                let reason = "a commit's outcome is unknown (etcd unavailable: \(detail))"
                fenceForUnknownOutcome(reason)
                throw .unavailable(reason)
            case let .server(_, message) where message.contains("lease not found"):
                fencedReason = "etcd no longer knows this node's lease"
                throw .notLeader(fencedReason!)
            default:
                throw .refused(error)
            }
        }
        guard answer["succeeded"] as? Bool == true else {
            let reason = Self.whyRefused(answer, keys: keys, lease: lease.id, headModRevision: head.modRevision)
            fencedReason = reason
            throw .notLeader(reason)
        }
        guard let revision = Etcd.int((answer["header"] as? JSONObject)?["revision"]) else {
            fencedReason = "a commit answer without a revision"
            throw .refused(.malformed(fencedReason!))
        }
        let first = head.sequence + 1
        head = (sequence, hash, revision)
        return AppendReceipt(firstSequence: first, lastSequence: sequence)
    }

    /// The etcd operations of `changes`, applied in order. etcd refuses a transaction that
    /// names a key twice (two puts, or a put inside a deleted range), so the changes of each
    /// bitmap collapse to their outcome: the last bytes of each part, and for a bitmap cleared
    /// on the way, deletions of the ranges between the parts put after the clear.
    static func bitmapOperations(_ changes: [BitmapChange], keys: ClusterKeys) -> [JSONObject] {
        struct Outcome {
            var cleared = false
            var parts: [Int: [UInt8]] = [:]
        }
        var outcomes: [BitmapMarks.Key: Outcome] = [:]
        for change in changes {
            switch change {
            case let .setPart(map, kind, part, bytes):
                outcomes[BitmapMarks.Key(map: map, kind: kind), default: Outcome()].parts[part] = bytes
            case let .clear(map, kind):
                outcomes[BitmapMarks.Key(map: map, kind: kind)] = Outcome(cleared: true)
            }
        }
        var operations: [JSONObject] = []
        for (key, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            let prefix = keys.bitmapPrefix(map: key.map, kind: key.kind)
            if outcome.cleared {
                var start = prefix
                for part in outcome.parts.keys.sorted() {
                    let partKey = keys.bitmapPart(map: key.map, kind: key.kind, part: part)
                    if start != partKey {
                        operations.append(["request_delete_range": ["key": Etcd.base64(start), "range_end": Etcd.base64(partKey)]])
                    }
                    start = partKey + [0]
                }
                operations.append(["request_delete_range": ["key": Etcd.base64(start), "range_end": Etcd.base64(Etcd.prefixEnd(prefix))]])
            }
            for (part, bytes) in outcome.parts.sorted(by: { $0.key < $1.key }) {
                operations.append(["request_put": ["key": Etcd.base64(keys.bitmapPart(map: key.map, kind: key.kind, part: part)), "value": Etcd.base64(bytes)]])
            }
        }
        return operations
    }

    /// Says why a fenced transaction failed, from its failure branch (the leader and head keys).
    static func whyRefused(_ answer: JSONObject, keys: ClusterKeys, lease: Int64, headModRevision: Int64) -> String {
        let responses = (answer["responses"] as? [JSONObject] ?? []).map { $0["response_range"] as? JSONObject ?? [:] }
        let leaderKV = (responses.first?["kvs"] as? [JSONObject])?.first
        let headKV = (responses.count > 1 ? responses[1]["kvs"] as? [JSONObject] : nil)?.first
        if leaderKV == nil { return "this node was deposed: nobody holds the leader key (its lease \(lease) expired)" }
        // etcd's JSON omits a lease of 0: the key was put without one.
        let leaderLease = Etcd.int(leaderKV?["lease"]) ?? 0
        if leaderLease != lease {
            let value: [UInt8]
            do { value = try Etcd.bytes(leaderKV?["value"]) } catch {
                return "this node was deposed: lease \(leaderLease) holds the leader key, and etcd's answer garbles its value: \(error)"
            }
            switch LeaderElection.decodeRecord(LeaderRecord.self, value, what: "the leader key", key: keys.leader) {
            case let .success(holder): return "this node was deposed: node \(holder.node) leads in term \(holder.term)"
            case let .failure(undecodable): return "this node was deposed: \(undecodable) (held with lease \(leaderLease))"
            }
        }
        let moved = Etcd.int(headKV?["mod_revision"]) ?? 0
        return "the head moved (revision \(moved), this node last wrote \(headModRevision)): another writer appended"
    }

    /// Tells what became of a commit that etcd answered "database space exceeded" (its space
    /// quota, `--quota-backend-bytes`). etcd 3.4 checks the quota twice: before it proposes a
    /// transaction, refusing it then (nothing is recorded), and again as each member applies it,
    /// after the members agreed on it. A transaction that passes the first check and fails the
    /// second is applied all the same, and only the answer says "database space exceeded"
    /// (etcd's `quotaApplierV3`, which also raises the alarm then). So the head key says which:
    /// - unmoved since `before`: nothing was recorded; the error stands and the store is not
    ///   fenced (a known outcome, `storage_full`);
    /// - moved to this commit's last record: the commit is recorded, and its receipt is returned
    ///   (the alarm is raised now: the next commit is refused);
    /// - moved elsewhere: another writer appended; the store is fenced (`not_leader`);
    /// - unreadable: the outcome is unknown; the store is fenced (`cluster_unavailable`).
    private func outcomeOfOutOfSpaceLocked(
        _ error: ClusterStoreError, before: (sequence: UInt64, hash: [UInt8], modRevision: Int64), events: [Event], callers: [Caller?],
        timestampMilliseconds: Int64
    ) throws(ClusterStoreError) -> AppendReceipt {
        precondition(error.isOutOfSpace && head.modRevision == before.modRevision, "only an out-of-space commit that changed nothing here")
        let answer: JSONObject
        let stored: (sequence: UInt64, hash: [UInt8], term: UInt64)
        do {
            answer = try call("/v3/kv/range", ["key": Etcd.base64(keys.head)])
            stored = try Self.decodeHead(try bytes((answer["kvs"] as? [JSONObject])?.first?["value"]))
        } catch {
            let reason = "a commit's outcome is unknown (etcd answered \"database space exceeded\", which it also answers for a transaction it applied, and the head cannot be read: \(error))"
            fenceForUnknownOutcome(reason)
            throw .unavailable(reason)
        }
        let modRevision = Etcd.int((answer["kvs"] as? [JSONObject])?.first?["mod_revision"]) ?? 0
        if modRevision == before.modRevision { throw error }
        let expected = Self.encodeRecords(after: (before.sequence, before.hash), events: events, callers: callers, timestampMilliseconds: timestampMilliseconds).end
        guard stored.sequence == expected.sequence, stored.hash == expected.hash, stored.term == leadership?.term else {
            let reason = "the head moved (revision \(modRevision), this node last wrote \(before.modRevision)): another writer appended"
            fencedReason = reason
            throw .notLeader(reason)
        }
        head = (expected.sequence, expected.hash, modRevision)
        return AppendReceipt(firstSequence: before.sequence + 1, lastSequence: expected.sequence)
    }

    /// The records of `events` appended after the record `after` (its sequence number and
    /// hash), as a commit writes them, and the last sequence number and chain hash then.
    static func encodeRecords(
        after: (sequence: UInt64, hash: [UInt8]), events: [Event], callers: [Caller?], timestampMilliseconds: Int64
    ) -> (records: [(sequence: UInt64, value: [UInt8])], end: (sequence: UInt64, hash: [UInt8])) {
        var (sequence, hash) = after
        var records: [(sequence: UInt64, value: [UInt8])] = []
        records.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            sequence += 1
            let caller = callers.isEmpty ? nil : callers[index]
            let value = LogRecord.encode(event: event, caller: caller, timestampMilliseconds: timestampMilliseconds, previousHash: hash)
            // Paired assertion: the record parses back as written before it leaves.
            value.withUnsafeBytes { bytes in
                let view = try! RecordView(sequence: sequence, value: bytes)
                precondition(view.typeCode == event.type.rawValue && view.caller == caller)
                hash = LogRecord.hash(sequence: sequence, value: bytes)
            }
            records.append((sequence, value))
        }
        return (records, (sequence, hash))
    }

    // MARK: - History

    /// Drops etcd's revisions older than the one this node's head had at the previous call
    /// (`Specs/cluster.md` 7). The head is rewritten at every commit and a bitmap part at every
    /// mark, and etcd keeps every old version until compacted, so without this its database
    /// grows with every commit until the space quota stops the cluster. One interval of history
    /// stays, for readers paging at a recent revision and for watches catching up. Only a leader
    /// whose store is not fenced compacts. Returns the revision compacted to, or `nil` when there
    /// was nothing to do (the first call, no commit since, or etcd compacted further already).
    /// - Throws: ``ClusterStoreError`` when etcd refuses or cannot be reached.
    public func compactHistory() throws(ClusterStoreError) -> Int64? {
        guard fenced == nil else { return nil }
        let (previous, done) = lock.withLock { () -> (Int64?, Int64) in
            defer { compaction.next = head.modRevision }
            return (compaction.next, compaction.done)
        }
        guard let previous, previous > done else { return nil }
        do {
            _ = try client.call("/v3/kv/compaction", ["revision": String(previous)])
        } catch let .server(_, message) where message.contains("compacted") {
            return nil  // etcd's own auto-compaction went further: nothing older is left
        } catch {
            throw ClusterLease.wrap(error)
        }
        lock.withLock { compaction.done = max(compaction.done, previous) }
        return previous
    }

    // MARK: - Bitmaps, replay, checkpoints

    public func loadBitmap(map: MapID, kind: BitmapKind, grainCount: UInt64) throws -> GrainBitmap {
        var bitmap = GrainBitmap(grainCount: grainCount)
        let prefix = keys.bitmapPrefix(map: map, kind: kind)
        var start = prefix
        while true {
            let answer = try call(
                "/v3/kv/range",
                ["key": Etcd.base64(start), "range_end": Etcd.base64(Etcd.prefixEnd(prefix)), "limit": "256"])
            let kvs = answer["kvs"] as? [JSONObject] ?? []
            for kv in kvs {
                let key = try bytes(kv["key"])
                guard let index = Int(String(decoding: key[prefix.count...], as: UTF8.self)) else {
                    throw ClusterStoreError.damaged(VerifyProblem.bitmap("a bitmap key of lcmap \(map) (\(kind)) without a part number"))
                }
                let value = try bytes(kv["value"])
                guard value.withUnsafeBytes({ bitmap.loadPart(index, from: $0) }) else {
                    throw ClusterStoreError.damaged(VerifyProblem.bitmap("bitmap part \(index) of lcmap \(map) (\(kind)) has \(value.count) bytes"))
                }
                start = key + [0]
            }
            guard answer["more"] as? Bool == true, !kvs.isEmpty else { return bitmap }
        }
    }

    /// `reduce(log)`: the warm state caught up to the head.
    public func replayState() throws -> ControllerState {
        try catchUp()
        return followedState
    }

    /// Saves a checkpoint of `state` (fenced like a commit: only the leader writes one) and keeps
    /// the newest ``checkpointsKept``.
    public func checkpoint(_ state: ControllerState) throws {
        try locked { () throws(ClusterStoreError) in
            try checkMayCommitLocked()
            guard let (lease, _) = leadership else { throw .notLeader("this node is a standby") }
            let sequence = state.eventsApplied
            guard sequence > 0 else { return }
            let recordHash: [UInt8]
            if sequence == head.sequence {
                recordHash = head.hash
            } else {
                let answer = try call("/v3/kv/range", ["key": Etcd.base64(keys.event(sequence))])
                guard let value = (answer["kvs"] as? [JSONObject])?.first?["value"] else {
                    throw .damaged(.bitmap("no record at seq \(sequence) for a checkpoint"))
                }
                recordHash = try bytes(value).withUnsafeBytes { LogRecord.hash(sequence: sequence, value: $0) }
            }
            let existing = try call(
                "/v3/kv/range",
                [
                    "key": Etcd.base64(keys.checkpointsPrefix), "range_end": Etcd.base64(Etcd.prefixEnd(keys.checkpointsPrefix)),
                    "keys_only": true,
                ])
            var older: [UInt64] = []
            for kv in existing["kvs"] as? [JSONObject] ?? [] {
                if let stored = keys.sequence(ofCheckpointKey: try bytes(kv["key"])), stored < sequence { older.append(stored) }
            }
            older.sort(by: >)
            var operations: [JSONObject] = [
                ["request_put": ["key": Etcd.base64(keys.checkpoint(sequence)), "value": Etcd.base64(Checkpoint(state: state, recordHash: recordHash).storedBytes)]]
            ]
            for old in older.dropFirst(Self.checkpointsKept - 1) {
                operations.append(["request_delete_range": ["key": Etcd.base64(keys.checkpoint(old))]])
            }
            let answer = try call(
                "/v3/kv/txn",
                [
                    "compare": [["key": Etcd.base64(keys.leader), "target": "LEASE", "result": "EQUAL", "lease": String(lease.id)]],
                    "success": operations,
                ])
            guard answer["succeeded"] as? Bool == true else {
                fencedReason = "this node was deposed (a checkpoint's transaction found another leader)"
                throw .notLeader(fencedReason!)
            }
        }
    }

    /// Refuses a commit (or a checkpoint) before anything is sent: the store is fenced, the
    /// node does not lead, its lease ran out by its own clock (not needed for safety, since etcd
    /// compares the lease, but such a node does not even ask), or it holds its lease on a
    /// sighting of an etcd without quorum (a commit sent then could only have an unknown outcome).
    private func checkMayCommitLocked() throws(ClusterStoreError) {
        let (reason, unknownOutcomeAt) = fenceLock.withLock { (fencedReasonStorage, fencedByUnknownOutcomeAtStorage) }
        if let reason {
            if unknownOutcomeAt != nil { throw .notSent("\(reason): nothing more is sent until etcd decides it") }
            throw .notLeader(reason)
        }
        guard let (lease, _) = leadership else { throw .notLeader("this node is a standby") }
        if let reason = lease.invalidReason {
            fence(reason)
            throw .notLeader(reason)
        }
        if lease.heldWithoutQuorum { throw .notSent("etcd has no quorum (every member is down or without a leader): nothing was sent") }
    }

    // MARK: - Helpers

    /// Runs `body` holding `lock`, keeping its typed error.
    private func locked<T>(_ body: () throws(ClusterStoreError) -> T) throws(ClusterStoreError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    func call(_ path: String, _ body: JSONObject) throws(ClusterStoreError) -> JSONObject {
        do { return try client.call(path, body) } catch { throw ClusterLease.wrap(error) }
    }

    func bytes(_ value: Any?) throws(ClusterStoreError) -> [UInt8] {
        do { return try Etcd.bytes(value) } catch { throw .refused(error) }
    }

    /// The head's value: sequence (8 bytes big-endian), chain hash (32), term (8 big-endian).
    static func encodeHead(sequence: UInt64, hash: [UInt8], term: UInt64) -> [UInt8] {
        precondition(hash.count == 32)
        return LogRecord.key(sequence) + hash + LogRecord.key(term)
    }

    /// Decodes a head value (absent: the empty log).
    static func decodeHead(_ value: [UInt8]) throws(ClusterStoreError) -> (sequence: UInt64, hash: [UInt8], term: UInt64) {
        guard !value.isEmpty else { return (0, LogRecord.zeroHash, 0) }
        guard value.count == 48 else { throw .damaged(VerifyProblem.headValue("the head has \(value.count) bytes, not 48")) }
        let sequence = value[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let term = value[40..<48].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return (sequence, Array(value[8..<40]), term)
    }
}

extension VerifyProblem {
    static func bitmap(_ detail: String) -> VerifyProblem { VerifyProblem(.unreadable, at: nil, detail) }
    static func headValue(_ detail: String) -> VerifyProblem { VerifyProblem(.head, at: nil, detail) }
}
