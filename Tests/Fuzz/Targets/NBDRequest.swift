// Fuzz target `nbd-request`: the byte stream an NBD client sends after the greeting.
//
// Built by tools/fuzz as one module named `SnapbackNBD` from the pure layers of
// Sources/SnapbackNBD (every file that does not import NIO: the wire decoder and encoder, the
// negotiation, the request check and the request window) and this file.
//
// The input is what a client sends, as in Tests/Fuzz/nbd-request-corpus: client flags, option
// requests, then transmission requests with their WRITE payloads. It is fed through the layers as
// the connection handler does (`replayClientStream` in Tests/SnapbackNBDTests/CorpusTests.swift is
// the reference), parsing repeatedly while a message is complete. Properties, beyond "never
// traps":
//   - a parsed message claims at least one byte and no more than it was given; parsing exactly
//     those bytes gives the same message, and one byte fewer needs more bytes; "needs more bytes"
//     never comes with a whole message's worth of bytes;
//   - NBD_OPT_INFO / GO data that parses re-encodes to the same bytes;
//   - every negotiation reply (other than NBD_OPT_EXPORT_NAME's) is a well-framed sequence of
//     option replies to the option asked;
//   - the TLS modes (none, optional, required: FORCEDTLS), chosen by the input's length modulo 3:
//     TLS_REQD exactly for the options FORCEDTLS refuses in the clear, EXPORT_NAME closed there,
//     STARTTLS accepted once where TLS is configured, nothing negotiated before it kept;
//   - an accepted request lies within its export and is not a change to a read-only one;
//   - the request window, with requests completing in an order the input chooses, never holds
//     more than its bounds nor two overlapping requests of which one changes data, and admits a
//     FLUSH or DISC only when it is empty (checked against a list kept here).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNBDRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    replay(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Exports: a writable 1 MiB disk, a read-only one, an empty one and one whose size is near
/// UInt64.max (ranges that overflow).
private struct FuzzProvider: NBDExportProvider {
    func exportNames() -> [(name: String, description: String)] {
        [("disk", "a 1 MiB disk"), ("ro", ""), ("empty", "no bytes"), ("huge", "2^64 - 512 bytes")]
    }

    func export(named name: String) -> (any NBDExport)? {
        switch name {
        case "disk", "": FuzzExport(sizeBytes: 1 << 20, readOnly: false)
        case "ro": FuzzExport(sizeBytes: 64 << 10, readOnly: true)
        case "empty": FuzzExport(sizeBytes: 0, readOnly: false)
        case "huge": FuzzExport(sizeBytes: UInt64.max - 511, readOnly: false)
        default: nil
        }
    }
}

/// An export that is never called: the target checks the operations instead of running them.
private struct FuzzExport: NBDExport {
    let sizeBytes: UInt64
    let readOnly: Bool
    /// The 1 MiB disk offers a changed-block context too.
    var metaContextNames: [String] { sizeBytes == 1 << 20 ? ["snapback:dirty:m0"] : [] }
    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) { preconditionFailure("not called") }
    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) { preconditionFailure("not called") }
    func flush() throws(NBDIOError) { preconditionFailure("not called") }
    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) { preconditionFailure("not called") }
    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) { preconditionFailure("not called") }
}

/// Parses one message at `offset` of `stream` and checks the outcome's claims about its length.
/// `wholeBytesMax` is the most bytes a message can need before it is complete or refused.
private func parse<Value: Equatable>(
    _ stream: [UInt8], at offset: Int, wholeBytesMax: Int, _ parser: ([UInt8]) -> NBDParseOutcome<Value>
) -> NBDParseOutcome<Value> {
    let rest = Array(stream[offset...])
    let outcome = parser(rest)
    switch outcome {
    case .needMoreBytes:
        fuzzCheck(rest.count < wholeBytesMax, "needs more than \(rest.count) bytes")
    case .parsed(_, let consumed):
        fuzzCheck(consumed > 0 && consumed <= rest.count, "claims \(consumed) of \(rest.count) bytes")
        fuzzCheck(parser(Array(rest[..<consumed])) == outcome, "parses differently from exactly its bytes")
        fuzzCheck(parser(Array(rest[..<(consumed - 1)])) == .needMoreBytes, "complete one byte early")
    case .violation:
        break
    }
    return outcome
}

private func replay(_ stream: [UInt8]) {
    var offset = 0
    let flagsOutcome = parse(stream, at: offset, wholeBytesMax: NBDHeaderSize.clientFlagsBytes, NBDWireDecoder.parseClientFlags)
    guard case .parsed(let flags, let consumed) = flagsOutcome else { return }
    offset += consumed
    // The TLS mode comes from the input's length, so that every corpus entry stays valid and
    // each is tried in all three modes as libFuzzer grows or shrinks it. TLS itself is taken as
    // transparent: after STARTTLS's ACK the stream goes on as the records' plaintext.
    let tlsMode: NBDTLSMode = [.none, .optional, .required][stream.count % 3]
    var negotiation = NBDNegotiation(provider: FuzzProvider(), tlsMode: tlsMode)
    negotiation.receive(clientFlags: flags)
    var session: NBDSession?
    while session == nil {
        let outcome = parse(
            stream, at: offset, wholeBytesMax: NBDHeaderSize.optionRequestBytes + Int(NBDLimits.optionDataBytesMax),
            NBDWireDecoder.parseOptionRequest)
        guard case .parsed(let request, let consumed) = outcome else { return }
        offset += consumed
        if request.option == .info || request.option == .go { checkInfoRequest(request.data) }
        if request.option == .listMetaContext || request.option == .setMetaContext { checkMetaContextRequest(request.data) }
        let tlsWasStarted = negotiation.tlsStarted
        let step = negotiation.receive(option: request)
        checkTLS(step, to: request, mode: tlsMode, tlsWasStarted: tlsWasStarted, negotiation: negotiation)
        switch step {
        case .reply(let bytes):
            checkOptionReplies(bytes, to: request.option)
        case .replyAndStartTLS(let bytes):
            fuzzCheck(bytes == NBDWireEncoder.optionReply(option: .startTLS, type: .ack), "STARTTLS started without a plain ACK")
        case .replyAndEnterTransmission(let bytes, let chosen):
            if request.option != .exportName { checkOptionReplies(bytes, to: request.option) }
            session = chosen
            let offered = [NBDMetaContextName.baseAllocation] + chosen.export.metaContextNames
            fuzzCheck(chosen.metaContexts.allSatisfy { offered.contains($0.name) }, "a context the export does not offer")
            fuzzCheck(chosen.metaContexts.map(\.id) == Array(1 ... UInt32(chosen.metaContexts.count + 1)).dropLast(), "context ids not 1...n")
        case .replyAndClose(let bytes):
            checkOptionReplies(bytes, to: request.option)
            return
        case .close:
            return
        }
    }
    guard let session else { return }
    var window = Window()
    while true {
        let outcome = parse(stream, at: offset, wholeBytesMax: NBDHeaderSize.requestBytes, NBDWireDecoder.parseRequestHeader)
        guard case .parsed(let request, let consumed) = outcome else { return }
        // The handler reads the whole WRITE payload before acting on the request.
        guard stream.count - offset >= consumed + request.payloadLengthBytes else { return }
        offset += consumed + request.payloadLengthBytes
        let decision = request.check(
            exportSizeBytes: session.sizeBytes, readOnly: session.readOnly, metaContextsSelected: !session.metaContexts.isEmpty)
        if session.structuredReplies {
            let error = rejection(decision)
            let reply = error == .none
                ? NBDWireEncoder.structuredDone(cookie: request.cookie)
                : NBDWireEncoder.structuredError(cookie: request.cookie, error: error, message: "\(error)")
            fuzzCheck(reply.count >= NBDHeaderSize.structuredReplyBytes, "a structured reply shorter than its header")
        } else {
            _ = NBDWireEncoder.simpleReplyHeader(error: rejection(decision), cookie: request.cookie)
        }
        if case .accept(let operation) = decision { checkOperation(operation, of: request, in: session) }
        // The cookie's low bits choose how many requests finish before this one is admitted.
        window.admit(decision, completingFirst: Int(request.cookie & 0x3))
        if decision == .accept(.disconnect) { return }
    }
}

/// The TLS modes' rules: FORCEDTLS answers every option but STARTTLS and ABORT with exactly one
/// TLS_REQD (and closes on EXPORT_NAME) until STARTTLS; TLS_REQD never comes otherwise; STARTTLS
/// is accepted only once, only where TLS is configured, and forgets what was negotiated before.
private func checkTLS(_ step: NBDNegotiationStep, to request: NBDOptionRequest, mode: NBDTLSMode, tlsWasStarted: Bool, negotiation: NBDNegotiation) {
    let tlsRequired = NBDWireEncoder.optionError(
        option: request.option, type: .errorTLSRequired, message: "TLS is required: send NBD_OPT_STARTTLS first")
    let refusedInTheClear = mode == .required && !tlsWasStarted && request.option != .startTLS && request.option != .abort
    switch step {
    case .reply(let bytes):
        fuzzCheck(refusedInTheClear == (bytes == tlsRequired), "TLS_REQD \(refusedInTheClear ? "missing" : "sent") for \(request.option)")
        fuzzCheck(refusedInTheClear || !containsReplyType(bytes, .errorTLSRequired), "TLS_REQD where TLS is not required")
    case .replyAndStartTLS:
        fuzzCheck(mode != .none && !tlsWasStarted && request.option == .startTLS, "STARTTLS accepted where it must not be")
        fuzzCheck(negotiation.tlsStarted && !negotiation.structuredReplies && negotiation.selectedContexts == nil, "state kept across STARTTLS")
    case .replyAndEnterTransmission, .replyAndClose:
        fuzzCheck(!refusedInTheClear, "\(request.option) served in the clear under FORCEDTLS")
    case .close(let violation):
        if refusedInTheClear { fuzzCheck(violation == .exportNameWithoutTLS || violation == .optionsTooMany, "\(violation) under FORCEDTLS") }
    }
    if request.option == .startTLS, case .replyAndStartTLS = step {} else { fuzzCheck(negotiation.tlsStarted == tlsWasStarted, "TLS started by \(request.option)") }
}

/// True when the option replies in `bytes` include one of `type`.
private func containsReplyType(_ bytes: [UInt8], _ type: NBDOptionReplyType) -> Bool {
    var index = 0
    while index + NBDHeaderSize.optionReplyBytes <= bytes.count {
        let value = bytes[index + 12 ..< index + 16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        if value == type.rawValue { return true }
        let length = bytes[index + 16 ..< index + 20].reduce(0) { $0 << 8 | Int($1) }
        index += NBDHeaderSize.optionReplyBytes + length
    }
    return false
}

private func rejection(_ decision: NBDRequestCheck) -> NBDErrorValue {
    if case .reject(let error) = decision { return error }
    return .none
}

private func checkOperation(_ operation: NBDOperation, of request: NBDRequest, in session: NBDSession) {
    if let range = operation.byteRange {
        fuzzCheck(range.upperBound <= session.sizeBytes, "\(operation) ends past the export's \(session.sizeBytes) bytes")
    }
    fuzzCheck(!(session.readOnly && operation.modifiesData), "\(operation) accepted on a read-only export")
    if case .write(_, let lengthBytes, _) = operation { fuzzCheck(Int(lengthBytes) == request.payloadLengthBytes) }
    if case .read(_, let lengthBytes) = operation { fuzzCheck(lengthBytes <= NBDLimits.payloadBytesMax) }
    if case .blockStatus(_, let lengthBytes, _) = operation {
        fuzzCheck(session.structuredReplies && !session.metaContexts.isEmpty, "BLOCK_STATUS accepted with no context selected")
        fuzzCheck(lengthBytes > 0, "an empty BLOCK_STATUS accepted")
        // The reply the handler would send for a one-extent answer per context.
        for (index, context) in session.metaContexts.enumerated() {
            let chunk = NBDWireEncoder.blockStatusChunk(
                cookie: request.cookie, done: index == session.metaContexts.count - 1, contextID: context.id,
                extents: [NBDExtent(lengthBytes: lengthBytes, flags: 0)])
            fuzzCheck(chunk.count == NBDHeaderSize.structuredReplyBytes + 12, "a one-extent BLOCK_STATUS chunk of \(chunk.count) bytes")
        }
    }
    if case .writeZeroes(_, _, _, let mayPunch, _) = operation { fuzzCheck(mayPunch == !request.flags.contains(.noHole)) }
}

/// LIST/SET_META_CONTEXT data that parses is exactly the encoding of what it parsed to.
private func checkMetaContextRequest(_ data: [UInt8]) {
    guard let request = NBDMetaContextRequest.parse(optionData: data) else { return }
    fuzzCheck(request.optionData == data, "meta-context data does not re-encode to its bytes")
    fuzzCheck(request.queries.count <= NBDLimits.metaContextQueriesMax, "too many queries accepted")
}

/// NBD_OPT_INFO / GO data that parses is exactly the encoding of what it parsed to.
private func checkInfoRequest(_ data: [UInt8]) {
    guard let info = NBDInfoRequest.parse(optionData: data) else { return }
    var bytes: [UInt8] = []
    bytes.appendBigEndian(UInt32(info.name.utf8.count))
    bytes += Array(info.name.utf8)
    bytes.appendBigEndian(UInt16(info.requestedInfo.count))
    for type in info.requestedInfo { bytes.appendBigEndian(type.rawValue) }
    fuzzCheck(bytes == data, "info request data re-encodes differently")
}

/// Option replies: magic, option, type, length, data; each answers `option`.
private func checkOptionReplies(_ bytes: [UInt8], to option: NBDOption) {
    var offset = 0
    fuzzCheck(!bytes.isEmpty, "an empty reply to \(option)")
    while offset < bytes.count {
        fuzzCheck(bytes.count - offset >= NBDHeaderSize.optionReplyBytes, "a torn option reply header")
        fuzzCheck(bigEndian(bytes, offset, 8) == NBDMagic.optionReply)
        fuzzCheck(bigEndian(bytes, offset + 8, 4) == UInt64(option.rawValue), "a reply to another option than \(option)")
        let length = Int(bigEndian(bytes, offset + 16, 4))
        offset += NBDHeaderSize.optionReplyBytes
        fuzzCheck(bytes.count - offset >= length, "option reply data runs past the reply")
        offset += length
    }
}

private func bigEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
    bytes[offset..<(offset + count)].reduce(0) { $0 << 8 | UInt64($1) }
}

/// The request window and a plain list of what it holds, to check it against.
private struct Window {
    var window = NBDRequestWindow()
    var inProgress: [(id: UInt64, decision: NBDRequestCheck)] = []

    /// Completes the `completing` oldest requests (and as many more as the window needs), then
    /// admits `decision`.
    mutating func admit(_ decision: NBDRequestCheck, completingFirst completing: Int) {
        for _ in 0..<min(completing, inProgress.count) { completeOldest() }
        while !window.canAdmit(decision) {
            fuzzCheck(!inProgress.isEmpty, "an empty window refuses \(decision)")
            completeOldest()
        }
        if decision == .accept(.flush) || decision == .accept(.disconnect) {
            fuzzCheck(inProgress.isEmpty, "\(decision) admitted beside \(inProgress.count) requests")
        }
        inProgress.append((window.admit(decision), decision))
        checkInvariants()
    }

    mutating func completeOldest() {
        window.complete(inProgress.removeFirst().id)
        fuzzCheck(window.count == inProgress.count)
    }

    func checkInvariants() {
        fuzzCheck(window.count == inProgress.count && window.count <= NBDRequestWindow.requestsMax)
        let operations = inProgress.compactMap { entry -> NBDOperation? in
            if case .accept(let operation) = entry.decision { return operation }
            return nil
        }
        let buffered = operations.reduce(0) { $0 + $1.bufferedBytes }
        fuzzCheck(window.bufferedBytes == buffered, "the window counts \(window.bufferedBytes) buffered bytes, not \(buffered)")
        fuzzCheck(buffered <= NBDRequestWindow.bufferedBytesMax || window.count == 1, "\(buffered) bytes buffered")
        for (index, operation) in operations.enumerated() {
            guard let range = operation.byteRange else { continue }
            for other in operations[(index + 1)...] {
                guard let otherRange = other.byteRange, otherRange.overlaps(range) else { continue }
                fuzzCheck(!operation.modifiesData && !other.modifiesData, "\(operation) and \(other) overlap")
            }
        }
    }
}
