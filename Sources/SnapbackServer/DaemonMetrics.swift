import CoreMetrics
import Foundation
import Prometheus
import SnapbackCore

/// Every metric snapbackd exports (`GET /metrics`, README "Metrics"): its Prometheus name, help
/// text and, for histograms, buckets. The code makes swift-metrics objects under these names
/// only; ``SnapbackMetricsFactory`` refuses any other.
enum MetricCatalog {
    struct Entry {
        var help: String
        /// Upper bounds of a histogram's buckets; empty for counters and gauges.
        var buckets: [Duration] = []
    }

    // Host I/O over NBD, per volume (label `volume`; `operation` where said).
    static let volumeReadBytes = "snapback_volume_read_bytes_total"
    static let volumeWrittenBytes = "snapback_volume_written_bytes_total"
    static let volumeReadsCompleted = "snapback_volume_reads_completed_total"
    static let volumeWritesCompleted = "snapback_volume_writes_completed_total"
    static let volumeFlushesCompleted = "snapback_volume_flushes_completed_total"
    static let volumeIOErrors = "snapback_volume_io_errors_total"
    static let volumeIODuration = "snapback_volume_io_duration_seconds"
    // Volumes and lcmaps, read from the state at each scrape.
    static let volumeStatus = "snapback_volume_status"
    static let volumeSize = "snapback_volume_size_bytes"
    static let volumeAnomalyScore = "snapback_volume_anomaly_score"
    static let mapState = "snapback_lcmap_state"
    static let mapCopyProgress = "snapback_lcmap_copy_progress_ratio"
    static let mapRollbackRemaining = "snapback_lcmap_rollback_remaining_grains"
    // Counted from committed events.
    static let faults = "snapback_faults_total"
    static let rollbacks = "snapback_rollbacks_total"
    // The log and the controller.
    static let logCommitDuration = "snapback_log_commit_duration_seconds"
    static let logCommitFailures = "snapback_log_commit_failures_total"
    static let logSize = "snapback_log_size_bytes"
    static let logLastSequence = "snapback_log_last_sequence"
    static let controllerDegraded = "snapback_controller_degraded"
    static let nbdConnections = "snapback_nbd_connections"
    static let startTime = "snapback_start_time_seconds"
    // A cluster node (served by the leader).
    static let clusterTerm = "snapback_cluster_term"
    static let clusterQuorumHold = "snapback_cluster_quorum_hold"

    /// Host I/O: from a cached 4 KiB page (tens of µs) to a copy-on-write that waits for a sync.
    static let hostIOBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
    ]
    /// An LMDB commit with its sync: a fraction of a millisecond to a slow disk's hundreds.
    static let commitBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500),
    ]

    static let entries: [String: Entry] = [
        volumeReadBytes: Entry(help: "Bytes hosts read from the volume over NBD."),
        volumeWrittenBytes: Entry(help: "Bytes hosts wrote to the volume over NBD, trims and write-zeroes included."),
        volumeReadsCompleted: Entry(help: "NBD reads of the volume answered without error."),
        volumeWritesCompleted: Entry(help: "NBD writes, trims and write-zeroes of the volume answered without error."),
        volumeFlushesCompleted: Entry(help: "NBD flushes of the volume answered without error."),
        volumeIOErrors: Entry(help: "NBD requests of the volume answered with an error, by operation (read, write, flush)."),
        volumeIODuration: Entry(
            help: "Time snapbackd took to serve an NBD request of the volume (copy-on-write included, queueing excluded), by operation.",
            buckets: hostIOBuckets),
        volumeStatus: Entry(help: "1 for the volume's current status (online, faulted, restoring, out_of_space), 0 for the others."),
        volumeSize: Entry(help: "The volume's size in bytes."),
        volumeAnomalyScore: Entry(help: "The anomaly detector's current score of the volume's writes, 0-100 (volumes with detection on)."),
        mapState: Entry(help: "1 for the lcmap's current state (idle_or_copied, preparing, prepared, copying, stopping, stopped), 0 for the others."),
        mapCopyProgress: Entry(help: "Fraction of the lcmap's grains copied, 0-1 (of a reverse map: its running rollback's progress)."),
        mapRollbackRemaining: Entry(help: "Grains a forward lcmap's running rollback has still to restore (0 when none runs or before it counted them)."),
        faults: Entry(help: "VolumeFaulted events committed since snapbackd started, by cause."),
        rollbacks: Entry(
            help: "lcmap rollback events committed since snapbackd started, by trigger (operator, auto) and outcome (started, restarted, completed, abandoned)."),
        logCommitDuration: Entry(help: "Time a durable commit of the log took (one LMDB write transaction with its sync).", buckets: commitBuckets),
        logCommitFailures: Entry(help: "Durable commits of the log that failed since snapbackd started."),
        logSize: Entry(help: "Size of the log's LMDB data file (data.mdb) in bytes."),
        logLastSequence: Entry(help: "Sequence number of the last committed event."),
        controllerDegraded: Entry(help: "1 while the controller is degraded (durable commits fail), 0 while it is online."),
        nbdConnections: Entry(help: "Open NBD client connections."),
        startTime: Entry(help: "When snapbackd started, in seconds since 1970 (counters start from 0 then)."),
        clusterTerm: Entry(help: "The term this cluster node leads in (snapbackd --cluster only)."),
        clusterQuorumHold: Entry(
            help: "1 while this cluster leader holds its lease on a sighting that etcd has no quorum (commands fail, reads go on), 0 otherwise."),
    ]

    /// The descriptor of a catalogued metric; traps for a name not in the catalog.
    static func descriptor(_ name: String) -> MetricNameDescriptor {
        guard let entry = entries[name] else { preconditionFailure("metric \(name) is not in MetricCatalog") }
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: entry.help)
    }

    static func buckets(_ name: String) -> [Duration] {
        guard let buckets = entries[name]?.buckets, !buckets.isEmpty else { preconditionFailure("metric \(name) has no buckets in MetricCatalog") }
        return buckets
    }
}

/// A swift-metrics backend on a Prometheus registry that gives every metric the help text and
/// buckets of ``MetricCatalog`` (`promtool check metrics` wants a HELP line for each). swift-metrics
/// objects made with it (`Counter(label:dimensions:factory:)`) are exported by the registry and
/// leave the export when destroyed.
struct SnapbackMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    /// Gauges only: snapback's histograms are all of durations (`Timer`).
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        precondition(!aggregate, "metric \(label): snapback records no value histograms")
        return registry.makeGauge(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: MetricCatalog.descriptor(label), labels: dimensions, buckets: MetricCatalog.buckets(label))
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}

/// snapbackd's metrics that are recorded as things happen: host I/O per volume
/// (`DaemonMetrics+HostIO.swift`), durable commits of the log, and faults and rollbacks counted
/// from committed events. The ones read from the state are set at each scrape
/// (``MetricsEndpoint``). No global `MetricsSystem` is bootstrapped: everything goes through
/// ``factory`` into ``registry``.
final class DaemonMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: SnapbackMetricsFactory
    private let commitDuration: CoreMetrics.Timer
    private let faults: [FaultCause: CoreMetrics.Counter]
    private let rollbacks: [RollbackOutcome: [RollbackTrigger: CoreMetrics.Counter]]
    /// The trigger of every running rollback, since `RollbackCompleted` and `RollbackStopped` do
    /// not carry it (guarded by `eventsLock`; commits are observed one at a time anyway).
    private var rollbackTriggers: [MapID: RollbackTrigger] = [:]
    private let eventsLock = NSLock()
    /// The host I/O meters by volume (guarded by `metersLock`).
    var meters: [VolumeID: VolumeIOMeter] = [:]
    let metersLock = NSLock()

    /// What became of a rollback, as `snapback_rollbacks_total` labels it.
    enum RollbackOutcome: String, CaseIterable {
        case started, restarted, completed, abandoned
    }

    init() {
        factory = SnapbackMetricsFactory(registry: registry)
        commitDuration = CoreMetrics.Timer(label: MetricCatalog.logCommitDuration, dimensions: [], factory: factory)
        // Every label set exists from the start at 0, so that the first fault shows as an increase.
        var faults: [FaultCause: CoreMetrics.Counter] = [:]
        for cause in FaultCause.allCases {
            faults[cause] = CoreMetrics.Counter(label: MetricCatalog.faults, dimensions: [("cause", cause.description)], factory: factory)
        }
        self.faults = faults
        var rollbacks: [RollbackOutcome: [RollbackTrigger: CoreMetrics.Counter]] = [:]
        for outcome in RollbackOutcome.allCases {
            for trigger in [RollbackTrigger.operator, .auto] {
                rollbacks[outcome, default: [:]][trigger] = CoreMetrics.Counter(
                    label: MetricCatalog.rollbacks, dimensions: [("trigger", trigger.description), ("outcome", outcome.rawValue)], factory: factory)
            }
        }
        self.rollbacks = rollbacks
    }

    /// Records one successful durable commit (the `LogDurableStore`'s observer).
    func logCommitted(_ duration: Duration) {
        commitDuration.recordNanoseconds(duration.wholeNanoseconds)
    }

    /// Learns the rollbacks that run at start-up (a restart resumes them), so that their end is
    /// counted under their trigger.
    func start(from state: ControllerState) {
        eventsLock.withLock {
            for map in state.maps.values {
                if let rollback = map.rollback { rollbackTriggers[map.id] = rollback.trigger }
            }
        }
    }

    /// Counts one durable commit's events: faults, rollbacks; and retires or renames the host
    /// I/O series of removed or renamed volumes. Called by the controller's commit observer,
    /// under its lock: quick, never blocks.
    func committed(_ events: [Event]) {
        eventsLock.withLock {
            for event in events {
                switch event {
                case let .volumeFaulted(_, _, cause, _):
                    faults[cause]?.increment()
                case let .rollbackStarted(id, trigger, _):
                    rollbackTriggers[id] = trigger
                    rollbacks[.started]?[trigger]?.increment()
                case let .rollbackRestarted(id, _):
                    if let trigger = rollbackTriggers[id] { rollbacks[.restarted]?[trigger]?.increment() }
                case let .rollbackCompleted(id):
                    if let trigger = rollbackTriggers.removeValue(forKey: id) { rollbacks[.completed]?[trigger]?.increment() }
                case let .rollbackStopped(id, _):
                    if let trigger = rollbackTriggers.removeValue(forKey: id) { rollbacks[.abandoned]?[trigger]?.increment() }
                case let .mapRemoved(id):
                    rollbackTriggers[id] = nil
                default:
                    break
                }
            }
        }
        for event in events {
            switch event {
            case let .volumeRemoved(id): retireMeter(id)
            case let .volumeRenamed(id, name): renameMeter(id, to: name)
            default: break
            }
        }
    }
}

extension Duration {
    /// Whole nanoseconds, saturating at `Int64.max` (292 years).
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : whole + attoseconds / 1_000_000_000
    }
}
