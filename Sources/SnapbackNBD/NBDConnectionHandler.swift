import NIOCore
import NIOPosix

/// Sent down a connection's pipeline by `NBDServer.stop()`: finish the requests in progress,
/// start no more, then close.
struct NBDServerShutdownEvent: Sendable {}

/// One client connection: moves bytes between the socket and the pure layers (`NBDWireDecoder`,
/// `NBDNegotiation`, `NBDRequest.check`, `NBDRequestWindow`, `NBDWireEncoder`) and runs export
/// calls on the thread pool.
///
/// Requests are parsed in order and admitted to the connection's `NBDRequestWindow`; the first
/// one the window cannot take waits, and socket reads are held meanwhile. So what is buffered is
/// bounded: the unparsed bytes (at most one request and one socket read), the waiting request,
/// and the window's bytes. All state is confined to the channel's event loop.
final class NBDConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case awaitingClientFlags
        case negotiating
        case transmission(NBDSession)
        case closed
    }

    /// What an export call produced: the read data (empty for other commands) or an error value.
    private enum Outcome: Sendable {
        case success([UInt8])
        case failure(NBDErrorValue, note: String?)
    }

    /// A parsed request the window could not admit yet.
    private struct Waiting {
        let decision: NBDRequestCheck
        let cookie: UInt64
        let payload: [UInt8]
    }

    private var phase: Phase = .awaitingClientFlags
    private var negotiation: NBDNegotiation
    /// Received bytes not yet consumed; nil when there are none.
    private var inbound: ByteBuffer?
    /// Requests from admission until their reply is written.
    private var window = NBDRequestWindow()
    /// The next request, parsed but not admitted; nothing after it is parsed, reads are held.
    private var waiting: Waiting?
    /// Export calls on the thread pool.
    private var exportCallsInFlight = 0
    /// A read was asked for while a request was waiting; it is issued once none is.
    private var readHeld = false
    /// `process` is on the stack (a write that completes synchronously must not re-enter it).
    private var processing = false
    /// The server is stopping: no new request starts; the connection closes once the window is
    /// empty.
    private var shuttingDown = false
    private var peer = "?"

    private let threadPool: NIOThreadPool
    private let diagnostics: NBDDiagnostics?
    /// Completed once the connection is closed and no export call is in flight, so that the
    /// server can shut its thread pool and event loops down safely.
    private let drained: EventLoopPromise<Void>
    private var drainedCompleted = false

    init(provider: any NBDExportProvider, threadPool: NIOThreadPool, diagnostics: NBDDiagnostics?, drained: EventLoopPromise<Void>) {
        self.negotiation = NBDNegotiation(provider: provider)
        self.threadPool = threadPool
        self.diagnostics = diagnostics
        self.drained = drained
    }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        peer = context.remoteAddress.map { "\($0)" } ?? "?"
        diagnostics?("nbd: connection from \(peer)")
        send(NBDNegotiation.greeting, context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isClosed else { return }
        var bytes = unwrapInboundIn(data)
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        process(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        inbound = nil
        waiting = nil
        completeDrainedIfIdle()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        phase = .closed
        inbound = nil
        waiting = nil
        completeDrainedIfIdle()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        diagnostics?("nbd: \(peer): \(error); closing")
        close(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is NBDServerShutdownEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard !isClosed, !shuttingDown else { return }
        shuttingDown = true
        // Requests not started yet are dropped: the client sees the connection close without
        // their replies, as for any hard disconnect.
        waiting = nil
        inbound = nil
        closeIfShutDown(context: context)
    }

    func read(context: ChannelHandlerContext) {
        if waiting != nil || shuttingDown {
            readHeld = true
        } else {
            context.read()
        }
    }

    // MARK: Parsing

    /// Starts waiting requests and parses and serves as much of `inbound` as possible, until
    /// bytes run out or a request must wait.
    private func process(context: ChannelHandlerContext) {
        guard !processing, !shuttingDown else { return }
        processing = true
        defer { processing = false }

        parsing: while true {
            if let next = waiting {
                guard !isClosed else { return }
                guard window.canAdmit(next.decision) else { break parsing }
                waiting = nil
                start(next, context: context)
                continue parsing
            }
            switch phase {
            case .closed:
                return

            case .awaitingClientFlags:
                switch parse(NBDWireDecoder.parseClientFlags) {
                case .needMoreBytes:
                    break parsing
                case .violation(let violation):
                    return closeForViolation(violation, context: context)
                case .parsed(let flags, let consumedBytes):
                    consume(consumedBytes)
                    negotiation.receive(clientFlags: flags)
                    phase = .negotiating
                }

            case .negotiating:
                switch parse(NBDWireDecoder.parseOptionRequest) {
                case .needMoreBytes:
                    break parsing
                case .violation(let violation):
                    return closeForViolation(violation, context: context)
                case .parsed(let request, let consumedBytes):
                    consume(consumedBytes)
                    switch negotiation.receive(option: request) {
                    case .reply(let bytes):
                        send(bytes, context: context)
                    case .replyAndEnterTransmission(let bytes, let session):
                        send(bytes, context: context)
                        diagnostics?("nbd: \(peer): serving export '\(session.name)' (\(session.sizeBytes) bytes\(session.readOnly ? ", read-only" : ""))")
                        phase = .transmission(session)
                    case .replyAndClose(let bytes):
                        phase = .closed
                        inbound = nil
                        context.writeAndFlush(wrapOutboundOut(buffer(bytes, context: context))).assumeIsolated().whenComplete { _ in
                            context.close(promise: nil)
                        }
                        return
                    case .close(let violation):
                        return closeForViolation(violation, context: context)
                    }
                }

            case .transmission(let session):
                switch parse(NBDWireDecoder.parseRequestHeader) {
                case .needMoreBytes:
                    break parsing
                case .violation(let violation):
                    return closeForViolation(violation, context: context)
                case .parsed(let request, let headerBytes):
                    let neededBytes = headerBytes + request.payloadLengthBytes
                    let readableBytes = inbound?.readableBytes ?? 0
                    guard readableBytes >= neededBytes else {
                        // Grow once for the whole payload rather than doubling along the way.
                        inbound?.reserveCapacity(minimumWritableBytes: neededBytes - readableBytes)
                        break parsing
                    }
                    consume(headerBytes)
                    var payload: [UInt8] = []
                    if request.payloadLengthBytes > 0 {
                        payload = inbound!.readBytes(length: request.payloadLengthBytes)!
                    }
                    let decision = request.check(exportSizeBytes: session.sizeBytes, readOnly: session.readOnly)
                    waiting = Waiting(decision: decision, cookie: request.cookie, payload: payload)
                }
            }
        }
        compactInbound()
        releaseHeldRead(context: context)
    }

    private func parse<Value>(_ parser: (UnsafeRawBufferPointer) -> NBDParseOutcome<Value>) -> NBDParseOutcome<Value> {
        guard let inbound, inbound.readableBytes > 0 else { return .needMoreBytes }
        return inbound.withUnsafeReadableBytes(parser)
    }

    private func consume(_ count: Int) {
        precondition(inbound != nil && inbound!.readableBytes >= count, "consumed more than was parsed")
        inbound!.moveReaderIndex(forwardBy: count)
    }

    private func compactInbound() {
        guard let current = inbound else { return }
        if current.readableBytes == 0 {
            inbound = nil
        } else if current.readerIndex >= 64 * 1024 && current.readableBytes <= current.readerIndex {
            // Move the unread bytes down only when they are fewer than the read ones: each byte
            // is then moved at most once on average (moving megabytes of pipelined writes after
            // every request cost a third of the write path's time).
            inbound!.discardReadBytes()
        }
    }

    // MARK: Serving requests

    /// Starts an admitted request: an error reply, a disconnect, or an export call.
    private func start(_ request: Waiting, context: ChannelHandlerContext) {
        guard case .transmission(let session) = phase else { return }
        switch request.decision {
        case .reject(let error):
            let id = window.admit(request.decision)
            reply(cookie: request.cookie, outcome: .failure(error, note: nil), windowID: id, context: context)
        case .accept(.disconnect):
            diagnostics?("nbd: \(peer): disconnect")
            close(context: context)
        case .accept(let operation):
            let id = window.admit(request.decision)
            exportCallsInFlight += 1
            let export = session.export
            let payload = request.payload
            let cookie = request.cookie
            threadPool.runIfActive(eventLoop: context.eventLoop) {
                Self.execute(operation, payload: payload, export: export)
            }
            .assumeIsolated()
            .whenComplete { result in
                self.exportCallsInFlight -= 1
                guard !self.isClosed else {
                    self.window.complete(id)
                    self.completeDrainedIfIdle()
                    return
                }
                switch result {
                case .success(let outcome):
                    self.reply(cookie: cookie, outcome: outcome, windowID: id, context: context)
                case .failure:
                    // The thread pool is shutting down.
                    self.reply(cookie: cookie, outcome: .failure(.shutdown, note: "server shutting down"), windowID: id, context: context)
                    self.close(context: context)
                }
            }
        }
    }

    /// Runs one operation against the export. Called on a thread-pool thread: it may block.
    private static func execute(_ operation: NBDOperation, payload: [UInt8], export: any NBDExport) -> Outcome {
        do throws(NBDIOError) {
            switch operation {
            case .read(let offset, let lengthBytes):
                guard lengthBytes > 0 else { return .success([]) }
                let data = try export.read(offset: offset, length: lengthBytes)
                guard data.count == Int(lengthBytes) else {
                    return .failure(.io, note: "export returned \(data.count) bytes for a read of \(lengthBytes)")
                }
                return .success(data)
            case .write(let offset, let lengthBytes, let fua):
                precondition(payload.count == Int(lengthBytes), "write payload does not match its header")
                if lengthBytes > 0 { try export.write(offset: offset, bytes: payload, fua: fua) }
            case .flush:
                try export.flush()
            case .trim(let offset, let lengthBytes, let fua):
                try forEachPiece(offset: offset, lengthBytes: lengthBytes) { (pieceOffset, pieceBytes) throws(NBDIOError) in
                    try export.trim(offset: pieceOffset, length: pieceBytes, fua: fua)
                }
            case .writeZeroes(let offset, let lengthBytes, let fua):
                try forEachPiece(offset: offset, lengthBytes: lengthBytes) { (pieceOffset, pieceBytes) throws(NBDIOError) in
                    try export.writeZeroes(offset: pieceOffset, length: pieceBytes, fua: fua)
                }
            case .disconnect:
                preconditionFailure("disconnect is not an export call")
            }
            return .success([])
        } catch {
            return .failure(NBDErrorValue(error), note: nil)
        }
    }

    /// Calls `body` over `lengthBytes` bytes at `offset` in pieces of at most
    /// `NBDLimits.payloadBytesMax` bytes. TRIM and WRITE_ZEROES carry no payload, so clients send
    /// them up to 4 GiB long; an export may well buffer a piece's worth of zeroes.
    private static func forEachPiece(
        offset: UInt64,
        lengthBytes: UInt32,
        _ body: (UInt64, UInt32) throws(NBDIOError) -> Void
    ) throws(NBDIOError) {
        var pieceOffset = offset
        var remainingBytes = lengthBytes
        while remainingBytes > 0 {
            let pieceBytes = min(remainingBytes, NBDLimits.payloadBytesMax)
            try body(pieceOffset, pieceBytes)
            pieceOffset += UInt64(pieceBytes)
            remainingBytes -= pieceBytes
        }
    }

    /// Sends a simple reply; once it is written the request leaves the window and parsing resumes.
    private func reply(cookie: UInt64, outcome: Outcome, windowID: UInt64, context: ChannelHandlerContext) {
        var data: [UInt8] = []
        var error = NBDErrorValue.none
        switch outcome {
        case .success(let bytes):
            data = bytes
        case .failure(let value, let note):
            error = value
            if let note { diagnostics?("nbd: \(peer): \(note)") }
        }
        var buffer = context.channel.allocator.buffer(capacity: NBDHeaderSize.simpleReplyBytes + data.count)
        buffer.writeBytes(NBDWireEncoder.simpleReplyHeader(error: error, cookie: cookie))
        buffer.writeBytes(data)
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { result in
            self.window.complete(windowID)
            if case .failure = result {
                self.close(context: context)
                return
            }
            if self.shuttingDown {
                self.closeIfShutDown(context: context)
                return
            }
            self.process(context: context)
        }
    }

    // MARK: Helpers

    private var isClosed: Bool {
        if case .closed = phase { return true }
        return false
    }

    private func buffer(_ bytes: [UInt8], context: ChannelHandlerContext) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    private func send(_ bytes: [UInt8], context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(buffer(bytes, context: context)), promise: nil)
    }

    private func releaseHeldRead(context: ChannelHandlerContext) {
        guard waiting == nil, readHeld, !isClosed, !shuttingDown else { return }
        readHeld = false
        context.read()
    }

    private func closeForViolation(_ violation: NBDProtocolViolation, context: ChannelHandlerContext) {
        diagnostics?("nbd: \(peer): \(violation); closing")
        close(context: context)
    }

    private func closeIfShutDown(context: ChannelHandlerContext) {
        guard shuttingDown, window.isEmpty else { return }
        diagnostics?("nbd: \(peer): closing, server stopping")
        close(context: context)
    }

    private func close(context: ChannelHandlerContext) {
        guard !isClosed else { return }
        phase = .closed
        inbound = nil
        waiting = nil
        context.close(promise: nil)
    }

    private func completeDrainedIfIdle() {
        guard isClosed, exportCallsInFlight == 0, !drainedCompleted else { return }
        drainedCompleted = true
        drained.succeed(())
    }
}

@available(*, unavailable)
extension NBDConnectionHandler: Sendable {}
