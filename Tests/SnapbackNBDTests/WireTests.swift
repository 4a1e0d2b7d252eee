import SnapbackNBD
import Testing
import SnapbackRandom

@Suite("NBD wire layer")
struct WireTests {
    // MARK: Transmission requests

    @Test func parsesAValidRequestHeader() {
        let bytes = requestBytes(.write, flags: .fua, cookie: 0x0102_0304_0506_0708, offset: 4096, lengthBytes: 512)
        let outcome = NBDWireDecoder.parseRequestHeader(bytes + [9, 9, 9])
        let expected = NBDRequest(flags: .fua, command: .write, cookie: 0x0102_0304_0506_0708, offset: 4096, lengthBytes: 512)
        #expect(outcome == .parsed(expected, consumedBytes: 28))
        #expect(expected.payloadLengthBytes == 512)
        #expect(NBDRequest(flags: [], command: .read, cookie: 0, offset: 0, lengthBytes: 512).payloadLengthBytes == 0)
    }

    @Test func everyTruncationOfARequestNeedsMoreBytes() {
        let commands: [NBDCommand] = [.read, .write, .disconnect, .flush, .trim, .writeZeroes, NBDCommand(rawValue: 99)]
        for command in commands {
            let bytes = requestBytes(command, flags: .fua, cookie: .max, offset: .max, lengthBytes: NBDLimits.payloadBytesMax)
            for prefix in 0 ..< bytes.count {
                #expect(NBDWireDecoder.parseRequestHeader(Array(bytes[..<prefix])) == .needMoreBytes, "prefix \(prefix) of \(command)")
            }
        }
    }

    @Test func badRequestMagicIsAViolationAsSoonAsOneByteDiffers() {
        let bytes = requestBytes(.read, cookie: 1, offset: 0, lengthBytes: 512, magic: 0x2560_9514)
        #expect(NBDWireDecoder.parseRequestHeader(bytes) == .violation(.requestMagicInvalid(0x2560_9514)))
        // The first byte alone already refutes a wrong magic.
        #expect(NBDWireDecoder.parseRequestHeader([0x00]) == .violation(.requestMagicInvalid(0)))
        // The structured-reply magic is not a request magic either.
        let reply = requestBytes(.read, cookie: 1, offset: 0, lengthBytes: 1, magic: NBDMagic.simpleReply)
        #expect(NBDWireDecoder.parseRequestHeader(reply) == .violation(.requestMagicInvalid(NBDMagic.simpleReply)))
    }

    @Test func oversizedWriteIsAViolationBeforeItsPayload() {
        let tooLong = NBDLimits.payloadBytesMax + 1
        let bytes = requestBytes(.write, cookie: 7, offset: 0, lengthBytes: tooLong)
        #expect(NBDWireDecoder.parseRequestHeader(bytes) == .violation(.writePayloadTooLong(lengthBytes: tooLong)))
        let largest = requestBytes(.write, cookie: 7, offset: 0, lengthBytes: NBDLimits.payloadBytesMax)
        guard case .parsed(let request, 28) = NBDWireDecoder.parseRequestHeader(largest) else {
            Issue.record("a maximal write must parse")
            return
        }
        #expect(request.payloadLengthBytes == Int(NBDLimits.payloadBytesMax))
        // A long READ has no payload: it parses, and `check` answers EINVAL.
        let read = requestBytes(.read, cookie: 7, offset: 0, lengthBytes: .max)
        guard case .parsed(let readRequest, 28) = NBDWireDecoder.parseRequestHeader(read) else {
            Issue.record("a long read must parse")
            return
        }
        #expect(readRequest.check(exportSizeBytes: .max, readOnly: false) == .reject(.invalid))
    }

    // MARK: Request checks

    private func check(
        _ command: NBDCommand,
        flags: NBDCommandFlags = [],
        offset: UInt64,
        length: UInt32,
        size: UInt64 = 1 << 20,
        readOnly: Bool = false
    ) -> NBDRequestCheck {
        NBDRequest(flags: flags, command: command, cookie: 1, offset: offset, lengthBytes: length)
            .check(exportSizeBytes: size, readOnly: readOnly)
    }

    @Test func checkAcceptsRequestsWithinTheExport() {
        #expect(check(.read, offset: 0, length: 1 << 20) == .accept(.read(offset: 0, lengthBytes: 1 << 20)))
        #expect(check(.write, flags: .fua, offset: 512, length: 512) == .accept(.write(offset: 512, lengthBytes: 512, fua: true)))
        #expect(check(.trim, offset: 1 << 20, length: 0) == .accept(.trim(offset: 1 << 20, lengthBytes: 0, fua: false)))
        #expect(check(.writeZeroes, flags: [.noHole, .fua], offset: 0, length: 4096) == .accept(.writeZeroes(offset: 0, lengthBytes: 4096, fua: true, mayPunch: false, fast: false)))
        #expect(check(.flush, offset: 0, length: 0) == .accept(.flush))
        #expect(check(.flush, flags: .fua, offset: 0, length: 0) == .accept(.flush))
        #expect(check(.read, flags: .fua, offset: 0, length: 1) == .accept(.read(offset: 0, lengthBytes: 1)))
        #expect(check(.disconnect, flags: .dontFragment, offset: 5, length: 5) == .accept(.disconnect))
    }

    @Test func checkRejectsOutOfRangeAndOverflowingRequests() {
        #expect(check(.read, offset: 1 << 20, length: 1) == .reject(.invalid))
        #expect(check(.read, offset: (1 << 20) - 1, length: 2) == .reject(.invalid))
        #expect(check(.read, offset: .max, length: 1) == .reject(.invalid))
        #expect(check(.read, offset: .max - 10, length: 100, size: .max) == .reject(.invalid))
        #expect(check(.trim, offset: .max, length: .max) == .reject(.invalid))
        #expect(check(.write, offset: 1 << 20, length: 1) == .reject(.noSpace))
        #expect(check(.writeZeroes, offset: .max, length: 1) == .reject(.noSpace))
    }

    @Test func checkRejectsUnknownCommandsFlagsAndReadOnlyWrites() {
        #expect(check(.cache, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.blockStatus, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(NBDCommand(rawValue: 0xFFFF), offset: 0, length: 0) == .reject(.invalid))
        #expect(check(.read, flags: .dontFragment, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.write, flags: .noHole, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.write, flags: .fastZero, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.read, flags: NBDCommandFlags(rawValue: 0x8000), offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.flush, offset: 1, length: 0) == .reject(.invalid))
        #expect(check(.flush, offset: 0, length: 1) == .reject(.invalid))
        #expect(check(.write, offset: 0, length: 1, readOnly: true) == .reject(.permission))
        #expect(check(.trim, offset: 0, length: 1, readOnly: true) == .reject(.permission))
        #expect(check(.writeZeroes, offset: 0, length: 1, readOnly: true) == .reject(.permission))
        #expect(check(.read, offset: 0, length: 1, readOnly: true) == .accept(.read(offset: 0, lengthBytes: 1)))
        #expect(check(.flush, offset: 0, length: 0, readOnly: true) == .accept(.flush))
    }

    // MARK: Handshake messages

    @Test func clientFlags() {
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0]) == .needMoreBytes)
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0, 1]) == .parsed(.fixedNewstyle, consumedBytes: 4))
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0, 3, 0xFF]) == .parsed([.fixedNewstyle, .noZeroes], consumedBytes: 4))
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0, 0]) == .violation(.clientNotFixedNewstyle))
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0, 2]) == .violation(.clientNotFixedNewstyle))
        #expect(NBDWireDecoder.parseClientFlags([0, 0, 0, 5]) == .violation(.clientFlagsUnknown(5)))
        #expect(NBDWireDecoder.parseClientFlags([0x80, 0, 0, 1]) == .violation(.clientFlagsUnknown(0x8000_0001)))
    }

    @Test func everyTruncationOfAnOptionNeedsMoreBytes() {
        let bytes = optionBytes(NBDOption.go.rawValue, data: infoRequestData(name: "disk", infoTypes: [3]))
        for prefix in 0 ..< bytes.count {
            #expect(NBDWireDecoder.parseOptionRequest(Array(bytes[..<prefix])) == .needMoreBytes, "prefix \(prefix)")
        }
        let expected = NBDOptionRequest(option: .go, data: infoRequestData(name: "disk", infoTypes: [3]))
        #expect(NBDWireDecoder.parseOptionRequest(bytes + [1, 2]) == .parsed(expected, consumedBytes: bytes.count))
    }

    @Test func badOptionMagicAndOversizedOptionAreViolations() {
        let bad = optionBytes(3, magic: 0x4948_4156_454F_5055)
        #expect(NBDWireDecoder.parseOptionRequest(bad) == .violation(.optionMagicInvalid(0x4948_4156_454F_5055)))
        #expect(NBDWireDecoder.parseOptionRequest(Array("GET / HTTP/1.1\r\n".utf8).prefix(3).map { $0 })
            == .violation(.optionMagicInvalid(0x474554)))
        // The length is refused from the header alone, before any data arrives.
        let long = optionBytes(1, magic: NBDMagic.option, lengthBytes: NBDLimits.optionDataBytesMax + 1)
        #expect(NBDWireDecoder.parseOptionRequest(long) == .violation(.optionDataTooLong(lengthBytes: NBDLimits.optionDataBytesMax + 1)))
        let maximal = optionBytes(1, magic: NBDMagic.option, lengthBytes: NBDLimits.optionDataBytesMax)
        #expect(NBDWireDecoder.parseOptionRequest(maximal) == .needMoreBytes)
    }

    @Test func parsesInfoRequestData() {
        let valid = infoRequestData(name: "vol0", infoTypes: [3, 1])
        #expect(NBDInfoRequest.parse(optionData: valid) == NBDInfoRequest(name: "vol0", requestedInfo: [.blockSize, .name]))
        #expect(NBDInfoRequest.parse(optionData: infoRequestData(name: "")) == NBDInfoRequest(name: "", requestedInfo: []))
        for prefix in 0 ..< valid.count {
            #expect(NBDInfoRequest.parse(optionData: Array(valid[..<prefix])) == nil, "prefix \(prefix)")
        }
        #expect(NBDInfoRequest.parse(optionData: valid + [0]) == nil)
        // A name length past the data.
        #expect(NBDInfoRequest.parse(optionData: [0xFF, 0xFF, 0xFF, 0xFF, 0, 0]) == nil)
        // Invalid UTF-8 and NUL are refused.
        #expect(NBDInfoRequest.parse(optionData: [0, 0, 0, 1, 0xFF, 0, 0]) == nil)
        #expect(NBDInfoRequest.parse(optionData: [0, 0, 0, 1, 0x00, 0, 0]) == nil)
        #expect(NBDWireDecoder.parseExportName(Array("disk".utf8)) == "disk")
        #expect(NBDWireDecoder.parseExportName([0xC3]) == nil)
        #expect(NBDWireDecoder.parseExportName([UInt8](repeating: 0x61, count: 4097)) == nil)
    }

    // MARK: Encodings

    @Test func serverMessagesHaveTheirExactLayout() {
        #expect(NBDWireEncoder.greeting(flags: [.fixedNewstyle, .noZeroes])
            == Array("NBDMAGICIHAVEOPT".utf8) + [0, 3])
        #expect(NBDWireEncoder.simpleReplyHeader(error: .invalid, cookie: 0xAABB)
            == [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB])
        #expect(NBDWireEncoder.optionReply(option: .list, type: .errorUnsupported, data: [7])
            == [0, 3, 0xE8, 0x89, 0x04, 0x55, 0x65, 0xA9, 0, 0, 0, 3, 0x80, 0, 0, 1, 0, 0, 0, 1, 7])
        #expect(NBDWireEncoder.infoExportData(sizeBytes: 0x1_0000_0000, flags: [.hasFlags, .readOnly])
            == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3])
        #expect(NBDWireEncoder.infoBlockSizeData(minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 << 20)
            == [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0])
        #expect(NBDWireEncoder.exportNameReply(sizeBytes: 512, flags: .hasFlags, noZeroes: true) == [0, 0, 0, 0, 0, 0, 2, 0, 0, 1])
        #expect(NBDWireEncoder.exportNameReply(sizeBytes: 512, flags: .hasFlags, noZeroes: false).count == 134)
        #expect(NBDWireEncoder.serverReplyData(name: "ab", description: "d") == [0, 0, 0, 2, 0x61, 0x62, 0x64])
    }

    @Test func advertisedTransmissionFlags() {
        let writable = NBDTransmissionFlags.advertised(readOnly: false)
        #expect(writable == [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .canMultiConn])
        let readOnly = NBDTransmissionFlags.advertised(readOnly: true)
        #expect(readOnly.contains([.hasFlags, .readOnly, .sendFlush, .canMultiConn]))
        #expect(!readOnly.contains(.sendDF) && !writable.contains(.sendDF))
    }

    // MARK: Negotiation step machine

    @Test func negotiationAnswersEveryOption() {
        let export = MemoryExport(sizeBytes: 8192)
        var negotiation = NBDNegotiation(provider: TestProvider(entries: [("disk", export, "the disk")]))
        negotiation.receive(clientFlags: [.fixedNewstyle, .noZeroes])

        func replyTypes(_ step: NBDNegotiationStep) -> [UInt32] { optionReplyTypes(step) }

        let unsupported = NBDOptionReplyType.errorUnsupported.rawValue
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: .structuredReply, data: []))) == [NBDOptionReplyType.ack.rawValue])
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: .startTLS, data: []))) == [unsupported])
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: NBDOption(rawValue: 0xDEAD), data: [1, 2]))) == [unsupported])
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: .list, data: []))) == [2, 1])
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: .list, data: [0]))) == [NBDOptionReplyType.errorInvalid.rawValue])
        #expect(replyTypes(negotiation.receive(option: NBDOptionRequest(option: .info, data: [1]))) == [NBDOptionReplyType.errorInvalid.rawValue])
        let unknown = NBDOptionRequest(option: .go, data: infoRequestData(name: "nope"))
        #expect(replyTypes(negotiation.receive(option: unknown)) == [NBDOptionReplyType.errorUnknown.rawValue])
        let info = NBDOptionRequest(option: .info, data: infoRequestData(name: "disk", infoTypes: [1, 2, 3]))
        #expect(replyTypes(negotiation.receive(option: info)) == [3, 3, 3, 3, 1])
        let go = NBDOptionRequest(option: .go, data: infoRequestData(name: "disk"))
        let step = negotiation.receive(option: go)
        #expect(replyTypes(step) == [3, 3, 1])
        guard case .replyAndEnterTransmission(_, let session) = step else {
            Issue.record("NBD_OPT_GO must enter transmission")
            return
        }
        #expect(session.sizeBytes == 8192 && !session.readOnly && session.name == "disk")
        #expect(negotiation.optionCount == 9)
    }

    @Test func negotiationExportNameAndAbort() {
        let export = MemoryExport(sizeBytes: 4096, readOnly: true)
        var negotiation = NBDNegotiation(provider: TestProvider(entries: [("ro", export, "")]))
        negotiation.receive(clientFlags: [.fixedNewstyle])
        guard case .replyAndEnterTransmission(let bytes, let session) =
            negotiation.receive(option: NBDOptionRequest(option: .exportName, data: Array("ro".utf8)))
        else {
            Issue.record("NBD_OPT_EXPORT_NAME must enter transmission")
            return
        }
        #expect(bytes.count == 134)  // NO_ZEROES was not negotiated
        #expect(session.readOnly && session.transmissionFlags.contains(.readOnly))
        if case .close(.exportNameRefused) = negotiation.receive(option: NBDOptionRequest(option: .exportName, data: Array("x".utf8))) {
        } else {
            Issue.record("an unknown export name must close")
        }
        if case .replyAndClose(let ack) = negotiation.receive(option: NBDOptionRequest(option: .abort, data: [])) {
            #expect(ack == NBDWireEncoder.optionReply(option: .abort, type: .ack))
        } else {
            Issue.record("NBD_OPT_ABORT must acknowledge and close")
        }
    }

    @Test func negotiationLimitsTheNumberOfOptions() {
        var negotiation = NBDNegotiation(provider: TestProvider(entries: []))
        negotiation.receive(clientFlags: .fixedNewstyle)
        for _ in 0 ..< NBDLimits.optionsPerConnectionMax {
            if case .close = negotiation.receive(option: NBDOptionRequest(option: .list, data: [])) {
                Issue.record("closed too early")
                return
            }
        }
        if case .close(.optionsTooMany) = negotiation.receive(option: NBDOptionRequest(option: .list, data: [])) {
        } else {
            Issue.record("the option after the limit must close")
        }
    }

    // MARK: Request window

    @Test func requestWindowSerializesConflictsAndBounds() {
        var window = NBDRequestWindow()
        let writeA = NBDRequestCheck.accept(.write(offset: 0, lengthBytes: 4096, fua: false))
        let readA = NBDRequestCheck.accept(.read(offset: 4095, lengthBytes: 2))
        let readB = NBDRequestCheck.accept(.read(offset: 4096, lengthBytes: 4096))
        let trimB = NBDRequestCheck.accept(.trim(offset: 5000, lengthBytes: 10, fua: false))
        let flush = NBDRequestCheck.accept(.flush)
        #expect(window.canAdmit(flush) && window.canAdmit(.accept(.disconnect)))
        let first = window.admit(writeA)
        #expect(!window.canAdmit(readA), "a read overlapping an in-progress write waits")
        #expect(window.canAdmit(readB), "a read next to it does not")
        #expect(!window.canAdmit(flush) && !window.canAdmit(.accept(.disconnect)))
        #expect(window.canAdmit(.reject(.invalid)))
        let second = window.admit(readB)
        #expect(window.canAdmit(.accept(.read(offset: 4096, lengthBytes: 1))), "reads may overlap reads")
        #expect(!window.canAdmit(trimB), "a trim overlapping an in-progress read waits")
        #expect(window.canAdmit(.accept(.read(offset: 0, lengthBytes: 0))), "an empty range overlaps nothing")
        #expect(window.bufferedBytes == 8192 && window.count == 2)
        window.complete(first)
        #expect(window.canAdmit(readA))
        window.complete(second)
        #expect(window.isEmpty && window.bufferedBytes == 0 && window.canAdmit(flush))

        // Bounded in requests...
        for index in 0 ..< NBDRequestWindow.requestsMax {
            _ = window.admit(.accept(.read(offset: UInt64(index), lengthBytes: 1)))
        }
        #expect(!window.canAdmit(.accept(.read(offset: 100, lengthBytes: 1))))
        #expect(!window.canAdmit(.reject(.invalid)))
        // ... and in bytes, though one large request alone always runs.
        var bytesWindow = NBDRequestWindow()
        let large = NBDRequestCheck.accept(.write(offset: 0, lengthBytes: NBDLimits.payloadBytesMax, fua: false))
        _ = bytesWindow.admit(large)
        _ = bytesWindow.admit(.accept(.write(offset: UInt64(NBDLimits.payloadBytesMax), lengthBytes: NBDLimits.payloadBytesMax, fua: false)))
        #expect(!bytesWindow.canAdmit(.accept(.read(offset: 1 << 40, lengthBytes: 1))))
        #expect(!bytesWindow.canAdmit(.accept(.trim(offset: 1 << 40, lengthBytes: 1, fua: false))))
        #expect(bytesWindow.canAdmit(.accept(.trim(offset: 1 << 40, lengthBytes: 0, fua: false))))
        #expect(bytesWindow.canAdmit(.reject(.invalid)))
        #expect(NBDOperation.writeZeroes(offset: 0, lengthBytes: .max, fua: false, mayPunch: true, fast: false).bufferedBytes == Int(NBDLimits.payloadBytesMax))
    }

    // MARK: Random input never crashes

    @Test func randomBytesNeverCrashTheDecoders() {
        var generator = SeededRandom(seed: 0x5EED_0001)
        let export = MemoryExport(sizeBytes: 4096)
        let provider = TestProvider(entries: [("d", export, "")])
        for iteration in 0 ..< 20_000 {
            let length = Int(generator.next() % 64)
            var bytes = (0 ..< length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            // Often start with a valid magic so the parsers get past the first check.
            if iteration % 2 == 0, length >= 8 {
                let magic = iteration % 4 == 0 ? requestBytes(.read, cookie: 0, offset: 0, lengthBytes: 0).prefix(4) : optionBytes(0).prefix(8)
                bytes.replaceSubrange(0 ..< magic.count, with: magic)
            }
            _ = NBDWireDecoder.parseClientFlags(bytes)
            if case .parsed(let request, _) = NBDWireDecoder.parseOptionRequest(bytes) {
                var negotiation = NBDNegotiation(provider: provider)
                _ = negotiation.receive(option: request)
            }
            if case .parsed(let request, let consumed) = NBDWireDecoder.parseRequestHeader(bytes) {
                #expect(consumed == 28)
                _ = request.check(exportSizeBytes: generator.next() % 2 == 0 ? 4096 : .max, readOnly: generator.next() % 2 == 0)
            }
            _ = NBDInfoRequest.parse(optionData: bytes)
            _ = NBDWireDecoder.parseExportName(bytes)
        }
    }
}

