import Foundation

/// Who leads, in which term, on which lease (the value of the leader key and of `terms/TERM`).
public struct LeaderRecord: Codable, Sendable, Equatable {
    public var node: String
    public var term: UInt64
    /// The lease the leader key is held with (decimal, as etcd's JSON writes int64).
    public var lease: String
    /// When the node won the term (its clock, milliseconds since 1970).
    public var sinceMilliseconds: Int64
    /// The log's last sequence number when the term began.
    public var firstSequence: UInt64?

    public init(node: String, term: UInt64, lease: Int64, sinceMilliseconds: Int64, firstSequence: UInt64? = nil) {
        self.node = node
        self.term = term
        self.lease = String(lease)
        self.sinceMilliseconds = sinceMilliseconds
        self.firstSequence = firstSequence
    }
}

/// A live node (the value of `nodes/NODE`, held with the node's lease).
public struct NodeRecord: Codable, Sendable, Equatable {
    public var node: String
    public var lease: String
    public var pid: Int32
    public var startedMilliseconds: Int64
    /// `standby`, `leader`, or `refusing` (it cannot open every volume: it does not campaign).
    public var role: String
    public var detail: String?

    public init(node: String, lease: Int64, pid: Int32, startedMilliseconds: Int64, role: String, detail: String? = nil) {
        self.node = node
        self.lease = String(lease)
        self.pid = pid
        self.startedMilliseconds = startedMilliseconds
        self.role = role
        self.detail = detail
    }
}

/// A node name: 1 to 63 bytes of letters, digits, `_`, `.` and `-`.
public func isValidNodeName(_ name: String) -> Bool { ClusterKeys.isValidName(name) }

/// Leader election on etcd: a node campaigns by creating the leader key with its lease, and
/// the term counter moves in the same transaction, so each term has exactly one leader
/// (`Specs/cluster.md`, "Election").
public final class LeaderElection: @unchecked Sendable {
    public let client: any EtcdTransport
    public let keys: ClusterKeys
    public let node: String

    public init(client: any EtcdTransport, keys: ClusterKeys, node: String) {
        precondition(isValidNodeName(node))
        self.client = client
        self.keys = keys
        self.node = node
    }

    static func json<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(ClusterStoreError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw .refused(.malformed("a \(T.self) that does not decode: \(String(decoding: bytes.prefix(200), as: UTF8.self))"))
        }
    }

    func call(_ path: String, _ body: JSONObject) throws(ClusterStoreError) -> JSONObject {
        do { return try client.call(path, body) } catch { throw ClusterLease.wrap(error) }
    }

    /// Puts this node's record, held with `lease` (it vanishes when the node's lease does).
    public func register(_ record: NodeRecord, lease: ClusterLease) throws(ClusterStoreError) {
        _ = try call("/v3/kv/put", ["key": Etcd.base64(keys.node(node)), "value": Etcd.base64(Self.json(record)), "lease": String(lease.id)])
    }

    /// The current leader, or `nil` when the leadership is free.
    public func leader() throws(ClusterStoreError) -> LeaderRecord? {
        let answer = try call("/v3/kv/range", ["key": Etcd.base64(keys.leader)])
        guard let kv = (answer["kvs"] as? [JSONObject])?.first else { return nil }
        let value: [UInt8]
        do { value = try Etcd.bytes(kv["value"]) } catch { throw .refused(error) }
        return try Self.decode(LeaderRecord.self, value)
    }

    /// One attempt to win the leadership with `lease`: succeeds when no node leads, moving the
    /// term on by one in the same transaction. Returns the won term's record, or `nil` when
    /// another node leads.
    public func campaign(lease: ClusterLease, nowMilliseconds: Int64, firstSequence: UInt64) throws(ClusterStoreError) -> LeaderRecord? {
        // The term key may move between our read and our transaction (another node won and
        // lost a term): a few attempts, never a loop without end.
        for _ in 0..<3 {
            let termAnswer = try call("/v3/kv/range", ["key": Etcd.base64(keys.term)])
            let termKV = (termAnswer["kvs"] as? [JSONObject])?.first
            let termModRevision = Etcd.int(termKV?["mod_revision"]) ?? 0
            let lastTerm: UInt64
            do { lastTerm = UInt64(String(decoding: try Etcd.bytes(termKV?["value"]), as: UTF8.self)) ?? 0 } catch { throw .refused(error) }
            let record = LeaderRecord(node: node, term: lastTerm + 1, lease: lease.id, sinceMilliseconds: nowMilliseconds, firstSequence: firstSequence)
            let value = Etcd.base64(Self.json(record))
            let answer = try call(
                "/v3/kv/txn",
                [
                    "compare": [
                        ["key": Etcd.base64(keys.leader), "target": "CREATE", "result": "EQUAL", "create_revision": "0"],
                        ["key": Etcd.base64(keys.term), "target": "MOD", "result": "EQUAL", "mod_revision": String(termModRevision)],
                    ],
                    "success": [
                        ["request_put": ["key": Etcd.base64(keys.leader), "value": value, "lease": String(lease.id)]],
                        ["request_put": ["key": Etcd.base64(keys.term), "value": Etcd.base64(String(lastTerm + 1))]],
                        ["request_put": ["key": Etcd.base64(keys.termRecord(lastTerm + 1)), "value": value]],
                    ],
                    "failure": [["request_range": ["key": Etcd.base64(keys.leader)]]],
                ])
            if answer["succeeded"] as? Bool == true { return record }
            let responses = answer["responses"] as? [JSONObject] ?? []
            let range = responses.first?["response_range"] as? JSONObject
            if let kvs = range?["kvs"] as? [JSONObject], !kvs.isEmpty { return nil }  // someone leads
        }
        return nil
    }

    /// The live nodes (each held by its lease).
    public func nodes() throws(ClusterStoreError) -> [NodeRecord] {
        try rangePrefix(keys.nodesPrefix).map { (_, value) throws(ClusterStoreError) in try Self.decode(NodeRecord.self, value) }
    }

    /// Every term's leader, oldest first (at most `limit`, the newest ones).
    public func terms(limit: Int = 1000) throws(ClusterStoreError) -> [LeaderRecord] {
        try rangePrefix(keys.termsPrefix).suffix(limit).map { (_, value) throws(ClusterStoreError) in try Self.decode(LeaderRecord.self, value) }
    }

    /// The seconds left on lease `id` by etcd's account, or `nil` when etcd no longer knows it.
    public func timeToLive(lease id: Int64) throws(ClusterStoreError) -> Int64? {
        let answer = try call("/v3/lease/timetolive", ["ID": String(id)])
        guard let ttl = Etcd.int(answer["TTL"]), ttl >= 0 else { return nil }
        return ttl
    }

    func rangePrefix(_ prefix: [UInt8]) throws(ClusterStoreError) -> [([UInt8], [UInt8])] {
        let answer = try call("/v3/kv/range", ["key": Etcd.base64(prefix), "range_end": Etcd.base64(Etcd.prefixEnd(prefix))])
        var result: [([UInt8], [UInt8])] = []
        for kv in answer["kvs"] as? [JSONObject] ?? [] {
            do { result.append((try Etcd.bytes(kv["key"]), try Etcd.bytes(kv["value"]))) } catch { throw .refused(error) }
        }
        return result
    }
}
