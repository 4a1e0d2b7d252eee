import ArgumentParser
import Foundation
import SnapbackClusterLog
import SnapbackCore
import SnapbackLog

/// Which cluster to read: `-cluster etcd=URL[,URL...] -cluster-name NAME`, else what the node
/// beside the control socket in use wrote in `DIR/cluster.json` when it started.
struct ClusterLocation: ParsableArguments {
    @Option(name: .ibm("cluster"), help: ArgumentHelp("Read the cluster log in etcd (its client URLs).", valueName: "etcd=URL[,URL...]"))
    var cluster: String?
    @Option(name: .ibm("cluster-name"), help: ArgumentHelp("The cluster's name (with -cluster).", valueName: "NAME"))
    var clusterName: String?

    /// The file a cluster node writes in its data directory: its endpoints, cluster and node.
    static let fileName = "cluster.json"

    var isGiven: Bool { cluster != nil || clusterName != nil }

    /// The reader of the named cluster.
    /// - Throws: `CLIError` (`invalid_value`, exit 1) for a malformed or missing location.
    func reader(dataDirectory: @autoclosure () -> String) throws -> ClusterLogReader {
        var endpoints: [String]
        var name: String
        if let cluster {
            guard let parsed = Etcd.endpoints(parsing: cluster) else {
                throw CLIError(code: "invalid_value", message: "-cluster takes etcd=URL[,URL...], such as etcd=http://127.0.0.1:2379")
            }
            guard let clusterName else { throw CLIError(code: "invalid_value", message: "-cluster needs -cluster-name NAME") }
            (endpoints, name) = (parsed, clusterName)
        } else {
            let path = dataDirectory() + "/" + Self.fileName
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CLIError(code: "not_a_cluster", message: "no -cluster given and no cluster node wrote \(path)")
            }
            let parsed: Any
            do { parsed = try JSONSerialization.jsonObject(with: data) } catch {
                throw CLIError(code: "not_a_cluster", message: "no -cluster given, and \(path) is not JSON: \(error)")
            }
            guard let object = parsed as? [String: Any], let stored = object["endpoints"] as? [String], let storedName = object["cluster"] as? String else {
                throw CLIError(code: "not_a_cluster", message: "no -cluster given, and \(path) names no endpoints and cluster")
            }
            (endpoints, name) = (stored, clusterName ?? storedName)
        }
        guard ClusterKeys.isValidName(name) else { throw CLIError(code: "invalid_value", message: "-cluster-name takes 1 to 63 of letters, digits, '_', '.', '-'") }
        return ClusterLogReader(client: SocketEtcdTransport(endpoints: endpoints), keys: ClusterKeys(cluster: name))
    }

    /// Copies the cluster's log into a temporary LMDB log and opens it read-only (the directory is
    /// gone once the command ends): every `log` subcommand then reads the cluster's records
    /// through the same code as a node's. Each record is re-encoded from its event, caller and
    /// time, which gives the same bytes; the copy's head hash is checked against the cluster's.
    static func copy(_ reader: ClusterLogReader) throws -> EventLog {
        let directory = NSTemporaryDirectory() + "snapback-cluster-log-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }  // a read-only open keeps its mapping
        let (revision, head) = try reader.readHead()
        do {
            let copy = try EventLog(directory: directory, mapSizeBytes: 1 << 30)
            var pending: [(event: Event, caller: Caller?)] = []
            var pendingTime: Int64 = 0
            func flush() throws {
                guard !pending.isEmpty else { return }
                let callers = pending.contains { $0.caller != nil } ? pending.map(\.caller) : []
                _ = try copy.append(pending.map(\.event), callers: callers, timestampMilliseconds: pendingTime)
                pending.removeAll(keepingCapacity: true)
            }
            try reader.forEachRecord(through: head.sequence, revision: revision) { sequence, value in
                let stored = try value.withUnsafeBytes { bytes -> StoredEvent in
                    let record: RecordView
                    do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: bytes) } catch {
                        throw LogError.damagedRecord(sequence: sequence, problem: error)
                    }
                    return try EventLog.storedEvent(record)
                }
                if !pending.isEmpty && (stored.timestampMilliseconds != pendingTime || pending.count >= 4096) { try flush() }
                pendingTime = stored.timestampMilliseconds
                pending.append((stored.event, stored.caller))
                return true
            }
            try flush()
            let copied = try copy.readHead()
            copy.close()
            guard copied.sequence == head.sequence, copied.hash == head.hash else {
                throw CLIError(
                    code: "log_chain",
                    message: "the cluster log does not hash to its head (copied through seq \(copied.sequence), head seq \(head.sequence)): run snapback log verify -cluster",
                    exitCode: VerifyProblem.Kind.chain.exitCode)
            }
        }
        return try EventLog(directory: directory, readOnly: true)
    }
}

/// `snapback lscluster [-json]`: the nodes of the cluster, the leader, its term and its lease.
struct ListCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lscluster", abstract: "Show the cluster's nodes, its leader, the term and the leader's lease.")

    @OptionGroup var location: ClusterLocation
    @Option(name: .ibm("data-dir"), help: "A node's data directory (its cluster.json names the cluster; default: beside the control socket in use).")
    var dataDirectory: String?
    @Option(name: .ibm("delim"), help: "Separate columns with this character instead of aligning them.") var delimiter: String?
    @Flag(name: .ibm("json"), help: "Print JSON.") var json = false
    /// Terms listed by `-json`.
    static let termsShown = 100

    func run() throws {
        let reader = try location.reader(dataDirectory: dataDirectory ?? LogLocation.defaultDataDirectory(socketPath: ControlClient.resolve(nil).socketPath))
        let election = LeaderElection(client: reader.client, keys: reader.keys, node: "snapback-cli")
        let nodes: [NodeRecord]
        let leader: LeaderRecord?
        let head: (sequence: UInt64, hash: [UInt8], term: UInt64)
        var leaseSeconds: Int64?
        let terms: [LeaderRecord]
        do {
            terms = try election.terms(limit: Self.termsShown)
            nodes = try election.nodes()
            leader = try election.leader()
            head = try reader.readHead().head
            if let leader, let id = Int64(leader.lease) { leaseSeconds = try election.timeToLive(lease: id) }
        } catch let error as ClusterStoreError {
            // A record that does not decode (the leader key's, a node's, a term's) is named with
            // its key: lscluster never shows it as an empty holder.
            let text = error.description
            var message = text.hasPrefix(error.code + ": ") ? String(text.dropFirst(error.code.count + 2)) : text
            if case .unavailable = error {
                // What an operator wants to know in an incident: which members are down, and
                // whether any has a leader (`Specs/cluster.md` 3.3).
                let sighting = QuorumProbe(endpoints: reader.client.endpoints).look()
                message += "; etcd's members: \(sighting.summary)" + (sighting.showsNoLeader ? " (no member has a leader: etcd has no quorum)" : "")
            }
            throw CLIError(code: error.code, message: message)
        } catch {
            throw CLIError(code: "cluster_unavailable", message: "\(error)")
        }
        let since = leader.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0.sinceMilliseconds) / 1000)) } ?? ""
        if json {
            let object: [String: Any] = [
                "cluster": reader.keys.cluster, "leader": leader?.node ?? "", "term": leader?.term ?? 0, "lease": leader?.lease ?? "",
                "lease_ttl_seconds": leaseSeconds ?? 0, "leader_since": since, "last_sequence": head.sequence, "head_term": head.term,
                "endpoints": reader.client.endpoints,
                // The history of leaders, one per term (the newest ``termsShown``).
                "terms": terms.map { ["term": $0.term, "node": $0.node, "lease": $0.lease, "since_ms": $0.sinceMilliseconds, "first_sequence": $0.firstSequence ?? 0] },
                "nodes": nodes.map { node -> [String: Any] in
                    ["node": node.node, "role": node.node == leader?.node ? "leader" : node.role, "pid": node.pid, "lease": node.lease, "detail": node.detail ?? ""]
                },
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("cluster \(reader.keys.cluster): leader \(leader?.node ?? "none"), term \(leader?.term ?? 0), lease \(leader?.lease ?? "-") (\(leaseSeconds.map { "\($0) s left" } ?? "none")), since \(since.isEmpty ? "-" : since), last seq \(head.sequence)")
        let rows = nodes.map { node -> [Listing.Field] in
            [.text(node.node), .text(node.node == leader?.node ? "leader" : node.role), .number(UInt64(max(0, node.pid))), .text(node.lease), .text(node.detail ?? "")]
        }
        print(Listing(columns: ["node", "role", "pid", "lease", "detail"], rows: rows).table(delimiter: delimiter))
    }
}
