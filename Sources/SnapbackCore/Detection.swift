/// Entropy-based ransomware detection: the pure core (`Specs/detection.md` is normative).
///
/// The data plane measures sampled blocks with ``ByteEntropy`` and folds each second of a volume's
/// writes into an ``IntervalStatistics``; the controller passes it to ``detect(_:_:sensitivity:)``,
/// which returns the next ``DetectorState`` and, once per sustained departure from the volume's
/// ``DetectorBaseline``, a ``DetectionVerdict``. Nothing here reads a clock, a random source or a
/// file: times come in with the intervals, and all the decision arithmetic is integer (parts per
/// million), so a replay of the same intervals gives the same states bit for bit.

// MARK: - Sensitivity

/// How readily the detector fires. Higher sensitivity needs a shorter and a smaller sustained
/// departure, and at `high` a surge of high-entropy writes can fire without overwrite evidence;
/// it trades false alarms for detection delay (`Specs/detection.md`, "Sensitivity").
/// Encoded as its raw value.
public enum DetectionSensitivity: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case low = 0
    case medium = 1
    case high = 2

    /// Parses the CLI's spelling (`low`, `medium`, `high`); `nil` for anything else.
    public init?(name: String) {
        switch name {
        case "low": self = .low
        case "medium": self = .medium
        case "high": self = .high
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .low: "low"
        case .medium: "medium"
        case .high: "high"
        }
    }

    /// Anomalous intervals in a row (each 1 s) that fire a verdict.
    public var streakIntervalsRequired: Int {
        switch self {
        case .low: 5
        case .medium: 3
        case .high: 2
        }
    }

    /// The smallest entropy-increase share that can reach the threshold, in parts per million,
    /// whatever the baseline.
    public var increaseShareFloorPartsPerMillion: Int64 {
        switch self {
        case .low: 500_000
        case .medium: 300_000
        case .high: 200_000
        }
    }

    /// How many mean absolute deviations of the baseline a share must exceed its mean by.
    public var deviationMultiplier: Int64 {
        switch self {
        case .low: 6
        case .medium: 4
        case .high: 3
        }
    }

    /// The weight of the high-entropy departure in an interval's departure, in parts per million.
    /// Below one million it cannot make an interval anomalous alone.
    public var highEntropyWeightPartsPerMillion: Int64 {
        switch self {
        case .low: 250_000
        case .medium: 500_000
        case .high: 1_000_000
        }
    }
}

// MARK: - Limits

/// The detector's fixed thresholds and bounds. `Specs/detection.md` explains each.
public enum DetectionLimits {
    /// The unit of every share and departure: one million parts per million.
    public static let partsPerMillion: Int64 = 1_000_000
    /// An interval with fewer sampled blocks is ignored: not judged, not learned.
    public static let sampledBlocksMin: UInt32 = 16
    /// The entropy-increase share of an interval counts only with this many overwrite samples.
    public static let overwriteSamplesMin: UInt32 = 8
    /// A share is judged against its learned mean only after this many learned intervals; before,
    /// only the absolute rule for entropy increases applies.
    public static let learnedIntervalsMin: UInt32 = 30
    /// The exponential weighting: the k-th learned interval weighs 1/k until k reaches this, then
    /// 1/this (a time constant of 128 learned seconds).
    public static let learningWeightIntervalsMax: UInt32 = 128
    /// The smallest departure above the baseline mean that can be anomalous (parts per million).
    public static let departureFloorPartsPerMillion: Int64 = 200_000
    /// Without a learned baseline, the entropy-increase share that is anomalous at any sensitivity
    /// (the sensitivity's floor applies when higher).
    public static let increaseShareWithoutBaselinePartsPerMillion: Int64 = 500_000
    /// The smallest high-entropy share that can reach the threshold, whatever the baseline.
    public static let highEntropyShareFloorPartsPerMillion: Int64 = 500_000
    /// The high-entropy departure weighs fully only when an interval writes at least the baseline's
    /// mean bytes per interval, and never less than this.
    public static let bytesReferenceMin: UInt64 = 1 << 20
    /// Bytes of one interval above this are counted as this (it keeps the arithmetic in range).
    public static let bytesPerIntervalMax: UInt64 = 1 << 40
    /// The recent intervals a state keeps, for the onset look-back.
    public static let recentIntervalsMax = 30
    /// The anomalous intervals of a streak kept as a verdict's evidence.
    public static let evidenceIntervalsMax = 8
    /// Two anomalous intervals further apart than this do not belong to one streak.
    public static let streakGapMillisecondsMax: Int64 = 3_000
    /// After a verdict, another can fire only once an interval starts this long after the last
    /// anomalous one.
    public static let rearmMilliseconds: Int64 = 10_000
    /// The length of an interval the controller reports; the onset is one interval before the
    /// first departing interval, so that a first write just before it is covered.
    public static let intervalMilliseconds: Int64 = 1_000
}

// MARK: - Byte entropy

/// Shannon entropy of a block's byte histogram, in bits per byte (0 for a block of one repeated
/// byte, 8 for a perfectly uniform histogram).
///
/// Measured on 4 KiB blocks (`Specs/detection.md`, "Entropy"): random and AES-CTR ciphertext
/// 7.94–7.97, gzip/zstd/xz of text 7.62–7.96 (median 7.95), JPEG/PNG median 7.79, text
/// 4.0–5.4, database pages 6.2–6.3, base64 of random 5.99, executables 2.3–2.8, zero pages 0.
public enum ByteEntropy {
    /// At or above: high entropy (encrypted, compressed or media data). Chosen well below the
    /// 7.94 minimum of random 4 KiB blocks and above every plain format measured.
    public static let highBitsPerByte = 7.2
    /// Below (and at or above ``emptyBitsPerByte``): plain data whose overwrite by high-entropy
    /// data is an entropy increase. At least 0.9 bits/byte under ciphertext's 7.95.
    public static let plainBitsPerByte = 7.0
    /// Below: an empty block (zeros, or a few hundred bytes of content in zeros), whose overwrite
    /// is filling free space, not an overwrite of data.
    public static let emptyBitsPerByte = 1.0

    /// The entropy of `bytes` in bits per byte, 0...8; 0 for an empty buffer. One pass over the
    /// bytes, eight at a time, into four interleaved 256-counter histograms on the stack (so that
    /// consecutive equal bytes do not wait on one counter), then a sum over the merged counters
    /// with a table of `c·log2(c)` for counts up to 4096. No heap allocation. The counts, the
    /// order of the sum and so the result are exactly those of one plain histogram.
    public static func bitsPerByte(_ bytes: UnsafeRawBufferPointer) -> Double {
        let count = bytes.count
        guard count > 0, let start = bytes.baseAddress else { return 0 }
        precondition(count <= Int(UInt32.max), "a block of \(count) bytes is too large to measure")
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 4 * 256) { counters in
            counters.initialize(repeating: 0)
            let counts = counters.baseAddress!
            let words = count / 8
            for index in 0..<words {
                let word = UInt64(littleEndian: start.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
                counts[Int(truncatingIfNeeded: word & 0xFF)] &+= 1
                counts[256 + Int(truncatingIfNeeded: (word >> 8) & 0xFF)] &+= 1
                counts[512 + Int(truncatingIfNeeded: (word >> 16) & 0xFF)] &+= 1
                counts[768 + Int(truncatingIfNeeded: (word >> 24) & 0xFF)] &+= 1
                counts[Int(truncatingIfNeeded: (word >> 32) & 0xFF)] &+= 1
                counts[256 + Int(truncatingIfNeeded: (word >> 40) & 0xFF)] &+= 1
                counts[512 + Int(truncatingIfNeeded: (word >> 48) & 0xFF)] &+= 1
                counts[768 + Int(truncatingIfNeeded: word >> 56)] &+= 1
            }
            for index in (words * 8)..<count { counts[Int(start.load(fromByteOffset: index, as: UInt8.self))] &+= 1 }
            // H = -Σ p·log2(p) with p = c/n is log2(n) - Σ c·log2(c) / n.
            let sum = countLog2CountTable.withUnsafeBufferPointer { table in
                var sum = 0.0
                for value in 0..<256 {
                    let merged = Int(counts[value]) + Int(counts[256 + value]) + Int(counts[512 + value]) + Int(counts[768 + value])
                    guard merged != 0 else { continue }
                    sum += merged <= tableCountMax ? table[merged] : Double(merged) * log2(Double(merged))
                }
                return sum
            }
            let bits = countLog2Count(count) / Double(count) - sum / Double(count)
            return min(8, max(0, bits))
        }
    }

    /// The entropy of `bytes` in bits per byte (see ``bitsPerByte(_:)-(UnsafeRawBufferPointer)``).
    public static func bitsPerByte(_ bytes: [UInt8]) -> Double {
        bytes.withUnsafeBytes { bitsPerByte($0) }
    }

    /// The largest count the table covers: a 4 KiB block.
    static let tableCountMax = 4096

    /// `c·log2(c)` for c in 0...4096 (0 for c = 0).
    static let countLog2CountTable: [Double] = (0...tableCountMax).map { $0 == 0 ? 0 : Double($0) * log2(Double($0)) }

    static func countLog2Count(_ count: Int) -> Double {
        count <= tableCountMax ? countLog2CountTable[count] : Double(count) * log2(Double(count))
    }

    /// log2 of a positive finite `x`, computed with IEEE arithmetic only (no C library), so it is
    /// the same on every platform: x = m·2^e, then ln(m) = 2·atanh((m-1)/(m+1)) by its series.
    static func log2(_ x: Double) -> Double {
        precondition(x > 0 && x.isFinite, "log2 of \(x)")
        var exponent = Double(x.exponent)
        var significand = x.significand  // 1 ≤ m < 2
        if significand > 1.4142135623730951 {
            significand /= 2
            exponent += 1
        }
        // |z| < 0.1716, so 16 odd terms leave an error below 1e-25.
        let z = (significand - 1) / (significand + 1)
        let zSquared = z * z
        var power = z
        var sum = 0.0
        var denominator = 1.0
        for _ in 0..<16 {
            sum += power / denominator
            power *= zSquared
            denominator += 2
        }
        return exponent + 2 * sum * 1.4426950408889634  // 1 / ln 2
    }
}

// MARK: - Interval statistics

/// One interval (1 s) of a volume's writes as the data plane saw them. Counts of sampled 4 KiB
/// blocks: every high-entropy block and every overwrite sample is a sampled block, every entropy
/// increase is both an overwrite sample and a high-entropy block.
public struct IntervalStatistics: Sendable, Equatable {
    /// When the interval began, in milliseconds since the Unix epoch (the controller's clock, the
    /// one image start times use).
    public var startMilliseconds: Int64
    /// Bytes the hosts wrote to the volume in the interval.
    public var bytesWritten: UInt64
    /// Blocks whose entropy was measured.
    public var sampledBlocks: UInt32
    /// Sampled blocks at or above ``ByteEntropy/highBitsPerByte``.
    public var highEntropyBlocks: UInt32
    /// Sampled blocks whose previous content was known (the old grain at copy-on-write) and held
    /// data: at or above ``ByteEntropy/emptyBitsPerByte``.
    public var overwriteSamples: UInt32
    /// Overwrite samples whose previous content was plain (below ``ByteEntropy/plainBitsPerByte``)
    /// and whose new content is high-entropy.
    public var entropyIncreases: UInt32

    /// An interval with the given counts. The counts must be consistent (see the type).
    public init(
        startMilliseconds: Int64, bytesWritten: UInt64 = 0, sampledBlocks: UInt32 = 0, highEntropyBlocks: UInt32 = 0,
        overwriteSamples: UInt32 = 0, entropyIncreases: UInt32 = 0
    ) {
        self.startMilliseconds = startMilliseconds
        self.bytesWritten = bytesWritten
        self.sampledBlocks = sampledBlocks
        self.highEntropyBlocks = highEntropyBlocks
        self.overwriteSamples = overwriteSamples
        self.entropyIncreases = entropyIncreases
        precondition(isConsistent, "inconsistent interval counts: \(self)")
    }

    /// Whether the counts nest as the type requires.
    public var isConsistent: Bool {
        highEntropyBlocks <= sampledBlocks && overwriteSamples <= sampledBlocks && entropyIncreases <= overwriteSamples
            && entropyIncreases <= highEntropyBlocks
    }

    /// Counts one sampled block: its new entropy, and its previous entropy when known (`nil` when
    /// the write was not a copy-on-write of the grain). Previous content below
    /// ``ByteEntropy/emptyBitsPerByte`` is free space being filled, not an overwrite sample.
    public mutating func addSample(newBitsPerByte: Double, oldBitsPerByte: Double?) {
        precondition((0...8).contains(newBitsPerByte), "entropy \(newBitsPerByte) out of range")
        sampledBlocks += 1
        let high = newBitsPerByte >= ByteEntropy.highBitsPerByte
        if high { highEntropyBlocks += 1 }
        guard let oldBitsPerByte else { return }
        precondition((0...8).contains(oldBitsPerByte), "entropy \(oldBitsPerByte) out of range")
        guard oldBitsPerByte >= ByteEntropy.emptyBitsPerByte else { return }
        overwriteSamples += 1
        if high && oldBitsPerByte < ByteEntropy.plainBitsPerByte { entropyIncreases += 1 }
    }

    /// Counts `count` bytes written by hosts.
    public mutating func addBytes(_ count: UInt64) {
        bytesWritten += count
    }

    /// The share of sampled blocks that are high-entropy, 0...1 (0 without samples).
    public var highEntropyShare: Double {
        sampledBlocks == 0 ? 0 : Double(highEntropyBlocks) / Double(sampledBlocks)
    }

    /// The share of overwrite samples that are entropy increases, 0...1 (0 without overwrites).
    public var increaseShare: Double {
        overwriteSamples == 0 ? 0 : Double(entropyIncreases) / Double(overwriteSamples)
    }

    /// ``highEntropyShare`` in parts per million, rounded down.
    public var highEntropySharePartsPerMillion: Int64 {
        sampledBlocks == 0 ? 0 : Int64(highEntropyBlocks) * DetectionLimits.partsPerMillion / Int64(sampledBlocks)
    }

    /// ``increaseShare`` in parts per million, rounded down.
    public var increaseSharePartsPerMillion: Int64 {
        overwriteSamples == 0 ? 0 : Int64(entropyIncreases) * DetectionLimits.partsPerMillion / Int64(overwriteSamples)
    }

    /// Bytes written, capped at ``DetectionLimits/bytesPerIntervalMax``.
    var bytesWrittenCapped: Int64 { Int64(min(bytesWritten, DetectionLimits.bytesPerIntervalMax)) }
}

// MARK: - Baseline

/// What a volume's writes normally look like: exponentially weighted means and mean absolute
/// deviations of the high-entropy share and of the entropy-increase share, in parts per million,
/// and of the bytes written per interval. Learned only from intervals that were judged normal.
/// Persisted as an event payload (``encoded()``), exactly: a decoded baseline equals the original.
public struct DetectorBaseline: Sendable, Equatable {
    /// Intervals learned (with enough sampled blocks), saturating at `UInt32.max`.
    public private(set) var learnedIntervals: UInt32
    /// Of those, intervals with enough overwrite samples to learn the entropy-increase share.
    public private(set) var learnedOverwriteIntervals: UInt32
    /// The mean high-entropy share, parts per million.
    public private(set) var highEntropyShareMeanPartsPerMillion: UInt32
    /// The mean absolute deviation of the high-entropy share from its mean, parts per million.
    public private(set) var highEntropyShareDeviationPartsPerMillion: UInt32
    /// The mean entropy-increase share, parts per million.
    public private(set) var increaseShareMeanPartsPerMillion: UInt32
    /// The mean absolute deviation of the entropy-increase share, parts per million.
    public private(set) var increaseShareDeviationPartsPerMillion: UInt32
    /// The mean bytes written per learned interval.
    public private(set) var bytesWrittenMean: UInt64

    /// A baseline that has learned nothing.
    public init() {
        self.init(
            learnedIntervals: 0, learnedOverwriteIntervals: 0, highEntropyShareMeanPartsPerMillion: 0,
            highEntropyShareDeviationPartsPerMillion: 0, increaseShareMeanPartsPerMillion: 0,
            increaseShareDeviationPartsPerMillion: 0, bytesWrittenMean: 0)
    }

    /// A baseline with the given fields. Shares and deviations must be at most one million,
    /// overwrite intervals at most the intervals, the mean bytes at most
    /// ``DetectionLimits/bytesPerIntervalMax``.
    public init(
        learnedIntervals: UInt32, learnedOverwriteIntervals: UInt32, highEntropyShareMeanPartsPerMillion: UInt32,
        highEntropyShareDeviationPartsPerMillion: UInt32, increaseShareMeanPartsPerMillion: UInt32,
        increaseShareDeviationPartsPerMillion: UInt32, bytesWrittenMean: UInt64
    ) {
        self.learnedIntervals = learnedIntervals
        self.learnedOverwriteIntervals = learnedOverwriteIntervals
        self.highEntropyShareMeanPartsPerMillion = highEntropyShareMeanPartsPerMillion
        self.highEntropyShareDeviationPartsPerMillion = highEntropyShareDeviationPartsPerMillion
        self.increaseShareMeanPartsPerMillion = increaseShareMeanPartsPerMillion
        self.increaseShareDeviationPartsPerMillion = increaseShareDeviationPartsPerMillion
        self.bytesWrittenMean = bytesWrittenMean
        precondition(isValid, "invalid detector baseline: \(self)")
    }

    /// Whether every field is in its domain (see the initializer).
    var isValid: Bool {
        let shareMax = UInt32(DetectionLimits.partsPerMillion)
        return learnedOverwriteIntervals <= learnedIntervals
            && highEntropyShareMeanPartsPerMillion <= shareMax && highEntropyShareDeviationPartsPerMillion <= shareMax
            && increaseShareMeanPartsPerMillion <= shareMax && increaseShareDeviationPartsPerMillion <= shareMax
            && bytesWrittenMean <= DetectionLimits.bytesPerIntervalMax
    }

    /// Folds a normal interval into the means. The caller checked it has enough sampled blocks.
    mutating func learn(_ interval: IntervalStatistics) {
        precondition(interval.sampledBlocks >= DetectionLimits.sampledBlocksMin)
        if learnedIntervals < UInt32.max { learnedIntervals += 1 }
        let weight = Int64(min(learnedIntervals, DetectionLimits.learningWeightIntervalsMax))
        Self.fold(
            interval.highEntropySharePartsPerMillion, weight: weight, mean: &highEntropyShareMeanPartsPerMillion,
            deviation: &highEntropyShareDeviationPartsPerMillion)
        let bytes = interval.bytesWrittenCapped
        let bytesMean = Int64(bytesWrittenMean)
        bytesWrittenMean = UInt64(weight == 1 ? bytes : bytesMean + (bytes - bytesMean) / weight)
        guard interval.overwriteSamples >= DetectionLimits.overwriteSamplesMin else { return }
        if learnedOverwriteIntervals < UInt32.max { learnedOverwriteIntervals += 1 }
        let overwriteWeight = Int64(min(learnedOverwriteIntervals, DetectionLimits.learningWeightIntervalsMax))
        Self.fold(
            interval.increaseSharePartsPerMillion, weight: overwriteWeight, mean: &increaseShareMeanPartsPerMillion,
            deviation: &increaseShareDeviationPartsPerMillion)
    }

    /// mean += (x - mean) / w; deviation += (|x - old mean| - deviation) / w; the first value
    /// (w = 1) sets the mean and a deviation of 0. Integer division rounds toward zero.
    private static func fold(_ value: Int64, weight: Int64, mean: inout UInt32, deviation: inout UInt32) {
        guard weight > 1 else {
            mean = UInt32(value)
            deviation = 0
            return
        }
        let oldMean = Int64(mean)
        let oldDeviation = Int64(deviation)
        mean = UInt32(oldMean + (value - oldMean) / weight)
        deviation = UInt32(oldDeviation + (abs(value - oldMean) - oldDeviation) / weight)
    }
}

// MARK: - Assessment of one interval

/// How far one interval departs from a baseline, in units of the threshold: one million parts per
/// million is exactly at the threshold.
public struct IntervalAssessment: Sendable, Equatable {
    /// Whether the interval has enough sampled blocks to be judged and learned.
    public var eligible: Bool
    /// The entropy-increase departure, 0...2,000,000 (0 without enough overwrite samples).
    public var increaseDeparturePartsPerMillion: Int64
    /// The high-entropy departure weighted by bytes written, 0...1,000,000 (0 without a learned
    /// baseline).
    public var highEntropyDeparturePartsPerMillion: Int64
    /// The interval's departure: the increase departure plus the high-entropy departure times the
    /// sensitivity's weight.
    public var departurePartsPerMillion: Int64

    /// Whether the interval is anomalous: eligible and at or past the threshold.
    public var anomalous: Bool { eligible && departurePartsPerMillion >= DetectionLimits.partsPerMillion }
}

/// Judges `interval` against `baseline` (`Specs/detection.md`, "Judging an interval").
public func assess(
    _ interval: IntervalStatistics, against baseline: DetectorBaseline, sensitivity: DetectionSensitivity
) -> IntervalAssessment {
    guard interval.sampledBlocks >= DetectionLimits.sampledBlocksMin else {
        return IntervalAssessment(
            eligible: false, increaseDeparturePartsPerMillion: 0, highEntropyDeparturePartsPerMillion: 0,
            departurePartsPerMillion: 0)
    }
    let increase =
        interval.overwriteSamples >= DetectionLimits.overwriteSamplesMin
        ? increaseDeparture(interval, baseline, sensitivity) : 0
    let high = highEntropyDeparture(interval, baseline, sensitivity)
    return IntervalAssessment(
        eligible: true, increaseDeparturePartsPerMillion: increase, highEntropyDeparturePartsPerMillion: high,
        departurePartsPerMillion: combined(increase, high, sensitivity))
}

private func combined(_ increase: Int64, _ high: Int64, _ sensitivity: DetectionSensitivity) -> Int64 {
    increase + high * sensitivity.highEntropyWeightPartsPerMillion / DetectionLimits.partsPerMillion
}

/// (x - mean) / (threshold - mean) in parts per million, clamped to 0...cap.
private func departure(_ value: Int64, mean: Int64, threshold: Int64, cap: Int64) -> Int64 {
    precondition(threshold > mean)
    let ratio = (value - mean) * DetectionLimits.partsPerMillion / (threshold - mean)
    return min(cap, max(0, ratio))
}

/// The increase share's mean and threshold: with enough learned overwrite intervals,
/// max(floor, mean + max(k·deviation, departure floor)); before, max(floor, 50 %) against a mean of 0.
func increaseShareThreshold(_ baseline: DetectorBaseline, _ sensitivity: DetectionSensitivity) -> (mean: Int64, threshold: Int64) {
    let floor = sensitivity.increaseShareFloorPartsPerMillion
    guard baseline.learnedOverwriteIntervals >= DetectionLimits.learnedIntervalsMin else {
        return (0, max(floor, DetectionLimits.increaseShareWithoutBaselinePartsPerMillion))
    }
    let mean = Int64(baseline.increaseShareMeanPartsPerMillion)
    let spread = sensitivity.deviationMultiplier * Int64(baseline.increaseShareDeviationPartsPerMillion)
    return (mean, max(floor, mean + max(spread, DetectionLimits.departureFloorPartsPerMillion)))
}

/// The high-entropy share's mean and threshold, `nil` without enough learned intervals:
/// max(50 %, mean + max(k·deviation, departure floor)).
func highEntropyShareThreshold(_ baseline: DetectorBaseline, _ sensitivity: DetectionSensitivity) -> (mean: Int64, threshold: Int64)? {
    guard baseline.learnedIntervals >= DetectionLimits.learnedIntervalsMin else { return nil }
    let mean = Int64(baseline.highEntropyShareMeanPartsPerMillion)
    let spread = sensitivity.deviationMultiplier * Int64(baseline.highEntropyShareDeviationPartsPerMillion)
    let threshold = max(
        DetectionLimits.highEntropyShareFloorPartsPerMillion, mean + max(spread, DetectionLimits.departureFloorPartsPerMillion))
    return (mean, threshold)
}

private func increaseDeparture(
    _ interval: IntervalStatistics, _ baseline: DetectorBaseline, _ sensitivity: DetectionSensitivity
) -> Int64 {
    let (mean, threshold) = increaseShareThreshold(baseline, sensitivity)
    return departure(interval.increaseSharePartsPerMillion, mean: mean, threshold: threshold, cap: 2 * DetectionLimits.partsPerMillion)
}

/// The high-entropy share's departure times min(1, bytes / max(mean bytes, 1 MiB)): a quiet
/// interval that happens to write a few high-entropy blocks weighs less than a surge.
private func highEntropyDeparture(
    _ interval: IntervalStatistics, _ baseline: DetectorBaseline, _ sensitivity: DetectionSensitivity
) -> Int64 {
    guard let (mean, threshold) = highEntropyShareThreshold(baseline, sensitivity) else { return 0 }
    let raw = departure(interval.highEntropySharePartsPerMillion, mean: mean, threshold: threshold, cap: DetectionLimits.partsPerMillion)
    let reference = Int64(max(baseline.bytesWrittenMean, DetectionLimits.bytesReferenceMin))
    let bytes = min(interval.bytesWrittenCapped, reference)
    // raw ≤ 10^6 and bytes ≤ 2^40: the product fits in 63 bits.
    return raw * bytes / reference
}

/// Whether an interval before a streak already departed, ignoring the sample minimums (used only
/// to place the onset): its entropy increases are at least half way to the threshold; or, when it
/// has too few overwrite samples to tell, its weighted high-entropy departure is.
private func departing(_ interval: IntervalStatistics, _ baseline: DetectorBaseline, _ sensitivity: DetectionSensitivity) -> Bool {
    let half = DetectionLimits.partsPerMillion / 2
    if interval.entropyIncreases > 0 && increaseDeparture(interval, baseline, sensitivity) >= half { return true }
    guard interval.overwriteSamples < DetectionLimits.overwriteSamplesMin, interval.highEntropyBlocks > 0 else { return false }
    return combined(0, highEntropyDeparture(interval, baseline, sensitivity), sensitivity) >= half
}

// MARK: - State and verdict

/// The detector's state for one volume: its baseline, its recent intervals, its score and the
/// streak of anomalous intervals in progress. Only the baseline is persisted; the rest starts
/// over after a restart (a streak is a few seconds).
public struct DetectorState: Sendable, Equatable {
    /// What the volume's writes normally look like.
    public internal(set) var baseline: DetectorBaseline
    /// The last intervals seen (at most ``DetectionLimits/recentIntervalsMax``), oldest first.
    public internal(set) var recent: [IntervalStatistics]
    /// The anomaly score, 0...100 (`Specs/detection.md`, "Score").
    public internal(set) var score: Int
    /// Anomalous intervals in the current streak (0 outside one).
    public internal(set) var streakIntervals: Int
    /// The sum of the streak's departures, each capped at 2,000,000, in parts per million.
    public internal(set) var streakDeparturePartsPerMillion: Int64
    /// The first anomalous intervals of the streak (at most ``DetectionLimits/evidenceIntervalsMax``).
    public internal(set) var streakEvidence: [IntervalStatistics]
    /// The onset of the streak, placed when it began.
    public internal(set) var streakOnsetMilliseconds: Int64?
    /// The start of the last anomalous interval.
    public internal(set) var lastAnomalousMilliseconds: Int64?
    /// Whether a verdict fired for the current departure; cleared once no interval was anomalous
    /// for ``DetectionLimits/rearmMilliseconds``.
    public internal(set) var fired: Bool

    /// A state with `baseline` (as persisted) and nothing else.
    public init(baseline: DetectorBaseline = DetectorBaseline()) {
        self.baseline = baseline
        recent = []
        score = 0
        streakIntervals = 0
        streakDeparturePartsPerMillion = 0
        streakEvidence = []
        streakOnsetMilliseconds = nil
        lastAnomalousMilliseconds = nil
        fired = false
    }

    fileprivate mutating func endStreak() {
        streakIntervals = 0
        streakDeparturePartsPerMillion = 0
        streakEvidence = []
        streakOnsetMilliseconds = nil
    }
}

/// A sustained departure: what the controller records as `AnomalyDetected` and reports as a fault
/// with cause `detector`.
public struct DetectionVerdict: Sendable, Equatable {
    /// The anomaly score when it fired, 50...100 (100 for a departure twice the threshold).
    public var score: Int
    /// A time no later than the damage began: one interval before the first interval that departed
    /// (milliseconds since the Unix epoch). Images taken at or before it predate the attack.
    public var onsetMilliseconds: Int64
    /// The anomalous intervals of the streak, oldest first (at most
    /// ``DetectionLimits/evidenceIntervalsMax``).
    public var evidence: [IntervalStatistics]

    public init(score: Int, onsetMilliseconds: Int64, evidence: [IntervalStatistics]) {
        precondition((0...100).contains(score) && evidence.count <= DetectionLimits.evidenceIntervalsMax)
        self.score = score
        self.onsetMilliseconds = onsetMilliseconds
        self.evidence = evidence
    }
}

// MARK: - The decision function

/// Folds one interval into a volume's detector state; returns the next state and, when a sustained
/// departure reaches the sensitivity's streak for the first time, a verdict. Pure: the same state
/// and interval give the same result. The rules are in `Specs/detection.md`, "Deciding".
public func detect(
    _ state: DetectorState, _ interval: IntervalStatistics, sensitivity: DetectionSensitivity
) -> (DetectorState, DetectionVerdict?) {
    precondition(interval.isConsistent, "inconsistent interval counts: \(interval)")
    let million = DetectionLimits.partsPerMillion
    let required = Int64(sensitivity.streakIntervalsRequired)
    var next = state
    if next.fired, let last = next.lastAnomalousMilliseconds,
        interval.startMilliseconds - last >= DetectionLimits.rearmMilliseconds
    {
        next.fired = false
    }
    let assessment = assess(interval, against: state.baseline, sensitivity: sensitivity)
    var verdict: DetectionVerdict?
    if assessment.anomalous {
        if next.streakIntervals > 0, let last = next.lastAnomalousMilliseconds,
            interval.startMilliseconds - last > DetectionLimits.streakGapMillisecondsMax
        {
            next.endStreak()
        }
        if next.streakIntervals == 0 {
            next.streakOnsetMilliseconds = onset(of: interval, after: state.recent, state.baseline, sensitivity)
        }
        next.streakIntervals += 1
        next.streakDeparturePartsPerMillion += min(assessment.departurePartsPerMillion, 2 * million)
        if next.streakEvidence.count < DetectionLimits.evidenceIntervalsMax { next.streakEvidence.append(interval) }
        next.lastAnomalousMilliseconds = interval.startMilliseconds
        // 50 when every interval of a full streak is exactly at the threshold, 100 at twice it.
        next.score = Int(min(100, next.streakDeparturePartsPerMillion * 50 / (required * million)))
        if next.streakIntervals >= sensitivity.streakIntervalsRequired && !next.fired {
            next.fired = true
            verdict = DetectionVerdict(
                score: next.score, onsetMilliseconds: next.streakOnsetMilliseconds ?? interval.startMilliseconds,
                evidence: next.streakEvidence)
        }
    } else {
        if assessment.eligible {
            next.endStreak()
            next.baseline.learn(interval)
        }
        // A partial departure shows, below what one anomalous interval would add.
        let partial = Int(min(assessment.departurePartsPerMillion, million - 1) * 50 / (required * million))
        next.score = max(next.score / 2, partial)
    }
    next.recent.append(interval)
    if next.recent.count > DetectionLimits.recentIntervalsMax {
        next.recent.removeFirst(next.recent.count - DetectionLimits.recentIntervalsMax)
    }
    return (next, verdict)
}

/// The onset of a streak that begins with `first`: walk back over the recent intervals that
/// departed (each within the streak gap of the next), then one interval more, so a first
/// encrypted write just before the earliest sampled one is still after the onset. Never negative.
private func onset(
    of first: IntervalStatistics, after recent: [IntervalStatistics], _ baseline: DetectorBaseline,
    _ sensitivity: DetectionSensitivity
) -> Int64 {
    var earliest = first.startMilliseconds
    for interval in recent.reversed() {
        guard earliest - interval.startMilliseconds <= DetectionLimits.streakGapMillisecondsMax,
            interval.startMilliseconds < earliest, departing(interval, baseline, sensitivity)
        else { break }
        earliest = interval.startMilliseconds
    }
    return max(0, earliest - DetectionLimits.intervalMilliseconds)
}
