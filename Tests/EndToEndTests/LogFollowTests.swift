import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15, parts 2 and 5: `snapback log follow` beside a running daemon, `log head`, and
/// `log verify -anchor`; `wait`'s progress bar on a terminal.
@Suite("log follow, log head and verify -anchor")
struct LogFollowTests {
    /// A `snapback log follow` running in the background, its standard output in a file.
    final class Follower: @unchecked Sendable {
        let process = Process()
        let outputPath = scratchPath("snapback-follow-stdout")
        let errorPath = scratchPath("snapback-follow-stderr")

        init(_ daemon: Daemon, _ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: try Binaries.path("snapback"))
            process.arguments = ["log", "follow", "-data-dir", daemon.directory] + arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = try appendingHandle(outputPath)
            process.standardError = try appendingHandle(errorPath)
            try process.run()
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            unlink(outputPath)
            unlink(errorPath)
        }

        var lines: [String] {
            ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        /// Polls until `done(lines)` holds; throws after `timeoutSeconds`.
        func waitFor(_ what: String, timeoutSeconds: Double = 30, _ done: ([String]) -> Bool) async throws {
            let deadline = Date().addingTimeInterval(timeoutSeconds)
            while !done(lines) {
                guard process.isRunning else { throw RigError("log follow exited \(process.terminationStatus) waiting for \(what): \(stderr)") }
                guard Date() < deadline else { throw RigError("log follow never printed \(what); it printed: \(lines)") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        /// Sends `signal` and returns the exit status (a kill by signal counts as 128 + it).
        func stop(_ signal: Int32 = SIGINT) async -> Int32 {
            if process.isRunning { kill(process.processIdentifier, signal) }
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        }

        var stderr: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
    }

    static func sequence(_ line: String) -> Int? { line.split(separator: " ").first.flatMap { Int($0) } }

    /// `log head`: SEQ and HASH.
    static func head(_ daemon: Daemon) async throws -> (sequence: Int, hash: String) {
        let output = try await daemon.log("head")
        let parts = output.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":")
        guard output.exitCode == 0, parts.count == 2, let sequence = Int(parts[0]) else { throw RigError("log head: \(output)") }
        return (sequence, String(parts[1]))
    }

    @Test("follow prints what a running daemon commits after it started, in log show's lines; SIGINT ends it with 0")
    func followsARunningDaemon() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            let before = try await Self.head(daemon).sequence
            let follower = try Follower(daemon, [])
            // The follower starts at the head it finds: commit until it shows it is reading.
            var copyRate = 0
            let deadline = Date().addingTimeInterval(30)
            while follower.lines.isEmpty, Date() < deadline {
                copyRate = copyRate % 150 + 1
                try await daemon.ok("chlcmap", "-copyrate", String(copyRate), "m0")
                try await Task.sleep(for: .milliseconds(200))
            }
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x5A, length: mebibyte)
            try await daemon.ok("fault", "-volume", "src", "-reason", "follow test")
            try await follower.waitFor("RollbackCompleted") { $0.contains { $0.contains("RollbackCompleted") } }
            #expect(await follower.stop(SIGINT) == 0, "\(follower.stderr)")
            let lines = follower.lines
            let sequences = lines.compactMap(Self.sequence)
            #expect(sequences.count == lines.count, "\(lines)")
            #expect(sequences.allSatisfy { $0 > before }, "nothing committed before it started: \(lines)")
            #expect(sequences == Array(sequences[0]..<(sequences[0] + sequences.count)), "one line per record, in order")
            // The very lines `log show` prints for the same records (names resolved alike).
            let show = try await daemon.log("show", "-from", String(sequences[0]), "-to", String(sequences.last!))
            #expect(show.stdout.split(separator: "\n").map(String.init) == lines)
            #expect(lines.contains { $0.contains("RollbackStarted  rollback of lcmap m0 onto its source started automatically after fault 1") })
        }
    }

    @Test("-from replays the log, -json lines parse and equal log show -json's, new events follow; bad -from refused")
    func fromReplaysAsJSON() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            let head = try await Self.head(daemon).sequence
            let follower = try Follower(daemon, ["-from", "2", "-json"])
            try await follower.waitFor("the log from seq 2") { $0.count >= head - 1 }
            try await daemon.ok("mkvolume", "-name", "late", "-size", "1m")
            try await follower.waitFor("the new volume") { $0.contains { $0.contains("\"late\"") } }
            #expect(await follower.stop(SIGTERM) == 0, "\(follower.stderr)")
            let show = try await daemon.log("show", "-from", "2", "-json")
            #expect(follower.lines == show.stdout.split(separator: "\n").map(String.init))
            for line in follower.lines {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(object["seq"] is Int && object["type"] is String && object["time"] is String, "\(line)")
            }
            #expect(follower.lines.first.map { $0.contains("\"seq\":2,") } == true)

            let last = try await Self.head(daemon).sequence
            for bad in ["0", String(last + 2)] {
                let refused = try await daemon.log("follow", "-from", bad)
                #expect(refused.exitCode == 1 && refused.stderr.contains("error seq_out_of_range: -from \(bad) is outside 1 to \(last + 1)"), "\(refused)")
            }
            let malformed = try await daemon.log("follow", "-from", "soon")
            #expect(malformed.exitCode == 2, "\(malformed)")
        }
    }

    @Test("follow ends with 0 when its reader goes away, even while the log is quiet")
    func closedPipeEndsFollow() async throws {
        try await withDaemon { daemon in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try Binaries.path("snapback"))
            process.arguments = ["log", "follow", "-from", "1", "-data-dir", daemon.directory]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Read the first line, then hang up, as `| head -1` does.
            let first = pipe.fileHandleForReading.availableData
            #expect(String(decoding: first, as: UTF8.self).contains("ControllerStarted"))
            try pipe.fileHandleForReading.close()
            try? pipe.fileHandleForWriting.close()
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
            let running = process.isRunning
            if running { kill(process.processIdentifier, SIGKILL) }
            #expect(!running, "log follow kept running after its reader closed the pipe")
            #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        }
    }

    @Test("head is the last record; verify passes through a right anchor, fails with exit 4 on a wrong one or one past the end")
    func headAndAnchors() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.ok("startlcmap", "m0")
            let (sequence, hash) = try await Self.head(daemon)
            #expect(hash.count == 64 && hash.allSatisfy { $0.isHexDigit && !$0.isUppercase }, "\(hash)")
            let last = try await daemon.log("show", "-json", "-last", "1")
            let lastObject = try #require(try JSONSerialization.jsonObject(with: Data(last.stdout.utf8)) as? [String: Any])
            #expect(lastObject["seq"] as? Int == sequence)
            let json = try await daemon.log("head", "-json")
            let headObject = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            #expect(headObject["seq"] as? Int == sequence && headObject["hash"] as? String == hash)
            #expect(headObject["anchor"] as? String == "\(sequence):\(hash)" && headObject["time"] as? String == lastObject["time"] as? String)

            // Later events do not move an anchor.
            try await daemon.ok("mkvolume", "-name", "later", "-size", "1m")
            let passes = try await daemon.log("verify", "-anchor", "\(sequence):\(hash)", "-anchor", "\(sequence):\(hash.uppercased())")
            #expect(passes.exitCode == 0 && passes.stdout.contains("the chain passes through 2 anchors"), "\(passes)")

            let flipped = String(hash.dropLast()) + (hash.last == "0" ? "1" : "0")
            let wrong = try await daemon.log("verify", "-anchor", "\(sequence):\(flipped)")
            #expect(wrong.exitCode == 4, "\(wrong)")
            #expect(wrong.stderr.contains("error log_anchor: seq \(sequence): anchor: the record hashes to \(hash), not to the anchor's \(flipped)"), "\(wrong)")

            let now = try await Self.head(daemon).sequence
            let beyond = try await daemon.log("verify", "-json", "-anchor", "\(now + 10):\(hash)")
            #expect(beyond.exitCode == 4 && beyond.stderr.contains("log_anchor: seq \(now + 10): anchor: the anchor is past the end of the log (seq \(now))"), "\(beyond)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(beyond.stdout.utf8)) as? [String: Any])
            #expect((report["problem"] as? [String: Any])?["kind"] as? String == "anchor" && report["ok"] as? Bool == false)

            for malformed in ["\(sequence)", "0:\(hash)", "\(sequence):\(hash.prefix(10))"] {
                let refused = try await daemon.log("verify", "-anchor", malformed)
                #expect(refused.exitCode == 2 && refused.stderr.contains("error usage"), "\(refused)")
            }
        }
    }

    @Test("an anchor published from one log fails on a log rewritten whole, whose own chain is intact")
    func rewrittenLogFailsTheAnchor() async throws {
        let history: (Daemon) async throws -> Void = { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.ok("startlcmap", "m0")
        }
        let published = try await withDaemon { daemon in
            try await history(daemon)
            return try await Self.head(daemon)
        }
        // The same commands made again: the same events, at other times, so every hash differs.
        try await withDaemon { daemon in
            try await history(daemon)
            #expect(try await Self.head(daemon).sequence == published.sequence)
            let alone = try await daemon.log("verify")
            #expect(alone.exitCode == 0, "\(alone)")
            let anchored = try await daemon.log("verify", "-anchor", "\(published.sequence):\(published.hash)")
            #expect(anchored.exitCode == 4 && anchored.stderr.contains("log_anchor") && anchored.stderr.contains("rewritten at or before seq"), "\(anchored)")
        }
    }

    @Test("wait draws a bar with rate and ETA on a terminal, plain lines otherwise")
    func waitProgressOnATerminal() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "script (util-linux) gives wait a terminal")
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "256m", autorestore: "off", copyRate: 100)
            try await daemon.ok("startlcmap", "m0")
            let command = "\(try Binaries.path("snapback")) wait -timeout 60 m0"
            let onTerminal = try await runProcess("/usr/bin/script", ["-qfec", command, "/dev/null"], environment: ["SNAPBACK_SOCKET": daemon.socketPath])
            #expect(onTerminal.exitCode == 0, "\(onTerminal)")
            #expect(onTerminal.stdout.contains("m0 copy [") && onTerminal.stdout.contains("\r"), "\(onTerminal)")
            #expect(onTerminal.stdout.contains("] 100%") && onTerminal.stdout.contains("  in "), "\(onTerminal)")
            #expect(onTerminal.stdout.contains("m0: copy finished, idle_or_copied"), "\(onTerminal)")
            // Not a terminal: the plain lines, no bar.
            let plain = try await daemon.snapback("wait", "m0")
            #expect(plain.exitCode == 0 && !plain.stdout.contains("[") && !plain.stdout.contains("ETA"), "\(plain)")
        }
    }
}
