import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 15, part 1: `GET /metrics` of a real snapbackd, on the control socket and on
/// `--metrics PORT` (TCP, loopback for a bare port), after host I/O over NBD, a fault, an
/// automatic rollback and an I/O error; every scrape passes `promtool check metrics`.
@Suite("metrics")
struct MetricsTests {
    @Test("values after writes, a fault, a rollback and an I/O error; the same on TCP; promtool accepts both")
    func scrapeAfterActivity() async throws {
        let rig = try await Daemon.withMetrics()
        defer { rig.cleanup() }
        try await rig.ok("mkvolume", "-name", "src", "-size", "4m")
        try await rig.ok("mkvolume", "-name", "tgt", "-size", "4m")
        try await rig.ok("mkvolume", "-name", "lone", "-size", "1m")
        try await rig.ok("mkvolume", "-name", "watched", "-size", "1m", "-detect", "on")
        try await rig.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0")
        try await rig.ok("startlcmap", "m0")
        let written = try await rig.qemuIO("src", ["write -P 7 0 1M", "write -P 8 1M 512K", "read 0 64K", "flush"])
        #expect(written.exitCode == 0 && written.stdout.contains("wrote 524288/524288"), "qemu-io: \(written)")

        // An operator's fault with autorestore on: the controller rolls m0 back by itself.
        try await rig.ok("fault", "-volume", "src", "-reason", "metrics test")
        try await rig.waitUntilNoRollback("m0")
        // A volume no map protects stays faulted: a host's read of it answers EIO.
        try await rig.ok("fault", "-volume", "lone", "-reason", "no map")
        let client = try RawNBDClient(port: rig.port)
        defer { client.disconnect() }
        try client.go("lone")
        let refused = try client.read(offset: 0, length: 4096)
        #expect(refused.error == 5, "a read of a faulted volume answers EIO, got \(refused.error)")

        let text = try await rig.scrapeUntil { $0.value("snapback_nbd_connections") == 1 }
        try await expectPromtoolAccepts(text, "the control socket's /metrics")
        let metrics = ScrapedMetrics(text)
        // Host I/O per volume: at least what qemu-io wrote and read.
        #expect(try metrics.require(#"snapback_volume_written_bytes_total{volume="src"}"#) >= Double(3 * mebibyte / 2))
        #expect(try metrics.require(#"snapback_volume_writes_completed_total{volume="src"}"#) >= 2)
        #expect(try metrics.require(#"snapback_volume_read_bytes_total{volume="src"}"#) >= Double(64 * kibibyte))
        #expect(try metrics.require(#"snapback_volume_reads_completed_total{volume="src"}"#) >= 1)
        #expect(try metrics.require(#"snapback_volume_flushes_completed_total{volume="src"}"#) >= 1)
        #expect(try metrics.require(#"snapback_volume_io_duration_seconds_count{volume="src",operation="write"}"#) >= 2)
        #expect(try metrics.require(#"snapback_volume_io_duration_seconds_bucket{volume="src",operation="write",le="+Inf"}"#) >= 2)
        #expect(try metrics.require(#"snapback_volume_io_duration_seconds_sum{volume="src",operation="write"}"#) > 0)
        #expect(try metrics.require(#"snapback_volume_io_errors_total{volume="src",operation="write"}"#) == 0)
        #expect(try metrics.require(#"snapback_volume_io_errors_total{volume="lone",operation="read"}"#) == 1)
        // Faults and rollbacks, from the committed events.
        #expect(try metrics.require(#"snapback_faults_total{cause="operator"}"#) == 2)
        #expect(try metrics.require(#"snapback_faults_total{cause="io_error"}"#) == 0)
        #expect(try metrics.require(#"snapback_rollbacks_total{trigger="auto",outcome="started"}"#) == 1)
        #expect(try metrics.require(#"snapback_rollbacks_total{trigger="auto",outcome="completed"}"#) == 1)
        #expect(try metrics.require(#"snapback_rollbacks_total{trigger="operator",outcome="started"}"#) == 0)
        #expect(try metrics.require(#"snapback_rollbacks_total{trigger="auto",outcome="abandoned"}"#) == 0)
        // State: one status per volume is 1, the others 0.
        #expect(try metrics.require(#"snapback_volume_status{volume="src",status="online"}"#) == 1)
        #expect(try metrics.require(#"snapback_volume_status{volume="src",status="faulted"}"#) == 0)
        #expect(try metrics.require(#"snapback_volume_status{volume="lone",status="faulted"}"#) == 1)
        #expect(try metrics.require(#"snapback_volume_status{volume="lone",status="online"}"#) == 0)
        #expect(try metrics.require(#"snapback_volume_size_bytes{volume="src"}"#) == Double(4 * mebibyte))
        #expect(try metrics.require(#"snapback_lcmap_state{lcmap="m0",state="copying"}"#) == 1)
        #expect(try metrics.require(#"snapback_lcmap_copy_progress_ratio{lcmap="m0"}"#) < 1)
        #expect(try metrics.require(#"snapback_lcmap_rollback_remaining_grains{lcmap="m0"}"#) == 0)
        #expect(metrics.value(#"snapback_lcmap_rollback_remaining_grains{lcmap="m0_rev"}"#) == nil, "a reverse map has no rollback of its own")
        let score = try metrics.require(#"snapback_volume_anomaly_score{volume="watched"}"#)
        #expect((0...100).contains(score))
        #expect(metrics.value(#"snapback_volume_anomaly_score{volume="src"}"#) == nil, "src has no detection")
        // The log and the controller.
        let system = try controlRequest(rig.socketPath, "GET", "/v1/system", json: "")
        let row = try JSONSerialization.jsonObject(with: Data(system.body.utf8)) as? [String: Any]
        let lastSequence = try #require(row?["last_sequence"] as? Int, "GET /v1/system: \(system)")
        #expect(try metrics.require("snapback_log_last_sequence") == Double(lastSequence))
        #expect(try metrics.require("snapback_log_size_bytes") > 0)
        #expect(try metrics.require("snapback_log_commit_duration_seconds_count") >= 10)
        #expect(try metrics.require("snapback_log_commit_failures_total") == 0)
        #expect(try metrics.require("snapback_controller_degraded") == 0)
        #expect(try metrics.require("snapback_start_time_seconds") > 0)

        // The same registry on TCP, and nothing else there.
        let overTCP = try httpGet(port: rig.metricsPort, path: "/metrics")
        #expect(overTCP.status.hasPrefix("HTTP/1.1 200"), "GET /metrics on TCP: \(overTCP.status)")
        #expect(overTCP.contentType.hasPrefix("text/plain; version=0.0.4"), "Content-Type: \(overTCP.contentType)")
        try await expectPromtoolAccepts(overTCP.body, "/metrics on TCP")
        let tcp = ScrapedMetrics(overTCP.body)
        #expect(try tcp.require(#"snapback_faults_total{cause="operator"}"#) == 2)
        #expect(try tcp.require(#"snapback_volume_written_bytes_total{volume="src"}"#) >= Double(3 * mebibyte / 2))
        #expect(try httpGet(port: rig.metricsPort, path: "/v1/volumes").status.hasPrefix("HTTP/1.1 404"), "only /metrics on TCP")
    }

    @Test("removed volumes and lcmaps leave the export; a renamed volume's series move to its new name; a restart starts counters again")
    func removalRenameAndRestart() async throws {
        let rig = try await Daemon.withMetrics()
        defer { rig.cleanup() }
        try await rig.ok("mkvolume", "-name", "src", "-size", "4m")
        try await rig.ok("mkvolume", "-name", "tgt", "-size", "4m")
        try await rig.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0")
        try await rig.ok("startlcmap", "m0")
        #expect(try await rig.qemuIO("src", ["write -P 1 0 64K"]).exitCode == 0)
        try await rig.ok("fault", "-volume", "src", "-reason", "before the restart")
        try await rig.waitUntilNoRollback("m0")
        let before = ScrapedMetrics(try await rig.scrape())
        #expect(try before.require(#"snapback_lcmap_state{lcmap="m0",state="copying"}"#) == 1)
        #expect(try before.require(#"snapback_faults_total{cause="operator"}"#) == 1)

        try await rig.ok("rmlcmap", "-force", "m0")
        try await rig.ok("rmvolume", "tgt")
        try await rig.ok("chvolume", "-name", "renamed", "src")
        let write = try await rig.qemuIO("renamed", ["write -P 2 0 4K"])
        #expect(write.exitCode == 0, "qemu-io on the renamed volume: \(write)")
        let text = try await rig.scrape()
        try await expectPromtoolAccepts(text, "/metrics after removals")
        let after = ScrapedMetrics(text)
        #expect(after.series.keys.filter { $0.contains(#"lcmap="m0"#) || $0.contains(#"volume="tgt""#) || $0.contains(#"volume="src""#) }.isEmpty,
            "series of removed or renamed objects: \(after.series.keys.filter { $0.contains("m0") || $0.contains("tgt") || $0.contains(#""src""#) })")
        #expect(try after.require(#"snapback_volume_written_bytes_total{volume="renamed"}"#) == Double(4 * kibibyte))
        #expect(try after.require(#"snapback_volume_status{volume="renamed",status="online"}"#) == 1)

        // Counters count since snapbackd started; gauges are read from the recovered state.
        let startedBefore = try before.require("snapback_start_time_seconds")
        try await rig.restart()
        let restarted = ScrapedMetrics(try await rig.scrape())
        #expect(try restarted.require(#"snapback_faults_total{cause="operator"}"#) == 0)
        #expect(try restarted.require("snapback_start_time_seconds") > startedBefore)
        #expect(try restarted.require(#"snapback_volume_status{volume="renamed",status="online"}"#) == 1)
        #expect(restarted.value(#"snapback_volume_written_bytes_total{volume="renamed"}"#) == nil, "no series before a host opens the volume")
    }

    @Test("snapbackd --metrics refuses an address that is not PORT or HOST:PORT")
    func malformedMetricsAddress() async throws {
        for address in ["nope", "127.0.0.1:", ":9464", "70000"] {
            let output = try await runProcess(try Binaries.path("snapbackd"), ["--data-dir", scratchPath("sb-metrics-bad"), "--metrics", address])
            #expect(output.exitCode == 64 && output.stderr.contains("--metrics takes PORT or HOST:PORT"), "--metrics \(address): \(output)")
        }
    }
}

// MARK: - The rig

extension Daemon {
    /// A daemon started with `--metrics PORT` (a bare port: loopback).
    static func withMetrics() async throws -> Daemon { try await start(listeners: ["--metrics"]) }

    var metricsPort: Int { listenerPorts["--metrics"]! }

    /// `GET /metrics` on the control socket.
    func scrape() async throws -> String {
        let answer = try controlRequest(socketPath, "GET", "/metrics", json: "")
        guard answer.status.hasPrefix("HTTP/1.1 200") else { throw RigError("GET /metrics on the control socket: \(answer.status)") }
        return answer.body
    }

    /// Scrapes until `condition` holds (at most 10 s); the last scrape either way.
    func scrapeUntil(_ condition: (ScrapedMetrics) -> Bool) async throws -> String {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let text = try await scrape()
            if condition(ScrapedMetrics(text)) || Date() >= deadline { return text }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

// MARK: - Reading the export

/// The samples of a Prometheus text export by series (`name{labels}` as written).
struct ScrapedMetrics {
    var series: [String: Double] = [:]

    init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            series[String(line[..<space])] = value
        }
    }

    func value(_ key: String) -> Double? { series[key] }

    func require(_ key: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Double {
        try #require(series[key], "no series \(key) in the export", sourceLocation: sourceLocation)
    }
}

/// `promtool check metrics` (Debian's prometheus package, installed by tools/setup) must accept
/// `text`: types, HELP lines, naming (`_total` on counters, base units). Missing promtool fails.
func expectPromtoolAccepts(_ text: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let promtool = "/usr/bin/promtool"
    guard FileManager.default.isExecutableFile(atPath: promtool) else {
        Issue.record("promtool is missing (\(promtool)): install Debian's prometheus package (tools/setup does)", sourceLocation: sourceLocation)
        return
    }
    let input = scratchPath("snapback-metrics")
    try text.write(toFile: input, atomically: true, encoding: .utf8)
    defer { unlink(input) }
    let output = try await runProcess("/bin/sh", ["-c", "\(promtool) check metrics < \"$1\"", "sh", input])
    #expect(output.exitCode == 0, "promtool check metrics on \(what): \(output)", sourceLocation: sourceLocation)
}

/// One HTTP/1.1 GET on 127.0.0.1:`port`: the status line, Content-Type and body.
func httpGet(port: Int, path: String) throws -> (status: String, contentType: String, body: String) {
    let response = try rawHTTPRequest(.loopback(port: port), "GET", path, host: "127.0.0.1")
    return (response.status, response.headers["content-type"] ?? "", response.body)
}
