import Foundation
import Testing

/// `tools/install` and the CLI's defaults: the binaries and a systemd unit that
/// `systemd-analyze verify` accepts; `snapback` finds the daemon and its log without options.
@Suite("installed like a service")
struct InstallTests {
    /// The repository (this file is Tests/EndToEndTests/InstallTests.swift).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test("tools/install puts both binaries and a unit that systemd-analyze verify accepts")
    func installedUnitVerifies() async throws {
        let prefix = scratchPath("sbe2e-install") + "/usr/local"
        defer { try? FileManager.default.removeItem(atPath: (prefix as NSString).deletingLastPathComponent.replacingOccurrences(of: "/usr", with: "")) }
        let binaries = (try Binaries.path("snapbackd") as NSString).deletingLastPathComponent
        let installed = try await runProcess(Self.repository + "/tools/install", ["--from", binaries, prefix])
        #expect(installed.exitCode == 0, "\(installed)")
        for binary in ["snapbackd", "snapback", "snapback-full"] {
            #expect(FileManager.default.isExecutableFile(atPath: prefix + "/bin/" + binary), "\(binary)")
        }
        // The installed snapback finds snapback-full beside it (help is snapback-full's).
        let help = try await runProcess(prefix + "/bin/snapback", ["--help"])
        #expect(help.exitCode == 0 && help.stdout.contains("USAGE: snapback"), "\(help)")
        let unit = prefix + "/lib/systemd/system/snapbackd.service"
        let text = try String(contentsOfFile: unit, encoding: .utf8)
        #expect(text.contains("ExecStart=\(prefix)/bin/snapbackd --data-dir /var/lib/snapback --socket /run/snapback/control.sock"), "\(text)")
        #expect(text.contains("Restart=on-failure") && text.contains("RuntimeDirectory=snapback") && text.contains("StateDirectory=snapback"))
        let analyze = "/usr/bin/systemd-analyze"
        #expect(FileManager.default.isExecutableFile(atPath: analyze), "systemd-analyze (Debian's systemd package) is needed")
        let verified = try await runProcess(analyze, ["verify", unit])
        #expect(verified.exitCode == 0 && verified.stderr.isEmpty, "\(verified)")
        // A relative prefix is refused, and nothing is installed.
        let relative = try await runProcess(Self.repository + "/tools/install", ["--from", binaries, "usr/local"])
        #expect(relative.exitCode == 2, "\(relative)")
    }

    @Test("snapback log finds the log beside the control socket SNAPBACK_SOCKET names, and beside ./var/control.sock")
    func logDefaultsToTheDaemonsDataDirectory() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "found", "-size", "1m")
            // From another directory, only SNAPBACK_SOCKET given: the log beside it.
            let elsewhere = scratchPath("sbe2e-cwd")
            try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: elsewhere) }
            let shown = try await runProcess(
                "/bin/sh", ["-c", "cd \"$1\" && exec \"$2\" log show -type VolumeCreated", "sh", elsewhere, try Binaries.path("snapback")],
                environment: ["SNAPBACK_SOCKET": daemon.socketPath])
            #expect(shown.exitCode == 0 && shown.stdout.contains("volume found created"), "\(shown)")
            // In the daemon's parent directory with the data directory linked as ./var: no option at all.
            let parent = scratchPath("sbe2e-parent")
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: parent) }
            try FileManager.default.createSymbolicLink(atPath: parent + "/var", withDestinationPath: daemon.directory)
            let plain = try await runProcess(
                "/bin/sh", ["-c", "cd \"$1\" && \"$2\" lsvolume && exec \"$2\" log show -type VolumeCreated", "sh", parent, try Binaries.path("snapback")])
            #expect(plain.exitCode == 0 && plain.stdout.contains("found"), "\(plain)")
        }
    }
}
