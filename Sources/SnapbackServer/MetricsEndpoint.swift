import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SnapbackController
import SnapbackCore

/// `GET /metrics`: sets the gauges that are read from the state (volumes, lcmaps, the log, the
/// controller's health, NBD connections), then renders the registry in the Prometheus text
/// format (swift-prometheus). Served on the control socket and, with `--metrics`, on TCP.
///
/// Series of a volume or lcmap leave the export at the first scrape after it is removed; a
/// renamed one's series are made again under the new name.
final class MetricsEndpoint: @unchecked Sendable {
    let metrics: DaemonMetrics
    let controller: Controller
    /// The log's LMDB data file (for its size).
    let logDataFile: String
    let nbdConnectionCount: @Sendable () -> Int
    /// Serializes scrapes and guards the series below.
    private let scrapeLock = NSLock()
    private var volumeSeries: [VolumeID: VolumeStateSeries] = [:]
    private var mapSeries: [MapID: MapStateSeries] = [:]
    private var failedCommitsCounted: UInt64 = 0
    private let degraded: CoreMetrics.Gauge
    private let commitFailures: CoreMetrics.Counter
    private let logSize: CoreMetrics.Gauge
    private let lastSequence: CoreMetrics.Gauge
    private let nbdConnections: CoreMetrics.Gauge

    /// The media type of the Prometheus text format.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// A cluster leader's term and whether it holds its lease without quorum; `nil` on a single node.
    let cluster: (@Sendable () -> (term: UInt64, quorumHold: Bool))?
    private let clusterTerm: CoreMetrics.Gauge?
    private let clusterQuorumHold: CoreMetrics.Gauge?

    init(
        metrics: DaemonMetrics, controller: Controller, logDataFile: String, nbdConnectionCount: @escaping @Sendable () -> Int,
        cluster: (@Sendable () -> (term: UInt64, quorumHold: Bool))? = nil
    ) {
        self.metrics = metrics
        self.controller = controller
        self.logDataFile = logDataFile
        self.nbdConnectionCount = nbdConnectionCount
        self.cluster = cluster
        let factory = metrics.factory
        clusterTerm = cluster == nil ? nil : CoreMetrics.Gauge(label: MetricCatalog.clusterTerm, factory: factory)
        clusterQuorumHold = cluster == nil ? nil : CoreMetrics.Gauge(label: MetricCatalog.clusterQuorumHold, factory: factory)
        degraded = CoreMetrics.Gauge(label: MetricCatalog.controllerDegraded, factory: factory)
        commitFailures = CoreMetrics.Counter(label: MetricCatalog.logCommitFailures, factory: factory)
        logSize = CoreMetrics.Gauge(label: MetricCatalog.logSize, factory: factory)
        lastSequence = CoreMetrics.Gauge(label: MetricCatalog.logLastSequence, factory: factory)
        nbdConnections = CoreMetrics.Gauge(label: MetricCatalog.nbdConnections, factory: factory)
        CoreMetrics.Gauge(label: MetricCatalog.startTime, factory: factory).record(Date().timeIntervalSince1970)
    }

    /// The whole export, as of now.
    func scrape() -> [UInt8] {
        let state = controller.state
        let health = controller.health
        var status = stat()
        let logBytes = stat(logDataFile, &status) == 0 ? Int64(status.st_size) : 0
        let connections = nbdConnectionCount()
        metrics.reconcileMeters(with: state)
        return scrapeLock.withLock {
            degraded.record(health.status == .degraded ? 1 : 0)
            if health.failedCommits > failedCommitsCounted {
                commitFailures.increment(by: health.failedCommits - failedCommitsCounted)
                failedCommitsCounted = health.failedCommits
            }
            logSize.record(logBytes)
            lastSequence.record(Double(state.eventsApplied))
            nbdConnections.record(connections)
            if let node = cluster?() {
                clusterTerm?.record(Double(node.term))
                clusterQuorumHold?.record(node.quorumHold ? 1 : 0)
            }
            updateVolumes(state)
            updateMaps(state)
            return metrics.registry.emitToBuffer()
        }
    }

    /// `scrape()` as an HTTP response.
    func response() -> Response {
        Response(
            status: .ok, headers: [.contentType: Self.contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: scrape())))
    }

    /// Volumes: stale series first (a new volume may reuse a removed one's name), then the rest.
    private func updateVolumes(_ state: ControllerState) {
        for (id, series) in volumeSeries where state.volumes[id]?.name != series.name {
            series.destroy()
            volumeSeries[id] = nil
        }
        for volume in state.volumes.values {
            let series = volumeSeries[volume.id] ?? VolumeStateSeries(name: volume.name, factory: metrics.factory)
            volumeSeries[volume.id] = series
            series.update(volume, anomalyScore: controller.anomalyScore(of: volume.id), factory: metrics.factory)
        }
    }

    private func updateMaps(_ state: ControllerState) {
        for (id, series) in mapSeries where state.maps[id]?.name != series.name {
            series.destroy()
            mapSeries[id] = nil
        }
        for map in state.maps.values {
            let series = mapSeries[map.id] ?? MapStateSeries(name: map.name, role: map.role, factory: metrics.factory)
            mapSeries[map.id] = series
            series.update(map)
        }
    }
}

/// The gauges of one volume read from the state (label `volume`).
final class VolumeStateSeries {
    let name: String
    /// By ``VolumeStatus/rawValue``.
    private let statuses: [VolumeStatus: CoreMetrics.Gauge]
    private let size: CoreMetrics.Gauge
    /// Only while detection is on.
    private var anomalyScore: CoreMetrics.Gauge?

    init(name: String, factory: SnapbackMetricsFactory) {
        self.name = name
        var statuses: [VolumeStatus: CoreMetrics.Gauge] = [:]
        for status in VolumeStatus.allCases {
            statuses[status] = CoreMetrics.Gauge(
                label: MetricCatalog.volumeStatus, dimensions: [("volume", name), ("status", status.description)], factory: factory)
        }
        self.statuses = statuses
        size = CoreMetrics.Gauge(label: MetricCatalog.volumeSize, dimensions: [("volume", name)], factory: factory)
    }

    func update(_ volume: Volume, anomalyScore score: Int?, factory: SnapbackMetricsFactory) {
        for (status, gauge) in statuses { gauge.record(status == volume.status ? 1 : 0) }
        size.record(Double(volume.sizeBytes))
        if let score {
            if anomalyScore == nil {
                anomalyScore = CoreMetrics.Gauge(label: MetricCatalog.volumeAnomalyScore, dimensions: [("volume", name)], factory: factory)
            }
            anomalyScore?.record(score)
        } else {
            anomalyScore?.destroy()
            anomalyScore = nil
        }
    }

    func destroy() {
        statuses.values.forEach { $0.destroy() }
        size.destroy()
        anomalyScore?.destroy()
    }
}

/// The gauges of one lcmap read from the state (label `lcmap`).
final class MapStateSeries {
    let name: String
    private let states: [MapState: CoreMetrics.Gauge]
    private let copyProgress: CoreMetrics.Gauge
    /// Forward maps only: a rollback runs on the forward map.
    private let rollbackRemaining: CoreMetrics.Gauge?

    init(name: String, role: MapRole, factory: SnapbackMetricsFactory) {
        self.name = name
        let map = [("lcmap", name)]
        var states: [MapState: CoreMetrics.Gauge] = [:]
        for state in MapState.allCases {
            states[state] = CoreMetrics.Gauge(label: MetricCatalog.mapState, dimensions: map + [("state", state.description)], factory: factory)
        }
        self.states = states
        copyProgress = CoreMetrics.Gauge(label: MetricCatalog.mapCopyProgress, dimensions: map, factory: factory)
        rollbackRemaining =
            role == .forward ? CoreMetrics.Gauge(label: MetricCatalog.mapRollbackRemaining, dimensions: map, factory: factory) : nil
    }

    func update(_ map: LCMap) {
        for (state, gauge) in states { gauge.record(state == map.state ? 1 : 0) }
        copyProgress.record(map.grainsTotal == 0 ? 1 : Double(min(map.grainsCopied, map.grainsTotal)) / Double(map.grainsTotal))
        let remaining = map.rollback.map { $0.grainsToRestore - min($0.grainsRestored, $0.grainsToRestore) } ?? 0
        rollbackRemaining?.record(Double(remaining))
    }

    func destroy() {
        states.values.forEach { $0.destroy() }
        copyProgress.destroy()
        rollbackRemaining?.destroy()
    }
}

/// `GET /metrics` on TCP (`snapbackd --metrics HOST:PORT`), for a Prometheus server that cannot
/// reach the control socket; nothing else is served there.
enum MetricsListener {
    static func application(endpoint: MetricsEndpoint, host: String, port: Int, serverName: String, logger: Logger) -> some Service {
        let router = Router()
        router.get("metrics") { _, _ in endpoint.response() }
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in
                logger.info("metrics listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "\(host):\(port)")"])
            },
            logger: logger)
    }
}
