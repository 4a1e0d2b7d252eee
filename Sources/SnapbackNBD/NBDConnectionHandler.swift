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
///
/// Payload bytes are copied as little as the socket allows: received buffers are queued as they
/// come, never appended to one another, and a payload that lies within one of them goes to the
/// export as a slice of it; only a payload split across reads is gathered into a buffer of its
/// own. A read's reply buffer is allocated on the thread pool and the export reads into it.
/// (Appending every read to one buffer, then copying each payload into an array, was a quarter
/// of snapbackd's time under `tools/bench nbd`.)
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

    /// What an export call produced: for a read, the whole reply (header and data); nil for
    /// other commands; or an error value.
    private enum Outcome: Sendable {
        case success(ByteBuffer?)
        case failure(NBDErrorValue, note: String?)
    }

    /// A parsed request the window could not admit yet.
    private struct Waiting {
        let decision: NBDRequestCheck
        let cookie: UInt64
        /// A write's payload (often a slice of a received buffer); nil for other commands.
        let payload: ByteBuffer?
    }

    private var phase: Phase = .awaitingClientFlags
    private var negotiation: NBDNegotiation
    /// Received buffers with bytes not yet consumed, in arrival order. They are only read from
    /// (sliced), never written to, so slices handed to export calls stay valid and uncopied.
    private var inbound = CircularBuffer<ByteBuffer>()
    /// The unconsumed bytes in `inbound`.
    private var inboundBytes = 0
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
    /// Replies are structured chunks (set on entering transmission, from the session).
    private var structuredReplies = false
    private var peer = "?"

    private let threadPool: NIOThreadPool
    private let diagnostics: NBDDiagnostics?
    /// Completed once the connection is closed and no export call is in flight, so that the
    /// server can shut its thread pool and event loops down safely.
    private let drained: EventLoopPromise<Void>
    private var drainedCompleted = false
    /// Told the export's name when the connection enters transmission.
    private let exportChosen: @Sendable (String) -> Void

    /// The TLS context NBD_OPT_STARTTLS upgrades to; nil when TLS is not configured.
    private let tls: NBDTLSCredentials?

    init(
        provider: any NBDExportProvider, threadPool: NIOThreadPool, diagnostics: NBDDiagnostics?, drained: EventLoopPromise<Void>,
        tls: NBDTLSCredentials? = nil, tlsMode: NBDTLSMode = .none,
        exportChosen: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        precondition((tls == nil) == (tlsMode == .none), "a TLS mode needs TLS credentials, and only then")
        self.negotiation = NBDNegotiation(provider: provider, tlsMode: tlsMode)
        self.tls = tls
        self.threadPool = threadPool
        self.diagnostics = diagnostics
        self.drained = drained
        self.exportChosen = exportChosen
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
        let bytes = unwrapInboundIn(data)
        guard bytes.readableBytes > 0 else { return }
        inbound.append(bytes)
        inboundBytes += bytes.readableBytes
        process(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        dropInbound()
        waiting = nil
        completeDrainedIfIdle()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        phase = .closed
        dropInbound()
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
        dropInbound()
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
                switch parse(frontBytes: .max, context: context, NBDWireDecoder.parseClientFlags) {
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
                switch parse(frontBytes: .max, context: context, NBDWireDecoder.parseOptionRequest) {
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
                        structuredReplies = session.structuredReplies
                        exportChosen(session.name)
                    case .replyAndStartTLS(let bytes):
                        send(bytes, context: context)
                        guard startTLS(context: context) else { return }
                    case .replyAndClose(let bytes):
                        phase = .closed
                        dropInbound()
                        context.writeAndFlush(wrapOutboundOut(buffer(bytes, context: context))).assumeIsolated().whenComplete { _ in
                            context.close(promise: nil)
                        }
                        return
                    case .close(let violation):
                        return closeForViolation(violation, context: context)
                    }
                }

            case .transmission(let session):
                switch parse(frontBytes: NBDHeaderSize.requestBytes, context: context, NBDWireDecoder.parseRequestHeader) {
                case .needMoreBytes:
                    break parsing
                case .violation(let violation):
                    return closeForViolation(violation, context: context)
                case .parsed(let request, let headerBytes):
                    guard inboundBytes >= headerBytes + request.payloadLengthBytes else { break parsing }
                    consume(headerBytes)
                    var payload: ByteBuffer?
                    if request.payloadLengthBytes > 0 {
                        payload = take(request.payloadLengthBytes, context: context)
                    }
                    let decision = request.check(
                        exportSizeBytes: session.sizeBytes, readOnly: session.readOnly, metaContextsSelected: !session.metaContexts.isEmpty)
                    waiting = Waiting(decision: decision, cookie: request.cookie, payload: payload)
                }
            }
        }
        releaseHeldRead(context: context)
    }

    /// Puts a TLS server handler in front of this one, once NBD_OPT_STARTTLS's ACK has gone out
    /// in the clear (it was written and flushed before, so it does not pass through TLS); every
    /// later byte is TLS. Bytes the client sent after the option before seeing the ACK (an early
    /// ClientHello) are TLS records too: they go back to the front of the pipeline. False when
    /// the handler cannot be added (the connection is then closed).
    private func startTLS(context: ChannelHandlerContext) -> Bool {
        guard let tls else { preconditionFailure("STARTTLS accepted without TLS credentials") }
        do {
            try context.pipeline.syncOperations.addHandler(try tls.makeHandler(), position: .first)
        } catch {
            diagnostics?("nbd: \(peer): cannot start TLS: \(error); closing")
            close(context: context)
            return false
        }
        diagnostics?("nbd: \(peer): TLS handshake (\(tls.source))")
        if inboundBytes > 0 {
            let early = take(inboundBytes, context: context)
            context.pipeline.fireChannelRead(NIOAny(early))
        }
        return true
    }

    /// Runs `parser` over the first received buffer, after making sure it holds at least
    /// `frontBytes` bytes (or all there are) in one piece.
    private func parse<Value>(
        frontBytes: Int, context: ChannelHandlerContext, _ parser: (UnsafeRawBufferPointer) -> NBDParseOutcome<Value>
    ) -> NBDParseOutcome<Value> {
        guard inboundBytes > 0 else { return .needMoreBytes }
        if inbound.count > 1, inbound[inbound.startIndex].readableBytes < frontBytes {
            // The bytes wanted span received buffers: gather them (a header's worth at most in
            // transmission; the handshake's messages are small).
            let joined = take(min(frontBytes, inboundBytes), context: context)
            inbound.prepend(joined)
            inboundBytes += joined.readableBytes
        }
        return inbound[inbound.startIndex].withUnsafeReadableBytes(parser)
    }

    /// Removes the next `count` bytes and returns them: a slice of the first received buffer
    /// when they lie within it, else a new buffer gathered from the ones they span.
    private func take(_ count: Int, context: ChannelHandlerContext) -> ByteBuffer {
        precondition(count > 0 && count <= inboundBytes, "took more than was received")
        inboundBytes -= count
        if inbound[inbound.startIndex].readableBytes >= count {
            let slice = inbound[inbound.startIndex].readSlice(length: count)!
            if inbound[inbound.startIndex].readableBytes == 0 { inbound.removeFirst() }
            return slice
        }
        var gathered = context.channel.allocator.buffer(capacity: count)
        while gathered.readableBytes < count {
            var piece = inbound[inbound.startIndex].readSlice(length: min(count - gathered.readableBytes, inbound[inbound.startIndex].readableBytes))!
            gathered.writeBuffer(&piece)
            if inbound[inbound.startIndex].readableBytes == 0 { inbound.removeFirst() }
        }
        return gathered
    }

    /// Drops the next `count` bytes, which `parse` has seen in the first received buffer.
    private func consume(_ count: Int) {
        precondition(count <= inbound[inbound.startIndex].readableBytes, "consumed more than was parsed")
        inbound[inbound.startIndex].moveReaderIndex(forwardBy: count)
        inboundBytes -= count
        if inbound[inbound.startIndex].readableBytes == 0 { inbound.removeFirst() }
    }

    private func dropInbound() {
        inbound.removeAll()
        inboundBytes = 0
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
            if let outcome = Self.executeImmediately(operation, payload: request.payload, export: session.export) {
                reply(cookie: request.cookie, outcome: outcome, windowID: id, context: context)
                return
            }
            exportCallsInFlight += 1
            let payload = request.payload
            let cookie = request.cookie
            let allocator = context.channel.allocator
            threadPool.runIfActive(eventLoop: context.eventLoop) {
                Self.execute(operation, cookie: cookie, payload: payload, session: session, allocator: allocator)
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

    /// Serves a write without FUA here, on the event loop, when the export can make it at once
    /// (`NBDExport.writeImmediately`): the thread pool's handoff then costs nothing. Nil when
    /// the request must go to the pool.
    private static func executeImmediately(_ operation: NBDOperation, payload: ByteBuffer?, export: any NBDExport) -> Outcome? {
        guard case .write(let offset, _, fua: false) = operation, let payload else { return nil }
        let written = payload.withUnsafeReadableBytes { bytes in export.writeImmediately(offset: offset, from: bytes) }
        return written ? .success(nil) : nil
    }

    /// Runs one operation against the export. Called on a thread-pool thread: it may block.
    private static func execute(
        _ operation: NBDOperation, cookie: UInt64, payload: ByteBuffer?, session: NBDSession, allocator: ByteBufferAllocator
    ) -> Outcome {
        let export = session.export
        do throws(NBDIOError) {
            switch operation {
            case .read(let offset, let lengthBytes):
                guard lengthBytes > 0 else { return .success(nil) }
                return .success(try readReply(
                    export, offset: offset, lengthBytes: Int(lengthBytes), cookie: cookie, structured: session.structuredReplies, allocator: allocator))
            case .write(let offset, let lengthBytes, let fua):
                precondition((payload?.readableBytes ?? 0) == Int(lengthBytes), "write payload does not match its header")
                if let payload {
                    var failure: NBDIOError?
                    payload.withUnsafeReadableBytes { bytes in
                        do throws(NBDIOError) { try export.write(offset: offset, from: bytes, fua: fua) } catch { failure = error }
                    }
                    if let failure { throw failure }
                }
            case .flush:
                try export.flush()
            case .trim(let offset, let lengthBytes, let fua):
                try forEachPiece(offset: offset, lengthBytes: lengthBytes) { (pieceOffset, pieceBytes) throws(NBDIOError) in
                    try export.trim(offset: pieceOffset, length: pieceBytes, fua: fua)
                }
            case .writeZeroes(let offset, let lengthBytes, let fua, let mayPunch, let fast):
                try forEachPiece(offset: offset, lengthBytes: lengthBytes) { (pieceOffset, pieceBytes) throws(NBDIOError) in
                    try export.zero(offset: pieceOffset, length: pieceBytes, fua: fua, mayPunch: mayPunch, fast: fast)
                }
            case .blockStatus(let offset, let lengthBytes, let requestOne):
                let bytes = try blockStatusReply(session, offset: offset, lengthBytes: lengthBytes, requestOne: requestOne, cookie: cookie)
                var buffer = allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                return .success(buffer)
            case .disconnect:
                preconditionFailure("disconnect is not an export call")
            }
            return .success(nil)
        } catch {
            return .failure(NBDErrorValue(error), note: nil)
        }
    }

    /// A read's whole reply: the reply header (no error, `cookie`; structured: one
    /// `NBD_REPLY_TYPE_OFFSET_DATA` chunk with DONE), then `lengthBytes` bytes the export reads at
    /// `offset` straight into the buffer. Structured, runs of zeroes of 64 KiB or more then
    /// become `OFFSET_HOLE` chunks, rewritten in place (`NBDReadReply`).
    private static func readReply(
        _ export: any NBDExport, offset: UInt64, lengthBytes: Int, cookie: UInt64, structured: Bool, allocator: ByteBufferAllocator
    ) throws(NBDIOError) -> ByteBuffer {
        let header = structured
            ? NBDWireEncoder.offsetDataHeader(cookie: cookie, offset: offset, lengthBytes: UInt32(lengthBytes))
            : NBDWireEncoder.simpleReplyHeader(error: .none, cookie: cookie)
        var buffer = allocator.buffer(capacity: header.count + lengthBytes)
        buffer.writeBytes(header)
        var failure: NBDIOError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: lengthBytes) { room in
            do throws(NBDIOError) {
                try export.read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: room[0..<lengthBytes]))
                return lengthBytes
            } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
        if structured {
            let replyBytes = buffer.withUnsafeMutableReadableBytes { reply in
                NBDReadReply.splitHoles(reply, cookie: cookie, offset: offset, lengthBytes: lengthBytes)
            }
            buffer.moveWriterIndex(to: buffer.readerIndex + replyBytes)
        }
        return buffer
    }

    /// A BLOCK_STATUS reply: one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk per selected context, in id
    /// order, the last with DONE. An export's answer that breaks `NBDExport.blockStatus`'s
    /// contract (no extent, an empty one, more bytes than asked) is an EIO, never sent.
    private static func blockStatusReply(
        _ session: NBDSession, offset: UInt64, lengthBytes: UInt32, requestOne: Bool, cookie: UInt64
    ) throws(NBDIOError) -> [UInt8] {
        precondition(!session.metaContexts.isEmpty, "BLOCK_STATUS with no context passed the check")
        var bytes: [UInt8] = []
        for (index, context) in session.metaContexts.enumerated() {
            var extents = try session.export.blockStatus(context: context.name, offset: offset, lengthBytes: lengthBytes)
            var coveredBytes: UInt64 = 0
            for extent in extents { coveredBytes += UInt64(extent.lengthBytes) }
            guard !extents.isEmpty, !extents.contains(where: { $0.lengthBytes == 0 }), coveredBytes <= UInt64(lengthBytes) else { throw .io }
            if requestOne {
                extents.removeSubrange(1...)
            } else if extents.count > NBDLimits.blockStatusExtentsMax {
                extents.removeSubrange(NBDLimits.blockStatusExtentsMax...)
            }
            bytes += NBDWireEncoder.blockStatusChunk(
                cookie: cookie, done: index == session.metaContexts.count - 1, contextID: context.id, extents: extents)
        }
        return bytes
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

    /// Sends a reply (simple, or structured chunks once negotiated); once it is written the request leaves the window and parsing resumes.
    private func reply(cookie: UInt64, outcome: Outcome, windowID: UInt64, context: ChannelHandlerContext) {
        let buffer: ByteBuffer
        switch outcome {
        case .success(let readReply?):
            // The whole reply, header and data, made on the thread pool (changing it here would
            // copy it: the outcome still shares its storage).
            buffer = readReply
        case .success(nil):
            let bytes = structuredReplies
                ? NBDWireEncoder.structuredDone(cookie: cookie) : NBDWireEncoder.simpleReplyHeader(error: .none, cookie: cookie)
            buffer = self.buffer(bytes, context: context)
        case .failure(let value, let note):
            if let note { diagnostics?("nbd: \(peer): \(note)") }
            let bytes = structuredReplies
                ? NBDWireEncoder.structuredError(cookie: cookie, error: value, message: note ?? value.description)
                : NBDWireEncoder.simpleReplyHeader(error: value, cookie: cookie)
            buffer = self.buffer(bytes, context: context)
        }
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
        dropInbound()
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
