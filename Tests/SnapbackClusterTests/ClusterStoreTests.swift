import EtcdTesting
import Foundation
import SnapbackCluster
import SnapbackClusterLog
import SnapbackCore
import SnapbackData
@testable import SnapbackLog
import Testing

/// One real 3-member etcd cluster for the whole test process (each test uses its own cluster
/// name, so their keys never meet); stopped when the process exits.
enum SharedEtcd {
    static let cluster: LocalEtcdCluster = {
        do {
            let cluster = try LocalEtcdCluster(memberCount: 3)
            atexit { SharedEtcd.cluster.stop() }
            return cluster
        } catch {
            fatalError("cannot start the test etcd cluster: \(error)")
        }
    }()

    static func client() -> EtcdClient { EtcdClient(endpoints: cluster.clientURLs) }

    static func uniqueName(_ base: String) -> String { "\(base)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }
}

/// A node of a test: its client, lease, election and store.
struct TestNode {
    let client: EtcdClient
    let keys: ClusterKeys
    let election: LeaderElection
    let lease: ClusterLease
    let store: ClusterDurableStore

    init(cluster: String, node: String, ttlSeconds: Int64 = 2) throws {
        client = SharedEtcd.client()
        keys = ClusterKeys(cluster: cluster)
        election = LeaderElection(client: client, keys: keys, node: node)
        lease = try ClusterLease(client: client, ttlSeconds: ttlSeconds)
        store = ClusterDurableStore(client: client, keys: keys)
    }

    /// Campaigns once and, on winning, makes the store lead. Returns the term, or nil.
    func lead() throws -> UInt64? {
        guard let record = try election.campaign(lease: lease, nowMilliseconds: 1, firstSequence: store.lastSequence) else { return nil }
        try store.beginLeading(lease: lease, term: record.term)
        return record.term
    }
}

func volume(_ id: VolumeID) -> Event { .volumeCreated(id: id, name: "v\(id)", sizeBytes: 1 << 20, path: nil) }

@Suite("the cluster log store on a real etcd cluster", .serialized)
struct ClusterStoreTests {
    @Test("appends are replayed by a follower, byte for byte the LMDB log's records, and verify")
    func appendAndReplay() throws {
        let name = SharedEtcd.uniqueName("append")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() == 1)
        let first = try leader.store.commit(events: [volume(1), volume(2)], bitmapChanges: [], timestampMilliseconds: 1000)
        #expect(first == AppendReceipt(firstSequence: 1, lastSequence: 2))
        let caller = Caller(uid: 1000, gid: 100, pid: 42)
        let second = try leader.store.commit(
            events: [volume(3), .volumeRemoved(id: 1)], callers: [caller, nil], bitmapChanges: [], timestampMilliseconds: 2000)
        #expect(second == AppendReceipt(firstSequence: 3, lastSequence: 4))

        let follower = try TestNode(cluster: name, node: "b")
        let state = try follower.store.replayState()
        #expect(state.eventsApplied == 4)
        #expect(state.volumes.count == 2 && state.volume("v2") != nil && state.volume("v1") == nil)

        let reader = ClusterLogReader(client: follower.client, keys: follower.keys)
        let events = try reader.storedEvents()
        #expect(events.map(\.sequence) == [1, 2, 3, 4])
        #expect(events[2].caller == caller && events[3].caller == nil)
        #expect(events[2].timestampMilliseconds == 2000)

        // The same chain as an LMDB log with the same appends.
        var previous = LogRecord.zeroHash
        for stored in events {
            let value = LogRecord.encode(event: stored.event, caller: stored.caller, timestampMilliseconds: stored.timestampMilliseconds, previousHash: previous)
            previous = value.withUnsafeBytes { LogRecord.hash(sequence: stored.sequence, value: $0) }
        }
        let head = try reader.readHead().head
        #expect(head.sequence == 4 && head.hash == previous && head.term == 1)

        let report = reader.verify()
        #expect(report.isSound, "\(String(describing: report.problem))")
        #expect(report.recordsChecked == 4)
        // The CLI's blocking transport reads the same (the first endpoint down: it fails over).
        let sockets = SocketEtcdTransport(endpoints: ["http://127.0.0.1:9"] + SharedEtcd.cluster.clientURLs, timeoutMilliseconds: 1000)
        let socketReader = ClusterLogReader(client: sockets, keys: follower.keys)
        #expect(try socketReader.storedEvents() == events)
        #expect(socketReader.verify().recordsChecked == 4)

        // The follower catches up with later appends.
        _ = try leader.store.commit(events: [volume(4)], bitmapChanges: [], timestampMilliseconds: 3000)
        try follower.store.catchUp()
        #expect(follower.store.followedState.eventsApplied == 5)
    }

    @Test("events and bitmap parts commit in one transaction; a clear removes every part")
    func bitmapsWithEvents() throws {
        let name = SharedEtcd.uniqueName("bitmaps")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        var bitmap = GrainBitmap(grainCount: 20_000)
        bitmap[5] = true
        bitmap[9_000] = true
        bitmap[19_999] = true
        let changes = (0..<bitmap.partCount).map { BitmapChange.setPart(map: 7, kind: .dirty, part: $0, bytes: bitmap.partBytes($0)) }
        _ = try leader.store.commit(events: [volume(1)], bitmapChanges: changes, timestampMilliseconds: 1)

        let reader = try TestNode(cluster: name, node: "b")
        let loaded = try reader.store.loadBitmap(map: 7, kind: .dirty, grainCount: 20_000)
        #expect(loaded.setCount == 3 && loaded[5] && loaded[9_000] && loaded[19_999])
        #expect(try reader.store.loadBitmap(map: 7, kind: .split, grainCount: 20_000).setCount == 0)

        // A refused commit changes neither the events nor the bitmaps.
        let lastBefore = try ClusterLogReader(client: reader.client, keys: reader.keys).readHead().head.sequence
        leader.lease.revoke()
        var cleared = GrainBitmap(grainCount: 20_000)
        cleared[1] = true
        #expect(throws: ClusterStoreError.self) {
            _ = try leader.store.commit(events: [volume(2)], bitmapChanges: [.setPart(map: 7, kind: .dirty, part: 0, bytes: cleared.partBytes(0))], timestampMilliseconds: 2)
        }
        #expect(try ClusterLogReader(client: reader.client, keys: reader.keys).readHead().head.sequence == lastBefore)
        #expect(try reader.store.loadBitmap(map: 7, kind: .dirty, grainCount: 20_000).setCount == 3)

        // A new leader clears it.
        let next = try TestNode(cluster: name, node: "c")
        #expect(try next.lead() != nil)
        _ = try next.store.commit(events: [], bitmapChanges: [.clear(map: 7, kind: .dirty)], timestampMilliseconds: 3)
        #expect(try reader.store.loadBitmap(map: 7, kind: .dirty, grainCount: 20_000).setCount == 0)
    }

    @Test("one commit may clear a bitmap, then set parts of it, and set a part twice (etcd refuses a key named twice)")
    func bitmapChangesCollapse() throws {
        let name = SharedEtcd.uniqueName("collapse")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        let grains: UInt64 = 40_000  // 5 parts
        var before = GrainBitmap(grainCount: grains)
        for grain: UInt64 in [1, 9_000, 17_000, 25_000, 33_000] { before[grain] = true }
        _ = try leader.store.commit(
            events: [], bitmapChanges: (0..<before.partCount).map { .setPart(map: 3, kind: .restored, part: $0, bytes: before.partBytes($0)) },
            timestampMilliseconds: 1)
        var after = GrainBitmap(grainCount: grains)
        after[17_001] = true
        after[2] = true
        var first = GrainBitmap(grainCount: grains)
        first[3] = true
        _ = try leader.store.commit(
            events: [volume(1)],
            bitmapChanges: [
                .setPart(map: 3, kind: .restored, part: 0, bytes: first.partBytes(0)), .clear(map: 3, kind: .restored),
                .setPart(map: 3, kind: .restored, part: 2, bytes: after.partBytes(2)), .setPart(map: 3, kind: .restored, part: 0, bytes: first.partBytes(0)),
                .setPart(map: 3, kind: .restored, part: 0, bytes: after.partBytes(0)),
            ],
            timestampMilliseconds: 2)
        let loaded = try TestNode(cluster: name, node: "b").store.loadBitmap(map: 3, kind: .restored, grainCount: grains)
        #expect(loaded == after, "set: \(loaded.setCount)")
    }

    @Test("a deposed leader's commit is refused with not_leader and appends nothing; one leader per term")
    func deposedLeaderRefused() throws {
        let name = SharedEtcd.uniqueName("deposed")
        let old = try TestNode(cluster: name, node: "old", ttlSeconds: 1)
        #expect(try old.lead() == 1)
        _ = try old.store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)

        // While the old leader's lease lives, nobody else wins.
        let new = try TestNode(cluster: name, node: "new")
        #expect(try new.lead() == nil)

        // Its lease lapses (no keep-alive): etcd drops the leader key, the other node wins term 2.
        var term: UInt64?
        let deadline = Date().addingTimeInterval(10)
        while term == nil && Date() < deadline {
            usleep(100_000)
            term = try new.lead()
        }
        #expect(term == 2)
        _ = try new.store.commit(events: [volume(2)], bitmapChanges: [], timestampMilliseconds: 2)

        // The old leader, whatever its clock says, cannot append: etcd compares the lease.
        do {
            _ = try old.store.commit(events: [volume(3)], bitmapChanges: [], timestampMilliseconds: 3)
            Issue.record("a deposed leader's commit succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.code == "not_leader", "\(error)")
        }
        #expect(old.store.fenced != nil)
        let reader = ClusterLogReader(client: new.client, keys: new.keys)
        #expect(try reader.storedEvents().map(\.event) == [volume(1), volume(2)])
        #expect(reader.verify().isSound)
        let terms = try new.election.terms()
        #expect(terms.map(\.term) == [1, 2] && terms.map(\.node) == ["old", "new"])
    }

    @Test("a leader whose head moved under it (a second writer) is refused and fenced")
    func headMovedRefused() throws {
        let name = SharedEtcd.uniqueName("head")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        _ = try leader.store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)
        // A second store on the same lease (a bug, or a copy of the node): its commits race.
        let twin = ClusterDurableStore(client: leader.client, keys: leader.keys)
        try twin.beginLeading(lease: leader.lease, term: 1)
        _ = try twin.commit(events: [volume(2)], bitmapChanges: [], timestampMilliseconds: 2)
        #expect(throws: ClusterStoreError.self) { _ = try leader.store.commit(events: [volume(3)], bitmapChanges: [], timestampMilliseconds: 3) }
        #expect(leader.store.fenced?.contains("head moved") == true)
        #expect(ClusterLogReader(client: leader.client, keys: leader.keys).verify().isSound)
    }

    @Test("verify finds a rewritten record, a broken chain and a truncated head")
    func verifyFindsDamage() throws {
        let name = SharedEtcd.uniqueName("verify")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        _ = try leader.store.commit(events: [volume(1), volume(2), volume(3)], bitmapChanges: [], timestampMilliseconds: 1)
        let reader = ClusterLogReader(client: leader.client, keys: leader.keys)
        #expect(reader.verify().isSound)

        // Flip a byte of record 2's payload: its checksum no longer matches.
        let answer = try leader.client.call("/v3/kv/range", ["key": Etcd.base64(leader.keys.event(2))])
        var value = try Etcd.bytes((answer["kvs"] as? [JSONObject])?.first?["value"])
        value[value.count - 1] ^= 0xff
        _ = try leader.client.call("/v3/kv/put", ["key": Etcd.base64(leader.keys.event(2)), "value": Etcd.base64(value)])
        let damaged = reader.verify()
        #expect(damaged.problem?.kind == .checksum && damaged.problem?.sequence == 2, "\(String(describing: damaged.problem))")

        // Record 2 replaced by a well-formed record of another event: the chain breaks at 3.
        let forged = LogRecord.encode(event: volume(9), timestampMilliseconds: 1, previousHash: LogRecord.zeroHash)
        _ = try leader.client.call("/v3/kv/put", ["key": Etcd.base64(leader.keys.event(2)), "value": Etcd.base64(forged)])
        let broken = reader.verify()
        #expect(broken.problem?.kind == .chain && broken.problem?.sequence == 2, "\(String(describing: broken.problem))")

        // The last record deleted: the head says 3, the log ends at 2.
        let other = SharedEtcd.uniqueName("verify2")
        let second = try TestNode(cluster: other, node: "a")
        #expect(try second.lead() != nil)
        _ = try second.store.commit(events: [volume(1), volume(2), volume(3)], bitmapChanges: [], timestampMilliseconds: 1)
        _ = try second.client.call("/v3/kv/deleterange", ["key": Etcd.base64(second.keys.event(3))])
        let truncated = ClusterLogReader(client: second.client, keys: second.keys).verify()
        #expect(truncated.problem?.kind == .gap || truncated.problem?.kind == .head, "\(String(describing: truncated.problem))")
    }

    @Test("a checkpoint is written by the leader only, and replay starts from it")
    func checkpoints() throws {
        let name = SharedEtcd.uniqueName("checkpoint")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        _ = try leader.store.commit(events: [volume(1), volume(2)], bitmapChanges: [], timestampMilliseconds: 1)
        let state = try leader.store.replayState()
        try leader.store.checkpoint(state)
        _ = try leader.store.commit(events: [volume(3)], bitmapChanges: [], timestampMilliseconds: 2)
        let follower = try TestNode(cluster: name, node: "b")
        let replayed = try follower.store.replayState()
        #expect(replayed.eventsApplied == 3 && replayed.volumes.count == 3)
        let report = ClusterLogReader(client: follower.client, keys: follower.keys).verify()
        #expect(report.isSound && report.checkpointsChecked == 1, "\(report)")
        // A standby cannot write one.
        #expect(throws: ClusterStoreError.self) { try follower.store.checkpoint(replayed) }
    }

    @Test("a lease is valid by the local clock until TTL less the margin after the last answered keep-alive; an expired one is lost for good")
    func leaseValidity() throws {
        let client = SharedEtcd.client()
        let lease = try ClusterLease(client: client, ttlSeconds: 1, marginMilliseconds: 250)
        #expect(lease.isValid && lease.remaining <= .milliseconds(750))
        try lease.keepAliveOnce()
        #expect(lease.isValid)
        usleep(800_000)  // past TTL - margin: invalid here, though etcd may still hold it
        #expect(!lease.isValid && lease.invalidReason?.contains("ran out") == true)
        usleep(1_500_000)  // past the TTL at etcd too
        #expect(throws: ClusterStoreError.self) { try lease.keepAliveOnce() }
        #expect(lease.invalidReason?.contains("no longer knows") == true, "\(String(describing: lease.invalidReason))")
        // A store leading on it refuses before asking etcd.
        let store = ClusterDurableStore(client: client, keys: ClusterKeys(cluster: SharedEtcd.uniqueName("lease")))
        do {
            _ = try store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)
            Issue.record("a standby's commit succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.code == "not_leader")
        }
    }

    @Test("etcd unreachable: a commit fails with cluster_unavailable and the store is fenced")
    func unavailable() throws {
        let name = SharedEtcd.uniqueName("unavailable")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        // A store whose client only knows a closed port, on the same (valid) lease.
        let nowhere = EtcdClient(endpoints: ["http://127.0.0.1:9"], requestTimeout: .milliseconds(300))
        let cut = ClusterDurableStore(client: nowhere, keys: leader.keys)
        #expect(throws: ClusterStoreError.self) { try cut.beginLeading(lease: leader.lease, term: 1) }
        do {
            _ = try cut.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)
            Issue.record("a commit without etcd succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.code == "not_leader" || error.code == "cluster_unavailable", "\(error)")
        }
        nowhere.shutdown()
    }

    @Test("a checkpoint that does not decode, or follows another log's record, is skipped by replay, which says so, and verify reports it as LMDB's verify does")
    func rejectedCheckpoints() throws {
        let name = SharedEtcd.uniqueName("rejected")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() != nil)
        let batches: [[Event]] = [[volume(1), volume(2)], [volume(3)], [.volumeRemoved(id: 1)]]
        for (index, events) in batches.enumerated() {
            _ = try leader.store.commit(events: events, bitmapChanges: [], timestampMilliseconds: Int64(index + 1))
            if index < 2 { try leader.store.checkpoint(try leader.store.replayState()) }  // at seq 2 and 3
        }
        let put = { (key: [UInt8], value: [UInt8]) in
            _ = try leader.client.call("/v3/kv/put", ["key": Etcd.base64(key), "value": Etcd.base64(value)])
        }

        // The newest checkpoint overwritten with garbage: replay starts from the older one.
        try put(leader.keys.checkpoint(3), Array("garbage".utf8))
        let follower = try TestNode(cluster: name, node: "b")
        let state = try follower.store.replayState()
        #expect(state.eventsApplied == 4 && state.volumes.count == 2)
        #expect(follower.store.checkpointsRejected == ["checkpoint rejected: checkpoint at seq 3 has 7 bytes"])
        let report = ClusterLogReader(client: follower.client, keys: follower.keys).verify()
        #expect(report.problem == VerifyProblem(.checkpoint, at: 3, "checkpoint rejected: checkpoint at seq 3 has 7 bytes"), "\(report)")
        #expect(report.problem?.kind.exitCode == 8)

        // The same records and the same garbage in an LMDB log: the same report, the same skip.
        let directory = NSTemporaryDirectory() + "snapback-rejected-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try EventLog(directory: directory)
        var replayed = ControllerState()
        for (index, events) in batches.enumerated() {
            _ = try log.append(events, timestampMilliseconds: Int64(index + 1))
            events.forEach { replayed.apply($0, at: Int64(index + 1)) }
            if index < 2 { try log.saveCheckpoint(replayed) }
        }
        let checkpoints = log.checkpoints
        try log.write { transaction in
            try LogRecord.key(3).withUnsafeBytes { key in try Array("garbage".utf8).withUnsafeBytes { try transaction.put(checkpoints, key: key, value: $0) } }
        }
        #expect(log.verify().problem == report.problem)
        let lmdbReplay = try log.replay()
        #expect(lmdbReplay.checkpointsRejected == follower.store.checkpointsRejected && lmdbReplay.state == state)

        // The older one is another log's (its record hash differs): replay starts at seq 1.
        let other = try TestNode(cluster: SharedEtcd.uniqueName("other"), node: "a")
        #expect(try other.lead() != nil)
        _ = try other.store.commit(events: [volume(7), volume(8)], bitmapChanges: [], timestampMilliseconds: 1)
        try other.store.checkpoint(try other.store.replayState())
        let foreign = try Etcd.bytes(((try other.client.call("/v3/kv/range", ["key": Etcd.base64(other.keys.checkpoint(2))]))["kvs"] as? [JSONObject])?.first?["value"])
        try put(leader.keys.checkpoint(2), foreign)
        let fresh = try TestNode(cluster: name, node: "c")
        #expect(try fresh.store.replayState() == state)
        #expect(
            fresh.store.checkpointsRejected == [
                "checkpoint rejected: checkpoint at seq 3 has 7 bytes",
                "checkpoint rejected: checkpoint at seq 2 was not taken from this log (record hash differs)",
            ])
        // verify names the oldest problem first, as LMDB's does.
        let both = ClusterLogReader(client: fresh.client, keys: fresh.keys).verify()
        #expect(both.problem == VerifyProblem(.checkpoint, at: 2, "checkpoint rejected: checkpoint at seq 2 was not taken from this log (record hash differs)"), "\(both)")
        // A damaged record is named before a checkpoint.
        try put(leader.keys.event(1), Array("not a record".utf8))
        #expect(ClusterLogReader(client: fresh.client, keys: fresh.keys).verify().problem?.sequence == 1)
    }

    @Test("a deposed leader's refusal, and lscluster's leader, name a leader record that does not decode")
    func undecodableLeaderRecord() throws {
        let name = SharedEtcd.uniqueName("garbled")
        let leader = try TestNode(cluster: name, node: "a", ttlSeconds: 30)
        #expect(try leader.lead() != nil)
        _ = try leader.store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)
        // The leader key replaced by a value that is no leader record, held with another lease.
        let other = try ClusterLease(client: leader.client, ttlSeconds: 30)
        _ = try leader.client.call(
            "/v3/kv/put", ["key": Etcd.base64(leader.keys.leader), "value": Etcd.base64("{\"term\":2}"), "lease": String(other.id)])
        do {
            _ = try leader.store.commit(events: [volume(2)], bitmapChanges: [], timestampMilliseconds: 2)
            Issue.record("a commit on another lease's leader key succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.code == "not_leader")
            let expected =
                "this node was deposed: the leader key /snapback/\(name)/leader holds a record that does not decode: no \"node\" field (its value: {\"term\":2}) (held with lease \(other.id))"
            #expect("\(error)" == "not_leader: " + expected)
        }
        do {
            _ = try leader.election.leader()
            Issue.record("an undecodable leader record was listed")
        } catch {
            #expect(error.code == "storage_error")
            #expect("\(error)".contains("the leader key /snapback/\(name)/leader holds a record that does not decode: no \"node\" field"), "\(error)")
        }
        // Put without a lease: the refusal says so rather than blaming the head.
        let twin = try TestNode(cluster: SharedEtcd.uniqueName("garbled"), node: "a", ttlSeconds: 30)
        #expect(try twin.lead() != nil)
        _ = try twin.client.call("/v3/kv/put", ["key": Etcd.base64(twin.keys.leader), "value": Etcd.base64("not json")])
        #expect(throws: ClusterStoreError.self) { _ = try twin.store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1) }
        #expect(twin.store.fenced?.contains("holds a record that does not decode: The given data was not valid JSON.") == true, "\(twin.store.fenced ?? "")")
        #expect(twin.store.fenced?.hasSuffix("(held with lease 0)") == true)
        other.revoke()
        leader.lease.revoke()
        twin.lease.revoke()
    }

    @Test("a term key that is not a number stops every campaign instead of restarting the terms at 1")
    func undecodableTermKey() throws {
        let name = SharedEtcd.uniqueName("term")
        let first = try TestNode(cluster: name, node: "a")
        #expect(try first.lead() == 1)
        first.lease.revoke()
        _ = try first.client.call("/v3/kv/put", ["key": Etcd.base64(first.keys.term), "value": Etcd.base64("one")])
        let next = try TestNode(cluster: name, node: "b")
        do {
            _ = try next.lead()
            Issue.record("a campaign on a term key that does not parse succeeded")
        } catch let error as ClusterStoreError {
            #expect("\(error)".contains("the term key /snapback/\(name)/term holds \"one\", not a term number"), "\(error)")
        }
        #expect(try next.election.terms().map(\.node) == ["a"])
        next.lease.revoke()
    }
}
