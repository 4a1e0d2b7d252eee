import Foundation
import NIOCore
import NIOPosix

/// A diagnostic sink: one human-readable line per connection event (connect, export chosen,
/// protocol violation, disconnect). Called from event-loop threads; it must not block.
public typealias NBDDiagnostics = @Sendable (String) -> Void

/// Why the server could not start or stop.
public enum NBDServerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `start()` was called on a server that is running, stopping or stopped.
    case alreadyStarted
    /// The listening socket could not be bound (address in use, bad host, no permission).
    case bindFailed(address: String, reason: String)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .alreadyStarted: "NBD server already started"
        case .bindFailed(let address, let reason): "cannot listen on \(address): \(reason)"
        }
    }
}

/// An NBD server (fixed newstyle handshake; simple or structured replies; TLS with
/// NBD_OPT_STARTTLS when given credentials) serving the exports of an
/// `NBDExportProvider` to any number of clients at once.
///
/// It runs on its own SwiftNIO event loops; export calls, which may block on disk I/O, run on a
/// separate thread pool. A connection runs up to `NBDRequestWindow.requestsMax` requests at once
/// and may answer them out of order (each reply carries its request's cookie), but requests that
/// overlap, one of them changing data, run in the order received, and FLUSH waits for every
/// earlier request; so a client that pipelines sees the same data as one that waits. TRIM and
/// WRITE_ZEROES longer than `NBDLimits.payloadBytesMax` reach the export in pieces of at most that
/// size. Exports must tolerate concurrent calls (several connections, and CAN_MULTI_CONN is
/// advertised).
///
///     let server = NBDServer(provider: exports, host: "127.0.0.1", port: 0)
///     let port = try await server.start()
///     ...
///     try await server.stop()
public final class NBDServer: @unchecked Sendable {
    private struct Running {
        let group: MultiThreadedEventLoopGroup
        let threadPool: NIOThreadPool
        /// The TCP listener, and the Unix-socket one when asked for.
        let serverChannels: [Channel]
    }

    private enum State {
        case idle
        case starting
        case running(Running)
        case stopping
        case stopped
    }

    private struct Connection {
        let channel: Channel
        let drained: EventLoopFuture<Void>
    }

    private let provider: any NBDExportProvider
    private let host: String
    private let port: Int
    private let unixSocketPath: String?
    private let unixSocketGroup: gid_t?
    private let diagnostics: NBDDiagnostics?
    private let eventLoopThreadCount: Int
    private let ioThreadCount: Int
    private let tls: NBDTLSCredentials?

    // Guarded by `lock`.
    private let lock = NSLock()
    private var state = State.idle
    private var acceptingConnections = true
    private var connections: [ObjectIdentifier: Connection] = [:]
    /// The export each connection in transmission serves (guarded by `lock`).
    private var exportNames: [ObjectIdentifier: String] = [:]

    /// A server for `provider`'s exports, to listen on `host`:`port` once started.
    ///
    /// - Parameters:
    ///   - provider: The exports, looked up by name at every connection.
    ///   - host: The address to bind, `127.0.0.1` by default (loopback only).
    ///   - port: The TCP port; 10809 is NBD's registered port; 0 picks a free one.
    ///   - unixSocketPath: Also listen on this Unix socket (`nbd+unix:///EXPORT?socket=PATH`),
    ///     made with mode 0600: only the owner (and root) may connect. A file already there is
    ///     the caller's to remove.
    ///   - unixSocketGroup: That socket's group, then with mode 0660 (its members may connect).
    ///   - tls: TLS credentials: TCP connections must then upgrade with NBD_OPT_STARTTLS before
    ///     any other option (FORCEDTLS); on the Unix socket the upgrade is offered, not required.
    ///     `nil`: no TLS (STARTTLS answers `NBD_REP_ERR_UNSUP`).
    ///   - logger: An optional diagnostic sink (see `NBDDiagnostics`).
    ///   - eventLoopThreadCount: Threads moving bytes; defaults to the core count, at most 4.
    ///   - ioThreadCount: Threads making export calls, i.e. the most export calls at once across
    ///     all connections; defaults to 8.
    public init(
        provider: any NBDExportProvider,
        host: String = "127.0.0.1",
        port: Int = 10809,
        unixSocketPath: String? = nil,
        unixSocketGroup: gid_t? = nil,
        tls: NBDTLSCredentials? = nil,
        logger: NBDDiagnostics? = nil,
        eventLoopThreadCount: Int? = nil,
        ioThreadCount: Int = 8
    ) {
        precondition((0 ... 65535).contains(port), "port out of range")
        precondition(ioThreadCount > 0, "ioThreadCount must be positive")
        self.provider = provider
        self.host = host
        self.port = port
        self.unixSocketPath = unixSocketPath
        self.unixSocketGroup = unixSocketGroup
        self.tls = tls
        self.diagnostics = logger
        self.eventLoopThreadCount = max(1, eventLoopThreadCount ?? min(System.coreCount, 4))
        self.ioThreadCount = ioThreadCount
    }

    /// Binds the listening socket and starts accepting clients.
    ///
    /// - Returns: The bound TCP port (the one picked by the system when `port` was 0).
    /// - Throws: `NBDServerError.alreadyStarted` when called more than once;
    ///   `NBDServerError.bindFailed` when the socket cannot be bound.
    public func start() async throws -> Int {
        try lock.withLock {
            guard case .idle = state else { throw NBDServerError.alreadyStarted }
            state = .starting
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoopThreadCount)
        let threadPool = NIOThreadPool(numberOfThreads: ioThreadCount)
        threadPool.start()

        func bootstrap(tcp: Bool) -> ServerBootstrap {
            var bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                // Large reads for large writes: a 32 MiB payload should not arrive in 2 KiB pieces.
                .childChannelOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 64 * 1024, maximum: 1024 * 1024)
                )
                .childChannelInitializer { [self] channel in
                    self.initializeConnection(channel, threadPool: threadPool, tlsMode: self.tls == nil ? .none : tcp ? .required : .optional)
                }
            if tcp {
                bootstrap = bootstrap.serverChannelOption(.socketOption(.so_reuseaddr), value: 1).childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            }
            return bootstrap
        }

        var serverChannels: [Channel] = []
        func giveUp(_ where: String, _ reason: String) async -> NBDServerError {
            for channel in serverChannels { try? await channel.close().get() }
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            lock.withLock { state = .idle }
            return .bindFailed(address: `where`, reason: reason)
        }
        do {
            serverChannels.append(try await bootstrap(tcp: true).bind(host: host, port: port).get())
        } catch {
            throw await giveUp("\(host):\(port)", "\(error)")
        }
        if let unixSocketPath {
            // Mode 0600 (0660 with a group) right after the bind (connecting needs write
            // permission, which the usual umask of 022 never gives other users meanwhile); a
            // failed chown or chmod fails the start.
            do {
                serverChannels.append(try await bootstrap(tcp: false).bind(unixDomainSocketPath: unixSocketPath).get())
            } catch {
                throw await giveUp(unixSocketPath, "\(error)")
            }
            if let unixSocketGroup, chown(unixSocketPath, uid_t.max, unixSocketGroup) != 0 {
                throw await giveUp(unixSocketPath, "chown to group \(unixSocketGroup): \(String(cString: strerror(errno)))")
            }
            if chmod(unixSocketPath, unixSocketGroup == nil ? 0o600 : 0o660) != 0 {
                throw await giveUp(unixSocketPath, "chmod: \(String(cString: strerror(errno)))")
            }
        }
        let boundPort = serverChannels[0].localAddress?.port ?? port
        lock.withLock { state = .running(Running(group: group, threadPool: threadPool, serverChannels: serverChannels)) }
        diagnostics?(
            "nbd: listening on \(host):\(boundPort)" + (tls.map { " (TLS required, \($0.source))" } ?? "")
                + (unixSocketPath.map { " and on \($0)" } ?? ""))
        return boundPort
    }

    /// Stops the server: stops accepting; lets every connection finish and answer the requests
    /// it has started (requests not started yet get no reply), for at most `gracePeriod`, then
    /// closes it; then shuts the threads down. Does nothing when the server is not running.
    ///
    /// Export calls already running are always waited for (an export call cannot be interrupted,
    /// and the threads it reports back to must outlive it).
    ///
    /// - Parameter gracePeriod: How long connections may take to finish their requests in
    ///   progress before they are closed regardless (and those replies dropped).
    /// - Throws: An error from shutting down the event loops or the thread pool.
    public func stop(gracePeriod: Duration = .seconds(5)) async throws {
        let running: Running? = lock.withLock {
            guard case .running(let running) = state else { return nil }
            state = .stopping
            acceptingConnections = false
            return running
        }
        guard let running else { return }

        for channel in running.serverChannels { try? await channel.close().get() }
        let live = lock.withLock { Array(connections.values) }
        for connection in live {
            connection.channel.pipeline.fireUserInboundEventTriggered(NBDServerShutdownEvent())
        }
        let components = gracePeriod.components
        let graceNanoseconds = components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
        let deadline = running.group.next().scheduleTask(in: .nanoseconds(max(0, graceNanoseconds))) {
            for connection in live { connection.channel.close(promise: nil) }
        }
        for connection in live { try? await connection.drained.get() }
        deadline.cancel()

        var failure: Error?
        do { try await running.threadPool.shutdownGracefully() } catch { failure = error }
        do { try await running.group.shutdownGracefully() } catch { failure = failure ?? error }
        lock.withLock { state = .stopped }
        diagnostics?("nbd: stopped")
        if let failure { throw failure }
    }

    /// Closes every connection serving export `name` (in transmission), at once: requests in
    /// flight get no reply, and the client sees the connection drop. Returns how many were closed.
    /// (snapbackd calls it when a rollback starts onto a volume: a host's cache holds bytes the
    /// rollback replaces; it reconnects and reads the image.)
    @discardableResult
    public func closeConnections(toExport name: String) -> Int {
        let doomed = lock.withLock { connections.filter { exportNames[$0.key] == name }.map(\.value.channel) }
        for channel in doomed { channel.close(promise: nil) }
        if !doomed.isEmpty { diagnostics?("nbd: closed \(doomed.count) connection(s) to export '\(name)'") }
        return doomed.count
    }

    /// True when `host` (an address, or a name resolved the way `start()` binds it) is a
    /// loopback address: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. The wildcards (0.0.0.0, ::)
    /// and a name that does not resolve are not.
    public static func isLoopback(host: String) -> Bool {
        guard let address = try? SocketAddress.makeAddressResolvingHost(host, port: 0) else { return false }
        switch address {
        case .v4(let v4):
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes == [UInt8](repeating: 0, count: 15) + [1] { return true }
            return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
        case .unixDomainSocket:
            return false
        }
    }

    /// The number of open client connections.
    public var connectionCount: Int {
        lock.withLock { connections.count }
    }

    /// Adds the connection handler to a new child channel, or refuses the channel while stopping.
    private func initializeConnection(_ channel: Channel, threadPool: NIOThreadPool, tlsMode: NBDTLSMode) -> EventLoopFuture<Void> {
        let id = ObjectIdentifier(channel)
        let drained: EventLoopPromise<Void>? = lock.withLock {
            guard acceptingConnections else { return nil }
            let promise = channel.eventLoop.makePromise(of: Void.self)
            connections[id] = Connection(channel: channel, drained: promise.futureResult)
            return promise
        }
        guard let drained else { return channel.close() }
        drained.futureResult.whenComplete { [self] _ in
            self.lock.withLock {
                self.connections[id] = nil
                self.exportNames[id] = nil
            }
        }
        let handler = NBDConnectionHandler(
            provider: provider,
            threadPool: threadPool,
            diagnostics: diagnostics,
            drained: drained,
            tls: tls,
            tlsMode: tlsMode,
            exportChosen: { [weak self] name in
                guard let self else { return }
                self.lock.withLock {
                    if self.connections[id] != nil { self.exportNames[id] = name }
                }
            }
        )
        do {
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            drained.succeed(())
            return channel.eventLoop.makeFailedFuture(error)
        }
        return channel.eventLoop.makeSucceededVoidFuture()
    }
}
