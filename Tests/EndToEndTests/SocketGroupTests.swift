import Foundation
import Testing

/// `snapbackd --socket-group GROUP`: the control socket and the NBD socket belong to the group
/// with mode 0660, so that its members run `snapback` without root; others are refused by the
/// file system. The CLI runs as another user through `setpriv` (util-linux).
@Suite("socket group")
struct SocketGroupTests {
    static let setpriv = "/usr/bin/setpriv"
    /// `users` (gid 100 on Debian) and `nogroup` (65534), with `nobody` (65534) as the user.
    static let (member, outsider, nobody) = ("100", "65534", "65534")

    /// `snapback ARGUMENTS` as user nobody with only group `gid`.
    static func snapbackAs(gid: String, _ daemon: Daemon, _ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(
            setpriv, ["--reuid", nobody, "--regid", gid, "--clear-groups", try Binaries.path("snapback")] + arguments,
            environment: ["SNAPBACK_SOCKET": daemon.socketPath])
    }

    @Test("with --socket-group the group's members run commands and use NBD; others cannot connect")
    func groupMembersOnly() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.setpriv), "setpriv (util-linux) is needed")
        let daemon = try await Daemon.start(arguments: ["--socket-group", "users"])
        defer { daemon.cleanup() }
        for path in [daemon.socketPath, daemon.nbdSocketPath] {
            var status = stat()
            #expect(lstat(path, &status) == 0)
            #expect(status.st_mode & 0o777 == 0o660 && status.st_gid == 100, "\(path): mode \(String(status.st_mode & 0o777, radix: 8)), gid \(status.st_gid)")
        }
        let made = try await Self.snapbackAs(gid: Self.member, daemon, ["mkvolume", "-name", "v", "-size", "1m"])
        #expect(made.exitCode == 0, "\(made)")
        let refused = try await Self.snapbackAs(gid: Self.outsider, daemon, ["lsvolume"])
        #expect(refused.exitCode != 0, "\(refused)")
        // NBD over the Unix socket, as a member.
        let io = try await runProcess(
            Self.setpriv,
            ["--reuid", Self.nobody, "--regid", Self.member, "--clear-groups", Binaries.qemuIO, "-f", "raw",
             "nbd+unix:///v?socket=\(daemon.nbdSocketPath)", "-c", "write -P 9 0 4k"])
        #expect(io.exitCode == 0, "\(io)")
        #expect(try await daemon.holds("v", byte: 9, length: 4096))
        // Who did what: the member's uid and gid are in the log.
        let created = try #require(try await daemon.events().of("VolumeCreated").last)
        #expect(created.fields["uid"] == "65534" && created.fields["gid"] == "100", "\(created.fields)")
    }

    @Test("without --socket-group the sockets are the owner's alone; an unknown group is refused at start-up")
    func ownerOnlyByDefault() async throws {
        try await withDaemon { daemon in
            for path in [daemon.socketPath, daemon.nbdSocketPath] {
                var status = stat()
                #expect(lstat(path, &status) == 0 && status.st_mode & 0o777 == 0o600, "\(path)")
            }
            let refused = try await Self.snapbackAs(gid: Self.member, daemon, ["lsvolume"])
            #expect(refused.exitCode != 0, "\(refused)")
        }
        let output = try await runProcess(
            try Binaries.path("snapbackd"), ["--data-dir", scratchPath("sbe2e-group"), "--socket-group", "no-such-group-here"])
        #expect(output.exitCode != 0 && output.stderr.contains("no group named no-such-group-here"), "\(output)")
    }
}
