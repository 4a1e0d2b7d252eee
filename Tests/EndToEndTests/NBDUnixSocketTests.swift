import Foundation
import Testing

/// `snapbackd --nbd-socket PATH`: NBD on a Unix socket, mode 0600, with real clients (qemu-io,
/// qemu-img, nbdcopy, nbdinfo) through `nbd+unix:///VOLUME?socket=PATH`.
@Suite("NBD on a Unix socket")
struct NBDUnixSocketTests {
    static func unixURI(_ daemon: Daemon, _ export: String) -> String { "nbd+unix:///\(export)?socket=\(daemon.nbdSocketPath)" }

    @Test("the socket is the owner's alone; qemu-io writes through it, TCP reads the same bytes, and the reverse")
    func qemuIOOverTheSocket() async throws {
        try await withDaemon { daemon in
            var status = stat()
            #expect(lstat(daemon.nbdSocketPath, &status) == 0)
            #expect(status.st_mode & S_IFMT == S_IFSOCK)
            #expect(status.st_mode & 0o777 == 0o600, "mode \(String(status.st_mode & 0o777, radix: 8))")

            try await daemon.ok("mkvolume", "-name", "v", "-size", "4m")
            let written = try await runProcess(
                Binaries.qemuIO, ["-f", "raw", Self.unixURI(daemon, "v"), "-c", "write -P 0x5a 65536 131072"])
            #expect(written.exitCode == 0, "\(written.stderr)")
            #expect(try await daemon.holds("v", byte: 0x5a, offset: 65536, length: 131072), "TCP reads what the socket wrote")

            try await daemon.write("v", byte: 0x3c, offset: 1 << 20, length: 4096)
            let read = try await runProcess(
                Binaries.qemuIO, ["-f", "raw", "-r", Self.unixURI(daemon, "v"), "-c", "read -P 0x3c 1048576 4096", "-c", "read -P 0 0 65536"])
            #expect(read.exitCode == 0 && !read.stdout.contains("Pattern verification failed"), "\(read.stdout) \(read.stderr)")

            let info = try await runProcess(Binaries.qemuImg, ["info", "-f", "raw", Self.unixURI(daemon, "v")])
            #expect(info.exitCode == 0 && info.stdout.contains("4 MiB"), "\(info.stdout) \(info.stderr)")
        }
    }

    @Test("nbdcopy copies a volume out through the socket byte for byte; an unknown export is refused")
    func nbdcopyOverTheSocket() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "w", "-size", "8m")
            try await daemon.write("w", byte: 0xa7, offset: 0, length: 8 << 20)
            try await daemon.write("w", byte: 0x11, offset: 3 << 20, length: 65536)
            let copy = daemon.directory + "/w.copy"
            let copied = try await runProcess(Binaries.nbdcopy, [Self.unixURI(daemon, "w"), copy])
            #expect(copied.exitCode == 0, "\(copied.stderr)")
            #expect(try firstMismatch(copy, byte: 0xa7, length: 3 << 20) == nil)
            #expect(try firstMismatch(copy, byte: 0x11, offset: 3 << 20, length: 65536) == nil)
            #expect(try firstMismatch(copy, byte: 0xa7, offset: (3 << 20) + 65536) == nil)

            let unknown = try await runProcess(Binaries.nbdinfo, [Self.unixURI(daemon, "nosuch")])
            #expect(unknown.exitCode != 0)
        }
    }

    @Test("a stopped daemon removes its NBD socket; a restart serves it again")
    func socketRemovedOnStop() async throws {
        try await withDaemon { daemon in
            #expect(await daemon.stop() == 0)
            #expect(!FileManager.default.fileExists(atPath: daemon.nbdSocketPath))
            try await daemon.restart()
            try await daemon.ok("mkvolume", "-name", "x", "-size", "1m")
            let info = try await runProcess(Binaries.nbdinfo, ["--size", Self.unixURI(daemon, "x")])
            #expect(info.exitCode == 0 && info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576", "\(info.stdout) \(info.stderr)")
        }
    }
}
