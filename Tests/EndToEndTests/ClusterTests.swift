import EtcdTesting
import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A snapbackd node of a cluster: its own data directory (control socket, log mirror), the
/// volumes in the shared directory of the rig. Unlike `Daemon`, starting does not wait for a
/// control socket: a standby has none.
final class ClusterNodeProcess: @unchecked Sendable {
    let name: String
    let directory: String
    let port: Int
    var socketPath: String { directory + "/control.sock" }
    var stderrPath: String { directory + "/snapbackd.stderr" }
    private let process: Process

    init(name: String, rig: ClusterRig, arguments extra: [String] = []) throws {
        self.name = name
        directory = rig.directory + "/" + name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Binaries.path("snapbackd"))
        process.arguments = [
            "--data-dir", directory, "--nbd", "127.0.0.1:\(port)", "--cluster", "etcd=" + rig.etcd.endpoints, "--cluster-name", rig.clusterName,
            "--node", name, "--shared-dir", rig.sharedDirectory,
        ] + extra
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try appendingHandle(directory + "/snapbackd.stdout")
        process.standardError = try appendingHandle(stderrPath)
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    func signal(_ signal: Int32) { if process.isRunning { kill(process.processIdentifier, signal) } }

    /// Waits until the process has exited; returns its status (nil on timeout).
    func waitForExit(timeoutSeconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return exitStatus
    }

    /// Waits until this node leads: its control socket answers.
    func waitUntilLeading(timeoutSeconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            guard process.isRunning else { throw RigError("node \(name) exited with \(process.terminationStatus): \(stderrTail())") }
            if FileManager.default.fileExists(atPath: socketPath), let answer = try? await snapback("lsvolume"), answer.exitCode == 0 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RigError("node \(name) did not lead within \(timeoutSeconds) s: \(stderrTail())")
    }

    func snapback(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(try Binaries.path("snapback"), arguments, environment: ["SNAPBACK_SOCKET": socketPath])
    }

    func snapback(_ arguments: String...) async throws -> ProcessOutput { try await snapback(arguments) }

    @discardableResult
    func ok(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessOutput {
        let output = try await snapback(arguments)
        #expect(output.exitCode == 0, "snapback \(arguments.joined(separator: " ")) on \(name): \(output)", sourceLocation: sourceLocation)
        return output
    }

    func stderrTail(_ lines: Int = 15) -> String {
        let text = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGCONT)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A 3-member etcd cluster on loopback ports, a shared volume directory and the nodes started
/// on them; everything is stopped and removed at the end.
final class ClusterRig: @unchecked Sendable {
    let etcd: LocalEtcdCluster
    let directory: String
    let clusterName = "e2e"
    var sharedDirectory: String { directory + "/shared" }
    private(set) var nodes: [ClusterNodeProcess] = []

    init() throws {
        etcd = try LocalEtcdCluster(memberCount: 3)
        directory = NSTemporaryDirectory() + "/sbcluster-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: sharedDirectory, withIntermediateDirectories: true)
    }

    func start(_ name: String, arguments: [String] = []) throws -> ClusterNodeProcess {
        let node = try ClusterNodeProcess(name: name, rig: self, arguments: arguments)
        nodes.append(node)
        return node
    }

    /// `snapback ARGUMENTS -cluster ... -cluster-name ...` (no daemon involved).
    func snapback(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(try Binaries.path("snapback"), arguments + ["-cluster", "etcd=" + etcd.endpoints, "-cluster-name", clusterName])
    }

    /// The cluster's events (`log show -json -cluster`).
    func events() async throws -> [(seq: UInt64, type: String)] {
        let output = try await snapback(["log", "show", "-json"])
        guard output.exitCode == 0 else { throw RigError("log show -cluster: \(output)") }
        return output.stdout.split(separator: "\n").compactMap { line in
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                let seq = (object["seq"] as? NSNumber)?.uint64Value, let type = object["type"] as? String
            else { return nil }
            return (seq, type)
        }
    }

    /// The first of `nodes` whose control socket answers (the one that leads).
    static func firstLeading(_ nodes: [ClusterNodeProcess], timeoutSeconds: Double) async throws -> ClusterNodeProcess {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            for node in nodes where FileManager.default.fileExists(atPath: node.socketPath) {
                if let answer = try? await node.snapback("lsvolume"), answer.exitCode == 0 { return node }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RigError("no node led within \(timeoutSeconds) s: \(nodes.map { "\($0.name): \($0.stderrTail(5))" })")
    }

    /// `lscluster -json` read straight from etcd.
    func cluster() async throws -> [String: Any] {
        let output = try await snapback(["lscluster", "-json"])
        guard output.exitCode == 0, let object = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8))) as? [String: Any] else {
            throw RigError("lscluster -json: \(output)")
        }
        return object
    }

    func cleanup() {
        for node in nodes { node.stop() }
        etcd.stop()
        if ProcessInfo.processInfo.environment["SNAPBACK_E2E_KEEP"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }

    deinit { cleanup() }
}

func withClusterRig<T>(_ body: (ClusterRig) async throws -> T) async throws -> T {
    let rig = try ClusterRig()
    defer { rig.cleanup() }
    return try await body(rig)
}

/// Issue 17: two snapbackd nodes on a 3-member etcd cluster, sharing the volume files.
@Suite("high availability: two nodes on etcd")
struct ClusterTests {
    @Test("the leader killed mid-rollback: the standby takes over, finishes the rollback, and the bytes equal the image")
    func leaderKilledMidRollback() async throws {
        try await withClusterRig { rig in
            let first = try rig.start("a")
            try await first.waitUntilLeading()
            let second = try rig.start("b")
            let mebibytes: UInt64 = 256
            try await first.ok("mkvolume", "-name", "v", "-size", "\(mebibytes)m")
            try await first.ok("mkvolume", "-name", "t", "-size", "\(mebibytes)m")
            // The image: 0x11 everywhere; then the source is overwritten with 0x5A.
            let image = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x11 0 \(mebibytes)m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(image.exitCode == 0, "\(image)")
            try await first.ok("mklcmap", "-source", "v", "-target", "t", "-name", "m", "-autorestore", "on", "-copyrate", "0")
            try await first.ok("startlcmap", "m")
            let overwrite = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x5A 0 \(mebibytes)m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(overwrite.exitCode == 0, "\(overwrite)")

            // The fault starts the automatic rollback; the leader dies at once: the kill is sent by
            // the shell that ran the fault command, so that this test process's scheduling on a
            // loaded machine cannot let the rollback finish first.
            let faulted = try await runProcess(
                "/bin/sh", ["-c", "\"$1\" fault -volume v -reason 'ransomware detected' && kill -9 \"$2\"", "sh", try Binaries.path("snapback"), String(first.pid)],
                environment: ["SNAPBACK_SOCKET": first.socketPath])
            #expect(faulted.exitCode == 0, "\(faulted)")
            let killed = Date()
            _ = await first.waitForExit(timeoutSeconds: 10)
            try await second.waitUntilLeading(timeoutSeconds: 30)
            let takeover = Date().timeIntervalSince(killed)
            print("takeover after kill -9: \(String(format: "%.2f", takeover)) s (lease 2 s)")
            #expect(takeover < 15, "the standby took \(takeover) s to serve")

            let finished = try await runProcess(try Binaries.path("snapback"), ["wait", "-timeout", "120", "m"], environment: ["SNAPBACK_SOCKET": second.socketPath], timeoutSeconds: 150)
            #expect(finished.exitCode == 0, "\(finished)")
            let volume = try await second.snapback("lsvolume", "-json")
            #expect(volume.stdout.contains("\"online\""), "\(volume)")
            // Over NBD from the new leader, and in the shared file: the image, byte for byte.
            let read = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x11 0 \(mebibytes)m", "nbd://127.0.0.1:\(second.port)/v"])
            #expect(read.exitCode == 0 && !read.stdout.contains("Pattern verification failed"), "\(read)")
            let files = try FileManager.default.contentsOfDirectory(atPath: rig.sharedDirectory + "/volumes").sorted()
            #expect(try firstMismatch(rig.sharedDirectory + "/volumes/" + files[0], byte: 0x11, length: mebibytes << 20) == nil)

            // The log: the rollback started under term 1 and completed under term 2, after the
            // new leader's start; the chain verifies in etcd and in the standby's mirror.
            let events = try await rig.events()
            let started = try #require(events.last { $0.type == "RollbackStarted" })
            let restarts = events.filter { $0.type == "ControllerStarted" }
            let completed = try #require(events.last { $0.type == "RollbackCompleted" })
            #expect(restarts.count == 2 && started.seq < restarts[1].seq && restarts[1].seq < completed.seq, "\(events)")
            let verify = try await rig.snapback(["log", "verify"])
            #expect(verify.exitCode == 0, "\(verify)")
            let mirror = try await runProcess(try Binaries.path("snapback"), ["log", "verify", "-data-dir", second.directory])
            #expect(mirror.exitCode == 0, "\(mirror)")
            let cluster = try await rig.cluster()
            #expect(cluster["leader"] as? String == "b" && (cluster["term"] as? NSNumber)?.intValue == 2, "\(cluster)")
        }
    }

    @Test("SIGSTOP past the lease, then SIGCONT: the old leader serves no write, appends nothing, and stands by again; one leader per term")
    func stoppedLeaderIsFenced() async throws {
        try await withClusterRig { rig in
            let first = try rig.start("a")
            try await first.waitUntilLeading()
            let second = try rig.start("b")
            try await first.ok("mkvolume", "-name", "v", "-size", "4m")
            let written = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x33 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(written.exitCode == 0, "\(written)")
            // A host connected to the old leader, whose write arrives while it is stopped.
            let host = try RawNBDClient(port: first.port, timeoutSeconds: 10)
            try host.go("v")
            let before = try await rig.events()

            first.signal(SIGSTOP)
            try await second.waitUntilLeading(timeoutSeconds: 30)
            try await second.ok("mkvolume", "-name", "w", "-size", "1m")
            host.sendWrite(offset: 0, bytes: [UInt8](repeating: 0xEE, count: 4096), cookie: 7)
            first.signal(SIGCONT)

            // The old leader fences, and stands by again in the same process.
            let deadline = Date().addingTimeInterval(20)
            while !first.stderrTail(400).contains("back to standby") && first.isRunning && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(first.isRunning, "\(first.stderrTail(30))")
            #expect(first.stderrTail(400).contains("lost the leadership") && first.stderrTail(400).contains("back to standby"), "\(first.stderrTail(60))")
            // The write was refused (or its connection closed), and the bytes are unchanged.
            if let replies = try? host.receiveReplies(readLengths: [:], writes: [7]), let reply = replies[7] {
                #expect(reply.error != 0, "the deposed leader acknowledged a write")
            }
            host.disconnect()
            let files = try FileManager.default.contentsOfDirectory(atPath: rig.sharedDirectory + "/volumes").sorted()
            #expect(try firstMismatch(rig.sharedDirectory + "/volumes/" + files[0], byte: 0x33, length: 4 << 20) == nil)

            // Nothing from the old leader after the new term began: exactly the new leader's
            // start and its command follow what was there.
            let after = try await rig.events()
            #expect(after.count == before.count + 2, "\(after)")
            #expect(Array(after.dropFirst(before.count).map(\.type)) == ["ControllerStarted", "VolumeCreated"], "\(after)")
            #expect(try await rig.snapback(["log", "verify"]).exitCode == 0)
            let cluster = try await rig.cluster()
            let terms = (cluster["terms"] as? [[String: Any]] ?? []).map { ($0["term"] as? NSNumber)?.intValue ?? 0 }
            let leaders = (cluster["terms"] as? [[String: Any]] ?? []).map { $0["node"] as? String ?? "" }
            #expect(terms == [1, 2] && leaders == ["a", "b"], "one leader per term: \(cluster)")

            // The old leader is a standby of term 2's leader: no control socket, a node record
            // with its new lease.
            try await Task.sleep(for: .seconds(1))
            #expect(first.isRunning, "\(first.stderrTail())")
            #expect(try await first.snapback("lsvolume").exitCode != 0, "a standby serves no command")
            let nodes = try await rig.cluster()
            let roles = (nodes["nodes"] as? [[String: Any]] ?? []).map { "\($0["node"] ?? ""):\($0["role"] ?? "")" }.sorted()
            #expect(roles == ["a:standby", "b:leader"] && nodes["leader"] as? String == "b", "\(nodes)")
        }
    }

    @Test("a node that cannot open the volumes refuses to lead; a malformed --cluster is refused at start-up")
    func refusesToLead() async throws {
        try await withClusterRig { rig in
            let first = try rig.start("a")
            try await first.waitUntilLeading()
            try await first.ok("mkvolume", "-name", "v", "-size", "1m", "-path", rig.directory + "/only-a.img")
            let second = try rig.start("b")
            try await Task.sleep(for: .seconds(1))
            // The file goes away: b cannot open v, so it must not take over when a stops.
            unlink(rig.directory + "/only-a.img")
            try await Task.sleep(for: .milliseconds(500))
            first.signal(SIGTERM)
            #expect(await first.waitForExit(timeoutSeconds: 20) == 0, "\(first.stderrTail())")
            try await Task.sleep(for: .seconds(4))
            #expect(second.isRunning && !FileManager.default.fileExists(atPath: second.socketPath), "\(second.stderrTail())")
            #expect(second.stderrTail(400).contains("cannot open every volume"), "\(second.stderrTail(40))")
            let cluster = try await rig.cluster()
            #expect(cluster["leader"] as? String == "", "\(cluster)")
            let refusing = (cluster["nodes"] as? [[String: Any]] ?? []).first { $0["node"] as? String == "b" }
            #expect(refusing?["role"] as? String == "refusing", "\(cluster)")

            let bad = try await runProcess(try Binaries.path("snapbackd"), ["--data-dir", rig.directory + "/c", "--cluster", "http://x", "--node", "c"], timeoutSeconds: 20)
            #expect(bad.exitCode != 0 && bad.stderr.contains("--cluster"), "\(bad)")
        }
    }
}

/// A cluster node's operator views: `--metrics` and `--http` are served by the leader.
@Suite("high availability: the leader's metrics and status page")
struct ClusterListenerTests {
    @Test("the leader serves /metrics (promtool accepts it) and the status page; a standby serves neither; --log-archive-keep is refused with --cluster")
    func leaderListeners() async throws {
        try await withClusterRig { rig in
            let ports = (metrics: try freePort(), http: try freePort(), standbyMetrics: try freePort())
            let first = try rig.start("a", arguments: ["--metrics", "127.0.0.1:\(ports.metrics)", "--http", "127.0.0.1:\(ports.http)"])
            try await first.waitUntilLeading()
            let second = try rig.start("b", arguments: ["--metrics", "127.0.0.1:\(ports.standbyMetrics)"])
            try await first.ok("mkvolume", "-name", "v", "-size", "4m")
            let written = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x44 0 1m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(written.exitCode == 0, "\(written)")

            var metrics = try httpGet(port: ports.metrics, path: "/metrics")
            let deadline = Date().addingTimeInterval(10)
            while !metrics.body.contains("snapback_volume_written_bytes_total") && Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
                metrics = try httpGet(port: ports.metrics, path: "/metrics")
            }
            #expect(metrics.status.contains(" 200") && metrics.body.contains("snapback_volume_written_bytes_total"), "\(metrics.status) \(metrics.body.prefix(400))")
            try await expectPromtoolAccepts(metrics.body, "a cluster leader's /metrics")
            #expect(metrics.body.contains("\nsnapback_cluster_term 1") && metrics.body.contains("\nsnapback_cluster_quorum_hold 0"), "\(metrics.body)")
            let page = try httpGet(port: ports.http, path: "/")
            #expect(page.status.contains(" 200") && page.contentType.contains("text/html") && page.body.contains(">v<"), "\(page.status) \(page.body.prefix(400))")
            // The standby listens on nothing (it serves only once it leads).
            #expect(throws: (any Error).self) { try httpGet(port: ports.standbyMetrics, path: "/metrics") }
            #expect(second.isRunning)

            let refused = try await runProcess(
                try Binaries.path("snapbackd"),
                [
                    "--data-dir", rig.directory + "/c", "--cluster", "etcd=" + rig.etcd.endpoints, "--cluster-name", rig.clusterName, "--node", "c",
                    "--log-archive-keep", "10",
                ], timeoutSeconds: 20)
            #expect(refused.exitCode != 0 && refused.stderr.contains("--log-archive-keep"), "\(refused)")
        }
    }
}

/// Issue 17, part 4: etcd's quorum.
@Suite("high availability: etcd's quorum")
struct ClusterQuorumTests {
    @Test(
        "one etcd member killed: service goes on; two killed: the leader holds, commands fail with cluster_unavailable, reads and writes that need no mark go on, a write that needs a mark fails; members back: the same leader commits again, nothing lost"
    )
    func quorum() async throws {
        try await withClusterRig { rig in
            let first = try rig.start("a")
            try await first.waitUntilLeading()
            let second = try rig.start("b")
            try await first.ok("mkvolume", "-name", "v", "-size", "4m")
            try await first.ok("mkvolume", "-name", "t", "-size", "4m")
            try await first.ok("mkvolume", "-name", "plain", "-size", "1m")
            let written = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(written.exitCode == 0, "\(written)")
            // A started map without background copy: the first write to a grain of v needs a split mark.
            try await first.ok("mklcmap", "-source", "v", "-target", "t", "-name", "m", "-copyrate", "0")
            try await first.ok("startlcmap", "m")

            // One member down: the leader keeps its lease and commits through the others.
            rig.etcd.kill(0)
            try await first.ok("mkvolume", "-name", "w", "-size", "1m")
            try await Task.sleep(for: .seconds(3))
            #expect(first.isRunning && second.isRunning, "\(first.stderrTail())\n\(second.stderrTail())")
            try await first.ok("mkvolume", "-name", "x", "-size", "1m")
            let read = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(read.exitCode == 0 && !read.stdout.contains("failed"), "\(read)")
            let acknowledged = try await rig.events().count

            // Two down: no quorum. Nobody can take the leader key, and the leader sees that:
            // every member is down or has no leader. It holds the leadership.
            rig.etcd.kill(1)
            let deadline = Date().addingTimeInterval(15)
            while !first.stderrTail(400).contains("etcd has no quorum") && first.isRunning && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(first.stderrTail(400).contains("etcd has no quorum"), "no hold: \(first.stderrTail(40))")
            let refused = try await first.snapback("mkvolume", "-name", "y", "-size", "1m")
            #expect(refused.exitCode == 1 && refused.stderr.contains("cluster_unavailable"), "\(refused)")
            let listing = try await rig.snapback(["lscluster"])
            #expect(listing.exitCode == 1 && listing.stderr.contains("cluster_unavailable") && listing.stderr.contains("etcd has no quorum"), "\(listing)")
            let held = try rawHTTPRequest(.unixSocket(first.socketPath), "GET", "/metrics", host: "snapbackd")
            #expect(held.body.contains("\nsnapback_cluster_quorum_hold 1"), "\(held.status) \(held.body.suffix(600))")
            // Host reads go on: of the source, of the target's image, of a plain volume.
            let heldRead = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(heldRead.exitCode == 0 && !heldRead.stdout.contains("failed"), "\(heldRead)")
            let image = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/t"])
            #expect(image.exitCode == 0 && !image.stdout.contains("failed"), "\(image)")
            // A write that needs no mark goes on; one that needs a mark (a split) fails.
            let plain = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x55 0 64k", "nbd://127.0.0.1:\(first.port)/plain"])
            #expect(plain.exitCode == 0 && !plain.stdout.contains("failed"), "\(plain)")
            let marked = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x66 0 64k", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(marked.stdout.contains("failed") || marked.stderr.contains("failed") || marked.exitCode != 0, "\(marked)")
            try await Task.sleep(for: .seconds(3))
            #expect(first.isRunning && second.isRunning, "both nodes wait for etcd: \(first.stderrTail())\n\(second.stderrTail())")

            // The members come back: the leader's lease was extended by etcd's new leader, so the
            // same node commits again, without a takeover; the standby goes on standing by.
            try rig.etcd.restart(0)
            try rig.etcd.restart(1)
            let back = Date().addingTimeInterval(20)
            var resumed = try await first.snapback("mkvolume", "-name", "z", "-size", "1m")
            while resumed.exitCode != 0 && first.isRunning && Date() < back {
                try await Task.sleep(for: .milliseconds(200))
                resumed = try await first.snapback("mkvolume", "-name", "z", "-size", "1m")
            }
            #expect(resumed.exitCode == 0, "\(resumed)\n\(first.stderrTail(30))")
            // The watch logs the hold's end at its next look (every 100 ms), which may come just
            // after the first commit that the renewed lease allowed.
            let logged = Date().addingTimeInterval(5)
            while !first.stderrTail(200).contains("etcd has its quorum again") && Date() < logged {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(first.stderrTail(200).contains("etcd has its quorum again"), "\(first.stderrTail(60))")
            #expect(first.isRunning && second.isRunning)
            let events = try await rig.events()
            #expect(events.count > acknowledged, "\(events)")
            let volumes = try await first.snapback("lsvolume", "-delim", ",")
            #expect(volumes.stdout.contains(",w,") && volumes.stdout.contains(",x,") && volumes.stdout.contains(",z,"), "\(volumes)")
            #expect(!volumes.stdout.contains(",y,"), "the refused command was sent nowhere: \(volumes)")
            // The writes that were acknowledged are there; the refused one changed nothing.
            let plainBack = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x55 0 64k", "nbd://127.0.0.1:\(first.port)/plain"])
            #expect(plainBack.exitCode == 0 && !plainBack.stdout.contains("failed"), "\(plainBack)")
            let source = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(source.exitCode == 0 && !source.stdout.contains("failed"), "\(source)")
            // And the split works now that commits do.
            let split = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x66 0 64k", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(split.exitCode == 0 && !split.stdout.contains("failed"), "\(split)")
            #expect(try await rig.snapback(["log", "verify"]).exitCode == 0)
            #expect(try await rig.cluster()["leader"] as? String == "a", "no takeover: the same node leads")
        }
    }

    @Test(
        "a command in flight when the quorum goes: its outcome is unknown; reads go on in the hold; etcd back, the leader steps down to standby and a node takes over; the log has the command whole or not at all"
    )
    func commitInFlightWhenTheQuorumGoes() async throws {
        try await withClusterRig { rig in
            let first = try rig.start("a")
            try await first.waitUntilLeading()
            let second = try rig.start("b")
            try await first.ok("mkvolume", "-name", "v", "-size", "4m")
            let written = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-c", "write -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(written.exitCode == 0, "\(written)")
            let acknowledged = try await rig.events().count

            // Two members killed at once, and a command sent at once: its transaction reaches
            // the last member before anyone knows the quorum is gone. etcd does not answer it.
            rig.etcd.kill(0)
            rig.etcd.kill(1)
            let unknown = try await first.snapback("mkvolume", "-name", "y", "-size", "1m")
            #expect(unknown.exitCode == 1 && unknown.stderr.contains("cluster_unavailable"), "\(unknown)")
            let deadline = Date().addingTimeInterval(15)
            while !first.stderrTail(400).contains("etcd has no quorum") && first.isRunning && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(first.isRunning, "the leader holds rather than exits: \(first.stderrTail(30))")
            let read = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(first.port)/v"])
            #expect(read.exitCode == 0 && !read.stdout.contains("failed"), "\(read)")
            let more = try await first.snapback("mkvolume", "-name", "y2", "-size", "1m")
            #expect(more.exitCode == 1 && more.stderr.contains("cluster_unavailable"), "nothing more is sent: \(more)")

            // etcd back: the outcome is decided there; the leader steps down to standby, and a
            // node (the standby, which waited for etcd, or the old leader again) takes over from
            // what etcd holds.
            try rig.etcd.restart(0)
            try rig.etcd.restart(1)
            let stepped = Date().addingTimeInterval(30)
            while !first.stderrTail(400).contains("back to standby") && first.isRunning && Date() < stepped {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(first.isRunning && first.stderrTail(400).contains("back to standby"), "\(first.stderrTail(30))")
            let leader = try await ClusterRig.firstLeading([second, first], timeoutSeconds: 30)
            let events = try await rig.events()
            #expect(events.count >= acknowledged, "\(events)")
            let volumes = try await leader.snapback("lsvolume", "-delim", ",")
            #expect(volumes.exitCode == 0 && volumes.stdout.contains(",v,") && !volumes.stdout.contains(",y2,"), "\(volumes)")
            print("the command whose outcome was unknown was \(volumes.stdout.contains(",y,") ? "" : "not ")recorded once etcd had its quorum again")
            let holds = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", "-c", "read -P 0x44 0 4m", "nbd://127.0.0.1:\(leader.port)/v"])
            #expect(holds.exitCode == 0 && !holds.stdout.contains("failed"), "\(holds)")
            #expect(try await rig.snapback(["log", "verify"]).exitCode == 0)
        }
    }
}
