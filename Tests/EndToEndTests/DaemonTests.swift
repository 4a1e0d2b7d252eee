import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 8: the daemon's process-level contract: one daemon per data directory, a 0600 control
/// socket, a stale socket after a crash, a graceful stop.
@Suite("the daemon process")
struct DaemonTests {
    /// `lstat` of a path, or nil.
    static func status(_ path: String) -> stat? {
        var result = stat()
        return lstat(path, &result) == 0 ? result : nil
    }

    @Test("a second snapbackd on the same data directory is refused; the first keeps serving")
    func secondDaemonRefused() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "v", "-size", "4m")
            try await daemon.write("v", byte: 0x17, length: mebibyte)

            let otherPort = try freePort()
            let second = try await runProcess(
                try Binaries.path("snapbackd"), ["--data-dir", daemon.directory, "--nbd", "127.0.0.1:\(otherPort)"], timeoutSeconds: 20)
            #expect(second.exitCode != 0, "the second daemon: \(second)")
            #expect(second.stderr.contains("already running"), "\(second)")
            #expect(!portAccepts(otherPort), "the refused daemon must not serve NBD")

            // The first is untouched: its socket answers, its NBD serves, the log has one start.
            #expect(daemon.isRunning)
            #expect(try await daemon.volume("v").status == "online")
            #expect(try await daemon.holds("v", byte: 0x17, length: mebibyte))
            #expect(try await daemon.events().of("ControllerStarted").count == 1)
            try await daemon.ok("mkvolume", "-name", "w", "-size", "1m")
        }
    }

    @Test("the control socket is a socket with mode 0600")
    func socketMode() async throws {
        try await withDaemon { daemon in
            let status = try #require(Self.status(daemon.socketPath))
            #expect(status.st_mode & S_IFMT == S_IFSOCK)
            #expect(status.st_mode & 0o777 == 0o600, "mode \(String(status.st_mode & 0o777, radix: 8))")
            #expect(status.st_uid == getuid())
        }
    }

    @Test("a stale socket left by SIGKILL is replaced on restart; SIGTERM stops cleanly")
    func staleSocket() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "v", "-size", "4m")
            try await daemon.write("v", byte: 0x29, length: mebibyte)

            await daemon.kill()
            // The socket file stays behind, and nothing answers on it.
            let stale = try #require(Self.status(daemon.socketPath), "SIGKILL leaves the socket file")
            #expect(stale.st_mode & S_IFMT == S_IFSOCK)
            let down = try await daemon.snapback("lsvolume")
            #expect(down.exitCode == 1 && down.stderr.contains("not running"), "\(down)")

            try await daemon.restart()
            #expect(try await daemon.volume("v").status == "online")
            #expect(try await daemon.holds("v", byte: 0x29, length: mebibyte))
            let fresh = try #require(Self.status(daemon.socketPath))
            #expect(fresh.st_mode & 0o777 == 0o600)

            // SIGTERM: exit 0, the socket removed, a checkpoint; a restart recovers from it.
            let exitStatus = await daemon.stop()
            #expect(exitStatus == 0, "snapbackd's exit status after SIGTERM: \(daemon.stderrTail())")
            #expect(Self.status(daemon.socketPath) == nil, "a clean stop removes the socket")
            #expect(daemon.stderrTail().contains("stopped"))
            let stats = try await daemon.log("stats", "-json")
            let object = try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any]
            #expect((object?["checkpoints"] as? [Any])?.isEmpty == false, "a clean stop writes a checkpoint: \(stats)")
            try await daemon.restart()
            #expect(try await daemon.holds("v", byte: 0x29, length: mebibyte))
            let events = try await daemon.events()
            #expect(events.of("ControllerStarted").count == 3)
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }

    // Was a bug, fixed since (kept as a regression test): when the NBD address cannot be bound (port in use), snapbackd neither serves nor
    // exits. The NBD service fails, the ServiceGroup cancels the other services (the control
    // socket is closed and removed), but BackgroundService.run (SnapbackServer/Daemon.swift) loops
    // on `while !Task.isShuttingDownGracefully` with `try? await Task.sleep(...)`: under
    // cancellation the sleep throws at once and the error is swallowed, so the loop spins at
    // ~100 % CPU for ever. SIGTERM does nothing (seen by hand: still running 10 minutes later,
    // 95 % CPU, after `timeout 10` sent SIGTERM), and the process keeps DIR/snapbackd.lock, so a
    // restart on a free port is refused with "already running" until someone SIGKILLs it.
    @Test("an NBD port in use: snapbackd exits with an error instead of spinning")
    func nbdPortInUse() async throws {
        let directory = NSTemporaryDirectory() + "/sbe2e-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Hold a port: bound and listening in this process.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var port = 0
        for _ in 0..<50 {
            let candidate = Int.random(in: 20000..<32000)
            var address = loopbackAddress(candidate)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if bound == 0 {
                port = candidate
                break
            }
        }
        #expect(port != 0 && listen(holder, 1) == 0)

        // The watchdog SIGKILLs the daemon after 30 s (exit 137) if it has not exited by then
        // (generous for a loaded machine; a spinning daemon never exits).
        let started = Date()
        let outcome = try await runProcess(
            try Binaries.path("snapbackd"), ["--data-dir", directory, "--nbd", "127.0.0.1:\(port)"], timeoutSeconds: 30)
        let seconds = Date().timeIntervalSince(started)
        #expect(outcome.exitCode == 1, "exit \(outcome.exitCode) after \(seconds) s: \(outcome.stderr)")
        #expect(seconds < 29)
        // Whatever the exit, the control socket is not left behind answering for a dead NBD.
        #expect(Self.status(directory + "/control.sock") == nil)
    }

    @Test("malformed control API requests: a clear error, nothing recorded, still serving")
    func malformedControlRequests() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "v", "-size", "1m")
            let before = try await daemon.recordCount()
            let socketPath = daemon.socketPath
            let huge = #"{"name": "w", "size": 1048576, "path": "/"# + String(repeating: "x", count: 70000) + #""}"#
            let cases: [(method: String, path: String, body: String, status: String, code: String)] = [
                ("POST", "/v1/volumes", "{not json", " 400", "bad_request"),
                ("POST", "/v1/volumes", #"{"name": 5, "size": "big"}"#, " 400", "bad_request"),
                ("POST", "/v1/volumes", "", " 400", "bad_request"),
                ("POST", "/v1/volumes", huge, " 400", "bad_request"),
                ("POST", "/v1/volumes", #"{"name": "a\nb", "size": 1048576}"#, " 400", "invalid_name"),
                ("POST", "/v1/volumes/v/fault", #"{"reason": "two\nlines"}"#, " 400", "invalid_reason"),
                ("POST", "/v1/lcmaps", #"{"source": "v", "target": "v", "grainsize": -1}"#, " 400", "invalid_grain_size"),
                ("GET", "/v1/nothing", "", " 404", ""),
                ("POST", "/v1/volumes/nosuch/recover", "", " 404", "unknown_volume"),
            ]
            for request in cases {
                let answer = try controlRequest(socketPath, request.method, request.path, json: request.body)
                #expect(answer.status.contains(request.status), "\(request.method) \(request.path): \(answer)")
                if !request.code.isEmpty {
                    #expect(answer.body.contains(#""code":"\#(request.code)""#), "\(request.method) \(request.path): \(answer)")
                }
            }
            #expect(try await daemon.recordCount() == before)
            #expect(try await daemon.volume("v").status == "online")
            try await daemon.ok("mkvolume", "-name", "w", "-size", "1m")
        }
    }

    @Test("a file that is not a socket at the socket path is not replaced")
    func notASocket() async throws {
        let directory = NSTemporaryDirectory() + "/sbe2e-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socketPath = directory + "/control.sock"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: socketPath))
        let refused = try await runProcess(
            try Binaries.path("snapbackd"), ["--data-dir", directory, "--nbd", "127.0.0.1:\(try freePort())"], timeoutSeconds: 20)
        #expect(refused.exitCode != 0, "\(refused)")
        #expect(refused.stderr.contains("not a socket"), "\(refused)")
        #expect(try String(contentsOfFile: socketPath, encoding: .utf8) == "precious")
    }
}
