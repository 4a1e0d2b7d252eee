import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SnapbackNBD
import Testing

/// NBD_OPT_STARTTLS and the TLS modes (FORCEDTLS on TCP, optional on the Unix socket), PSK files,
/// and a whole TLS-PSK session against a real server with a swift-nio-ssl client.
@Suite("NBD TLS")
struct TLSTests {
    private static let ack = NBDOptionReplyType.ack.rawValue
    private static let tlsRequired = NBDOptionReplyType.errorTLSRequired.rawValue
    private static let invalid = NBDOptionReplyType.errorInvalid.rawValue

    /// The reply types in a step's bytes; `[]` for a close without reply.
    private func replyTypes(_ step: NBDNegotiationStep) -> [UInt32] { optionReplyTypes(step) }

    private func negotiation(_ mode: NBDTLSMode) -> NBDNegotiation {
        var negotiation = NBDNegotiation(
            provider: TestProvider(entries: [("disk", MemoryExport(sizeBytes: 8192), "")]), tlsMode: mode)
        negotiation.receive(clientFlags: [.fixedNewstyle, .noZeroes])
        return negotiation
    }

    private func option(_ option: NBDOption, _ data: [UInt8] = []) -> NBDOptionRequest { NBDOptionRequest(option: option, data: data) }

    @Test("FORCEDTLS: every option but STARTTLS and ABORT answers TLS_REQD until TLS is up")
    func forcedTLSRefusesOptionsInTheClear() {
        var negotiation = negotiation(.required)
        let go = option(.go, infoRequestData(name: "disk"))
        let context = option(.setMetaContext, NBDMetaContextRequest(name: "disk", queries: ["base:allocation"]).optionData)
        for request in [option(.list), option(.info, infoRequestData(name: "disk")), go, option(.structuredReply), context,
                        option(.listMetaContext, NBDMetaContextRequest(name: "disk", queries: []).optionData),
                        option(.extendedHeaders), option(NBDOption(rawValue: 0xBEEF), [1, 2, 3])] {
            #expect(replyTypes(negotiation.receive(option: request)) == [Self.tlsRequired], "\(request.option)")
        }
        #expect(!negotiation.structuredReplies, "nothing negotiated in the clear")
        // STARTTLS with data is malformed; then the upgrade.
        #expect(replyTypes(negotiation.receive(option: option(.startTLS, [0]))) == [Self.invalid])
        guard case .replyAndStartTLS(let bytes) = negotiation.receive(option: option(.startTLS)) else {
            Issue.record("STARTTLS must be acknowledged and start TLS")
            return
        }
        #expect(bytes == NBDWireEncoder.optionReply(option: .startTLS, type: .ack))
        #expect(negotiation.tlsStarted)
        // Over TLS: options work, TLS_REQD never comes again, a second STARTTLS is invalid.
        #expect(replyTypes(negotiation.receive(option: option(.list))) == [2, Self.ack])
        #expect(replyTypes(negotiation.receive(option: option(.startTLS))) == [Self.invalid])
        #expect(replyTypes(negotiation.receive(option: option(.structuredReply))) == [Self.ack])
        guard case .replyAndEnterTransmission(_, let session) = negotiation.receive(option: go) else {
            Issue.record("GO over TLS must enter transmission")
            return
        }
        #expect(session.name == "disk" && session.structuredReplies)
    }

    @Test("FORCEDTLS: EXPORT_NAME in the clear closes (it cannot answer an error); ABORT is acknowledged")
    func forcedTLSExportNameAndAbort() {
        var negotiation = negotiation(.required)
        guard case .close(.exportNameWithoutTLS) = negotiation.receive(option: option(.exportName, Array("disk".utf8))) else {
            Issue.record("EXPORT_NAME without TLS must close")
            return
        }
        var other = self.negotiation(.required)
        guard case .replyAndClose(let ack) = other.receive(option: option(.abort)) else {
            Issue.record("ABORT must be acknowledged in the clear")
            return
        }
        #expect(ack == NBDWireEncoder.optionReply(option: .abort, type: .ack))
        // After STARTTLS, EXPORT_NAME enters transmission.
        var upgraded = self.negotiation(.required)
        _ = upgraded.receive(option: option(.startTLS))
        guard case .replyAndEnterTransmission = upgraded.receive(option: option(.exportName, Array("disk".utf8))) else {
            Issue.record("EXPORT_NAME over TLS must enter transmission")
            return
        }
    }

    @Test("optional TLS: options work in the clear; STARTTLS forgets what was negotiated before it")
    func optionalTLSResetsTheNegotiation() {
        var negotiation = negotiation(.optional)
        #expect(replyTypes(negotiation.receive(option: option(.structuredReply))) == [Self.ack])
        let context = option(.setMetaContext, NBDMetaContextRequest(name: "disk", queries: ["base:allocation"]).optionData)
        #expect(replyTypes(negotiation.receive(option: context)) == [4, Self.ack])
        #expect(negotiation.structuredReplies && negotiation.selectedContexts != nil)
        guard case .replyAndStartTLS = negotiation.receive(option: option(.startTLS)) else {
            Issue.record("STARTTLS must be accepted where TLS is optional")
            return
        }
        #expect(!negotiation.structuredReplies && negotiation.selectedContexts == nil)
        guard case .replyAndEnterTransmission(_, let session) = negotiation.receive(option: option(.go, infoRequestData(name: "disk"))) else {
            Issue.record("GO must enter transmission")
            return
        }
        #expect(!session.structuredReplies && session.metaContexts.isEmpty)
    }

    @Test("no TLS: STARTTLS answers UNSUP and nothing answers TLS_REQD")
    func noTLS() {
        var negotiation = negotiation(.none)
        #expect(replyTypes(negotiation.receive(option: option(.startTLS))) == [NBDOptionReplyType.errorUnsupported.rawValue])
        #expect(replyTypes(negotiation.receive(option: option(.list))) == [2, Self.ack])
        #expect(!negotiation.tlsStarted)
    }

    // MARK: Credentials

    @Test("PSK files: IDENTITY:HEXKEY lines as psktool writes them; malformed lines are refused with their line number")
    func pskFiles() throws {
        let keys = try NBDPreSharedKeys(parsing: "alice:0123456789abcdefABCDEF\r\n\nbob:00\n", path: "k")
        #expect(keys.keys == ["alice": [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef], "bob": [0]])
        let bad: [(String, NBDTLSError)] = [
            ("alice", .pskLineMalformed(path: "k", line: 1, reason: "no colon")),
            ("a:00\n:00", .pskLineMalformed(path: "k", line: 2, reason: "the identity must be 1 to 128 bytes")),
            ("a:0", .pskLineMalformed(path: "k", line: 1, reason: "the key must be 1 to 256 bytes as an even number of hex digits")),
            ("a:zz", .pskLineMalformed(path: "k", line: 1, reason: "the key must be 1 to 256 bytes as an even number of hex digits")),
            ("a:", .pskLineMalformed(path: "k", line: 1, reason: "the key must be 1 to 256 bytes as an even number of hex digits")),
            ("a:" + String(repeating: "ab", count: 257), .pskLineMalformed(path: "k", line: 1, reason: "the key must be 1 to 256 bytes as an even number of hex digits")),
            ("a:00\na:11", .pskLineMalformed(path: "k", line: 2, reason: "identity 'a' appears twice")),
            ("\n\n", .pskFileEmpty(path: "k")),
        ]
        for (text, expected) in bad {
            #expect(throws: expected, "\(text.prefix(20))") { try NBDPreSharedKeys(parsing: text, path: "k") }
        }
        #expect(throws: NBDTLSError.self) { try NBDPreSharedKeys(contentsOf: "/nonexistent/keys.psk") }
    }

    @Test("--nbd-tls takes psk:FILE or x509:DIR")
    func tlsArgument() throws {
        #expect(try NBDTLSSource(argument: "psk:/etc/keys.psk") == .psk(file: "/etc/keys.psk"))
        #expect(try NBDTLSSource(argument: "x509:/etc/pki/nbd") == .x509(directory: "/etc/pki/nbd"))
        for text in ["psk:", "x509:", "/etc/keys.psk", "tls:x", ""] {
            #expect(throws: NBDTLSError.argumentMalformed(text)) { try NBDTLSSource(argument: text) }
        }
        #expect(throws: NBDTLSError.self) { try NBDTLSCredentials.load(.x509(directory: "/nonexistent")) }
    }

    @Test("loopback addresses, and what is not one")
    func loopback() {
        for host in ["127.0.0.1", "127.3.2.1", "::1", "localhost", "::ffff:127.0.0.1"] { #expect(NBDServer.isLoopback(host: host), "\(host)") }
        for host in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.20", "fe80::1", "::ffff:10.0.0.1", "no.such.host.invalid"] {
            #expect(!NBDServer.isLoopback(host: host), "\(host)")
        }
    }

    // MARK: A real session

    static let key: [UInt8] = (0..<32).map { UInt8($0 * 7 + 1) }

    /// A swift-nio-ssl TLS 1.2 PSK client context (BoringSSL on both ends).
    static func clientContext(identity: String = "alice", key: [UInt8] = key) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = NBDTLSCredentials.pskCipherSuites
        configuration.pskClientProvider = { _ in PSKClientIdentityResponse(key: NIOSSLSecureBytes(key), identity: identity) }
        return try NIOSSLContext(configuration: configuration)
    }

    /// A TCP connection whose bytes a test reads in order; TLS can be put under it mid-stream.
    final class Connection: @unchecked Sendable {
        let channel: Channel
        private let received: Received

        final class Received: ChannelInboundHandler, @unchecked Sendable {
            typealias InboundIn = ByteBuffer
            let lock = NSLock()
            var bytes: [UInt8] = []
            var closed = false
            var error: (any Error)?
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                var buffer = unwrapInboundIn(data)
                let new = buffer.readBytes(length: buffer.readableBytes) ?? []
                lock.withLock { bytes += new }
            }
            func channelInactive(context: ChannelHandlerContext) { lock.withLock { closed = true } }
            func errorCaught(context: ChannelHandlerContext, error: any Error) {
                lock.withLock { self.error = error }
                context.close(promise: nil)
            }
        }

        init(port: Int, group: EventLoopGroup) async throws {
            let received = Received()
            self.received = received
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(received) } }
                .connect(host: "127.0.0.1", port: port).get()
        }

        func send(_ bytes: [UInt8]) async throws {
            try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).get()
        }

        /// The next `count` bytes; nil when the connection closes first (or 5 s pass).
        func receive(_ count: Int) async throws -> [UInt8]? {
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                let (bytes, closed): ([UInt8]?, Bool) = received.lock.withLock {
                    if received.bytes.count >= count {
                        defer { received.bytes.removeFirst(count) }
                        return (Array(received.bytes.prefix(count)), false)
                    }
                    return (nil, received.closed)
                }
                if let bytes { return bytes }
                if closed { return nil }
                try await Task.sleep(for: .milliseconds(5))
            }
            return nil
        }

        var closed: Bool { received.lock.withLock { received.closed } }

        func optionReply() async throws -> (option: UInt32, type: UInt32, data: [UInt8])? {
            guard let header = try await receive(20) else { return nil }
            let length = Int(bigEndian(header[16 ..< 20], as: UInt32.self))
            guard let data = try await receive(length) else { return nil }
            return (bigEndian(header[8 ..< 12]), bigEndian(header[12 ..< 16]), data)
        }

        func startTLS(_ context: NIOSSLContext) async throws {
            let handler = try NIOSSLClientHandler(context: context, serverHostname: nil)
            try await channel.eventLoop.submit { try self.channel.pipeline.syncOperations.addHandler(handler, position: .first) }.get()
        }
    }

    @Test("a TLS-PSK session: TLS_REQD in the clear, STARTTLS, then GO and I/O over TLS; a wrong key or identity fails the handshake")
    func pskSessionOverTCP() async throws {
        let export = MemoryExport(sizeBytes: 1 << 20, fill: { pattern($0) })
        let credentials = try NBDTLSCredentials(keys: NBDPreSharedKeys(parsing: "alice:" + Self.key.map { String(format: "%02x", $0) }.joined(), path: "k"), source: .psk(file: "k"))
        let server = NBDServer(provider: TestProvider(entries: [("disk", export, "")]), host: "127.0.0.1", port: 0, tls: credentials, ioThreadCount: 2)
        let port = try await server.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            // The right key.
            let connection = try await Connection(port: port, group: group)
            #expect(try await connection.receive(18)?.prefix(8) == [0x4E, 0x42, 0x44, 0x4D, 0x41, 0x47, 0x49, 0x43])
            try await connection.send([0, 0, 0, 3])
            try await connection.send(optionBytes(NBDOption.list.rawValue))
            #expect(try await connection.optionReply()?.type == Self.tlsRequired)
            try await connection.send(optionBytes(NBDOption.startTLS.rawValue))
            #expect(try await connection.optionReply()?.type == Self.ack)
            try await connection.startTLS(Self.clientContext())
            try await connection.send(optionBytes(NBDOption.structuredReply.rawValue))
            #expect(try await connection.optionReply()?.type == Self.ack)
            try await connection.send(optionBytes(NBDOption.go.rawValue, data: infoRequestData(name: "disk")))
            var types: [UInt32] = []
            while let reply = try await connection.optionReply() {
                types.append(reply.type)
                if reply.type != NBDOptionReplyType.info.rawValue { break }
            }
            #expect(types.last == Self.ack)
            // A write, then a read of it and of bytes around it, over TLS.
            let payload = [UInt8](repeating: 0xA5, count: 300_000)
            try await connection.send(requestBytes(.write, cookie: 1, offset: 4096, lengthBytes: UInt32(payload.count)) + payload)
            #expect(try await connection.receive(20) == NBDWireEncoder.structuredDone(cookie: 1))
            try await connection.send(requestBytes(.read, cookie: 2, offset: 0, lengthBytes: 310_000))
            let header = try #require(try await connection.receive(20))
            let payloadBytes: UInt32 = bigEndian(header[16 ..< 20])
            let type: UInt16 = bigEndian(header[6 ..< 8])
            #expect(payloadBytes == 310_008 && type == NBDReplyType.offsetData.rawValue, "\(header)")
            let data = try await connection.receive(8 + 310_000)
            #expect(data.map { Array($0[8 ..< 8 + 4096]) } == (0 ..< 4096).map { pattern($0) })
            #expect(data.map { Array($0[8 + 4096 ..< 8 + 4096 + 300_000]) } == payload)
            #expect(export.bytes[4096 ..< 304_096].allSatisfy { $0 == 0xA5 })
            try await connection.channel.close()

            // A wrong key, then an unknown identity: the handshake fails and the server closes.
            for context in [try Self.clientContext(key: [UInt8](repeating: 9, count: 32)), try Self.clientContext(identity: "mallory")] {
                let wrong = try await Connection(port: port, group: group)
                _ = try await wrong.receive(18)
                try await wrong.send([0, 0, 0, 3] + optionBytes(NBDOption.startTLS.rawValue))
                #expect(try await wrong.optionReply()?.type == Self.ack)
                try await wrong.startTLS(context)
                try? await wrong.send(optionBytes(NBDOption.list.rawValue))
                #expect(try await wrong.optionReply() == nil, "no reply without the key")
                #expect(wrong.closed)
            }
            // A client that never starts TLS cannot enter transmission with EXPORT_NAME.
            let plain = try await Connection(port: port, group: group)
            _ = try await plain.receive(18)
            try? await plain.send([0, 0, 0, 3] + optionBytes(NBDOption.exportName.rawValue, data: Array("disk".utf8)))
            #expect(try await plain.receive(1) == nil)
            #expect(export.counters.reads == 1 && export.counters.writes + export.counters.immediateWrites == 1)
        } catch {
            try? await server.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        try await server.stop()
        try await group.shutdownGracefully()
    }
}
