import Foundation
import SnapbackCore
import SnapbackData

/// The anomaly detector in the data path (`Specs/detection.md`, "Sampling"): host writes to a
/// volume with detection on are sampled, one 4 KiB block per ``Controller/sampleEveryBytes``
/// written; a block's entropy is compared with what it overwrote when a copy-on-write has just
/// read that grain (the first write to a grain after a start: the old bytes are in the cache).
/// Every second the interval is closed and the pure ``detect(_:_:sensitivity:)`` decides; a
/// verdict is committed as `reportAnomaly`, the baseline every minute as `recordDetectorBaseline`.
extension Controller {
    /// One volume's detector: the interval being filled and the decision state. Its own lock:
    /// plain writes sample it outside the controller's lock.
    final class VolumeDetector: @unchecked Sendable {
        let lock = NSLock()
        var interval: IntervalStatistics
        var state: DetectorState
        var sensitivity: DetectionSensitivity
        /// Bytes written since the last sample (modulo ``Controller/sampleEveryBytes``).
        var sinceSample: UInt64 = 0
        /// Intervals closed since the baseline was last saved.
        var intervalsSinceSave = 0
        /// A verdict whose commit failed (the log could not record it): committed again at the
        /// next tick, until it is recorded or refused. The detector fires once per departure, so
        /// it must not be lost.
        var pendingVerdict: DetectionVerdict?

        init(state: DetectorState, sensitivity: DetectionSensitivity, now: Int64) {
            self.state = state
            self.sensitivity = sensitivity
            interval = IntervalStatistics(startMilliseconds: now)
        }
    }

    /// One sampled block per this many bytes written (the first block of a write is sampled
    /// when the count crosses it).
    public static let sampleEveryBytes: UInt64 = 64 << 10
    /// A sampled block's size.
    static let sampleBytes = 4096
    /// How often a volume's baseline is saved in the log, in intervals.
    static let baselineSaveIntervals = 60

    /// The detector of `volume`, if detection is on.
    func detector(_ volume: VolumeID) -> VolumeDetector? {
        detectorsLock.withLock { detectors[volume] }
    }

    /// Makes the detectors match the state after `event` (under the lock, in `applyCommitted`).
    func updateDetectorsLocked(after event: Event) {
        switch event {
        case let .volumeDetectionChanged(id, enabled, sensitivity):
            detectorsLock.withLock {
                if !enabled {
                    detectors[id] = nil
                } else if let detector = detectors[id] {
                    detector.lock.withLock { detector.sensitivity = sensitivity }
                } else {
                    let baseline = committed.volumes[id]?.detectorBaseline ?? DetectorBaseline()
                    detectors[id] = VolumeDetector(state: DetectorState(baseline: baseline), sensitivity: sensitivity, now: clock())
                }
            }
        case let .volumeRemoved(id):
            detectorsLock.withLock { detectors[id] = nil }
        default:
            break
        }
    }

    /// The detectors of the volumes the state says watch their writes (at start-up).
    func startDetectorsLocked() {
        detectorsLock.withLock {
            for volume in committed.volumesByID where volume.detect {
                detectors[volume.id] = VolumeDetector(
                    state: DetectorState(baseline: volume.detectorBaseline ?? DetectorBaseline()), sensitivity: volume.sensitivity, now: clock())
            }
        }
    }

    /// The offsets (within a write of `length` bytes) of the blocks to sample, or none.
    func sampleOffsets(_ detector: VolumeDetector, length: Int) -> [Int] {
        detector.lock.withLock {
            detector.interval.addBytes(UInt64(length))
            guard length >= 512 else { return [] }
            let before = detector.sinceSample
            let after = before + UInt64(length)
            detector.sinceSample = after % Self.sampleEveryBytes
            let count = Int(after / Self.sampleEveryBytes)
            guard count > 0 else { return [] }
            // Evenly spread over the write, each a whole block inside it.
            let block = min(Self.sampleBytes, length)
            let slots = max(1, length / block)
            return (0..<min(count, slots)).map { ($0 * slots / min(count, slots)) * block }
        }
    }

    /// Counts the sampled blocks of a write of `bytes`: their entropy, and (`old`) the entropy of
    /// what each overwrote, where known.
    func recordSamples(_ detector: VolumeDetector, _ offsets: [Int], _ bytes: UnsafeRawBufferPointer, old: [Int: Double] = [:]) {
        guard !offsets.isEmpty else { return }
        let entropies = offsets.map { offset in
            ByteEntropy.bitsPerByte(UnsafeRawBufferPointer(rebasing: bytes[offset..<min(bytes.count, offset + Self.sampleBytes)]))
        }
        detector.lock.withLock {
            for (offset, entropy) in zip(offsets, entropies) {
                detector.interval.addSample(newBitsPerByte: entropy, oldBitsPerByte: old[offset])
            }
        }
    }

    /// The entropy of the blocks at `offsets` of a write at `writeOffset` as `store` holds them
    /// now, before the write replaces them: one read of 4 KiB per sampled block (64 KiB written),
    /// nearly always from the page cache (a copy-on-write has just read the grain; an encryptor,
    /// a database or an editor read what they rewrite). Must hold the volume's gate.
    func overwrittenEntropies(_ store: BlockStore, writeOffset: UInt64, _ offsets: [Int], length: Int) -> [Int: Double] {
        guard !offsets.isEmpty else { return [:] }
        var result: [Int: Double] = [:]
        var buffer = [UInt8](repeating: 0, count: Self.sampleBytes)
        for offset in offsets {
            let position = writeOffset + UInt64(offset)
            let count = min(Self.sampleBytes, length - offset)
            do throws(BlockStoreError) {
                try store.read(at: position, into: &buffer, range: 0..<count)
            } catch {
                continue  // Not known: the sample counts without an old value.
            }
            result[offset] = buffer.withUnsafeBytes { ByteEntropy.bitsPerByte(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return result
    }

    /// Closes every detector's interval that has run its second, runs the decision, and commits
    /// what it found: an anomaly (`reportAnomaly`) or, every minute, the baseline.
    func tickDetectors() {
        let now = clock()
        let watched = detectorsLock.withLock { detectors }
        for (volumeID, detector) in watched.sorted(by: { $0.key < $1.key }) {
            let (verdict, save) = detector.lock.withLock { () -> (DetectionVerdict?, DetectorBaseline?) in
                guard now - detector.interval.startMilliseconds >= DetectionLimits.intervalMilliseconds else {
                    return (detector.pendingVerdict, nil)
                }
                let closed = detector.interval
                detector.interval = IntervalStatistics(startMilliseconds: now)
                let (next, verdict) = detect(detector.state, closed, sensitivity: detector.sensitivity)
                detector.state = next
                if let verdict { detector.pendingVerdict = verdict }
                detector.intervalsSinceSave += 1
                guard detector.intervalsSinceSave >= Self.baselineSaveIntervals else { return (detector.pendingVerdict, nil) }
                detector.intervalsSinceSave = 0
                return (detector.pendingVerdict, next.baseline)
            }
            if let verdict {
                // Recorded or refused (the volume faulted meanwhile, detection turned off): done.
                // A failed commit keeps it for the next tick.
                if commitDetector(volumeID, .reportAnomaly(volume: volumeID, verdict: verdict), holding: [volumeID]) {
                    detector.lock.withLock { if detector.pendingVerdict == verdict { detector.pendingVerdict = nil } }
                }
            }
            if let save, save != committedBaseline(volumeID) {
                // It changes no byte and no map: it holds no gate, and host I/O goes on.
                _ = commitDetector(volumeID, .recordDetectorBaseline(volume: volumeID, baseline: save), holding: [])
            }
        }
    }

    private func committedBaseline(_ volumeID: VolumeID) -> DetectorBaseline? {
        locked { committed.volumes[volumeID]?.detectorBaseline }
    }

    /// Commits a detector's command holding the family of `volumes`. Returns false when the
    /// commit failed (the background waits for its backoff); a refusal (the volume was faulted or
    /// its detection turned off meanwhile) changes nothing and counts as done.
    private func commitDetector(_ volumeID: VolumeID, _ command: Command, holding volumes: Set<VolumeID>) -> Bool {
        exclusive(volumes: { volumes }) {
            do throws(ControllerError) {
                _ = try commitLocked(command)
                return true
            } catch {
                if case .rejected = error { return true }
                backgroundBackoff.failed(at: clock())
                return false
            }
        }
    }

    /// The current anomaly score of `volume` (0–100), or `nil` without detection.
    public func anomalyScore(of volume: VolumeID) -> Int? {
        detector(volume).map { detector in detector.lock.withLock { detector.state.score } }
    }
}
