import EtcdTesting
import Foundation
import Testing

/// The audit commands on a cluster whose keys hold values that do not decode, written with
/// `etcdctl` into a real one-member etcd (no node runs): `lscluster` names the key rather than
/// show an empty leader, and `log verify -cluster` reports a checkpoint that does not decode as
/// the LMDB log's verify does (`log_checkpoint`, exit 8).
@Suite("snapback's cluster audits on damaged keys", .serialized)
struct ClusterAuditTests {
    /// `snapback ARGUMENTS -cluster etcd=URL -cluster-name NAME`.
    static func snapback(_ etcd: LocalEtcdCluster, _ name: String, _ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(try Binaries.path("snapback"), arguments + ["-cluster", "etcd=" + etcd.endpoints, "-cluster-name", name])
    }

    /// A one-member etcd, killed at the end (its data is thrown away).
    static func withEtcd(_ body: (LocalEtcdCluster) async throws -> Void) async throws {
        let etcd = try LocalEtcdCluster(memberCount: 1)
        defer {
            etcd.kill(0)
            etcd.stop()
        }
        try await body(etcd)
    }

    @Test("lscluster names a leader record that does not decode instead of listing an empty leader")
    func undecodableLeader() async throws {
        try await Self.withEtcd { etcd in
            #expect(etcd.etcdctl(["put", "/snapback/garbled/leader", "{\"term\":3}"]).status == 0)
            let output = try await Self.snapback(etcd, "garbled", ["lscluster"])
            #expect(output.exitCode == 1, "\(output)")
            #expect(output.stdout.isEmpty, "\(output)")
            #expect(
                output.stderr.hasPrefix(
                    "snapback: error storage_error: the cluster log is damaged: malformed: the leader key /snapback/garbled/leader holds a record that does not decode: no \"node\" field"
                ), "\(output)")
            let json = try await Self.snapback(etcd, "garbled", ["lscluster", "-json"])
            #expect(json.exitCode == 1 && json.stdout.isEmpty && json.stderr.contains("the leader key /snapback/garbled/leader"), "\(json)")
        }
    }

    @Test("log verify -cluster reports a checkpoint that does not decode as log verify does: log_checkpoint, exit 8")
    func undecodableCheckpoint() async throws {
        try await Self.withEtcd { etcd in
            #expect(etcd.etcdctl(["put", "/snapback/damaged/checkpoints/00000000000000000003", "garbage"]).status == 0)
            let output = try await Self.snapback(etcd, "damaged", ["log", "verify"])
            #expect(output.exitCode == 8, "\(output)")
            #expect(output.stderr == "snapback: error log_checkpoint: seq 3: checkpoint: checkpoint rejected: checkpoint at seq 3 has 7 bytes\n", "\(output)")
        }
    }
}
