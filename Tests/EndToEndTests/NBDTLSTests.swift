import Foundation
import Testing

/// `snapbackd --nbd-tls psk:FILE | x509:DIR` with real clients: qemu-io (QEMU's `tls-creds-psk` /
/// `tls-creds-x509` objects) and nbdinfo / nbdcopy (libnbd's `nbds://` URIs), all GnuTLS; a
/// client without TLS is refused; NBD on a non-loopback address without TLS is refused at start-up.
@Suite("NBD over TLS", .serialized)
struct NBDTLSTests {
    /// A PSK directory in QEMU's layout (`DIR/keys.psk`, one `alice:HEXKEY` line), generated now.
    static func makePSKDirectory(identity: String = "alice") throws -> (directory: String, file: String) {
        let directory = scratchPath("snapback-psk")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var generator = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        let file = directory + "/keys.psk"
        try "\(identity):\(key)\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        return (directory, file)
    }

    /// qemu-io's arguments for `export` over TLS with the credentials object `object`.
    static func qemuIOArguments(_ daemon: Daemon, _ export: String, object: String, readOnly: Bool = false, _ commands: [String]) -> [String] {
        ["--object", object, "--image-opts"] + (readOnly ? ["-r"] : [])
            + ["driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=\(daemon.port),export=\(export),tls-creds=tls0"]
            + commands.flatMap { ["-c", $0] }
    }

    static func unixURI(_ daemon: Daemon, _ export: String) -> String { "nbd+unix:///\(export)?socket=\(daemon.nbdSocketPath)" }

    @Test("TLS-PSK: qemu-io writes and reads, nbdinfo and nbdcopy read; plain clients, a wrong key and an unknown user are refused")
    func pskWithRealClients() async throws {
        let psk = try Self.makePSKDirectory()
        let wrong = try Self.makePSKDirectory()
        let stranger = try Self.makePSKDirectory(identity: "mallory")
        defer { for directory in [psk, wrong, stranger] { try? FileManager.default.removeItem(atPath: directory.directory) } }
        let daemon = try await Daemon.start(arguments: ["--nbd-tls", "psk:" + psk.file])
        defer { daemon.cleanup() }
        try await daemon.ok("mkvolume", "-name", "v", "-size", "4m")

        let object = "tls-creds-psk,id=tls0,endpoint=client,dir=\(psk.directory),username=alice"
        let written = try await runProcess(
            Binaries.qemuIO, Self.qemuIOArguments(daemon, "v", object: object, ["write -P 0x5a 65536 131072", "write -P 0x3c 1048576 4096"]))
        #expect(written.exitCode == 0, "\(written) \(daemon.stderrTail())")
        let read = try await runProcess(
            Binaries.qemuIO,
            Self.qemuIOArguments(daemon, "v", object: object, readOnly: true, ["read -P 0x5a 65536 131072", "read -P 0 0 65536", "read -P 0x3c 1048576 4096", "read -P 0 2m 2m"]))
        #expect(read.exitCode == 0 && !read.stdout.contains("Pattern verification failed"), "\(read)")
        // The Unix socket (TLS offered, not required there) sees the same bytes.
        let local = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", Self.unixURI(daemon, "v"), "-c", "read -P 0x5a 65536 131072"])
        #expect(local.exitCode == 0 && !local.stdout.contains("Pattern verification failed"), "\(local)")

        let uri = "nbds://alice@127.0.0.1:\(daemon.port)/v?tls-psk-file=\(psk.file)"
        let info = try await runProcess(Binaries.nbdinfo, ["--size", uri])
        #expect(info.exitCode == 0 && info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "4194304", "\(info)")
        let copy = daemon.directory + "/v.copy"
        // --no-extents: every range is read, the zero runs come back as OFFSET_HOLE chunks.
        let copied = try await runProcess(Binaries.nbdcopy, ["--no-extents", uri, copy])
        #expect(copied.exitCode == 0, "\(copied)")
        #expect(try firstMismatch(copy, byte: 0, length: 65536) == nil)
        #expect(try firstMismatch(copy, byte: 0x5a, offset: 65536, length: 131072) == nil)
        #expect(try firstMismatch(copy, byte: 0x3c, offset: 1048576, length: 4096) == nil)

        // Without TLS: libnbd is told TLS is required; qemu-io fails; nothing is served.
        let plainInfo = try await runProcess(Binaries.nbdinfo, ["--size", daemon.uri("v")])
        #expect(plainInfo.exitCode != 0 && plainInfo.stderr.lowercased().contains("tls"), "\(plainInfo)")
        let plainQemu = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", daemon.uri("v"), "-c", "read 0 4096"])
        #expect(plainQemu.exitCode != 0 || plainQemu.stderr.contains("TLS"), "\(plainQemu)")
        #expect(!plainQemu.stdout.contains("read 4096/4096"), "\(plainQemu)")
        // A wrong key, an identity the server does not know.
        let badKey = try await runProcess(Binaries.nbdinfo, ["--size", "nbds://alice@127.0.0.1:\(daemon.port)/v?tls-psk-file=\(wrong.file)"])
        #expect(badKey.exitCode != 0, "\(badKey)")
        let badUser = try await runProcess(
            Binaries.qemuIO,
            Self.qemuIOArguments(daemon, "v", object: "tls-creds-psk,id=tls0,endpoint=client,dir=\(stranger.directory),username=mallory", readOnly: true,
                                 ["read 0 4096"]))
        #expect(!badUser.stdout.contains("read 4096/4096"), "\(badUser)")
        #expect(daemon.isRunning)
    }

    @Test("TLS with X.509 (qemu's directory layout): qemu-io and nbdinfo with a client certificate; without one the handshake fails")
    func x509WithRealClients() async throws {
        let pki = scratchPath("snapback-pki")
        defer { try? FileManager.default.removeItem(atPath: pki) }
        try await Self.makePKI(pki)
        let daemon = try await Daemon.start(arguments: ["--nbd-tls", "x509:" + pki + "/server"])
        defer { daemon.cleanup() }
        try await daemon.ok("mkvolume", "-name", "x", "-size", "1m")
        let object = "tls-creds-x509,id=tls0,endpoint=client,dir=\(pki)/client,verify-peer=yes"
        let written = try await runProcess(Binaries.qemuIO, Self.qemuIOArguments(daemon, "x", object: object, ["write -P 0x77 0 8192", "read -P 0x77 0 8192"]))
        #expect(written.exitCode == 0 && !written.stdout.contains("Pattern verification failed"), "\(written) \(daemon.stderrTail())")
        let info = try await runProcess(Binaries.nbdinfo, ["--size", "nbds://127.0.0.1:\(daemon.port)/x?tls-certificates=\(pki)/client"])
        #expect(info.exitCode == 0 && info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576", "\(info)")
        // A client that trusts the CA but has no certificate of its own.
        let anonymous = try await runProcess(Binaries.nbdinfo, ["--size", "nbds://127.0.0.1:\(daemon.port)/x?tls-certificates=\(pki)/anonymous"])
        #expect(anonymous.exitCode != 0, "\(anonymous)")
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl:
    /// `DIR/server` (ca-cert.pem, server-cert.pem, server-key.pem), `DIR/client` (ca-cert.pem,
    /// client-cert.pem, client-key.pem) and `DIR/anonymous` (ca-cert.pem only).
    static func makePKI(_ directory: String) async throws {
        for sub in ["server", "client", "anonymous"] {
            try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
        }
        let script = """
            set -e
            cd '\(directory)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=snapback-test-ca 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl req -newkey rsa:2048 -nodes -keyout server/server-key.pem -out server.csr -subj /CN=127.0.0.1 2>/dev/null
            openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server/server-cert.pem -days 2 -extfile server.ext 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout client/client-key.pem -out client.csr -subj /CN=snapback-test-client 2>/dev/null
            openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out client/client-cert.pem -days 2 -extfile client.ext 2>/dev/null
            for sub in server client anonymous; do cp ca-cert.pem $sub/; done
            """
        let made = try await runProcess("/bin/sh", ["-c", script])
        guard made.exitCode == 0 else { throw RigError("openssl: \(made)") }
    }

    /// Runs snapbackd with `arguments` on a fresh data directory until it exits or `seconds` pass.
    static func runDaemon(_ arguments: [String], seconds: Double = 30) async throws -> ProcessOutput {
        let directory = scratchPath("snapback-tls-refusal")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try await runProcess(try Binaries.path("snapbackd"), ["--data-dir", directory] + arguments, timeoutSeconds: seconds)
    }

    @Test("NBD on a non-loopback address without TLS is refused at start-up, unless --nbd-insecure; malformed TLS credentials are refused")
    func nonLoopbackWithoutTLSIsRefused() async throws {
        let port = try freePort()
        for host in ["0.0.0.0", "[::]"] {
            let refused = try await Self.runDaemon(["--nbd", "\(host):\(port)", "--socket", scratchPath("sb") + ".sock"])
            #expect(refused.exitCode == 1, "\(refused)")
            #expect(
                refused.stderr.contains(
                    "snapbackd: error: refusing to serve NBD without TLS on \(host):\(port), which is not a loopback address: give --nbd-tls psk:FILE or x509:DIR, or --nbd-insecure to serve it in the clear"),
                "\(refused)")
        }
        // With --nbd-insecure, or with TLS, it serves (checked from loopback, then stopped).
        let psk = try Self.makePSKDirectory()
        defer { try? FileManager.default.removeItem(atPath: psk.directory) }
        for extra in [["--nbd-insecure"], ["--nbd-tls", "psk:" + psk.file]] {
            let directory = scratchPath("snapback-tls-any")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let port = try freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try Binaries.path("snapbackd"))
            process.arguments = ["--data-dir", directory, "--nbd", "0.0.0.0:\(port)"] + extra
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            defer {
                kill(process.processIdentifier, SIGTERM)
                process.waitUntilExit()
            }
            let deadline = Date().addingTimeInterval(60)
            while process.isRunning, !portAccepts(port), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(process.isRunning && portAccepts(port), "snapbackd \(extra) serves on 0.0.0.0")
            let listed = try await runProcess(Binaries.nbdinfo, ["--list", "nbd://127.0.0.1:\(port)"])
            #expect(extra[0] == "--nbd-tls" ? listed.exitCode != 0 : listed.exitCode == 0, "\(listed)")
        }
        // Credentials that cannot be used: exit 1 with the reason; a malformed argument: usage (64).
        let missing = try await Self.runDaemon(["--nbd-tls", "psk:/nonexistent/keys.psk", "--socket", scratchPath("sb") + ".sock"])
        #expect(missing.exitCode == 1 && missing.stderr.contains("cannot read /nonexistent/keys.psk"), "\(missing)")
        let badLine = psk.directory + "/bad.psk"
        try "alice:xyz\n".write(toFile: badLine, atomically: true, encoding: .utf8)
        let malformed = try await Self.runDaemon(["--nbd-tls", "psk:" + badLine, "--socket", scratchPath("sb") + ".sock"])
        #expect(malformed.exitCode == 1 && malformed.stderr.contains("line 1"), "\(malformed)")
        let argument = try await Self.runDaemon(["--nbd-tls", "tls:" + psk.file])
        #expect(argument.exitCode == 64 && argument.stderr.contains("--nbd-tls takes psk:FILE or x509:DIR"), "\(argument)")
    }
}
