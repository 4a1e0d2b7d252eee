import CoreMetrics
import Foundation
import SnapbackCore

/// A kind of NBD request, as the host I/O metrics label it (`operation`). Trims and
/// write-zeroes are writes: they write zeroes through copy-on-write.
enum HostOperation: Int, CaseIterable {
    case read = 0
    case write = 1
    case flush = 2

    var label: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .flush: "flush"
        }
    }
}

/// The swift-metrics objects of one volume's host I/O under one name (label `volume`). Made once
/// per volume and name, so that an I/O only increments: no lookup, no allocation.
final class VolumeIOSeries: @unchecked Sendable {
    let volumeName: String
    private let readBytes: CoreMetrics.Counter
    private let writtenBytes: CoreMetrics.Counter
    /// By ``HostOperation/rawValue``.
    private let completed: [CoreMetrics.Counter]
    private let errors: [CoreMetrics.Counter]
    private let durations: [CoreMetrics.Timer]

    init(volumeName: String, factory: SnapbackMetricsFactory) {
        self.volumeName = volumeName
        let volume = [("volume", volumeName)]
        readBytes = CoreMetrics.Counter(label: MetricCatalog.volumeReadBytes, dimensions: volume, factory: factory)
        writtenBytes = CoreMetrics.Counter(label: MetricCatalog.volumeWrittenBytes, dimensions: volume, factory: factory)
        completed = [MetricCatalog.volumeReadsCompleted, MetricCatalog.volumeWritesCompleted, MetricCatalog.volumeFlushesCompleted].map {
            CoreMetrics.Counter(label: $0, dimensions: volume, factory: factory)
        }
        errors = HostOperation.allCases.map {
            CoreMetrics.Counter(label: MetricCatalog.volumeIOErrors, dimensions: volume + [("operation", $0.label)], factory: factory)
        }
        durations = HostOperation.allCases.map {
            CoreMetrics.Timer(label: MetricCatalog.volumeIODuration, dimensions: volume + [("operation", $0.label)], factory: factory)
        }
    }

    func record(_ operation: HostOperation, bytes: Int, nanoseconds: Int64) {
        durations[operation.rawValue].recordNanoseconds(nanoseconds)
        completed[operation.rawValue].increment()
        switch operation {
        case .read: readBytes.increment(by: bytes)
        case .write: writtenBytes.increment(by: bytes)
        case .flush: break
        }
    }

    func recordFailure(_ operation: HostOperation, nanoseconds: Int64) {
        durations[operation.rawValue].recordNanoseconds(nanoseconds)
        errors[operation.rawValue].increment()
    }

    /// Takes every series out of the export.
    func destroy() {
        readBytes.destroy()
        writtenBytes.destroy()
        completed.forEach { $0.destroy() }
        errors.forEach { $0.destroy() }
        durations.forEach { $0.destroy() }
    }
}

/// The host I/O of one volume, as its NBD connections record it: each connection holds the
/// volume's meter from when it opened the export. A rename swaps the series under it; a removal
/// leaves it without series, and what a lingering connection records then goes nowhere.
final class VolumeIOMeter: @unchecked Sendable {
    let volumeID: VolumeID
    /// The current series (guarded by `seriesLock`, held only to read or swap the reference).
    private var series: VolumeIOSeries?
    private let seriesLock = NSLock()

    init(volumeID: VolumeID, series: VolumeIOSeries) {
        self.volumeID = volumeID
        self.series = series
    }

    /// The name the series carry, `nil` once retired.
    var volumeName: String? { seriesLock.withLock { series?.volumeName } }

    /// Records a request answered without error that began at `started`.
    func completed(_ operation: HostOperation, bytes: Int, since started: ContinuousClock.Instant) {
        let nanoseconds = started.duration(to: .now).wholeNanoseconds
        seriesLock.withLock { series }?.record(operation, bytes: bytes, nanoseconds: nanoseconds)
    }

    /// Records a request answered with an error that began at `started`.
    func failed(_ operation: HostOperation, since started: ContinuousClock.Instant) {
        let nanoseconds = started.duration(to: .now).wholeNanoseconds
        seriesLock.withLock { series }?.recordFailure(operation, nanoseconds: nanoseconds)
    }

    /// Puts `new` in place and returns the series it replaced (for the caller to destroy).
    func swap(_ new: VolumeIOSeries?) -> VolumeIOSeries? {
        seriesLock.withLock {
            defer { series = new }
            return series
        }
    }
}

/// The meters' life: made when a connection first opens a volume's export, renamed by
/// `VolumeRenamed`, retired by `VolumeRemoved`, and checked against the state at each scrape.
/// A series name is never held twice: the registry would hand the same objects to both, and
/// destroying one would take the other's out of the export.
extension DaemonMetrics {
    /// The meter of volume `volume`, called `name` (from the state the export was opened in).
    func hostIOMeter(volume: VolumeID, name: String) -> VolumeIOMeter {
        metersLock.withLock {
            if let meter = meters[volume] {
                if meter.volumeName != name { renameLocked(meter, to: name) }
                return meter
            }
            releaseNameLocked(name, except: volume)
            let meter = VolumeIOMeter(volumeID: volume, series: VolumeIOSeries(volumeName: name, factory: factory))
            meters[volume] = meter
            return meter
        }
    }

    /// Volume `volume` was removed: its series leave the export.
    func retireMeter(_ volume: VolumeID) {
        metersLock.withLock {
            meters.removeValue(forKey: volume).flatMap { $0.swap(nil) }?.destroy()
        }
    }

    /// Volume `volume` is now called `name`: its series start again from 0 under that name.
    func renameMeter(_ volume: VolumeID, to name: String) {
        metersLock.withLock {
            if let meter = meters[volume] { renameLocked(meter, to: name) }
        }
    }

    /// Retires the meters of volumes the state no longer holds and renames the others as it
    /// says (a connection may have opened an export just as its volume was removed or renamed).
    func reconcileMeters(with state: ControllerState) {
        metersLock.withLock {
            for (volume, meter) in meters where state.volumes[volume] == nil {
                meters[volume] = nil
                meter.swap(nil)?.destroy()
            }
            for (volume, meter) in meters {
                if let name = state.volumes[volume]?.name, meter.volumeName != name { renameLocked(meter, to: name) }
            }
        }
    }

    private func renameLocked(_ meter: VolumeIOMeter, to name: String) {
        precondition(!metersLock.try(), "renameLocked needs metersLock held")
        meter.swap(nil)?.destroy()
        releaseNameLocked(name, except: meter.volumeID)
        _ = meter.swap(VolumeIOSeries(volumeName: name, factory: factory))
    }

    /// Retires any other meter whose series carry `name` (a volume removed or renamed before
    /// its event reached us).
    private func releaseNameLocked(_ name: String, except volume: VolumeID) {
        for (other, meter) in meters where other != volume && meter.volumeName == name {
            meters[other] = nil
            meter.swap(nil)?.destroy()
        }
    }
}
