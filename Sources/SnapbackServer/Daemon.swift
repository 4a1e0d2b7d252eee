import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SnapbackAPI
import SnapbackController
import SnapbackCore
import SnapbackAdapters
import SnapbackData
import SnapbackLog
import SnapbackNBD

/// What snapbackd is told on its command line.
public struct DaemonOptions: Sendable {
    public var dataDirectory: String
    /// The control socket; `DIR/control.sock` when `nil`.
    public var socketPath: String?
    public var nbdHost: String
    public var nbdPort: Int
    public var mapSizeBytes: Int
    /// Where `GET /metrics` is also served over TCP (`--metrics`); `nil`: on the control socket only.
    public var metricsHost: String?
    public var metricsPort: Int
    /// NBD also on this Unix socket (`--nbd-socket`, mode 0600); `nil`: TCP only.
    public var nbdSocketPath: String?
    /// NBD's TLS credentials (`--nbd-tls`): TCP clients must upgrade with NBD_OPT_STARTTLS;
    /// `nil`: no TLS.
    public var nbdTLS: NBDTLSCredentials?
    /// The group given the control socket and the NBD socket (`--socket-group`), which are then
    /// mode 0660 instead of 0600: its members need not be root; `nil`: the owner only.
    public var socketGroup: gid_t?
    /// Where the read-only status page is served (`--http`); `nil`: nowhere. It has no
    /// authentication: loopback unless the operator names another address.
    public var httpHost: String?
    public var httpPort = 0
    /// While hosts use volumes outside a rollback's family, rollbacks run at most this share of
    /// the time (`--background-share`; 100: always at full speed). See `BackgroundService`.
    public var backgroundSharePercent = Self.backgroundSharePercentDefault
    public static let backgroundSharePercentDefault = 25
    /// A node of a cluster (`--cluster`, `--cluster-name`, `--node`): the log in etcd, one
    /// leader serving at a time; `nil`: a single node with its LMDB log.
    public var cluster: ClusterOptions?
    /// Archive the log periodically, keeping at least this many of the newest records in LMDB
    /// (`--log-archive-keep`); `nil`: only when asked (`snapback log archive`).
    public var logArchiveKeep: UInt64?
    /// How often (`--log-archive-interval`, seconds).
    public var logArchiveIntervalSeconds = Self.logArchiveIntervalSecondsDefault
    public static let logArchiveIntervalSecondsDefault = 600

    public init(
        dataDirectory: String, socketPath: String?, nbdHost: String, nbdPort: Int, mapSizeBytes: Int, metricsHost: String? = nil,
        metricsPort: Int = 0
    ) {
        self.dataDirectory = dataDirectory
        self.socketPath = socketPath
        self.nbdHost = nbdHost
        self.nbdPort = nbdPort
        self.mapSizeBytes = mapSizeBytes
        self.metricsHost = metricsHost
        self.metricsPort = metricsPort
    }
}

/// A start-up failure: one line, exit status 1.
public struct DaemonError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// snapbackd: recovers, then serves the control API and NBD, and runs background copies and
/// rollbacks, until SIGTERM or SIGINT.
public enum Daemon {
    public static let version = "0.2.0"
    /// A checkpoint is written once this many events have been appended since the last one.
    static let checkpointIntervalEvents: UInt64 = 10_000

    public static func run(_ options: DaemonOptions) async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = {
            var logger = Logger(label: "snapbackd")
            logger.logLevel = .info
            return logger
        }()
        let directory = options.dataDirectory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw DaemonError("cannot create data directory \(directory): \(error.localizedDescription)")
        }
        // A second snapbackd on the same data directory is refused.
        let lock: DataDirectoryLock
        do {
            guard let taken = try DataDirectoryLock(directory: directory) else {
                throw DaemonError("another snapbackd is already running on \(directory) (it holds \(DataDirectoryLock.path(directory)))")
            }
            lock = taken
        } catch let error as DataDirectoryLockError {
            throw DaemonError(error.description)
        }
        defer { withExtendedLifetime(lock) {} }
        if let cluster = options.cluster {
            // A node of a cluster (`Specs/cluster.md`): the log is in etcd.
            try await ClusterDaemon.run(options, cluster, logger: logger)
            return
        }

        let started = Date()
        let metrics = DaemonMetrics()
        let log: EventLog
        let controller: Controller
        let replay: Replay?
        let startupEvents: [Event]
        do {
            log = try EventLog(directory: directory + "/log", mapSizeBytes: options.mapSizeBytes, archiveDirectory: directory + "/archive")
            let recovered = log.lastSequence
            let durable = try LogDurableStore(log: log, commitObserver: metrics.logCommitted)
            controller = try Controller(
                durable: durable, volumes: try FileVolumeProvider(dataDirectory: directory),
                clock: { Int64(Date().timeIntervalSince1970 * 1000) }, version: version)
            replay = durable.lastReplay
            // What recovery itself committed (ControllerStarted, faults of missing backing stores).
            startupEvents = try log.storedEvents(from: recovered + 1).map(\.event)
        } catch {
            throw DaemonError("cannot recover from \(directory): \(error)")
        }
        let state = controller.state
        metrics.committed(startupEvents)
        metrics.start(from: state)
        let replayedFrom = replay?.checkpointSequence
        for reason in replay?.checkpointsRejected ?? [] {
            logger.warning("a checkpoint does not match the log: recovery started from an older one", metadata: ["reason": "\(reason)"])
        }
        if state.eventsApplied - (replayedFrom ?? 0) >= checkpointIntervalEvents { try controller.checkpoint() }
        for (volumeID, problem) in controller.backingProblems.sorted(by: { $0.key < $1.key }) {
            logger.error("backing store problem", metadata: ["volume": "\(volumeID)", "problem": "\(problem)"])
        }
        logger.info(
            "recovered",
            metadata: [
                "dataDir": "\(directory)", "lastSeq": "\(state.eventsApplied)",
                "checkpoint": "\(replayedFrom.map(String.init) ?? "none")", "volumes": "\(state.volumes.count)",
                "lcmaps": "\(state.maps.count)",
                "rollbacksToResume": "\(state.maps.values.filter { $0.rollback != nil }.count)",
                "milliseconds": "\(Int(Date().timeIntervalSince(started) * 1000))",
            ])

        let socketPath = options.socketPath ?? directory + "/control.sock"
        try removeStaleSocket(socketPath)
        if let nbdSocketPath = options.nbdSocketPath { try removeStaleSocket(nbdSocketPath) }
        let nbdServer = NBDServer(
            provider: ControllerExportProvider(controller: controller, metrics: metrics), host: options.nbdHost, port: options.nbdPort,
            unixSocketPath: options.nbdSocketPath, unixSocketGroup: options.socketGroup, tls: options.nbdTLS,
            logger: { message in logger.debug("\(message)", metadata: ["component": "nbd"]) })
        let logDataFile = directory + "/log/data.mdb"
        let endpoint = MetricsEndpoint(
            metrics: metrics, controller: controller, logDataFile: logDataFile, nbdConnectionCount: { nbdServer.connectionCount })
        let archiver = LogArchiver(controller: controller, log: log)
        let api = ControlAPI(
            controller: controller, log: log, logDataFile: logDataFile, version: version, logger: logger, metrics: endpoint, archiver: archiver)
        let application = Application(
            router: api.router(),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "snapbackd/\(version)"),
            onServerRunning: { channel in
                // The socket is the controller's door: the owner only, or its group too. A socket
                // whose mode cannot be set is not served: its listener is closed.
                if let failure = restrictSocket(socketPath, group: options.socketGroup) {
                    logger.critical("cannot restrict the control socket; closing it", metadata: ["socket": "\(socketPath)", "error": "\(failure)"])
                    try? await channel.close()
                    return
                }
                logger.info(
                    "control API listening",
                    metadata: ["socket": "\(socketPath)", "mode": "\(options.socketGroup == nil ? "0600" : "0660, group \(options.socketGroup!)")"])
            },
            logger: logger)
        // Hosts re-attach when a rollback starts onto a volume: their caches hold bytes the
        // rollback replaces (Specs/data-plane.md, "Hosts re-attach").
        // The same holds for a target when its map starts: it shows a new image.
        controller.observeCommits { events, state in
            metrics.committed(events)
            for event in events {
                let (mapID, onTarget, why): (MapID, Bool, String)
                switch event {
                case let .rollbackStarted(id, _, _), let .rollbackRestarted(id, _):
                    (mapID, onTarget, why) = (id, false, "rollback onto a volume started: its NBD connections were closed, hosts reconnect and read the image")
                case let .mapStarted(id, _):
                    (mapID, onTarget, why) = (id, true, "lcmap started: the NBD connections to its target were closed, hosts reconnect and read the new image")
                default:
                    continue
                }
                guard let map = state.maps[mapID], let volume = state.volumes[onTarget ? map.targetID : map.sourceID] else { continue }
                let closed = nbdServer.closeConnections(toExport: volume.name)
                logger.notice("\(why)", metadata: ["volume": "\(volume.name)", "lcmap": "\(map.name)", "connectionsClosed": "\(closed)"])
            }
        }
        let nbd = NBDService(server: nbdServer, socketPath: options.nbdSocketPath, logger: logger)
        let background = BackgroundService(controller: controller, logger: logger, othersBusySharePercent: options.backgroundSharePercent)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: application), .init(service: nbd), .init(service: background)]
        if let keep = options.logArchiveKeep {
            services.append(
                .init(service: ArchiveService(archiver: archiver, keep: keep, interval: .seconds(options.logArchiveIntervalSeconds), logger: logger)))
        }
        services += try listeners(options, controller: controller, log: log, endpoint: endpoint, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        // The log holds every event; a checkpoint only shortens the next start's replay.
        do { try controller.checkpoint() } catch { logger.warning("checkpoint at stop failed", metadata: ["error": "\(error)"]) }
        unlink(socketPath)
        log.close()
        logger.info("stopped")
    }

    /// The TCP listeners the options ask for: `--metrics` (GET /metrics) and `--http` (the
    /// status page, its history read from `log`). A cluster node serves them while it leads.
    static func listeners(
        _ options: DaemonOptions, controller: Controller, log: EventLog, endpoint: MetricsEndpoint, logger: Logger
    ) throws -> [ServiceGroupConfiguration.ServiceConfiguration] {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let host = options.metricsHost {
            services.append(
                .init(
                    service: MetricsListener.application(
                        endpoint: endpoint, host: host, port: options.metricsPort, serverName: "snapbackd/\(version)", logger: logger)))
        }
        if let host = options.httpHost {
            let page: StatusPage
            do {
                page = try StatusPage(controller: controller, log: log, version: version, logger: logger)
            } catch {
                throw DaemonError("cannot load the status page's templates: \(error)")
            }
            services.append(
                .init(
                    service: StatusListener.application(
                        page: page, host: host, port: options.httpPort, serverName: "snapbackd/\(version)", logger: logger)))
        }
        return services
    }

    /// A socket file left by a crashed daemon is removed; one that a live process answers on is
    /// not: that is another daemon's.
    /// Gives the socket at `path` mode 0600, or with `group` that group and mode 0660; the
    /// failure's text when it cannot.
    public static func restrictSocket(_ path: String, group: gid_t?) -> String? {
        if let group, chown(path, uid_t.max, group) != 0 {  // uid -1: the owner stays
            return "chown to group \(group): \(String(cString: strerror(errno)))"
        }
        guard chmod(path, group == nil ? 0o600 : 0o660) == 0 else { return "chmod: \(String(cString: strerror(errno)))" }
        return nil
    }

    static func removeStaleSocket(_ path: String) throws {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard (status.st_mode & S_IFMT) == S_IFSOCK else {
            throw DaemonError("\(path) exists and is not a socket; refusing to replace it")
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        switch UnixSocket.connect(descriptor, to: path) {
        case .pathTooLong: throw DaemonError("socket path \(path) is too long")
        case .connected: throw DaemonError("another process is serving \(path)")
        case .failed: unlink(path)
        }
    }
}

/// The NBD server as a service of the group.
struct NBDService: Service {
    let server: NBDServer
    /// The NBD Unix socket, removed once the server has stopped.
    let socketPath: String?
    let logger: Logger

    func run() async throws {
        let port = try await server.start()
        logger.info("NBD listening", metadata: ["port": "\(port)", "socket": "\(socketPath ?? "none")"])
        try? await gracefulShutdown()
        try await server.stop()
        if let socketPath { unlink(socketPath) }
    }
}

/// Runs rollbacks at full speed and background copies at their copy rates, resumes whatever a
/// restart interrupted, and checkpoints the state every ``Daemon/checkpointIntervalEvents``.
/// While durable commits fail it waits out the controller's backoff (never spins) and logs the
/// failure at error level at most once a second.
struct BackgroundService: Service {
    let controller: Controller
    let logger: Logger
    /// How often the loop looks for work when idle; bounds the delay of an automatic rollback.
    static let idleTickMilliseconds: UInt64 = 20
    /// The largest rollback step. Within it the controller adapts each rollback's step: it
    /// doubles while no host I/O or command waited for that family's gates during the last step,
    /// and drops to 1 MiB when some did, so that a rollback runs at disk speed alone and leaves
    /// hosts their share.
    static let rollbackStepBytesMax: UInt64 = 256 << 20
    /// While hosts use volumes outside a rollback's family, rollbacks run at most this share of
    /// the time (`--background-share`, 25 by default: a step, then a pause three times as long),
    /// in steps of at most ``rollbackStepBytesOthersBusy``: a rollback at disk speed costs a
    /// core, and on a small machine other volumes' I/O would lose half its rate
    /// (`Specs/data-plane.md`, "Pacing while other volumes are busy").
    let othersBusySharePercent: Int
    static let rollbackStepBytesOthersBusy: UInt64 = 8 << 20

    func run() async throws {
        var credits: [MapID: Double] = [:]
        var last = ContinuousClock.now
        var lastCheckpoint = controller.state.eventsApplied
        var health = HealthReporter(logger: logger)
        var othersBusy = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let now = ContinuousClock.now
            let elapsed = now - last
            last = now
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let rates = controller.copyRatesBytesPerSecond
            credits = credits.filter { rates[$0.key] != nil }
            for (map, rate) in rates {
                // Credit accrues at the copy rate, at most one second's worth.
                credits[map] = min(Double(rate), (credits[map] ?? 0) + Double(rate) * seconds)
            }
            let budgets = credits.compactMapValues { $0 >= 1 ? UInt64($0) : nil }
            let controller = controller
            let rollbackBudget = othersBusy && othersBusySharePercent < 100 ? Self.rollbackStepBytesOthersBusy : Self.rollbackStepBytesMax
            let outcome = try await blocking {
                controller.step(rollbackBudgetBytes: rollbackBudget, copyBudgetsBytes: budgets)
            }
            let stepTook = ContinuousClock.now - now
            othersBusy = outcome.othersBusy
            for (map, bytes) in outcome.copiedBytesByMap { credits[map, default: 0] -= Double(bytes) }
            let contended = outcome.hostIOWaited
            health.report(controller.health, now: now)
            let applied = controller.state.eventsApplied
            if applied - lastCheckpoint >= Daemon.checkpointIntervalEvents {
                do {
                    try await blocking { try controller.checkpoint() }
                    lastCheckpoint = applied
                } catch {
                    logger.warning("checkpoint failed", metadata: ["error": "\(error)"])
                }
            }
            let rollbackRunning = controller.state.maps.values.contains { $0.rollback != nil }
            // A failed commit: wait for the controller's backoff. A rollback: go on at once,
            // pausing briefly when someone waited for its family's gates (they are not fair),
            // and yielding the rest of the machine while hosts use other volumes. Idle: the tick
            // bounds the delay of new work.
            let pause: Duration
            if let waiting = outcome.waitingMilliseconds {
                pause = .milliseconds(max(1, min(1000, waiting)))
            } else if rollbackRunning && othersBusy && othersBusySharePercent < 100 {
                pause = max(.milliseconds(1), stepTook * (100 - othersBusySharePercent) / othersBusySharePercent)
            } else if rollbackRunning {
                pause = contended ? .milliseconds(1) : .zero
            } else {
                pause = .milliseconds(Self.idleTickMilliseconds)
            }
            do {
                if pause > .zero { try await Task.sleep(for: pause) } else { await Task.yield() }
            } catch {
                return  // cancelled: the group is shutting down (for instance, NBD failed to bind)
            }
        }
    }
}

/// Logs the controller's health: at error level while degraded, at most once a second (with the
/// count of failed commits meanwhile), and once when it is online again.
struct HealthReporter {
    let logger: Logger
    static let intervalSeconds: Double = 1
    private var lastLogged: ContinuousClock.Instant?
    private var failedAtLastLog: UInt64 = 0
    private var degraded = false

    init(logger: Logger) { self.logger = logger }

    mutating func report(_ health: ControllerHealth, now: ContinuousClock.Instant) {
        switch health.status {
        case .degraded:
            if let lastLogged, now - lastLogged < .seconds(Self.intervalSeconds) { return }
            logger.error(
                "durable commits are failing; the controller is degraded and retries with backoff",
                metadata: ["reason": "\(health.reason ?? "")", "failedCommits": "\(health.failedCommits - failedAtLastLog)"])
            lastLogged = now
            failedAtLastLog = health.failedCommits
            degraded = true
        case .online:
            guard degraded else { return }
            logger.info("durable commits succeed again; the controller is online", metadata: ["failedCommits": "\(health.failedCommits)"])
            degraded = false
            lastLogged = nil
        }
    }
}
