import Foundation
import Testing

/// Issue 9: malformed NBD traffic against the real daemon, from a raw TCP client. After each
/// malformed message the connection is dropped, the volume's bytes are unchanged (read back with
/// qemu-io) and the daemon still serves its other clients.
@Suite("malformed NBD")
struct NBDMalformedTests {
    static let volumeBytes = 4 * mebibyte
    static let fill: UInt8 = 0x77

    /// The volume is intact, a connection opened before the bad one still reads, new clients are
    /// served, and the control API answers.
    static func expectUnharmed(_ daemon: Daemon, _ survivor: RawNBDClient, cookie: UInt64, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(try await daemon.holds("vol", byte: fill, length: volumeBytes), "after \(what): the volume's bytes", sourceLocation: sourceLocation)
        let read = try survivor.read(offset: volumeBytes - 4096, length: 4096, cookie: cookie)
        #expect(read.error == 0 && read.bytes == [UInt8](repeating: fill, count: 4096), "after \(what): the other connection", sourceLocation: sourceLocation)
        #expect(try await daemon.snapback("lsvolume").exitCode == 0, "after \(what): the control API", sourceLocation: sourceLocation)
        #expect(daemon.isRunning, sourceLocation: sourceLocation)
    }

    @Test("bad option magic, bad request magic, an oversized WRITE: dropped, nothing written")
    func malformedMessages() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "vol", "-size", "4m")
            try await daemon.write("vol", byte: Self.fill, length: Self.volumeBytes)

            // A well-behaved connection that stays open through all of it.
            let survivor = try RawNBDClient(port: daemon.port)
            try survivor.go("vol")
            #expect(survivor.exportSizeBytes == Self.volumeBytes)
            #expect(survivor.transmissionFlags & 0b10 == 0, "vol is writable")
            let first = try survivor.read(offset: 0, length: 4096, cookie: 10)
            #expect(first.error == 0 && first.bytes.allSatisfy { $0 == Self.fill })

            // 1. Bad magic in option haggling: the server closes without a reply.
            do {
                let client = try RawNBDClient(port: daemon.port)
                try client.greet()
                let name = Array("vol".utf8)
                client.send(RawNBDClient.optionRequest(
                    magic: 0x1122_3344_5566_7788, option: RawNBDClient.optionGo,
                    data: RawNBDClient.encode32(UInt32(name.count)) + name + RawNBDClient.encode16(0)))
                #expect(client.serverCloses(), "bad option magic: the server must close")
            }
            try await Self.expectUnharmed(daemon, survivor, cookie: 11, "bad option magic")

            // 2. A request with bad magic (shaped like a WRITE with its payload).
            do {
                let client = try RawNBDClient(port: daemon.port)
                try client.go("vol")
                client.send(RawNBDClient.request(magic: 0xDEAD_BEEF, type: RawNBDClient.commandWrite, cookie: 5, offset: 0, length: 4096)
                    + [UInt8](repeating: 0xEE, count: 4096))
                #expect(client.serverCloses(), "bad request magic: the server must close")
            }
            try await Self.expectUnharmed(daemon, survivor, cookie: 12, "bad request magic")

            // 3. A WRITE longer than the server's 32 MiB payload limit (64 MiB, with the first
            // 1 MiB of its payload sent): closed before anything is written.
            do {
                let client = try RawNBDClient(port: daemon.port)
                try client.go("vol")
                client.send(RawNBDClient.request(type: RawNBDClient.commandWrite, cookie: 6, offset: 0, length: 64 << 20))
                client.send([UInt8](repeating: 0xEE, count: 1 << 20))
                #expect(client.serverCloses(), "oversized WRITE: the server must close")
            }
            try await Self.expectUnharmed(daemon, survivor, cookie: 13, "an oversized WRITE")

            // 4. An option header that announces 4 GiB of option data (over the 64 KiB limit).
            do {
                let client = try RawNBDClient(port: daemon.port)
                try client.greet()
                client.send(RawNBDClient.encode64(RawNBDClient.optionMagic) + RawNBDClient.encode32(RawNBDClient.optionGo) + RawNBDClient.encode32(0xFFFF_FFFF))
                #expect(client.serverCloses(), "option data over the limit: the server must close")
            }
            try await Self.expectUnharmed(daemon, survivor, cookie: 14, "an oversized option")

            // 5. Well-formed but refused requests get an error reply and the connection stays:
            // a WRITE past the end (ENOSPC), a READ past the end (EINVAL), an unknown command.
            do {
                let client = try RawNBDClient(port: daemon.port)
                try client.go("vol")
                let pastEnd = try client.write(offset: Self.volumeBytes - 512, bytes: [UInt8](repeating: 0xEE, count: 4096), cookie: 20)
                #expect(pastEnd == 28, "a WRITE past the end: ENOSPC")
                let readPastEnd = try client.read(offset: Self.volumeBytes, length: 512, cookie: 21)
                #expect(readPastEnd.error == 22, "a READ past the end: EINVAL")
                client.send(RawNBDClient.request(type: 42, cookie: 22, offset: 0, length: 0))
                let unknown = try client.simpleReply()
                #expect(unknown.error == 22 && unknown.cookie == 22, "an unknown command: EINVAL")
                let still = try client.read(offset: 0, length: 512, cookie: 23)
                #expect(still.error == 0 && still.bytes.allSatisfy { $0 == Self.fill }, "the connection still serves")
                client.disconnect()
            }
            try await Self.expectUnharmed(daemon, survivor, cookie: 15, "refused requests")

            // 6. An unknown export in NBD_OPT_GO is refused with an error reply.
            do {
                let client = try RawNBDClient(port: daemon.port)
                #expect(throws: RigError.self) { try client.go("no-such-export") }
            }

            survivor.disconnect()
            #expect(try await daemon.holds("vol", byte: Self.fill, length: Self.volumeBytes))
        }
    }

    @Test("a raw WRITE to a read-only point-in-time image: EPERM, the image unchanged")
    func writeToReadOnlyTarget() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.write("src", byte: 0x31, length: mebibyte)
            try await daemon.ok("startlcmap", "m0")

            let client = try RawNBDClient(port: daemon.port)
            try client.go("tgt")
            #expect(client.transmissionFlags & 0b10 != 0, "the image is advertised read-only")
            let refused = try client.write(offset: 0, bytes: [UInt8](repeating: 0xEE, count: 4096), cookie: 1)
            #expect(refused == 1, "EPERM")
            let read = try client.read(offset: 0, length: 4096, cookie: 2)
            #expect(read.error == 0 && read.bytes.allSatisfy { $0 == 0x31 })
            client.disconnect()
            #expect(try await daemon.holds("tgt", byte: 0x31, length: mebibyte))
            #expect(try await daemon.holds("src", byte: 0x31, length: mebibyte))
        }
    }
}
