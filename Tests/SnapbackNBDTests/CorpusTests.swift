import Foundation
import SnapbackNBD
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The fuzz seed corpus (Tests/Fuzz/nbd-request-corpus): every seed replays through the pure
/// layers and against a real server without a crash, and the malformed ones change no export
/// byte. The `nbd-request` fuzz target (tools/fuzz) starts from the same files.
@Suite("NBD fuzz seed corpus")
struct CorpusTests {
    static let corpusDirectory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/nbd-request-corpus")

    static var seedNames: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: corpusDirectory.path)) ?? []
        return names.filter { $0.hasSuffix(".bin") }.sorted()
    }

    /// Seeds that must be refused without touching the export.
    private static func isMalformed(_ name: String) -> Bool {
        ["bad-", "oversized-", "not-fixed", "malformed-"].contains { name.hasPrefix($0) }
    }

    private func seed(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: Self.corpusDirectory.appendingPathComponent(name)))
    }

    @Test func corpusIsPresent() {
        #expect(Self.seedNames.count >= 10, "no corpus at \(Self.corpusDirectory.path)")
    }

    @Test(arguments: seedNames)
    func replaysThroughThePureLayers(_ name: String) throws {
        let export = MemoryExport(sizeBytes: 64 << 10, fill: { pattern($0) })
        let before = export.bytes
        let outcome = replayClientStream(try seed(name), provider: TestProvider(entries: [("disk", export, "")]))
        if Self.isMalformed(name) {
            #expect(export.bytes == before, "\(name): \(outcome)")
            #expect(export.counters.writes == 0 && export.counters.trims == 0 && export.counters.writeZeroes == 0)
        }
        // Truncations of a seed never crash either, and never act on a partial request.
        let bytes = try seed(name)
        for length in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 64)) {
            _ = replayClientStream(Array(bytes[..<length]), provider: TestProvider(entries: [("disk", MemoryExport(sizeBytes: 64 << 10), "")]))
        }
    }

    @Test func replaysAgainstARunningServer() async throws {
        for name in Self.seedNames {
            let export = MemoryExport(sizeBytes: 64 << 10, fill: { pattern($0) })
            let before = export.bytes
            try await withServer([("disk", export, "")]) { port in
                let client = try RawNBDClient(port: port, timeoutSeconds: 3)
                _ = try client.receive(exactly: 18)
                try? client.send(try seed(name))
                client.drainUntilClose()
                // The server is still serving.
                let next = try RawNBDClient(port: port)
                try next.connect(to: "disk")
                #expect(try next.request(.read, cookie: 1, offset: 0, lengthBytes: 1, replyDataBytes: 1).error == 0)
            }
            if Self.isMalformed(name) {
                #expect(export.bytes == before, "\(name) changed the export")
            }
        }
    }
}

extension RawNBDClient {
    /// Reads and discards whatever the server sends until it closes or goes quiet.
    func drainUntilClose() {
        while (try? receive(exactly: 1)) != nil {}
    }
}

/// What `replayClientStream` did with a client byte stream.
struct ReplayOutcome: CustomStringConvertible {
    var options = 0
    var requests = 0
    var closedBy: String?
    var description: String { "options \(options), requests \(requests), closed: \(closedBy ?? "no")" }
}

/// A synchronous, deterministic stand-in for a connection: feeds `stream` through the decoder,
/// the negotiation, the request check and the request window, and runs accepted requests directly
/// on the export. The reference driver for fuzzing the wire layer.
func replayClientStream(_ stream: [UInt8], provider: any NBDExportProvider) -> ReplayOutcome {
    var outcome = ReplayOutcome()
    var offset = 0
    func rest() -> [UInt8] { Array(stream[offset...]) }

    switch NBDWireDecoder.parseClientFlags(rest()) {
    case .needMoreBytes: return outcome
    case .violation(let violation): outcome.closedBy = "\(violation)"; return outcome
    case .parsed(let flags, let consumed):
        offset += consumed
        var negotiation = NBDNegotiation(provider: provider)
        negotiation.receive(clientFlags: flags)
        var session: NBDSession?
        while session == nil {
            switch NBDWireDecoder.parseOptionRequest(rest()) {
            case .needMoreBytes: return outcome
            case .violation(let violation): outcome.closedBy = "\(violation)"; return outcome
            case .parsed(let request, let consumed):
                offset += consumed
                outcome.options += 1
                switch negotiation.receive(option: request) {
                case .reply, .replyAndStartTLS: continue
                case .replyAndEnterTransmission(_, let chosen): session = chosen
                case .replyAndClose: outcome.closedBy = "abort"; return outcome
                case .close(let violation): outcome.closedBy = "\(violation)"; return outcome
                }
            }
        }
        guard let session else { return outcome }
        var window = NBDRequestWindow()
        while true {
            switch NBDWireDecoder.parseRequestHeader(rest()) {
            case .needMoreBytes: return outcome
            case .violation(let violation): outcome.closedBy = "\(violation)"; return outcome
            case .parsed(let request, let consumed):
                guard stream.count - offset >= consumed + request.payloadLengthBytes else { return outcome }
                offset += consumed
                let payload = Array(stream[offset ..< offset + request.payloadLengthBytes])
                offset += request.payloadLengthBytes
                outcome.requests += 1
                let decision = request.check(
                    exportSizeBytes: session.sizeBytes, readOnly: session.readOnly, metaContextsSelected: !session.metaContexts.isEmpty)
                precondition(window.canAdmit(decision), "an empty window admits everything")
                let id = window.admit(decision)
                defer { window.complete(id) }
                guard case .accept(let operation) = decision else { continue }
                let export = session.export
                do throws(NBDIOError) {
                    switch operation {
                    case .read(let at, let length):
                        if length > 0 {
                            var data = [UInt8](repeating: 0, count: Int(length))
                            try data.withMutableBytes { (buffer) throws(NBDIOError) in try export.read(offset: at, into: buffer) }
                        }
                    case .write(let at, let length, let fua):
                        if length > 0 { try payload.withBytes { (buffer) throws(NBDIOError) in try export.write(offset: at, from: buffer, fua: fua) } }
                    case .flush: try export.flush()
                    case .trim(let at, let length, let fua): if length > 0 { try export.trim(offset: at, length: length, fua: fua) }
                    case .writeZeroes(let at, let length, let fua, let mayPunch, let fast):
                        if length > 0 { try export.zero(offset: at, length: length, fua: fua, mayPunch: mayPunch, fast: fast) }
                    case .blockStatus(let at, let length, _):
                        for context in session.metaContexts { _ = try export.blockStatus(context: context.name, offset: at, lengthBytes: length) }
                    case .disconnect: outcome.closedBy = "disconnect"; return outcome
                    }
                } catch {
                    continue
                }
            }
        }
    }
}
