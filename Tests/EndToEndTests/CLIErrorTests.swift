import Foundation
import SnapbackAPI
import Testing

/// Issue 7: every error path of the CLI against a real daemon, with the exact exit code (1 for a
/// command the controller rejects, 2 for malformed syntax) and the stable code on stderr, and the
/// proof that a rejected command changes nothing.
@Suite("CLI errors")
struct CLIErrorTests {
    /// One rejected invocation: its arguments, exit code and the text stderr must contain.
    struct Case: CustomStringConvertible {
        var arguments: [String]
        var exitCode: Int32
        var code: String
        var description: String { arguments.joined(separator: " ") }
    }

    static let cases: [Case] = [
        // Malformed syntax: exit 2, "usage".
        Case(arguments: ["lsvolume", "-bogus"], exitCode: 2, code: "usage"),
        Case(arguments: ["mkvolume", "-name"], exitCode: 2, code: "usage"),
        Case(arguments: ["mkvolume", "-name", "x"], exitCode: 2, code: "usage"),
        Case(arguments: ["mkvolume", "-name", "x", "-size", "12q"], exitCode: 2, code: "usage"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e2", "-copyrate", "fast"], exitCode: 2, code: "usage"),
        Case(arguments: ["frobnicate"], exitCode: 2, code: "usage"),
        Case(arguments: ["startlcmap"], exitCode: 2, code: "usage"),
        // Rejected by the controller: exit 1 and the stable code.
        Case(arguments: ["lslcmap", "nosuch"], exitCode: 1, code: "unknown_map"),
        Case(arguments: ["startlcmap", "nosuch"], exitCode: 1, code: "unknown_map"),
        Case(arguments: ["chlcmap", "-autorestore", "on", "nosuch"], exitCode: 1, code: "unknown_map"),
        Case(arguments: ["wait", "nosuch"], exitCode: 1, code: "unknown_map"),
        Case(arguments: ["lsvolume", "nosuch"], exitCode: 1, code: "unknown_volume"),
        Case(arguments: ["fault", "-volume", "nosuch", "-reason", "x"], exitCode: 1, code: "unknown_volume"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e2", "-copyrate", "151"], exitCode: 1, code: "copyrate_out_of_range"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e2", "-grainsize", "128"], exitCode: 1, code: "invalid_grain_size"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e2", "-autorestore", "maybe"], exitCode: 1, code: "invalid_autorestore"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e1"], exitCode: 1, code: "same_source_target"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "small"], exitCode: 1, code: "size_mismatch"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "tgt"], exitCode: 1, code: "target_in_use"),
        Case(arguments: ["mkvolume", "-name", "src", "-size", "64m"], exitCode: 1, code: "duplicate_name"),
        Case(arguments: ["mkvolume", "-name", "9lives", "-size", "64m"], exitCode: 1, code: "invalid_name"),
        Case(arguments: ["mkvolume", "-name", "odd", "-size", "1000"], exitCode: 1, code: "invalid_size"),
        Case(arguments: ["mkvolume", "-name", "none", "-size", "0"], exitCode: 1, code: "invalid_size"),
        Case(arguments: ["rmvolume", "src"], exitCode: 1, code: "volume_in_map"),
        Case(arguments: ["startlcmap", "m0"], exitCode: 1, code: "map_already_started"),
        Case(arguments: ["startlcmap", "-restore", "fresh"], exitCode: 1, code: "no_valid_image"),
        Case(arguments: ["chlcmap", "-copyrate", "151", "m0"], exitCode: 1, code: "copyrate_out_of_range"),
        Case(arguments: ["chlcmap", "-autorestore", "maybe", "m0"], exitCode: 1, code: "invalid_autorestore"),
        Case(arguments: ["chlcmap", "m0"], exitCode: 1, code: "nothing_to_change"),
        Case(arguments: ["chlcmap", "-autorestore", "off", "m0_rev"], exitCode: 1, code: "map_is_reverse"),
        Case(arguments: ["stoplcmap", "m0_rev"], exitCode: 1, code: "map_is_reverse"),
        Case(arguments: ["stoplcmap", "fresh"], exitCode: 1, code: "map_not_started"),
        Case(arguments: ["rmlcmap", "m0"], exitCode: 1, code: "map_active"),
        Case(arguments: ["fault", "-volume", "src", "-reason", ""], exitCode: 1, code: "invalid_reason"),
        Case(arguments: ["recovervolume", "src"], exitCode: 1, code: "volume_not_faulted"),
        Case(arguments: ["mklcmap", "-source", "e1", "-target", "e2", "-name", "m0"], exitCode: 1, code: "duplicate_name"),
    ]

    @Test("every rejected command: exact exit code, stable code on stderr, nothing changed")
    func rejectedCommands() async throws {
        try await withDaemon { daemon in
            // The scene: m0 (src → tgt) started, a never-started map "fresh" (f1 → f2), a fresh
            // volume pair e1/e2 in no map, and a smaller volume.
            try await daemon.ok("mkvolume", "-name", "src", "-size", "64m")
            try await daemon.ok("mkvolume", "-name", "tgt", "-size", "64m")
            try await daemon.ok("mkvolume", "-name", "f1", "-size", "1m")
            try await daemon.ok("mkvolume", "-name", "f2", "-size", "1m")
            try await daemon.ok("mkvolume", "-name", "e1", "-size", "64m")
            try await daemon.ok("mkvolume", "-name", "e2", "-size", "64m")
            try await daemon.ok("mkvolume", "-name", "small", "-size", "32m")
            try await daemon.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0")
            try await daemon.ok("mklcmap", "-source", "f1", "-target", "f2", "-name", "fresh")
            try await daemon.ok("startlcmap", "m0")

            let recordsBefore = try await daemon.recordCount()
            let volumesBefore = try await daemon.ok("lsvolume", "-json").stdout
            let mapsBefore = try await daemon.ok("lslcmap", "-json").stdout

            for rejected in Self.cases {
                let output = try await daemon.snapback(rejected.arguments)
                #expect(output.exitCode == rejected.exitCode, "\(rejected): \(output)")
                #expect(output.stderr.contains("snapback: error \(rejected.code)"), "\(rejected): \(output)")
                // One line: the stable code and a reason.
                let lines = output.stderr.split(separator: "\n")
                #expect(lines.count == 1, "\(rejected): stderr is one line: \(output.stderr)")
                #expect(output.stdout.isEmpty, "\(rejected): nothing on stdout: \(output.stdout)")
            }

            // Nothing changed: no record, the same tables.
            #expect(try await daemon.recordCount() == recordsBefore)
            #expect(try await daemon.ok("lsvolume", "-json").stdout == volumesBefore)
            #expect(try await daemon.ok("lslcmap", "-json").stdout == mapsBefore)
            #expect(try await daemon.log("verify").exitCode == 0)

            // The double-dash spelling is accepted too, and -delim gives a delimited table.
            let doubleDash = try await daemon.snapback("lsvolume", "--delim", ":")
            #expect(doubleDash.exitCode == 0)
            #expect(doubleDash.stdout.split(separator: "\n").first.map(String.init) == VolumeRow.columns.joined(separator: ":"))
            #expect(doubleDash.stdout.contains("\n0:src:67108864:online:"))

            // The audit CLI's own errors.
            let badType = try await daemon.log("show", "-type", "NoSuchEvent")
            #expect(badType.exitCode == 1 && badType.stderr.contains("unknown_event_type"), "\(badType)")
            let badState = try await daemon.log("state", "-at", "99999")
            #expect(badState.exitCode == 1 && badState.stderr.contains("seq_out_of_range"), "\(badState)")
            let noLog = try await runProcess(try Binaries.path("snapback"), ["log", "stats", "-data-dir", daemon.directory + "/nowhere"])
            #expect(noLog.exitCode == 1, "log stats on a directory without a log: \(noLog)")
        }
    }

    @Test("the daemon down: exit 1, daemon_not_running, and the hint")
    func daemonDown() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "v", "-size", "1m")
            await daemon.stop()
            let viaEnvironment = try await daemon.snapback("lsvolume")
            #expect(viaEnvironment.exitCode == 1, "\(viaEnvironment)")
            #expect(viaEnvironment.stderr.contains("daemon_not_running"))
            #expect(viaEnvironment.stderr.contains("not running"))
            let viaOption = try await runProcess(try Binaries.path("snapback"), ["mkvolume", "-socket", daemon.directory + "/none.sock", "-name", "w", "-size", "1m"])
            #expect(viaOption.exitCode == 1 && viaOption.stderr.contains("not running"), "\(viaOption)")
            // -socket wins over SNAPBACK_SOCKET.
            try await daemon.restart()
            let wins = try await runProcess(
                try Binaries.path("snapback"), ["lsvolume", "-socket", daemon.socketPath], environment: ["SNAPBACK_SOCKET": "/nonexistent.sock"])
            #expect(wins.exitCode == 0 && wins.stdout.contains("v"), "\(wins)")
            // The audit CLI needs no daemon: the log reads the same with the daemon stopped.
            await daemon.stop()
            let shown = try await daemon.log("show")
            #expect(shown.exitCode == 0 && shown.stdout.contains("VolumeCreated"), "\(shown)")
        }
    }
}
