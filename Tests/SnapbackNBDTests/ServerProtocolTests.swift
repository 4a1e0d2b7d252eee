import Foundation
import SnapbackNBD
import Testing
import SnapbackRandom

/// The server driven byte by byte from a raw socket, malformed input included. After every
/// malformed exchange the export's bytes must be unchanged.
@Suite("NBD server protocol (raw socket client)")
struct ServerProtocolTests {
    private static let sizeBytes = 1 << 20

    private func exports() -> (writable: MemoryExport, readOnly: MemoryExport, faulted: MemoryExport) {
        (
            MemoryExport(sizeBytes: Self.sizeBytes, fill: { pattern($0) }),
            MemoryExport(sizeBytes: Self.sizeBytes, readOnly: true, fill: { pattern($0, seed: 1) }),
            MemoryExport(sizeBytes: Self.sizeBytes, failure: .io, fill: { pattern($0, seed: 2) })
        )
    }

    private func entries(_ exports: (writable: MemoryExport, readOnly: MemoryExport, faulted: MemoryExport))
        -> [(name: String, export: MemoryExport, description: String)] {
        [("disk", exports.writable, "writable"), ("ro", exports.readOnly, "read-only"), ("bad", exports.faulted, "faulted")]
    }

    @Test func greetingAndGo() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            let (size, flags) = try client.connect(to: "disk")
            #expect(size == UInt64(Self.sizeBytes))
            let advertised = NBDTransmissionFlags(rawValue: flags)
            #expect(advertised == .advertised(readOnly: false))
            let reply = try client.request(.read, cookie: 42, offset: 100, lengthBytes: 300, replyDataBytes: 300)
            #expect(reply.error == 0 && reply.cookie == 42)
            #expect(reply.data == Array(exports.writable.bytes[100 ..< 400]))
        }
    }

    @Test func clientWithoutFixedNewstyleIsRefused() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake(clientFlags: 0)
            #expect(client.waitForClose())
            let unknownFlags = try RawNBDClient(port: port)
            try unknownFlags.handshake(clientFlags: 0x11)
            #expect(unknownFlags.waitForClose())
        }
    }

    @Test func badOptionMagicAndOversizedOptionClose() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake()
            try client.send(optionBytes(NBDOption.list.rawValue, magic: 0x0102_0304_0506_0708))
            #expect(client.waitForClose())

            let long = try RawNBDClient(port: port)
            try long.handshake()
            // Only the header: the server must not wait for 64 KiB + 1 of data.
            try long.send(optionBytes(NBDOption.go.rawValue, lengthBytes: NBDLimits.optionDataBytesMax + 1))
            #expect(long.waitForClose())
        }
        #expect(exports.writable.bytes == (0 ..< Self.sizeBytes).map { pattern($0) })
    }

    @Test func optionHaggling() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake()
            let unsupported = NBDOptionReplyType.errorUnsupported.rawValue
            // (Structured replies are served: StructuredReplyTests; this client reads simple ones.)
            #expect(try client.option(NBDOption.extendedHeaders.rawValue).map(\.type) == [unsupported])
            #expect(try client.option(NBDOption.startTLS.rawValue).map(\.type) == [unsupported])
            #expect(try client.option(0x1234, data: [1, 2, 3]).map(\.type) == [unsupported])

            let list = try client.option(NBDOption.list.rawValue)
            #expect(list.map(\.type) == [2, 2, 2, 1])
            let names = list.dropLast().map { reply -> String in
                let length = Int(bigEndian(reply.data[0 ..< 4], as: UInt32.self))
                return String(decoding: reply.data[4 ..< 4 + length], as: UTF8.self)
            }
            #expect(names == ["disk", "ro", "bad"])

            let unknown = try client.option(NBDOption.go.rawValue, data: infoRequestData(name: "missing"))
            #expect(unknown.map(\.type) == [NBDOptionReplyType.errorUnknown.rawValue])
            let malformed = try client.option(NBDOption.info.rawValue, data: [0, 0, 0, 9, 1])
            #expect(malformed.map(\.type) == [NBDOptionReplyType.errorInvalid.rawValue])

            let info = try client.option(NBDOption.info.rawValue, data: infoRequestData(name: "ro", infoTypes: [3]))
            #expect(info.map(\.type) == [3, 3, 1])
            #expect(info[0].data == NBDWireEncoder.infoExportData(sizeBytes: UInt64(Self.sizeBytes), flags: .advertised(readOnly: true)))
            #expect(info[1].data == NBDWireEncoder.infoBlockSizeData(minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 << 20))

            // Still negotiating after all that: GO works.
            let go = try client.option(NBDOption.go.rawValue, data: infoRequestData(name: "disk"))
            #expect(go.last?.type == NBDOptionReplyType.ack.rawValue)
            let reply = try client.request(.read, cookie: 1, offset: 0, lengthBytes: 16, replyDataBytes: 16)
            #expect(reply.data == Array(exports.writable.bytes[0 ..< 16]))
        }
    }

    @Test func abortIsAcknowledged() async throws {
        try await withServer(entries(exports())) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake()
            #expect(try client.option(NBDOption.abort.rawValue).map(\.type) == [NBDOptionReplyType.ack.rawValue])
            #expect(client.waitForClose())
        }
    }

    @Test(arguments: [true, false])
    func exportNameOption(noZeroes: Bool) async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.handshake(clientFlags: noZeroes ? 3 : 1)
            try client.send(optionBytes(NBDOption.exportName.rawValue, data: Array("disk".utf8)))
            let reply = try client.receive(exactly: noZeroes ? 10 : 134)
            #expect(bigEndian(reply[0 ..< 8], as: UInt64.self) == UInt64(Self.sizeBytes))
            #expect(bigEndian(reply[8 ..< 10], as: UInt16.self) == NBDTransmissionFlags.advertised(readOnly: false).rawValue)
            #expect(reply.dropFirst(10).allSatisfy { $0 == 0 })
            let read = try client.request(.read, cookie: 9, offset: 4096, lengthBytes: 4, replyDataBytes: 4)
            #expect(read.error == 0 && read.cookie == 9 && read.data == Array(exports.writable.bytes[4096 ..< 4100]))

            let unknown = try RawNBDClient(port: port)
            try unknown.handshake()
            try unknown.send(optionBytes(NBDOption.exportName.rawValue, data: Array("nope".utf8)))
            #expect(unknown.waitForClose())
        }
    }

    @Test func writeReadFlushAndFUA() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "disk")
            let payload = [UInt8](repeating: 0xAB, count: 65536)
            let write = try client.request(.write, flags: .fua, cookie: 1, offset: 8192, lengthBytes: 65536, payload: payload)
            #expect(write == .init(error: 0, cookie: 1, data: []))
            let flush = try client.request(.flush, cookie: 2, offset: 0, lengthBytes: 0)
            #expect(flush.error == 0 && flush.cookie == 2)
            let read = try client.request(.read, cookie: 3, offset: 8192, lengthBytes: 65536, replyDataBytes: 65536)
            #expect(read.data == payload)
            let zeroes = try client.request(.writeZeroes, flags: [.noHole], cookie: 4, offset: 8192, lengthBytes: 512)
            let trim = try client.request(.trim, flags: .fua, cookie: 5, offset: 9000, lengthBytes: 100)
            #expect(zeroes.error == 0 && trim.error == 0)
            let counters = exports.writable.counters
            #expect(counters.writes == 1 && counters.flushes == 1 && counters.writeZeroes == 1 && counters.trims == 1)
            #expect(counters.fuaCalls == 2)
            var expected = (0 ..< Self.sizeBytes).map { pattern($0) }
            expected.replaceSubrange(8192 ..< 8192 + 65536, with: payload)
            expected.replaceSubrange(8192 ..< 8192 + 512, with: repeatElement(0, count: 512))
            expected.replaceSubrange(9000 ..< 9100, with: repeatElement(0, count: 100))
            #expect(exports.writable.bytes == expected)
            try client.send(requestBytes(.disconnect, cookie: 6, offset: 0, lengthBytes: 0))
            #expect(client.waitForClose())
        }
    }

    /// 64 pipelined write-then-read pairs on the same ranges: replies may come in any order, but
    /// every read sees the write sent before it (overlapping requests never run concurrently).
    @Test func longWriteZeroesAndTrimReachTheExportInPieces() async throws {
        let export = MemoryExport(sizeBytes: 80 << 20)
        try await withServer([("big", export, "")]) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "big")
            let offsets: [UInt64] = [0, 40 << 20, (64 << 20) - 1, 64 << 20]
            for offset in offsets {
                #expect(try client.request(.write, cookie: offset, offset: offset, lengthBytes: 1, payload: [0xFF]).error == 0)
            }
            let zeroes = try client.request(.writeZeroes, flags: .fua, cookie: 1, offset: 0, lengthBytes: (64 << 20) + 1)
            #expect(zeroes.error == 0)
            let trim = try client.request(.trim, cookie: 2, offset: 0, lengthBytes: 80 << 20)
            #expect(trim.error == 0)
        }
        let counters = export.counters
        #expect(counters.writeZeroes == 3 && counters.trims == 3 && counters.fuaCalls == 3, "\(counters)")
        let bytes = export.bytes
        #expect([0, 40 << 20, (64 << 20) - 1, 64 << 20].allSatisfy { bytes[$0] == 0 })
    }

    @Test func pipelinedRequestsBehaveAsIfSequential() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "disk")
            var batch: [UInt8] = []
            for index in 0 ..< 64 {
                let offset = UInt64(index % 8 * 512)  // eight ranges, each rewritten eight times
                batch += requestBytes(.write, cookie: UInt64(2 * index), offset: offset, lengthBytes: 512)
                batch += [UInt8](repeating: UInt8(index), count: 512)
                batch += requestBytes(.read, cookie: UInt64(2 * index + 1), offset: offset, lengthBytes: 512)
            }
            batch += requestBytes(.flush, cookie: 1000, offset: 0, lengthBytes: 0)
            try client.send(batch)
            var seen = Set<UInt64>()
            for _ in 0 ..< 129 {
                let header = try client.readSimpleReply()
                #expect(header.error == 0)
                #expect(seen.insert(header.cookie).inserted, "cookie \(header.cookie) answered twice")
                if header.cookie < 1000, header.cookie % 2 == 1 {
                    let data = try client.receive(exactly: 512)
                    #expect(data == [UInt8](repeating: UInt8(header.cookie / 2), count: 512), "read \(header.cookie)")
                }
            }
            #expect(seen == Set((0 ..< 128).map(UInt64.init) + [1000]))
        }
        #expect(exports.writable.counters.flushes == 1)
    }

    /// Payloads go to the export as slices of the received buffers, or gathered when they span
    /// several: requests cut anywhere (headers and payloads alike) must arrive whole, in order.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func requestsCutAnywhereAcrossReadsArriveWhole(seed: UInt64) async throws {
        let export = MemoryExport(sizeBytes: Self.sizeBytes, immediate: seed != 2, fill: { pattern($0) })
        var expected = export.bytes
        var generator = SeededRandom(seed: seed)
        var stream: [UInt8] = []
        var writes = 0
        for index in 0 ..< 40 {
            let lengthBytes = [1, 27, 28, 29, 511, 4096, 65_536, 70_001, 300_000][Int(generator.next() % 9)]
            let offset = Int(generator.next() % UInt64(Self.sizeBytes - lengthBytes))
            let payload = (0 ..< lengthBytes).map { UInt8(truncatingIfNeeded: $0 &+ index &* 7) }
            stream += requestBytes(.write, flags: index % 5 == 0 ? .fua : [], cookie: UInt64(index), offset: UInt64(offset), lengthBytes: UInt32(lengthBytes))
            stream += payload
            expected.replaceSubrange(offset ..< offset + lengthBytes, with: payload)
            writes += 1
        }
        stream += requestBytes(.flush, cookie: 1000, offset: 0, lengthBytes: 0)
        try await withServer([("disk", export, "")]) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "disk")
            var sent = 0
            while sent < stream.count {
                let piece = min(stream.count - sent, 1 + Int(generator.next() % 9000))
                try client.send(Array(stream[sent ..< sent + piece]))
                sent += piece
                if generator.next() % 4 == 0 { usleep(200) }  // let the server read what came so far
            }
            var seen = Set<UInt64>()
            for _ in 0 ... writes {
                let reply = try client.readSimpleReply()
                #expect(reply.error == 0, "cookie \(reply.cookie)")
                seen.insert(reply.cookie)
            }
            #expect(seen == Set((0 ..< UInt64(writes)) + [1000]))
        }
        #expect(export.bytes == expected)
        let counters = export.counters
        #expect(counters.writes + counters.immediateWrites == writes)
        if export.immediate {
            #expect(counters.writes == 8, "only the FUA writes go to the thread pool")
        } else {
            #expect(counters.immediateWrites == 0)
        }
    }

    /// Sends `bytes` on a connection to the writable export, then expects the server to close it
    /// without the export having been called or changed.
    private func expectClosedUntouched(sending bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let exports = exports()
        let before = exports.writable.bytes
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "disk")
            try client.send(bytes)
            #expect(client.waitForClose(), sourceLocation: sourceLocation)
        }
        #expect(exports.writable.bytes == before, sourceLocation: sourceLocation)
        #expect(exports.writable.counters == .init(), sourceLocation: sourceLocation)
    }

    @Test func badRequestMagicClosesWithoutTouchingTheExport() async throws {
        let bad = requestBytes(.write, cookie: 1, offset: 0, lengthBytes: 512, magic: 0x2560_9512)
        try await expectClosedUntouched(sending: bad + [UInt8](repeating: 0xFF, count: 512))
    }

    @Test func oversizedWriteClosesBeforeItsPayload() async throws {
        // Only the header and a little payload: the server must not wait for 32 MiB + 1.
        try await expectClosedUntouched(sending: requestBytes(.write, cookie: 1, offset: 0, lengthBytes: NBDLimits.payloadBytesMax + 1) + [1, 2, 3])
    }

    @Test func readPastTheEndIsEINVALAndTheConnectionStaysUsable() async throws {
        let exports = exports()
        let before = exports.writable.bytes
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "disk")
            let size = UInt64(Self.sizeBytes)
            #expect(try client.request(.read, cookie: 1, offset: size - 10, lengthBytes: 11).error == NBDErrorValue.invalid.rawValue)
            #expect(try client.request(.read, cookie: 2, offset: .max, lengthBytes: 4096).error == NBDErrorValue.invalid.rawValue)
            #expect(try client.request(.read, cookie: 3, offset: 0, lengthBytes: NBDLimits.payloadBytesMax + 1).error == NBDErrorValue.invalid.rawValue)
            #expect(try client.request(.trim, cookie: 4, offset: size, lengthBytes: 1).error == NBDErrorValue.invalid.rawValue)
            // A write past the end: ENOSPC, and its payload is consumed (the next request parses).
            let write = try client.request(.write, cookie: 5, offset: size - 1, lengthBytes: 2, payload: [1, 2])
            #expect(write.error == NBDErrorValue.noSpace.rawValue && write.cookie == 5)
            #expect(try client.request(.flush, cookie: 6, offset: 1, lengthBytes: 0).error == NBDErrorValue.invalid.rawValue)
            // Unknown commands and flags: EINVAL, no payload consumed.
            #expect(try client.request(.cache, cookie: 7, offset: 0, lengthBytes: 512).error == NBDErrorValue.invalid.rawValue)
            #expect(try client.request(NBDCommand(rawValue: 77), cookie: 8, offset: 0, lengthBytes: 512).error == NBDErrorValue.invalid.rawValue)
            #expect(try client.request(.read, flags: .dontFragment, cookie: 9, offset: 0, lengthBytes: 1).error == NBDErrorValue.invalid.rawValue)
            let read = try client.request(.read, cookie: 10, offset: size - 10, lengthBytes: 10, replyDataBytes: 10)
            #expect(read.error == 0 && read.cookie == 10 && read.data == Array(before[(Self.sizeBytes - 10)...]))
        }
        #expect(exports.writable.bytes == before)
        #expect(exports.writable.counters == .init(reads: 1))
    }

    @Test func writesToAReadOnlyExportGetEPERM() async throws {
        let exports = exports()
        let before = exports.readOnly.bytes
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            let (_, flags) = try client.connect(to: "ro")
            #expect(NBDTransmissionFlags(rawValue: flags).contains(.readOnly))
            let payload = [UInt8](repeating: 0xEE, count: 4096)
            let write = try client.request(.write, flags: .fua, cookie: 1, offset: 0, lengthBytes: 4096, payload: payload)
            #expect(write.error == NBDErrorValue.permission.rawValue && write.cookie == 1)
            #expect(try client.request(.trim, cookie: 2, offset: 0, lengthBytes: 4096).error == NBDErrorValue.permission.rawValue)
            #expect(try client.request(.writeZeroes, cookie: 3, offset: 0, lengthBytes: 4096).error == NBDErrorValue.permission.rawValue)
            // The payload was consumed: the next request is parsed correctly.
            let read = try client.request(.read, cookie: 4, offset: 0, lengthBytes: 4096, replyDataBytes: 4096)
            #expect(read.error == 0 && read.data == Array(before[0 ..< 4096]))
        }
        #expect(exports.readOnly.bytes == before)
        #expect(exports.readOnly.counters == .init(reads: 1))
    }

    @Test func faultedExportGetsEIO() async throws {
        let exports = exports()
        let before = exports.faulted.bytes
        try await withServer(entries(exports)) { port in
            let client = try RawNBDClient(port: port)
            try client.connect(to: "bad")
            // A failed read carries no data: the next reply header follows at once.
            #expect(try client.request(.read, cookie: 1, offset: 0, lengthBytes: 4096) == .init(error: 5, cookie: 1, data: []))
            let write = try client.request(.write, cookie: 2, offset: 0, lengthBytes: 8, payload: [1, 2, 3, 4, 5, 6, 7, 8])
            #expect(write == .init(error: 5, cookie: 2, data: []))
            #expect(try client.request(.flush, cookie: 3, offset: 0, lengthBytes: 0).error == 5)
            exports.faulted.failure = .noSpace
            #expect(try client.request(.writeZeroes, cookie: 4, offset: 0, lengthBytes: 8).error == 28)
            exports.faulted.failure = nil
            #expect(try client.request(.read, cookie: 5, offset: 0, lengthBytes: 8, replyDataBytes: 8).data == Array(before[0 ..< 8]))
        }
        #expect(exports.faulted.bytes == before)
    }

    @Test func manyClientsAtOnce() async throws {
        let exports = exports()
        try await withServer(entries(exports)) { port in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for clientIndex in 0 ..< 8 {
                    group.addTask {
                        let client = try RawNBDClient(port: port)
                        try client.connect(to: "disk")
                        let offset = UInt64(clientIndex * 65536)
                        let payload = [UInt8](repeating: UInt8(clientIndex + 1), count: 65536)
                        for round in 0 ..< 4 {
                            let write = try client.request(.write, cookie: UInt64(round), offset: offset, lengthBytes: 65536, payload: payload)
                            #expect(write.error == 0)
                            let read = try client.request(.read, cookie: UInt64(round), offset: offset, lengthBytes: 65536, replyDataBytes: 65536)
                            #expect(read.data == payload)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        for clientIndex in 0 ..< 8 {
            #expect(exports.writable.bytes[clientIndex * 65536 ..< (clientIndex + 1) * 65536].allSatisfy { $0 == UInt8(clientIndex + 1) })
        }
    }

    @Test func stopAnswersRequestsInProgressFirst() async throws {
        let export = GatedExport(sizeBytes: 4096)
        let server = NBDServer(provider: GatedProvider(export: export), port: 0)
        let port = try await server.start()
        // Generous timeouts: on a loaded machine the stop may take seconds to begin (beside a
        // simulation sweep holding the cooperative threads, once more than the export's old 10 s
        // wait, so that the reply came first); what this checks is that the connection closes
        // while the export call is still blocked.
        let client = try RawNBDClient(port: port, timeoutSeconds: 120)
        try client.connect(to: "gated")
        try client.send(requestBytes(.read, cookie: 7, offset: 0, lengthBytes: 16))
        #expect(await offCooperativePool { export.waitUntilEntered() })
        let stopping = Task { try await server.stop() }
        try await Task.sleep(for: .milliseconds(200))
        export.release()
        let reply = try await offCooperativePool { try client.readSimpleReply(dataLengthBytes: 16) }
        #expect(reply == .init(error: 0, cookie: 7, data: [UInt8](repeating: 0x42, count: 16)))
        #expect(await offCooperativePool { client.waitForClose() })
        try await stopping.value
    }

    @Test func stopClosesAfterTheGracePeriodButWaitsForExportCalls() async throws {
        let export = GatedExport(sizeBytes: 4096)
        let server = NBDServer(provider: GatedProvider(export: export), port: 0)
        let port = try await server.start()
        // Generous timeouts: on a loaded machine the stop may take seconds to begin (beside a
        // simulation sweep holding the cooperative threads, once more than the export's old 10 s
        // wait, so that the reply came first); what this checks is that the connection closes
        // while the export call is still blocked.
        let client = try RawNBDClient(port: port, timeoutSeconds: 120)
        try client.connect(to: "gated")
        try client.send(requestBytes(.read, cookie: 7, offset: 0, lengthBytes: 16))
        #expect(await offCooperativePool { export.waitUntilEntered() })
        let stopping = Task { try await server.stop(gracePeriod: .milliseconds(100)) }
        let closed = await offCooperativePool { client.waitForClose() }
        #expect(closed, "the connection closes after the grace period, without the reply")
        export.release()
        try await stopping.value
    }

    @Test func bindFailureIsReported() async throws {
        let first = NBDServer(provider: TestProvider(entries: []), port: 0)
        let port = try await first.start()
        let second = NBDServer(provider: TestProvider(entries: []), port: port)
        await #expect {
            _ = try await second.start()
        } throws: { error in
            guard case NBDServerError.bindFailed(let address, _) = error else { return false }
            return address == "127.0.0.1:\(port)"
        }
        try await second.stop()
        try await first.stop()
    }

    @Test func stopClosesOpenConnections() async throws {
        let exports = exports()
        let server = NBDServer(provider: TestProvider(entries: entries(exports)), port: 0)
        let port = try await server.start()
        await #expect(throws: NBDServerError.alreadyStarted) { _ = try await server.start() }
        let client = try RawNBDClient(port: port)
        try client.connect(to: "disk")
        #expect(server.connectionCount == 1)
        try await server.stop()
        #expect(client.waitForClose())
        #expect(server.connectionCount == 0)
        try await server.stop()  // idempotent
        #expect(throws: RawClientError.self) { _ = try RawNBDClient(port: port) }
    }
}

/// An export whose reads block until the test releases them.
final class GatedExport: NBDExport, @unchecked Sendable {
    let sizeBytes: UInt64
    let readOnly = true
    private let entered = DispatchSemaphore(value: 0)
    private let gate = DispatchSemaphore(value: 0)

    init(sizeBytes: UInt64) { self.sizeBytes = sizeBytes }

    func waitUntilEntered() -> Bool { entered.wait(timeout: .now() + 5) == .success }
    func release() { gate.signal() }

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {
        entered.signal()
        _ = gate.wait(timeout: .now() + 120)
        buffer.initializeMemory(as: UInt8.self, repeating: 0x42)
    }

    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) { throw .permission }
    func flush() throws(NBDIOError) {}
    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) { throw .permission }
    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) { throw .permission }
}

struct GatedProvider: NBDExportProvider {
    let export: GatedExport
    func exportNames() -> [(name: String, description: String)] { [("gated", "")] }
    func export(named name: String) -> (any NBDExport)? { name == "gated" ? export : nil }
}
