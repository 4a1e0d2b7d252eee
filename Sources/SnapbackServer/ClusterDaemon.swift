import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SnapbackAdapters
import SnapbackCluster
import SnapbackClusterLog
import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackLog
import SnapbackNBD

/// `snapbackd --cluster etcd=URL[,URL...] --cluster-name NAME --node NODE` (`Specs/cluster.md`).
public struct ClusterOptions: Sendable {
    /// etcd's client URLs.
    public var endpoints: [String]
    /// The cluster: its keys are under `/snapback/NAME/`.
    public var name: String
    /// This node's name (unique in the cluster).
    public var node: String
    /// The leader's lease (`--lease-ttl`); a standby takes over this long after the leader died.
    public var leaseTTLSeconds: Int64 = 2
    /// Where volumes created without `-path` live (`SHARED/volumes`); every node must give the
    /// same directory, on storage they all see (`--shared-dir`; default the data directory).
    public var sharedDirectory: String?

    public init(endpoints: [String], name: String, node: String) {
        self.endpoints = endpoints
        self.name = name
        self.node = node
    }

    /// The URLs of `etcd=URL[,URL...]`, or `nil` when malformed.
    public static func endpoints(parsing text: String) -> [String]? { Etcd.endpoints(parsing: text) }

    /// A cluster or node name: 1 to 63 bytes of letters, digits, `_`, `.` and `-`.
    public static func isValidName(_ name: String) -> Bool { ClusterKeys.isValidName(name) }
}

/// A node of a cluster: a standby that follows the cluster log (warm state, and a byte-for-byte
/// mirror in `DIR/log` for audits and the API's history) and campaigns for the leadership; once
/// it leads, it replays the tail, resumes interrupted copies and rollbacks, and serves the
/// control socket and NBD until it stops or loses its lease.
///
/// A leader that loses its lease (the keep-alive fails past the lease, its process was stopped,
/// a commit's outcome is unknown, or etcd says another node leads) fences at once: its store
/// appends nothing, NBD refuses every request and its connections are closed; in-flight
/// commands are answered `not_leader`; then its services stop and it stands by again, in the
/// same process (`Specs/cluster.md`, "Losing the lease").
enum ClusterDaemon {
    /// The exit status of a node that won a term but cannot take over (EX_TEMPFAIL: restart me).
    static let lostLeadershipExitStatus: Int32 = 75
    /// How often a standby campaigns (and a leader checks its lease).
    static let campaignIntervalMilliseconds: UInt64 = 200
    static let guardIntervalMilliseconds: UInt64 = 20

    static func run(_ options: DaemonOptions, _ cluster: ClusterOptions, logger: Logger) async throws {
        let directory = options.dataDirectory
        let client = EtcdClient(endpoints: cluster.endpoints)
        defer { client.shutdown() }
        // The lease's calls wait at most a quarter of its TTL per member: a keep-alive stuck on a
        // member without a leader would otherwise outlast the lease while the others answer.
        let leaseClient = EtcdClient(endpoints: cluster.endpoints, requestTimeout: .milliseconds(max(250, cluster.leaseTTLSeconds * 1000 / 4)))
        defer { leaseClient.shutdown() }
        let keys = ClusterKeys(cluster: cluster.name)
        let mirror: EventLog
        do {
            mirror = try EventLog(directory: directory + "/log", mapSizeBytes: options.mapSizeBytes)
        } catch {
            throw DaemonError("cannot open the log mirror in \(directory)/log: \(error)")
        }
        defer { mirror.close() }
        let follower = LogMirror(reader: ClusterLogReader(client: client, keys: keys), mirror: mirror)
        do {
            try await blocking { try follower.checkSameLog() }
        } catch {
            throw DaemonError("cannot join cluster \(cluster.name) at \(cluster.endpoints.joined(separator: ",")): \(error)")
        }
        // Tells `snapback lscluster` and `snapback log -cluster` on this machine where the cluster is.
        let location: [String: Any] = ["endpoints": cluster.endpoints, "cluster": cluster.name, "node": cluster.node]
        do {
            let data = try JSONSerialization.data(withJSONObject: location, options: [.sortedKeys])
            try data.write(to: URL(fileURLWithPath: directory + "/cluster.json"), options: .atomic)
        } catch {
            throw DaemonError("cannot write \(directory)/cluster.json: \(error)")
        }
        let node = ClusterNode(
            options: options, cluster: cluster, client: client, leaseClient: leaseClient, keys: keys, mirror: mirror, follower: follower, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [node], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped")
    }
}

/// Copies the cluster log into the node's local LMDB log, record for record: the records are
/// re-encoded from their events, callers and times, which gives the same bytes and so the same
/// hash chain (checked at the end of every catch-up). `snapback log -data-dir` on any node
/// reads it; the control API's rollback history does too.
final class LogMirror: @unchecked Sendable {
    let reader: ClusterLogReader
    let mirror: EventLog
    private let lock = NSLock()

    init(reader: ClusterLogReader, mirror: EventLog) {
        self.reader = reader
        self.mirror = mirror
    }

    /// Refuses a local log that is not a prefix of the cluster's (another cluster's, or a
    /// single node's): its last record must hash as the cluster's record of the same number.
    func checkSameLog() throws {
        let local = try mirror.readHead()
        guard local.sequence > 0 else { return }
        let (revision, head) = try reader.readHead()
        var clusterHash: [UInt8]?
        try reader.forEachRecord(from: local.sequence, through: local.sequence, revision: revision) { sequence, value in
            clusterHash = value.withUnsafeBytes { LogRecord.hash(sequence: sequence, value: $0) }
            return false
        }
        guard local.sequence <= head.sequence, clusterHash == local.hash else {
            throw DaemonError(
                "the data directory's log (seq \(local.sequence)) is not a copy of the cluster's log (seq \(head.sequence)): give this node an empty data directory")
        }
    }

    /// Appends the cluster's records after the mirror's head; returns the etcd revision read at.
    /// - Throws: a cluster read error, a log error, or `DaemonError` when the mirror's chain
    ///   differs from the cluster's (it then stops being updated: the cluster is the truth).
    @discardableResult
    func catchUp() throws -> Int64 {
        try lock.withLock {
            let (revision, head) = try reader.readHead()
            let local = mirror.lastSequence
            guard head.sequence > local else { return revision }
            var pending: [(event: Event, caller: Caller?)] = []
            var pendingTime: Int64 = 0
            var lastHash: [UInt8] = []
            func flush() throws {
                guard !pending.isEmpty else { return }
                let callers = pending.contains { $0.caller != nil } ? pending.map(\.caller) : []
                _ = try mirror.append(pending.map(\.event), callers: callers, timestampMilliseconds: pendingTime)
                pending.removeAll(keepingCapacity: true)
            }
            try reader.forEachRecord(from: local + 1, through: head.sequence, revision: revision) { sequence, value in
                let stored = try value.withUnsafeBytes { bytes -> StoredEvent in
                    let record: RecordView
                    do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: bytes) } catch {
                        throw LogError.damagedRecord(sequence: sequence, problem: error)
                    }
                    lastHash = record.hash
                    return try EventLog.storedEvent(record)
                }
                if !pending.isEmpty && (stored.timestampMilliseconds != pendingTime || pending.count >= 512) { try flush() }
                pendingTime = stored.timestampMilliseconds
                pending.append((stored.event, stored.caller))
                return true
            }
            try flush()
            let copied = try mirror.readHead()
            guard copied.sequence == head.sequence, copied.hash == lastHash else {
                throw DaemonError("the log mirror's chain differs from the cluster's at seq \(copied.sequence)")
            }
            return revision
        }
    }
}

/// The node's life: standby (follow, campaign), then leader (serve) until it stops or loses
/// its lease.
struct ClusterNode: Service {
    let options: DaemonOptions
    let cluster: ClusterOptions
    let client: EtcdClient
    /// The lease's client (shorter timeouts).
    let leaseClient: EtcdClient
    let keys: ClusterKeys
    let mirror: EventLog
    let follower: LogMirror
    let logger: Logger

    func run() async throws {
        let election = LeaderElection(client: client, keys: keys, node: cluster.node)
        let sharedDirectory = cluster.sharedDirectory ?? options.dataDirectory
        let volumes = try FileVolumeProvider(dataDirectory: sharedDirectory)
        let started = Int64(Date().timeIntervalSince1970 * 1000)
        let probe = await Self.quorumProbe(cluster: cluster, client: client, logger: logger)
        // A leader that loses the leadership stands by again, in this process, with a new lease
        // and a warm state read afresh from etcd.
        while try await standByThenLead(election: election, volumes: volumes, probe: probe, started: started) {
            logger.notice("back to standby after losing the leadership", metadata: ["node": "\(cluster.node)"])
        }
    }

    /// One turn of the node's life: stand by (follow, campaign), then lead until the node stops
    /// (returns false) or loses the leadership (returns true: stand by again).
    func standByThenLead(election: LeaderElection, volumes: FileVolumeProvider, probe: QuorumProbe?, started: Int64) async throws -> Bool {
        // The leader's metrics (GET /metrics on its control socket): commit latency included.
        let metrics = DaemonMetrics()
        let store = ClusterDurableStore(client: client, keys: keys, commitObserver: metrics.logCommitted)
        var lease = try await blocking { try ClusterLease(client: leaseClient, ttlSeconds: cluster.leaseTTLSeconds) }
        var record = NodeRecord(node: cluster.node, lease: lease.id, pid: getpid(), startedMilliseconds: started, role: "standby")
        let initial = record
        let first = lease
        try await blocking { try election.register(initial, lease: first) }
        logger.info(
            "cluster node started as a standby",
            metadata: ["cluster": "\(cluster.name)", "node": "\(cluster.node)", "lease": "\(lease.id)", "ttlSeconds": "\(cluster.leaseTTLSeconds)"])

        var keepAlive = Self.keepAlive(first, logger: logger)
        defer { keepAlive.stop() }
        let following = Task.detached { await Self.follow(client: client, keys: keys, store: store, mirror: follower, logger: logger) }

        // Standby: campaign until this node leads, or the node stops.
        var term: UInt64?
        var refusal: String?
        var waitingForEtcd = false
        while term == nil {
            if Task.isShuttingDownGracefully || Task.isCancelled {
                following.cancel()
                lease.revoke()
                return false
            }
            if lease.isLost {
                // etcd forgot the standby's lease (it ran out while etcd could not be reached):
                // the standby registers again with a new one, in this process.
                do {
                    let renewed = try await blocking { try ClusterLease(client: leaseClient, ttlSeconds: cluster.leaseTTLSeconds) }
                    keepAlive.stop()
                    keepAlive = Self.keepAlive(renewed, logger: logger)
                    lease = renewed
                    record.lease = String(renewed.id)
                    let current = record
                    try await blocking { try election.register(current, lease: renewed) }
                    logger.notice("the standby's lease had run out: registered again with a new lease", metadata: ["lease": "\(renewed.id)"])
                } catch {
                    logger.warning("cannot register again with a new lease; trying again", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .milliseconds(ClusterDaemon.campaignIntervalMilliseconds))
                continue
            }
            if let reason = lease.invalidReason {
                // etcd does not answer the keep-alives (no quorum, or this node is cut off): no
                // campaign on a lease that may be gone; the keep-alives go on, and the lease
                // comes back (a new etcd leader extends every lease) or is replaced above.
                if !waitingForEtcd {
                    logger.error("the standby's lease ran out without an answer from etcd: waiting for etcd", metadata: ["reason": "\(reason)"])
                    waitingForEtcd = true
                }
                try? await Task.sleep(for: .milliseconds(ClusterDaemon.campaignIntervalMilliseconds))
                continue
            }
            if waitingForEtcd {
                logger.notice("etcd answers the standby's keep-alives again")
                waitingForEtcd = false
            }
            do {
                let state = try await blocking { () throws -> ControllerState in
                    try store.catchUp()
                    return store.followedState
                }
                // A node that cannot open every volume must not lead: it would fault them all.
                let problem = Self.unopenableVolume(state, volumes)
                if problem != refusal {
                    refusal = problem
                    record.role = problem == nil ? "standby" : "refusing"
                    record.detail = problem
                    let current = record
                    let held = lease
                    try await blocking { try election.register(current, lease: held) }
                    if let problem {
                        logger.error("this node cannot open every volume: it does not campaign", metadata: ["problem": "\(problem)"])
                    }
                }
                if problem == nil {
                    let firstSequence = state.eventsApplied
                    let current = lease
                    if let won = try await blocking({ try election.campaign(lease: current, nowMilliseconds: Int64(Date().timeIntervalSince1970 * 1000), firstSequence: firstSequence) }) {
                        term = won.term
                        break
                    }
                }
            } catch {
                logger.warning("campaign failed; trying again", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(ClusterDaemon.campaignIntervalMilliseconds))
        }
        following.cancel()
        guard let term else { return false }
        return try await lead(term: term, lease: lease, store: store, volumes: volumes, election: election, record: record, metrics: metrics, probe: probe)
    }

    /// The probe of etcd's members for the quorum hold, or `nil` (the hold is off, logged) when
    /// the endpoints do not name every member or the member list cannot be read.
    static func quorumProbe(cluster: ClusterOptions, client: EtcdClient, logger: Logger) async -> QuorumProbe? {
        do {
            if let problem = try await blocking({ try QuorumProbe.uncoveredMembers(endpoints: cluster.endpoints, client: client) }) {
                logger.warning("the quorum hold is off: --cluster must name every etcd member", metadata: ["problem": "\(problem)"])
                return nil
            }
        } catch {
            logger.warning("the quorum hold is off: cannot read etcd's member list", metadata: ["error": "\(error)"])
            return nil
        }
        return QuorumProbe(endpoints: cluster.endpoints)
    }

    /// The first volume of `state` whose backing store does not open here, and why.
    static func unopenableVolume(_ state: ControllerState, _ volumes: FileVolumeProvider) -> String? {
        for volume in state.volumesByID {
            do throws(BackingProblem) {
                _ = try volumes.open(volume)
            } catch {
                return "volume \(volume.name) at \(volumes.path(of: volume)): \(error)"
            }
        }
        return nil
    }

    /// Serves as the leader of `term`. Returns false after a graceful stop, true once the
    /// leadership is lost (host I/O stopped, the services shut down, the lease handed back).
    /// A node that wins but cannot take over, or cannot serve its listeners, exits with status
    /// 75: its service manager restarts it, with the systemd unit's pause between restarts.
    func lead(
        term: UInt64, lease: ClusterLease, store: ClusterDurableStore, volumes: FileVolumeProvider, election: LeaderElection, record: NodeRecord,
        metrics: DaemonMetrics, probe: QuorumProbe?
    ) async throws -> Bool {
        let began = ContinuousClock.now
        let version = Daemon.version
        let controller: Controller
        do {
            controller = try await blocking { () throws -> Controller in
                try store.beginLeading(lease: lease, term: term)
                return try Controller(
                    durable: store, volumes: volumes, clock: { Int64(Date().timeIntervalSince1970 * 1000) }, version: version)
            }
        } catch {
            logger.critical("won the leadership but cannot take over; resigning", metadata: ["term": "\(term)", "error": "\(error)"])
            lease.revoke()
            exit(ClusterDaemon.lostLeadershipExitStatus)
        }
        var leading = record
        leading.role = "leader"
        leading.detail = "term \(term)"
        let current = leading
        do { try await blocking { try election.register(current, lease: lease) } } catch {
            logger.warning("cannot update this node's record", metadata: ["error": "\(error)"])
        }
        for reason in store.checkpointsRejected {
            logger.warning("a checkpoint in etcd does not match the log: the takeover replayed from an older one", metadata: ["reason": "\(reason)"])
        }
        let state = controller.state
        metrics.start(from: state)
        logger.notice(
            "leading the cluster",
            metadata: [
                "cluster": "\(cluster.name)", "node": "\(cluster.node)", "term": "\(term)", "lastSeq": "\(state.eventsApplied)",
                "rollbacksToResume": "\(state.maps.values.filter { $0.rollback != nil }.count)",
                "takeoverMilliseconds": "\((ContinuousClock.now - began).components.seconds * 1000 + (ContinuousClock.now - began).components.attoseconds / 1_000_000_000_000_000)",
            ])

        let directory = options.dataDirectory
        let socketPath = options.socketPath ?? directory + "/control.sock"
        try Daemon.removeStaleSocket(socketPath)
        if let nbdSocketPath = options.nbdSocketPath { try Daemon.removeStaleSocket(nbdSocketPath) }
        let fence = LeadershipFence(lease: lease, store: store)
        let nbdServer = NBDServer(
            provider: FencedExportProvider(inner: ControllerExportProvider(controller: controller, metrics: metrics), fence: fence),
            host: options.nbdHost, port: options.nbdPort, unixSocketPath: options.nbdSocketPath, unixSocketGroup: options.socketGroup,
            tls: options.nbdTLS, logger: { message in logger.debug("\(message)", metadata: ["component": "nbd"]) })
        let logDataFile = directory + "/log/data.mdb"
        let endpoint = MetricsEndpoint(
            metrics: metrics, controller: controller, logDataFile: logDataFile, nbdConnectionCount: { nbdServer.connectionCount },
            cluster: { (term, lease.heldWithoutQuorum) })
        let api = ClusterDaemon.controlAPI(controller: controller, mirror: mirror, logDataFile: logDataFile, logger: logger, metrics: endpoint)
        let application = Application(
            router: api.router(),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "snapbackd/\(version)"),
            onServerRunning: { channel in
                if let failure = Daemon.restrictSocket(socketPath, group: options.socketGroup) {
                    logger.critical("cannot restrict the control socket; closing it", metadata: ["socket": "\(socketPath)", "error": "\(failure)"])
                    try? await channel.close()
                    return
                }
                logger.info("control API listening", metadata: ["socket": "\(socketPath)"])
            },
            logger: logger)
        // Hosts re-attach when a rollback starts onto a volume or a map starts (as in `Daemon.run`).
        controller.observeCommits { events, state in
            metrics.committed(events)
            for event in events {
                let (mapID, onTarget): (MapID, Bool)
                switch event {
                case let .rollbackStarted(id, _, _), let .rollbackRestarted(id, _): (mapID, onTarget) = (id, false)
                case let .mapStarted(id, _): (mapID, onTarget) = (id, true)
                default: continue
                }
                guard let map = state.maps[mapID], let volume = state.volumes[onTarget ? map.targetID : map.sourceID] else { continue }
                _ = nbdServer.closeConnections(toExport: volume.name)
            }
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: application),
            .init(service: NBDService(server: nbdServer, socketPath: options.nbdSocketPath, logger: logger)),
            .init(service: BackgroundService(controller: controller, logger: logger, othersBusySharePercent: options.backgroundSharePercent)),
            // When the guard returns (the leadership is lost), the other services shut down.
            .init(
                service: LeaseGuard(fence: fence, controller: controller, nbdServer: nbdServer, logger: logger),
                successTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: MirrorService(client: client, keys: keys, mirror: follower, logger: logger)),
        ]
        if let probe { services.append(.init(service: QuorumWatch(lease: lease, probe: probe, logger: logger))) }
        services.append(.init(service: HistoryCompaction(store: store, logger: logger)))
        do {
            services += try Daemon.listeners(options, controller: controller, log: mirror, endpoint: endpoint, logger: logger)
        } catch {
            logger.critical("cannot serve the status page; resigning", metadata: ["term": "\(term)", "error": "\(error)"])
            store.fence("this node cannot serve its listeners")
            lease.revoke()
            exit(ClusterDaemon.lostLeadershipExitStatus)
        }
        let inner = ServiceGroup(configuration: .init(services: services, logger: logger))
        try await withGracefulShutdownHandler {
            try await inner.run()
        } onGracefulShutdown: {
            Task { await inner.triggerGracefulShutdown() }
        }
        // The export provider and this observer hold the controller in a cycle: broken, so that
        // the controller of a lost term goes, with its volume files' descriptors.
        controller.observeCommits { _, _ in }
        // The guard marked the lease lost with the reason it stepped down for.
        if fence.lease.isLost, !Task.isShuttingDownGracefully, let reason = fence.lease.invalidReason {
            // The guard stopped host I/O and the services; the lease (still valid after a
            // step-down for an unknown outcome) is handed back, so a standby takes over at once.
            lease.revoke()
            unlink(socketPath)
            logger.notice("gave up the leadership", metadata: ["term": "\(term)", "reason": "\(reason)"])
            return true
        }
        // A graceful stop: a checkpoint, then the lease is handed back at once, so a standby
        // takes over without waiting for the lease to run out.
        do { try controller.checkpoint() } catch { logger.warning("checkpoint at stop failed", metadata: ["error": "\(error)"]) }
        store.fence("this node stopped")
        lease.revoke()
        unlink(socketPath)
        logger.notice("resigned the leadership", metadata: ["term": "\(term)"])
        return false
    }

    /// Renews `lease` every quarter of its TTL, on a thread of its own, until it is lost or the
    /// returned loop is stopped. A failed renewal is logged (at most once a second) and tried
    /// again at the next tick; the lease guard acts when the lease runs out.
    static func keepAlive(_ lease: ClusterLease, logger: Logger) -> LoopThread {
        let lastLogged = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        return LoopThread(name: "lease-keepalive", interval: .milliseconds(lease.ttlSeconds * 1000 / 4)) {
            do {
                try lease.keepAliveOnce()
            } catch ClusterStoreError.notLeader(let reason) {
                logger.error("the lease is lost", metadata: ["lease": "\(lease.id)", "reason": "\(reason)"])
                return false
            } catch {
                let due = lastLogged.withLockedValue { last in
                    guard last.map({ ContinuousClock.now - $0 > .seconds(1) }) ?? true else { return false }
                    last = .now
                    return true
                }
                if due { logger.error("lease keep-alive failed", metadata: ["lease": "\(lease.id)", "error": "\(error)", "remaining": "\(lease.remaining)"]) }
            }
            return true
        }
    }

    /// A standby's follower: reads the cluster log's tail into the warm state and the mirror at
    /// every change a watch reports (and once a second without one), until cancelled.
    static func follow(client: EtcdClient, keys: ClusterKeys, store: ClusterDurableStore, mirror: LogMirror, logger: Logger) async {
        await MirrorService.watchLoop(client: client, keys: keys, logger: logger) {
            try store.catchUp()
            return try mirror.catchUp()
        }
    }
}

/// Whether this node may still serve: its lease is valid by its clock (on keep-alives, or held
/// while etcd has no quorum) and its store not fenced, or fenced only by a commit whose outcome
/// etcd has not decided yet.
struct LeadershipFence: Sendable {
    let lease: ClusterLease
    let store: ClusterDurableStore

    /// Why this node must stop serving and step down, or `nil` while it leads.
    var refusal: String? {
        if let reason = lease.invalidReason { return reason }
        guard let reason = store.fenced else { return nil }
        // A commit's outcome is unknown: while the lease is valid nobody else leads, so what
        // needs no commit goes on, until etcd answers a keep-alive sent after it (etcd works:
        // the next leader's replay decides the outcome) or the lease runs out.
        if let fencedAt = store.fencedByUnknownOutcome, !lease.renewed(after: fencedAt) { return nil }
        return reason
    }
}

/// While the lease's keep-alives go unanswered, looks at etcd's members every 100 ms; when each
/// is down or without a leader, holds the lease on that sighting (``ClusterLease/hold(on:)``,
/// `Specs/cluster.md` 3.3): host I/O that needs no commit goes on, and commits are refused with
/// `cluster_unavailable` before anything is sent. The looks run on a thread of their own.
struct QuorumWatch: Service {
    let lease: ClusterLease
    let probe: QuorumProbe
    let logger: Logger
    static let interval = Duration.milliseconds(100)

    func run() async throws {
        let watch = QuorumWatchLoop(lease: lease, probe: probe, logger: logger)
        let thread = LoopThread(name: "quorum-watch", interval: Self.interval) { watch.turn() }
        defer { thread.stop() }
        try? await gracefulShutdown()
    }
}

/// One turn of the quorum watch, and what it remembers between turns (only its thread runs it).
final class QuorumWatchLoop: @unchecked Sendable {
    let lease: ClusterLease
    let probe: QuorumProbe
    let logger: Logger
    /// A keep-alive is sent every quarter of the TTL: one and a half intervals without an
    /// answer, and the members are looked at.
    let overdue: Duration
    private var holding = false
    private var lastSummary = ""

    init(lease: ClusterLease, probe: QuorumProbe, logger: Logger) {
        self.lease = lease
        self.probe = probe
        self.logger = logger
        overdue = .milliseconds(lease.ttlSeconds * 1000 * 3 / 8)
    }

    func turn() -> Bool {
        if lease.isValid && lease.sinceRenewal > overdue {
            let sighting = probe.look()
            if lease.hold(on: sighting), !holding {
                holding = true
                logger.error(
                    "etcd has no quorum: this node holds the leadership; host I/O that needs no commit goes on, commands and marks fail with cluster_unavailable",
                    metadata: ["members": "\(sighting.summary)"])
            } else if !holding, sighting.summary != lastSummary {
                logger.warning("etcd does not answer the keep-alives", metadata: ["members": "\(sighting.summary)"])
            }
            lastSummary = sighting.summary
        }
        if holding && !lease.heldWithoutQuorum {
            holding = false
            lastSummary = ""
            if lease.isValid { logger.notice("etcd has its quorum again: the hold ends") }
        }
        return !lease.isLost
    }
}

/// Watches the lease and the store; when either says this node no longer leads, stops host
/// I/O at once (NBD requests are refused from that instant and connections closed), lets the
/// commands in flight be answered (`not_leader`), and returns: the node's other services then
/// shut down, and the node stands by again.
struct LeaseGuard: Service {
    let fence: LeadershipFence
    let controller: Controller
    let nbdServer: NBDServer
    let logger: Logger
    /// How long commands in flight get to be answered before the services stop: a commit
    /// waiting on an etcd without quorum times out within about 1.5 s.
    static let drainMilliseconds: UInt64 = 2000

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if let reason = fence.refusal {
                // For good: the lease is marked lost (a late keep-alive cannot make it valid
                // again) and the store fenced, so NBD and commands stay refused from now on.
                fence.lease.markLost(reason)
                fence.store.fence(reason)
                var closed = 0
                for volume in controller.state.volumesByID { closed += nbdServer.closeConnections(toExport: volume.name) }
                logger.critical(
                    "lost the leadership: host I/O stopped, nothing more is appended; this node stands by again",
                    metadata: ["reason": "\(reason)", "nbdConnectionsClosed": "\(closed)"])
                try? await Task.sleep(for: .milliseconds(Self.drainMilliseconds))
                return
            }
            do { try await Task.sleep(for: .milliseconds(ClusterDaemon.guardIntervalMilliseconds)) } catch { return }
        }
    }
}

/// The leader compacts etcd's history every minute, keeping the last minute's revisions
/// (``ClusterDurableStore/compactHistory()``, `Specs/cluster.md` 7). A failure is logged and
/// tried again at the next minute.
struct HistoryCompaction: Service {
    let store: ClusterDurableStore
    let logger: Logger
    static let interval = Duration.seconds(60)

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // The pause ends early when the node stops.
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.interval) } } catch { return }
            do {
                if let revision = try await blocking({ [store] in try store.compactHistory() }) {
                    logger.debug("compacted etcd's history", metadata: ["revision": "\(revision)"])
                }
            } catch {
                logger.warning("compacting etcd's history failed; trying again in a minute", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// The leader's mirror: its own commits reach `DIR/log` through the same watch.
struct MirrorService: Service {
    let client: EtcdClient
    let keys: ClusterKeys
    let mirror: LogMirror
    let logger: Logger

    func run() async throws {
        // The watch waits on its stream: it ends by cancellation when the node stops.
        await cancelWhenGracefulShutdown {
            await Self.watchLoop(client: client, keys: keys, logger: logger) { try mirror.catchUp() }
        }
    }

    /// Calls `catchUp` (which returns the etcd revision it read at), then watches the event keys
    /// from the next revision and calls it again at every change. A broken watch is logged (at
    /// most once a second) and started again after a pause that doubles up to a second; so is a
    /// failed catch-up. Ends when the task is cancelled or the node shuts down.
    static func watchLoop(client: EtcdClient, keys: ClusterKeys, logger: Logger, _ catchUp: @escaping @Sendable () throws -> Int64) async {
        var pauseMilliseconds: UInt64 = 0
        var lastLogged: ContinuousClock.Instant?
        func report(_ what: String, _ error: any Error) {
            guard lastLogged.map({ ContinuousClock.now - $0 > .seconds(1) }) ?? true else { return }
            logger.warning("\(what)", metadata: ["error": "\(error)"])
            lastLogged = .now
        }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if pauseMilliseconds > 0 {
                do { try await Task.sleep(for: .milliseconds(pauseMilliseconds)) } catch { return }
            }
            let revision: Int64
            do {
                revision = try await blocking(catchUp)
            } catch {
                report("following the cluster log failed; trying again", error)
                pauseMilliseconds = min(1000, max(50, pauseMilliseconds * 2))
                continue
            }
            do {
                try await client.watch(key: keys.eventsPrefix, rangeEnd: Etcd.prefixEnd(keys.eventsPrefix), startRevision: revision + 1) { response in
                    guard !(response["events"] as? [Any] ?? []).isEmpty else { return !Task.isCancelled }
                    _ = try await blocking(catchUp)
                    pauseMilliseconds = 0
                    return !Task.isCancelled && !Task.isShuttingDownGracefully
                }
            } catch is CancellationError {
                return
            } catch {
                report("the watch of the cluster log broke; starting it again", error)
                pauseMilliseconds = min(1000, max(50, pauseMilliseconds * 2))
            }
        }
    }
}

/// NBD exports of a leader: every request first checks that this node still leads, so a node
/// resumed after its lease ran out (SIGSTOP, a long pause) serves nothing, not even a request
/// read before it stopped; new connections are refused too.
struct FencedExportProvider: NBDExportProvider {
    let inner: ControllerExportProvider
    let fence: LeadershipFence

    func exportNames() -> [(name: String, description: String)] { fence.refusal == nil ? inner.exportNames() : [] }

    func export(named name: String) -> (any NBDExport)? {
        guard fence.refusal == nil, let export = inner.export(named: name) else { return nil }
        return FencedExport(inner: export, fence: fence)
    }
}

struct FencedExport: NBDExport {
    let inner: any NBDExport
    let fence: LeadershipFence

    var sizeBytes: UInt64 { inner.sizeBytes }
    var readOnly: Bool { inner.readOnly }
    var metaContextNames: [String] { inner.metaContextNames }

    private func check() throws(NBDIOError) { if fence.refusal != nil { throw .io } }

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {
        try check()
        try inner.read(offset: offset, into: buffer)
        // Bytes read while the lease ran out may be older than the new leader's: refuse them.
        try check()
    }

    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) {
        try check()
        try inner.write(offset: offset, from: buffer, fua: fua)
    }

    func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        fence.refusal == nil && inner.writeImmediately(offset: offset, from: buffer)
    }

    func flush() throws(NBDIOError) {
        try check()
        try inner.flush()
    }

    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        try check()
        try inner.trim(offset: offset, length: length, fua: fua)
    }

    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        try check()
        try inner.writeZeroes(offset: offset, length: length, fua: fua)
    }

    func zero(offset: UInt64, length: UInt32, fua: Bool, mayPunch: Bool, fast: Bool) throws(NBDIOError) {
        try check()
        try inner.zero(offset: offset, length: length, fua: fua, mayPunch: mayPunch, fast: fast)
    }

    func blockStatus(context: String, offset: UInt64, lengthBytes: UInt32) throws(NBDIOError) -> [NBDExtent] {
        try check()
        return try inner.blockStatus(context: context, offset: offset, lengthBytes: lengthBytes)
    }
}

extension ClusterDaemon {
    /// The leader's control API: the same as a single node's, its history read from the mirror.
    static func controlAPI(controller: Controller, mirror: EventLog, logDataFile: String, logger: Logger, metrics: MetricsEndpoint) -> ControlAPI {
        ControlAPI(
            controller: controller, log: mirror, logDataFile: logDataFile, version: Daemon.version, logger: logger, metrics: metrics,
            archiver: LogArchiver(controller: controller, log: mirror))
    }
}
