import EtcdTesting
import Foundation
import SnapbackCluster
import SnapbackClusterLog
import SnapbackCore
import SnapbackData
import Testing

/// The quorum hold (`Specs/cluster.md` 3.3): what a sighting proves, and a lease held on one
/// against a real etcd whose quorum is gone.
@Suite("the quorum hold")
struct QuorumHoldTests {
    static func sighting(_ members: [MemberSighting]) -> QuorumSighting {
        QuorumSighting(members: members.enumerated().map { ("http://127.0.0.1:\(2379 + $0.offset)", $0.element) }, began: .now)
    }

    @Test("a sighting proves no etcd leader only when every member is down or says it has none")
    func whatASightingProves() {
        #expect(Self.sighting([.down, .down, .leaderless]).showsNoLeader)
        #expect(Self.sighting([.down, .down, .down]).showsNoLeader)
        #expect(Self.sighting([.leaderless, .leaderless, .leaderless]).showsNoLeader)
        // A member with a leader, or one that does not answer clearly, proves nothing: it may be
        // in a working majority cut off from this node.
        #expect(!Self.sighting([.down, .down, .led("7")]).showsNoLeader)
        #expect(!Self.sighting([.down, .down, .unknown("timed out")]).showsNoLeader)
        #expect(!Self.sighting([.down, .leaderless, .unknown("reset")]).showsNoLeader)
        #expect(!Self.sighting([]).showsNoLeader)
    }

    @Test(
        "two of three members killed: the lease is held on the sighting, commits are refused before sending and fence nothing; members back: keep-alives renew it and commits succeed"
    )
    func holdOnARealEtcd() throws {
        let etcd = try LocalEtcdCluster(memberCount: 3)
        defer { etcd.stop() }
        let client = EtcdClient(endpoints: etcd.clientURLs, requestTimeout: .milliseconds(500))
        defer { client.shutdown() }
        #expect(try QuorumProbe.uncoveredMembers(endpoints: etcd.clientURLs, client: client) == nil)
        #expect(try QuorumProbe.uncoveredMembers(endpoints: Array(etcd.clientURLs.prefix(2)), client: client) != nil)

        let keys = ClusterKeys(cluster: "hold")
        let election = LeaderElection(client: client, keys: keys, node: "a")
        let lease = try ClusterLease(client: client, ttlSeconds: 2)
        let store = ClusterDurableStore(client: client, keys: keys)
        let term = try #require(try election.campaign(lease: lease, nowMilliseconds: 1, firstSequence: 0)).term
        try store.beginLeading(lease: lease, term: term)
        _ = try store.commit(events: [volume(1)], callers: [], bitmapChanges: [], timestampMilliseconds: 1)
        try lease.keepAliveOnce()

        let probe = QuorumProbe(endpoints: etcd.clientURLs)
        // With a working etcd, a sighting shows a leader: no hold.
        #expect(!lease.hold(on: probe.look()))

        etcd.kill(0)
        etcd.kill(1)
        // The remaining member notices within its election timeout that it has no leader.
        var held = false
        let deadline = ContinuousClock.now + .seconds(10)
        while !held && lease.isValid && ContinuousClock.now < deadline {
            held = lease.hold(on: probe.look())
            if !held { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(held, "no hold before the lease ran out")
        #expect(lease.heldWithoutQuorum)
        // Held past the lease's own end (2 s less the margin after the last keep-alive).
        let end = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < end {
            _ = lease.hold(on: probe.look())
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(lease.isValid && lease.heldWithoutQuorum)

        // A commit is refused before anything is sent, with cluster_unavailable, and fences nothing.
        #expect {
            try store.commit(events: [volume(2)], callers: [], bitmapChanges: [], timestampMilliseconds: 2)
        } throws: { error in
            guard let failure = error as? ClusterStoreError, case .notSent = failure else { return false }
            return failure.code == "cluster_unavailable" && !failure.outcomeUnknown
        }
        #expect(store.fenced == nil)

        // The members back: the new etcd leader extended the lease; a keep-alive renews it.
        try etcd.restart(0)
        try etcd.restart(1)
        var renewed = false
        let back = ContinuousClock.now + .seconds(10)
        while !renewed && ContinuousClock.now < back {
            do {
                try lease.keepAliveOnce()
                renewed = true
            } catch {
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        #expect(renewed)
        #expect(!lease.heldWithoutQuorum && lease.isValid)
        let receipt = try store.commit(events: [volume(2)], callers: [], bitmapChanges: [], timestampMilliseconds: 3)
        #expect(receipt.firstSequence == 2, "the refused commit left no trace")
    }

    @Test("a lease that ran out before the sighting is not held, whatever the sighting shows")
    func noHoldAfterTheLeaseRanOut() throws {
        let etcd = try LocalEtcdCluster(memberCount: 1)
        defer { etcd.stop() }
        let client = EtcdClient(endpoints: etcd.clientURLs, requestTimeout: .milliseconds(500))
        defer { client.shutdown() }
        let lease = try ClusterLease(client: client, ttlSeconds: 1, marginMilliseconds: 250)
        etcd.kill(0)
        Thread.sleep(forTimeInterval: 1.0)
        #expect(!lease.isValid)
        let sighting = QuorumProbe(endpoints: etcd.clientURLs).look()
        #expect(sighting.showsNoLeader, "\(sighting.summary)")
        #expect(!lease.hold(on: sighting))
        #expect(!lease.isValid && !lease.heldWithoutQuorum)
    }
}

/// The leader's compaction of etcd's history (`Specs/cluster.md` 7).
@Suite("compacting etcd's history")
struct HistoryCompactionTests {
    @Test("each call compacts to the head's revision at the previous call; reads, replay and verify are unchanged; a fenced store compacts nothing")
    func compaction() throws {
        let name = SharedEtcd.uniqueName("compact")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() == 1)
        for id in 1...5 { _ = try leader.store.commit(events: [volume(VolumeID(id))], callers: [], bitmapChanges: [], timestampMilliseconds: Int64(id)) }
        #expect(try leader.store.compactHistory() == nil, "the first call only remembers the head")
        let headAnswer = try leader.client.call("/v3/kv/range", ["key": Etcd.base64(leader.keys.head)])
        let remembered = try #require(Etcd.int((headAnswer["kvs"] as? [JSONObject])?.first?["mod_revision"]))
        for id in 6...8 { _ = try leader.store.commit(events: [volume(VolumeID(id))], callers: [], bitmapChanges: [], timestampMilliseconds: Int64(id)) }
        #expect(try leader.store.compactHistory() == remembered)
        let later = try leader.client.call("/v3/kv/range", ["key": Etcd.base64(leader.keys.head)])
        let latest = try #require(Etcd.int((later["kvs"] as? [JSONObject])?.first?["mod_revision"]))
        #expect(try leader.store.compactHistory() == latest, "the head's revision at the previous call")
        #expect(try leader.store.compactHistory() == nil, "no commit since: nothing older to drop")
        // Older revisions are gone: a read at one is refused by etcd.
        #expect(throws: EtcdError.self) {
            try leader.client.call("/v3/kv/range", ["key": Etcd.base64(leader.keys.head), "revision": String(latest - 1)])
        }
        // The log reads the same: a new follower replays all 8 events.
        let follower = ClusterDurableStore(client: leader.client, keys: leader.keys)
        try follower.catchUp()
        #expect(follower.followedState.volumes.count == 8)
        // A fenced store compacts nothing.
        leader.store.fence("test")
        #expect(try leader.store.compactHistory() == nil)
    }
}

extension HistoryCompactionTests {
    @Test("a watch from a compacted revision ends with an error, not a silent stream")
    func watchFromACompactedRevision() async throws {
        let name = SharedEtcd.uniqueName("compactwatch")
        let leader = try TestNode(cluster: name, node: "a")
        #expect(try leader.lead() == 1)
        for id in 1...3 { _ = try leader.store.commit(events: [volume(VolumeID(id))], callers: [], bitmapChanges: [], timestampMilliseconds: Int64(id)) }
        _ = try leader.store.compactHistory()
        _ = try leader.store.commit(events: [volume(4)], callers: [], bitmapChanges: [], timestampMilliseconds: 4)
        let compactedTo = try #require(try leader.store.compactHistory())
        let watching = Task {
            try await leader.client.watch(key: leader.keys.eventsPrefix, rangeEnd: Etcd.prefixEnd(leader.keys.eventsPrefix), startRevision: 1) { _ in true }
        }
        let outcome = await Task {
            try? await Task.sleep(for: .seconds(10))
            watching.cancel()
        }
        defer { outcome.cancel() }
        do {
            try await watching.value
            Issue.record("the watch ended without an error")
        } catch let error as EtcdError {
            #expect("\(error)".contains("compacted through revision"), "\(error) (compacted to \(compactedTo))")
        } catch {
            Issue.record("the watch from revision 1 did not end within 10 s: \(error)")
        }
    }
}
