import Testing
@testable import SnapbackNBD

/// Structured replies, meta contexts and BLOCK_STATUS, fast zeroes: the pure layers, then a
/// running server spoken to byte by byte.
@Suite("NBD structured replies and block status")
struct StructuredReplyTests {
    private struct ContextExport: NBDExport {
        let sizeBytes: UInt64 = 1 << 20
        let readOnly = false
        var metaContextNames: [String] { ["snapback:dirty:m0"] }
        func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {}
        func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) {}
        func flush() throws(NBDIOError) {}
        func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {}
        func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {}
    }

    private struct ContextProvider: NBDExportProvider {
        func exportNames() -> [(name: String, description: String)] { [("disk", ""), ("other", "")] }
        func export(named name: String) -> (any NBDExport)? { name == "disk" || name == "other" ? ContextExport() : nil }
    }

    /// The option replies in `bytes`: (type, data) each.
    private func replies(_ step: NBDNegotiationStep) -> [(type: UInt32, data: [UInt8])] {
        let bytes: [UInt8]
        switch step {
        case .reply(let b), .replyAndEnterTransmission(let b, _), .replyAndClose(let b), .replyAndStartTLS(let b): bytes = b
        case .close: return []
        }
        var result: [(UInt32, [UInt8])] = []
        var at = 0
        while at < bytes.count {
            let type = bytes.withUnsafeBytes { $0.loadBigEndian(UInt32.self, at: at + 12) }
            let length = Int(bytes.withUnsafeBytes { $0.loadBigEndian(UInt32.self, at: at + 16) })
            result.append((type, Array(bytes[at + 20 ..< at + 20 + length])))
            at += 20 + length
        }
        return result
    }

    private func contextRequest(_ option: NBDOption, _ name: String, _ queries: [String]) -> NBDOptionRequest {
        NBDOptionRequest(option: option, data: NBDMetaContextRequest(name: name, queries: queries).optionData)
    }

    private func goRequest(_ name: String) -> NBDOptionRequest {
        var data: [UInt8] = []
        data.appendBigEndian(UInt32(name.utf8.count))
        data += Array(name.utf8)
        data.appendBigEndian(UInt16(0))
        return NBDOptionRequest(option: .go, data: data)
    }

    @Test func metaContextRequestRoundTrips() {
        let request = NBDMetaContextRequest(name: "disk", queries: ["base:allocation", "snapback:"])
        #expect(NBDMetaContextRequest.parse(optionData: request.optionData) == request)
        #expect(NBDMetaContextRequest.parse(optionData: Array(request.optionData.dropLast())) == nil)
        #expect(NBDMetaContextRequest.parse(optionData: request.optionData + [0]) == nil)
        #expect(NBDMetaContextRequest.parse(optionData: []) == nil)
    }

    @Test func structuredRepliesThenContexts() {
        var negotiation = NBDNegotiation(provider: ContextProvider())
        negotiation.receive(clientFlags: [.fixedNewstyle])
        // SET needs structured replies first.
        #expect(replies(negotiation.receive(option: contextRequest(.setMetaContext, "disk", ["base:allocation"]))).map(\.type)
            == [NBDOptionReplyType.errorInvalid.rawValue])
        #expect(replies(negotiation.receive(option: NBDOptionRequest(option: .structuredReply, data: [1]))).map(\.type)
            == [NBDOptionReplyType.errorInvalid.rawValue])
        #expect(replies(negotiation.receive(option: NBDOptionRequest(option: .structuredReply, data: []))).map(\.type)
            == [NBDOptionReplyType.ack.rawValue])
        // LIST: everything with no query, prefixes with a namespace query, id 0.
        let all = replies(negotiation.receive(option: contextRequest(.listMetaContext, "disk", [])))
        #expect(all.map(\.type) == [NBDOptionReplyType.metaContext.rawValue, NBDOptionReplyType.metaContext.rawValue, NBDOptionReplyType.ack.rawValue])
        #expect(all[0].data == NBDWireEncoder.metaContextReplyData(id: 0, name: "base:allocation"))
        let dirty = replies(negotiation.receive(option: contextRequest(.listMetaContext, "disk", ["snapback:dirty:"])))
        #expect(dirty.first?.data == NBDWireEncoder.metaContextReplyData(id: 0, name: "snapback:dirty:m0"))
        #expect(replies(negotiation.receive(option: contextRequest(.listMetaContext, "nope", []))).map(\.type)
            == [NBDOptionReplyType.errorUnknown.rawValue])
        // SET: exact names, ids from 1, unknown names left out.
        let set = replies(negotiation.receive(option: contextRequest(.setMetaContext, "disk", ["snapback:dirty:m0", "x:y", "base:allocation"])))
        #expect(set.map(\.data).dropLast() == [
            NBDWireEncoder.metaContextReplyData(id: 1, name: "snapback:dirty:m0"),
            NBDWireEncoder.metaContextReplyData(id: 2, name: "base:allocation"),
        ])
        // GO on another export: the selection does not carry over.
        var other = negotiation
        guard case .replyAndEnterTransmission(_, let otherSession) = other.receive(option: goRequest("other")) else {
            Issue.record("GO other failed")
            return
        }
        #expect(otherSession.structuredReplies && otherSession.metaContexts.isEmpty)
        guard case .replyAndEnterTransmission(_, let session) = negotiation.receive(option: goRequest("disk")) else {
            Issue.record("GO disk failed")
            return
        }
        #expect(session.structuredReplies)
        #expect(session.metaContexts == [NBDMetaContext(id: 1, name: "snapback:dirty:m0"), NBDMetaContext(id: 2, name: "base:allocation")])
        #expect(session.transmissionFlags.contains(.sendFastZero))
    }

    @Test func blockStatusAndZeroChecks() {
        func check(_ command: NBDCommand, _ flags: NBDCommandFlags = [], _ offset: UInt64, _ length: UInt32, selected: Bool = true) -> NBDRequestCheck {
            NBDRequest(flags: flags, command: command, cookie: 1, offset: offset, lengthBytes: length)
                .check(exportSizeBytes: 1 << 20, readOnly: false, metaContextsSelected: selected)
        }
        #expect(check(.blockStatus, [], 0, 4096) == .accept(.blockStatus(offset: 0, lengthBytes: 4096, requestOne: false)))
        #expect(check(.blockStatus, .requestOne, 0, 4096) == .accept(.blockStatus(offset: 0, lengthBytes: 4096, requestOne: true)))
        #expect(check(.blockStatus, [], 0, 4096, selected: false) == .reject(.invalid))
        #expect(check(.blockStatus, [], 0, 0) == .reject(.invalid))
        #expect(check(.blockStatus, [], 1 << 20, 1) == .reject(.invalid))
        #expect(check(.blockStatus, .noHole, 0, 1) == .reject(.invalid))
        #expect(check(.writeZeroes, [.fastZero, .noHole], 0, 512)
            == .accept(.writeZeroes(offset: 0, lengthBytes: 512, fua: false, mayPunch: false, fast: true)))
        #expect(check(.writeZeroes, [], 0, 512) == .accept(.writeZeroes(offset: 0, lengthBytes: 512, fua: false, mayPunch: true, fast: false)))
        #expect(check(.read, .fastZero, 0, 512) == .reject(.invalid))
        #expect(NBDTransmissionFlags.advertised(readOnly: true).contains(.sendFastZero) == false)
    }

    @Test func chunksAreFramedAsTheProtocolSays() {
        let done = NBDWireEncoder.structuredDone(cookie: 7)
        #expect(done == [0x66, 0x8E, 0x33, 0xEF, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0])
        let error = NBDWireEncoder.structuredError(cookie: 7, error: .invalid, message: "no")
        #expect(Array(error[4 ..< 8]) == [0, 1, 0x80, 1])
        #expect(Array(error[16 ..< 20]) == [0, 0, 0, 8])
        #expect(Array(error[20...]) == [0, 0, 0, 22, 0, 2] + Array("no".utf8))
        let data = NBDWireEncoder.offsetDataHeader(cookie: 7, offset: 4096, lengthBytes: 512)
        #expect(data.count == 28 && Array(data[6 ..< 8]) == [0, 1] && Array(data[16 ..< 20]) == [0, 0, 2, 8])
        let status = NBDWireEncoder.blockStatusChunk(
            cookie: 7, done: false, contextID: 2, extents: [NBDExtent(lengthBytes: 65536, flags: 3), NBDExtent(lengthBytes: 512, flags: 0)])
        #expect(Array(status[4 ..< 8]) == [0, 0, 0, 5])
        #expect(Array(status[20...]) == [0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 2, 0, 0, 0, 0, 0])
    }

    @Test func serverAnswersWithChunks() async throws {
        let export = MemoryExport(sizeBytes: 64 << 10, fill: { pattern($0) })
        try await withServer([("disk", export, "")]) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake()
            #expect(try client.option(NBDOption.structuredReply.rawValue).map(\.type) == [NBDOptionReplyType.ack.rawValue])
            let set = try client.option(
                NBDOption.setMetaContext.rawValue, data: NBDMetaContextRequest(name: "disk", queries: ["base:allocation"]).optionData)
            #expect(set.count == 1 && set[0].type == NBDOptionReplyType.metaContext.rawValue)
            #expect(try client.readOptionReply().type == NBDOptionReplyType.ack.rawValue)
            _ = try client.option(NBDOption.go.rawValue, data: infoRequestData(name: "disk"))
            // A read: one OFFSET_DATA chunk with DONE.
            try client.send(requestBytes(.read, cookie: 1, offset: 512, lengthBytes: 1024))
            let header = try client.receive(exactly: 20)
            #expect(Array(header[0 ..< 8]) == [0x66, 0x8E, 0x33, 0xEF, 0, 1, 0, 1])
            #expect(Array(header[16 ..< 20]) == [0, 0, 4, 8])
            let payload = try client.receive(exactly: 8 + 1024)
            #expect(Array(payload[0 ..< 8]) == [0, 0, 0, 0, 0, 0, 2, 0])
            #expect(Array(payload[8...]) == (512 ..< 1536).map { pattern($0) })
            // BLOCK_STATUS: the default answer, all data, for context 1, with DONE.
            try client.send(requestBytes(.blockStatus, cookie: 2, offset: 0, lengthBytes: 8192))
            let status = try client.receive(exactly: 20 + 12)
            #expect(Array(status[4 ..< 8]) == [0, 1, 0, 5])
            #expect(Array(status[20...]) == [0, 0, 0, 1, 0, 0, 0x20, 0, 0, 0, 0, 0])
            // An error: an ERROR chunk; then a flush: NONE with DONE.
            try client.send(requestBytes(.read, cookie: 3, offset: 1 << 30, lengthBytes: 1))
            let error = try client.receive(exactly: 20)
            #expect(Array(error[4 ..< 8]) == [0, 1, 0x80, 1])
            let length = Int(error[19])
            let body = try client.receive(exactly: length)
            #expect(Array(body[0 ..< 4]) == [0, 0, 0, 22])
            try client.send(requestBytes(.flush, cookie: 4, offset: 0, lengthBytes: 0))
            #expect(try client.receive(exactly: 20) == NBDWireEncoder.structuredDone(cookie: 4))
            // A fast zero on an export that cannot zero fast: ENOTSUP, nothing written.
            try client.send(requestBytes(.writeZeroes, flags: .fastZero, cookie: 5, offset: 0, lengthBytes: 512))
            let fast = try client.receive(exactly: 20)
            let fastBody = try client.receive(exactly: Int(fast[19]))
            #expect(Array(fastBody[0 ..< 4]) == [0, 0, 0, 95])
            #expect(export.counters.writeZeroes == 0)
        }
    }
}
