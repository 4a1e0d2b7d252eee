import Foundation
import SnapbackCore
import SnapbackData

/// The anomaly detector in the data path (`Specs/detection.md`, "Sampling"; `Specs/data-plane.md`,
/// "Anomaly detection in the data path"): host writes to a volume with detection on are sampled,
/// one 4 KiB block per ``Controller/sampleEveryBytes`` written; a block's entropy is compared with
/// what it overwrote, read just before the write (usually from the page cache). Only acknowledged
/// writes count. Nothing here allocates per write: the samples are a value and their entropies live
/// on the stack. Every second the interval is closed and the pure ``detect(_:_:sensitivity:)``
/// decides; a verdict is committed as `reportAnomaly`, the baseline every minute as
/// `recordDetectorBaseline`.
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

    /// The blocks of one write that the detector samples: `count` blocks of `blockBytes`, spread
    /// evenly over the `slots` whole blocks of the write. A value, so sampling allocates nothing.
    struct SampledBlocks: Sendable, Equatable {
        /// No block sampled.
        static let none = SampledBlocks(count: 0, slots: 1, blockBytes: 0)

        let count: Int
        let slots: Int
        let blockBytes: Int

        var isEmpty: Bool { count == 0 }

        /// The offset within the write of the `index`-th sampled block, `0..<count`.
        func offset(_ index: Int) -> Int {
            precondition(index >= 0 && index < count, "sample \(index) of \(count)")
            return (index * slots / count) * blockBytes
        }

        /// The `index`-th sampled block of `bytes`, the write's bytes.
        func block(_ index: Int, of bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
            let start = offset(index)
            return UnsafeRawBufferPointer(rebasing: bytes[start..<start + blockBytes])
        }
    }

    /// The entropies of one write's sampled blocks, on the stack: what each block overwrote
    /// (``unknownBitsPerByte`` when not read) and what the write put there.
    struct SampleEntropies {
        /// An old entropy that is not known: the sample counts without one.
        static let unknownBitsPerByte = -1.0

        let old: UnsafeMutableBufferPointer<Double>
        let new: UnsafeMutableBufferPointer<Double>

        /// Runs `body` with room for the entropies of `samples` (old ones unknown, new ones 0).
        static func with<R, E: Error>(_ samples: SampledBlocks, _ body: (SampleEntropies) throws(E) -> R) throws(E) -> R {
            try with(count: samples.count, body)
        }

        /// Runs `body` with room for the entropies of `count` sampled blocks.
        static func with<R, E: Error>(count: Int, _ body: (SampleEntropies) throws(E) -> R) throws(E) -> R {
            let result = withUnsafeTemporaryAllocation(of: Double.self, capacity: max(1, 2 * count)) { room in
                room.initialize(repeating: 0)
                let entropies = SampleEntropies(
                    old: UnsafeMutableBufferPointer(rebasing: room[0..<count]), new: UnsafeMutableBufferPointer(rebasing: room[count..<2 * count]))
                entropies.old.update(repeating: unknownBitsPerByte)
                return Result { () throws(E) -> R in try body(entropies) }
            }
            return try result.get()
        }

        /// The entropies of the sampled blocks `range` (one write's, in a batch's room).
        subscript(range: Range<Int>) -> SampleEntropies {
            SampleEntropies(old: UnsafeMutableBufferPointer(rebasing: old[range]), new: UnsafeMutableBufferPointer(rebasing: new[range]))
        }
    }

    /// Reserves the samples of a host write of `length` bytes about to be made: advances the
    /// volume's sample counter by the write, so that concurrent writes sample where they would one
    /// after another. The write then ends in ``countWrite(_:length:_:_:)`` when it is acknowledged,
    /// or in ``releaseSamples(_:length:)`` when it is not: the detector counts only acknowledged
    /// writes. A write under 512 bytes is not sampled.
    func reserveSamples(_ detector: VolumeDetector, length: Int) -> SampledBlocks {
        guard length >= 512 else { return .none }
        let count = detector.lock.withLock { () -> UInt64 in
            let after = detector.sinceSample + UInt64(length)
            detector.sinceSample = after % Self.sampleEveryBytes
            return after / Self.sampleEveryBytes
        }
        guard count > 0 else { return .none }
        let blockBytes = min(Self.sampleBytes, length)
        let slots = max(1, length / blockBytes)
        return SampledBlocks(count: Int(min(count, UInt64(slots))), slots: slots, blockBytes: blockBytes)
    }

    /// Gives back what ``reserveSamples(_:length:)`` took for a write that was not acknowledged
    /// (refused, failed, or to be made again by another path). The counter is the sum of the
    /// writes modulo the stride, so giving back commutes with concurrent reservations.
    func releaseSamples(_ detector: VolumeDetector, length: Int) {
        guard length >= 512 else { return }
        let stride = Self.sampleEveryBytes
        detector.lock.withLock {
            detector.sinceSample = (detector.sinceSample + stride - UInt64(length) % stride) % stride
        }
    }

    /// Measures what the sampled blocks of a write at `writeOffset` overwrite, as `store` holds
    /// them now, into `entropies.old`: one read of each block (4 KiB per 64 KiB written) into one
    /// buffer on the stack, nearly always from the page cache (a copy-on-write has just read the
    /// grain; an encryptor, a database or an editor read what they rewrite). A block that cannot
    /// be read stays unknown. Must hold the volume's gate, before the write.
    func measureOverwritten(_ store: BlockStore, writeOffset: UInt64, _ samples: SampledBlocks, into entropies: SampleEntropies) {
        guard !samples.isEmpty else { return }
        withUnsafeTemporaryAllocation(byteCount: samples.blockBytes, alignment: 16) { block in
            for index in 0..<samples.count {
                do throws(BlockStoreError) {
                    try store.read(at: writeOffset + UInt64(samples.offset(index)), into: block)
                } catch {
                    continue  // Not known: the sample counts without an old value.
                }
                entropies.old[index] = ByteEntropy.bitsPerByte(UnsafeRawBufferPointer(block))
            }
        }
    }

    /// Measures the sampled blocks of `bytes`, a write's bytes, into `entropies.new`.
    func measureWritten(_ bytes: UnsafeRawBufferPointer, _ samples: SampledBlocks, into entropies: SampleEntropies) {
        for index in 0..<samples.count { entropies.new[index] = ByteEntropy.bitsPerByte(samples.block(index, of: bytes)) }
    }

    /// Counts an acknowledged host write of `length` bytes: its bytes, and its sampled blocks
    /// with the entropies measured (``measureWritten(_:_:into:)``, and the old ones where known).
    /// Only counters change under the detector's lock.
    func countWrite(_ detector: VolumeDetector, length: Int, _ samples: SampledBlocks, _ entropies: SampleEntropies) {
        detector.lock.withLock {
            detector.interval.addBytes(UInt64(length))
            for index in 0..<samples.count {
                let old = entropies.old[index]
                detector.interval.addSample(
                    newBitsPerByte: entropies.new[index], oldBitsPerByte: old == SampleEntropies.unknownBitsPerByte ? nil : old)
            }
        }
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
