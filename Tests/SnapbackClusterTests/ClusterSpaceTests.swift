import EtcdTesting
import Foundation
import SnapbackAdapters
import SnapbackCluster
import SnapbackClusterLog
import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackLog
import Testing

/// etcd's space quota (`Specs/cluster.md` section 7): a cluster of its own, with a quota of a few
/// MiB, filled until etcd raises its NOSPACE alarm.
@Suite("the cluster store when etcd's space quota is reached", .serialized)
struct ClusterSpaceTests {
    static let quotaBytes = 4 << 20

    /// Bitmap parts rewritten commit after commit, as a map's marks are: each put leaves the old
    /// revision behind until etcd compacts it, which is how a cluster without
    /// `--auto-compaction-retention` fills its quota. (Map 999 exists in no state: nothing
    /// reads these parts.)
    static func ballast(_ round: Int) -> [BitmapChange] {
        (0..<512).map { part in .setPart(map: 999, kind: .dirty, part: part, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: round &+ part), count: 1024)) }
    }

    /// The head key's value and mod revision, read straight from etcd.
    static func headKey(_ client: EtcdClient, _ keys: ClusterKeys) throws -> (value: [UInt8], modRevision: Int64) {
        let answer = try client.call("/v3/kv/range", ["key": Etcd.base64(keys.head)])
        let kv = (answer["kvs"] as? [JSONObject])?.first
        return (try Etcd.bytes(kv?["value"]), Etcd.int(kv?["mod_revision"]) ?? 0)
    }

    @Test("a full quota fails commits with storage_full, records nothing and fences nothing; compact, defrag and disarm let the same store commit again")
    func quotaAlarm() throws {
        let etcd = try LocalEtcdCluster(memberCount: 3, memberArguments: ["--quota-backend-bytes", String(Self.quotaBytes)])
        defer {
            // SIGTERM would cost 5 s (the members try to hand over their raft leadership); the
            // data is thrown away.
            for index in etcd.members.indices { etcd.kill(index) }
            etcd.stop()
        }
        let client = EtcdClient(endpoints: etcd.clientURLs)
        defer { client.shutdown() }
        let keys = ClusterKeys(cluster: "space")
        let election = LeaderElection(client: client, keys: keys, node: "a")
        // A TTL the test never outlasts: no keep-alive loop needed.
        let lease = try ClusterLease(client: client, ttlSeconds: 60)
        let store = ClusterDurableStore(client: client, keys: keys)
        let term = try #require(try election.campaign(lease: lease, nowMilliseconds: 1, firstSequence: 0)?.term)
        try store.beginLeading(lease: lease, term: term)
        let directory = NSTemporaryDirectory() + "snapback-space-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let volumes = try FileVolumeProvider(dataDirectory: directory)
        let controller = try Controller(durable: store, volumes: volumes, clock: { Int64(Date().timeIntervalSince1970 * 1000) }, version: "test")
        try controller.execute(.createVolume(name: "a", sizeBytes: 1 << 20, path: nil))
        let reader = ClusterLogReader(client: client, keys: keys)
        let eventsBefore = try reader.storedEvents()
        #expect(eventsBefore.count == 2)

        // Fill until etcd refuses. A commit that etcd applied and still answered "database space
        // exceeded" (its quota checked again when applied) returns its receipt: the loop goes on.
        var refusal: ClusterStoreError?
        var round = 0
        while refusal == nil && round < 64 {
            round += 1
            let before = try Self.headKey(client, keys)
            do {
                _ = try store.commit(events: [], bitmapChanges: Self.ballast(round), timestampMilliseconds: 1)
            } catch let error as ClusterStoreError {
                refusal = error
                // Nothing of the refused commit is recorded.
                let after = try Self.headKey(client, keys)
                #expect(after.modRevision == before.modRevision && after.value == before.value)
            }
        }
        let error = try #require(refusal, "etcd took \(round) commits of 512 KiB under a quota of \(Self.quotaBytes) bytes")
        #expect(error.isOutOfSpace && error.code == "storage_error", "\(error)")
        #expect(store.fenced == nil, "a space error is a known outcome: \(store.fenced ?? "")")
        #expect(etcd.etcdctl(["alarm", "list"]).output.contains("NOSPACE"))

        // The controller answers storage_full, records nothing, and stays the leader.
        let headBefore = try Self.headKey(client, keys)
        do {
            try controller.execute(.createVolume(name: "b", sizeBytes: 1 << 20, path: nil))
            Issue.record("mkvolume succeeded on a full etcd")
        } catch {
            #expect(error.code == "storage_full", "\(error)")
            #expect("\(error)".contains("database space exceeded"), "\(error)")
        }
        #expect(controller.health.status == .degraded && controller.health.reason?.hasPrefix("storage_full") == true)
        #expect(controller.state.volume("b") == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: volumes.directory).count == 1, "b's file is removed")
        let headAfter = try Self.headKey(client, keys)
        #expect(headAfter.modRevision == headBefore.modRevision && headAfter.value == headBefore.value)
        #expect(try reader.storedEvents() == eventsBefore)
        let report = reader.verify()
        #expect(report.isSound && report.lastSequence == 2, "\(report)")
        #expect(store.fenced == nil)

        // Under the alarm the lease is kept alive, but no lease can be granted (a node restarting
        // now cannot register) and no node can campaign.
        try lease.keepAliveOnce()
        #expect(throws: ClusterStoreError.self) { _ = try ClusterLease(client: client, ttlSeconds: 2) }

        // Disarming alone lifts the alarm but gives no space back: the next commit that does not
        // fit raises it again (refused before it is proposed: nothing recorded).
        #expect(etcd.etcdctl(["alarm", "disarm"]).status == 0)
        #expect(!etcd.etcdctl(["alarm", "list"]).output.contains("NOSPACE"))
        do {
            _ = try store.commit(events: [], bitmapChanges: Self.ballast(round + 1), timestampMilliseconds: 1)
            Issue.record("a commit that does not fit succeeded after a disarm alone")
        } catch let error as ClusterStoreError {
            #expect(error.isOutOfSpace, "\(error)")
        }
        #expect(try Self.headKey(client, keys).modRevision == headBefore.modRevision)
        #expect(etcd.etcdctl(["alarm", "list"]).output.contains("NOSPACE"))
        #expect(throws: ControllerError.self) { try controller.execute(.createVolume(name: "b", sizeBytes: 1 << 20, path: nil)) }
        #expect(store.fenced == nil)

        // The operator's remedy (etcd's maintenance guide): compact away the old revisions,
        // defragment every member to give the space back, then disarm.
        let revision = try #require(Etcd.int((try client.call("/v3/kv/range", ["key": Etcd.base64(keys.head)])["header"] as? JSONObject)?["revision"]))
        let compacted = etcd.etcdctl(["compact", "--physical", String(revision)])
        #expect(compacted.status == 0, "\(compacted.output)")
        let defragmented = etcd.etcdctl(["defrag"])
        #expect(defragmented.status == 0, "\(defragmented.output)")
        #expect(etcd.etcdctl(["alarm", "disarm"]).status == 0)
        #expect(!etcd.etcdctl(["alarm", "list"]).output.contains("NOSPACE"))

        // The same controller, on the same store, commits again.
        try controller.execute(.createVolume(name: "b", sizeBytes: 1 << 20, path: nil))
        #expect(controller.health.status == .online)
        let b = try #require(controller.state.volume("b"))
        #expect(try reader.storedEvents().map(\.event) == eventsBefore.map(\.event) + [.volumeCreated(id: b.id, name: "b", sizeBytes: 1 << 20, path: nil)])
        #expect(reader.verify().isSound)
        let follower = ClusterDurableStore(client: client, keys: keys)
        #expect(try follower.replayState() == controller.state)
    }

    @Test("a commit etcd applied but answered 'database space exceeded' returns its receipt; one it refused changes nothing; one that finds the head moved is fenced")
    func outcomeOfASpaceError() throws {
        let name = SharedEtcd.uniqueName("space")
        let node = try TestNode(cluster: name, node: "a")
        let transport = SpaceRefusingTransport(node.client)
        let store = ClusterDurableStore(client: transport, keys: node.keys)
        let term = try #require(try node.election.campaign(lease: node.lease, nowMilliseconds: 1, firstSequence: 0)?.term)
        try store.beginLeading(lease: node.lease, term: term)
        _ = try store.commit(events: [volume(1)], bitmapChanges: [], timestampMilliseconds: 1)
        let reader = ClusterLogReader(client: node.client, keys: node.keys)

        // Applied, then answered "database space exceeded" (etcd 3.4's quotaApplierV3).
        transport.next = .applyThenRefuse
        #expect(try store.commit(events: [volume(2), volume(3)], bitmapChanges: [], timestampMilliseconds: 2) == AppendReceipt(firstSequence: 2, lastSequence: 3))
        #expect(store.fenced == nil)
        #expect(try store.commit(events: [volume(4)], bitmapChanges: [], timestampMilliseconds: 3) == AppendReceipt(firstSequence: 4, lastSequence: 4))

        // Refused before it was proposed: nothing recorded, nothing fenced, the next commit goes on.
        transport.next = .refuse
        do {
            _ = try store.commit(events: [volume(5)], bitmapChanges: [], timestampMilliseconds: 4)
            Issue.record("a refused commit succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.isOutOfSpace, "\(error)")
        }
        #expect(store.fenced == nil)
        #expect(try reader.readHead().head.sequence == 4)
        #expect(try store.commit(events: [volume(5)], bitmapChanges: [], timestampMilliseconds: 5) == AppendReceipt(firstSequence: 5, lastSequence: 5))
        #expect(try reader.storedEvents().map(\.event) == (1...5).map { volume($0) })
        #expect(reader.verify().isSound)

        // Another writer on the same lease moved the head: the store cannot tell its own commit
        // from that, and is fenced.
        let twin = ClusterDurableStore(client: node.client, keys: node.keys)
        try twin.beginLeading(lease: node.lease, term: term)
        _ = try twin.commit(events: [volume(6)], bitmapChanges: [], timestampMilliseconds: 6)
        transport.next = .refuse
        do {
            _ = try store.commit(events: [volume(7)], bitmapChanges: [], timestampMilliseconds: 7)
            Issue.record("a commit after another writer's succeeded")
        } catch let error as ClusterStoreError {
            #expect(error.code == "not_leader", "\(error)")
        }
        #expect(store.fenced?.contains("another writer appended") == true)
        node.lease.revoke()
    }
}

/// A transport that answers the next transaction "database space exceeded", as etcd does when
/// its quota is reached: after sending it on (`applyThenRefuse`: etcd 3.4 applies a transaction
/// that passed the quota check before the proposal and fails the one made when it is applied),
/// or without sending it (`refuse`: refused before the proposal).
final class SpaceRefusingTransport: EtcdTransport, @unchecked Sendable {
    enum Next {
        case pass
        case applyThenRefuse
        case refuse
    }

    let inner: EtcdClient
    private let lock = NSLock()
    private var nextStorage = Next.pass
    var next: Next {
        get { lock.withLock { nextStorage } }
        set { lock.withLock { nextStorage = newValue } }
    }
    var endpoints: [String] { inner.endpoints }

    init(_ inner: EtcdClient) { self.inner = inner }

    func call(_ path: String, _ body: JSONObject) throws(EtcdError) -> JSONObject {
        guard path == "/v3/kv/txn" else { return try inner.call(path, body) }
        let mode = lock.withLock { () -> Next in
            defer { nextStorage = .pass }
            return nextStorage
        }
        switch mode {
        case .pass: return try inner.call(path, body)
        case .applyThenRefuse: _ = try inner.call(path, body)
        case .refuse: break
        }
        throw .server(code: 8, message: "etcdserver: mvcc: database space exceeded")
    }
}
