import Foundation
import SnapbackLog

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

/// A stored record (the leader key's, a node's, a term's) that does not decode, and why.
struct UndecodableRecord: Error, Sendable, CustomStringConvertible {
    var description: String
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

    /// The record `T` stored as `bytes` in `key` (`what` says which key that is, for the reason),
    /// or why it does not decode: "the leader key /snapback/NAME/leader holds a record that does
    /// not decode: no "node" field (its value: …)".
    static func decodeRecord<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String, key: [UInt8]) -> Result<T, UndecodableRecord> {
        do { return .success(try JSONDecoder().decode(T.self, from: Data(bytes))) } catch {
            return .failure(
                UndecodableRecord(
                    description: "\(what) \(String(decoding: key, as: UTF8.self)) holds a record that does not decode: \(Self.reason(error)) (its value: \(String(decoding: bytes.prefix(120), as: UTF8.self)))"
                ))
        }
    }

    /// ``decodeRecord(_:_:what:key:)``, throwing.
    /// - Throws: ``ClusterStoreError/damaged(_:)`` (kind `malformed`) with its reason.
    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String, key: [UInt8]) throws(ClusterStoreError) -> T {
        switch decodeRecord(type, bytes, what: what, key: key) {
        case let .success(record): return record
        case let .failure(undecodable): throw .damaged(VerifyProblem(.malformed, at: nil, undecodable.description))
        }
    }

    /// What the decoder said, in a few words.
    static func reason(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        switch error {
        case let .keyNotFound(key, _): return "no \"\(key.stringValue)\" field"
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        @unknown default: return "\(error)"
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
        return try Self.decode(LeaderRecord.self, value, what: "the leader key", key: keys.leader)
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
            let termText: String
            do { termText = String(decoding: try Etcd.bytes(termKV?["value"]), as: UTF8.self) } catch { throw .refused(error) }
            // No term key: no term yet. One that does not parse must not restart the terms at 1
            // (the history in terms/ would be overwritten): nobody campaigns until it is repaired.
            guard let lastTerm = termKV == nil ? 0 : UInt64(termText) else {
                throw .damaged(
                    VerifyProblem(.malformed, at: nil, "the term key \(String(decoding: keys.term, as: UTF8.self)) holds \"\(termText.prefix(40))\", not a term number"))
            }
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
        try rangePrefix(keys.nodesPrefix).map { (key, value) throws(ClusterStoreError) in try Self.decode(NodeRecord.self, value, what: "the node key", key: key) }
    }

    /// Every term's leader, oldest first (at most `limit`, the newest ones).
    public func terms(limit: Int = 1000) throws(ClusterStoreError) -> [LeaderRecord] {
        try rangePrefix(keys.termsPrefix).suffix(limit).map { (key, value) throws(ClusterStoreError) in
            try Self.decode(LeaderRecord.self, value, what: "the term key", key: key)
        }
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
