import Foundation
import Testing

/// `snapback log archive` and `snapbackd --log-archive-keep` on a real daemon's log: the records
/// move into `DATA-DIR/archive/`, and every audit command reads the same log as before.
@Suite("log archive on a real daemon's log")
struct LogArchiveTests {
    /// A history with a fault and an automatic rollback, then more commands.
    func history(_ daemon: Daemon) async throws {
        try await daemon.makeSourceTargetMap(size: "4m")
        try await daemon.ok("startlcmap", "m0")
        try await daemon.write("src", byte: 0x66, length: 1 << 20)
        try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware detected")
        #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
        for index in 0..<6 { try await daemon.ok("mkvolume", "-name", "extra\(index)", "-size", "1m") }
    }

    /// What the audit commands print, to compare before and after archiving.
    func auditOutputs(_ daemon: Daemon, stateAt: UInt64) async throws -> [String] {
        var outputs: [String] = []
        for arguments in [["show", "-json"], ["explain", "m0"], ["explain", "src"], ["export"], ["state", "-json", "-at", String(stateAt)]] {
            let output = try await daemon.snapback(["log"] + [arguments[0], "-data-dir", daemon.directory] + arguments.dropFirst())
            #expect(output.exitCode == 0, "log \(arguments.joined(separator: " ")): \(output)")
            outputs.append(output.stdout)
        }
        return outputs
    }

    func segments(_ daemon: Daemon) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: daemon.directory + "/archive")) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
    }

    func json(_ output: ProcessOutput) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any], "\(output)")
    }

    @Test func archivingThroughTheDaemonAndWithoutItKeepsOneReadableChain() async throws {
        try await withDaemon { daemon in
            try await history(daemon)
            let head = try await daemon.log("head").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let stateAt: UInt64 = 9
            let before = try await auditOutputs(daemon, stateAt: stateAt)
            let recordsBefore = try await daemon.recordCount()

            // Through the running daemon: it checkpoints its state, then archives.
            let report = try json(try await daemon.ok("log", "archive", "-data-dir", daemon.directory, "-keep", "3", "-json"))
            let archivedThrough = try #require(report["archivedThrough"] as? Int)
            #expect(archivedThrough >= recordsBefore - 3 - 1 && archivedThrough < recordsBefore, "\(report)")
            #expect(report["recordsArchived"] as? Int == archivedThrough)
            #expect(report["firstLiveSeq"] as? Int == archivedThrough + 1)
            #expect(!segments(daemon).isEmpty)
            // Every audit command reads the same log; the chain passes the anchor taken before.
            let after = try await auditOutputs(daemon, stateAt: stateAt)
            #expect(after == before)
            #expect(try await daemon.recordCount() == recordsBefore)
            let verify = try await daemon.log("verify", "-anchor", head)
            #expect(verify.exitCode == 0 && verify.stdout.contains("\(recordsBefore) records"), "\(verify)")
            #expect(try await daemon.log("show", "-last", "2").stdout.split(separator: "\n").count == 2)

            // The daemon goes on, and recovers from a log whose start is archived.
            try await daemon.ok("mkvolume", "-name", "later", "-size", "1m")
            try await daemon.restart()
            try await daemon.ok("mkvolume", "-name", "later2", "-size", "1m")
            #expect(try await daemon.log("verify").exitCode == 0)

            // Without the daemon: the CLI archives itself (checkpointing the head first).
            _ = await daemon.stop()
            let last = try await daemon.recordCount()
            let local = try json(try await daemon.ok("log", "archive", "-data-dir", daemon.directory, "-before", String(last), "-json"))
            #expect(local["archivedThrough"] as? Int == last - 1, "\(local)")
            #expect(try await daemon.log("verify").exitCode == 0)
            #expect(try await auditOutputs(daemon, stateAt: stateAt).prefix(3).map { $0.isEmpty } == [false, false, false])
            try await daemon.restart()
            try await daemon.ok("lsvolume", "later2")

            // A missing segment: verify names it, exit 10.
            _ = await daemon.stop()
            let first = try #require(segments(daemon).first)
            try FileManager.default.removeItem(atPath: daemon.directory + "/archive/" + first)
            let damaged = try await daemon.log("verify")
            #expect(damaged.exitCode == 10 && damaged.stderr.contains("log_archive"), "\(damaged)")
        }
    }

    @Test func theDaemonArchivesPeriodicallyWithLogArchiveKeep() async throws {
        let daemon = try await Daemon.start(arguments: ["--log-archive-keep", "2", "--log-archive-interval", "1"])
        defer { daemon.cleanup() }
        for index in 0..<8 { try await daemon.ok("mkvolume", "-name", "v\(index)", "-size", "1m") }
        let deadline = Date().addingTimeInterval(20)
        // The segment file is renamed into place before the LMDB transaction that moves the mark, and the
        // daemon logs the run after that transaction: wait for both, not for the file alone.
        func archived() -> Bool { !segments(daemon).isEmpty && daemon.stderrTail(40).contains("log archived") }
        while !archived() && Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        #expect(!segments(daemon).isEmpty, "no segment after 20 s: \(daemon.stderrTail())")
        #expect(daemon.stderrTail(40).contains("log archived"), "no log line after 20 s: \(daemon.stderrTail())")
        #expect(try await daemon.log("verify").exitCode == 0)
        #expect(try await daemon.events().of("VolumeCreated").count == 8)
    }

    @Test func badArchiveRequestsChangeNothing() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "a", "-size", "1m")
            for arguments in [[String](), ["-keep", "1", "-before", "2"], ["-before", "0"], ["-keep", "x"]] {
                let output = try await daemon.snapback(["log", "archive", "-data-dir", daemon.directory] + arguments)
                #expect(output.exitCode == 2, "log archive \(arguments): \(output)")
            }
            // The API refuses the same, with a stable code.
            for body in ["{}", "{\"before\": 0}", "{\"before\": 3, \"keep\": 1}", "{\"keep\": null}", "[1]"] {
                let (status, answer) = try controlRequest(daemon.socketPath, "POST", "/v1/log/archive", json: body)
                #expect(status.contains(" 400"), "\(body): \(status) \(answer)")
                #expect(answer.contains("bad_request"), "\(body): \(answer)")
            }
            #expect(segments(daemon).isEmpty)
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }
}
