@testable import SnapbackCore
import Foundation
import SnapbackRandom
import Testing

// MARK: - Synthetic content

/// What a sampled 4 KiB block holds.
private enum Content: CaseIterable {
    case text, database, random, zeros
}

/// Generators of 4 KiB blocks of each kind, from a seed.
private enum Blocks {
    static let size = 4096
    private static let words = [
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
        "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
        "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who",
        "so", "no", "volume", "snapshot", "grain", "write", "controller", "rollback", "image", "event", "log",
        "interval", "entropy", "detector", "baseline", "sequence", "ordinal", "transaction", "commit", "copy",
    ]

    /// English-like text: words, spaces, punctuation, newlines.
    static func text(_ random: inout SeededRandom) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size + 16)
        var wordsInLine = 0
        while bytes.count < size {
            var word = Array(random.pick(words).utf8)
            if wordsInLine == 0 { word[0] = word[0] &- 32 }  // capitalised
            bytes += word
            wordsInLine += 1
            if random.chance(8) { bytes.append(UInt8(ascii: ",")) }
            if wordsInLine > random.int(8...14) {
                bytes += [UInt8(ascii: "."), UInt8(ascii: "\n")]
                wordsInLine = 0
            } else {
                bytes.append(UInt8(ascii: " "))
            }
        }
        return Array(bytes.prefix(size))
    }

    /// A database-like page: a header, fixed-width rows (id, name, quantity, price as text, a
    /// status byte), and free space (zeros) at the end.
    static func database(_ random: inout SeededRandom) -> [UInt8] {
        var bytes: [UInt8] = [0x0D, 0, 0, 0]
        let rows = random.int(30...55)
        withUnsafeBytes(of: UInt16(rows).littleEndian) { bytes += $0 }
        bytes += [UInt8](repeating: 0, count: 26)
        var id = UInt32(random.int(0...1_000_000))
        for _ in 0..<rows {
            id += 1
            withUnsafeBytes(of: id.littleEndian) { bytes += $0 }
            var row = Array("customer-\(random.int(0...9999))".utf8)
            row += [UInt8](repeating: 0x20, count: max(0, 24 - row.count))
            row += Array("\(random.int(0...999))".utf8) + [0]
            row += Array("\(random.int(0...999)).\(random.int(10...99))".utf8) + [0]
            row.append(UInt8(random.int(0...3)))
            bytes += row.prefix(60)
            bytes += [UInt8](repeating: 0, count: 64 - 4 - min(60, row.count))
        }
        bytes += [UInt8](repeating: 0, count: max(0, size - bytes.count))
        return Array(bytes.prefix(size))
    }

    /// Uniformly random bytes: the stand-in for AES-CTR ciphertext, compressed files and media.
    static func random(_ random: inout SeededRandom) -> [UInt8] { random.bytes(size) }

    /// Base64 of random bytes (an encoding of ciphertext that keeps entropy low).
    static func base64(_ random: inout SeededRandom) -> [UInt8] {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        let source = random.bytes(size / 4 * 3)
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: source.count, by: 3) {
            let value = UInt32(source[index]) << 16 | UInt32(source[index + 1]) << 8 | UInt32(source[index + 2])
            for shift in [18, 12, 6, 0] { bytes.append(alphabet[Int((value >> UInt32(shift)) & 63)]) }
        }
        return bytes
    }

    static func block(_ content: Content, _ random: inout SeededRandom) -> [UInt8] {
        switch content {
        case .text: text(&random)
        case .database: database(&random)
        case .random: Blocks.random(&random)
        case .zeros: [UInt8](repeating: 0, count: size)
        }
    }
}

/// Measured entropies of a few blocks of each kind; workloads draw samples from them, so a run of
/// thousands of samples costs a few dozen entropy measurements.
private struct EntropyPool {
    private var bitsPerByte: [Content: [Double]] = [:]

    init(seed: UInt64 = 0x5EED) {
        var random = SeededRandom(seed: seed)
        for content in Content.allCases {
            bitsPerByte[content] = (0..<8).map { _ in ByteEntropy.bitsPerByte(Blocks.block(content, &random)) }
        }
    }

    func draw(_ content: Content, _ random: inout SeededRandom) -> Double { random.pick(bitsPerByte[content]!) }
}

// MARK: - Synthetic workloads

/// The data plane's sampling as `Specs/detection.md` assumes it: one 4 KiB block per 256 KiB written.
private let sampleStrideBytes: UInt64 = 256 << 10
private let mebibyte: UInt64 = 1 << 20

/// One stream of writes: its rate, what it writes, and what it overwrites (`nil`: not known, e.g.
/// the grain was already split since the snapshot; `oldKnownPercent` of its samples know it).
private struct Stream {
    var bytesPerSecond: UInt64
    var new: Content
    var old: Content?
    var oldKnownPercent = 100

    /// Ordinary database work: low-entropy pages overwritten by low-entropy pages.
    static func databaseOverwrites(_ mebibytes: UInt64) -> Stream {
        Stream(bytesPerSecond: mebibytes * mebibyte, new: .database, old: .database, oldKnownPercent: 60)
    }

    /// New compressed files or media written into free space (zeros, or not known).
    static func compressedIntoFreeSpace(_ mebibytes: UInt64) -> Stream {
        Stream(bytesPerSecond: mebibytes * mebibyte, new: .random, old: .zeros, oldKnownPercent: 50)
    }

    /// A sequential copy of text files into free space.
    static func textCopy(_ mebibytes: UInt64) -> Stream {
        Stream(bytesPerSecond: mebibytes * mebibyte, new: .text, old: .zeros, oldKnownPercent: 50)
    }

    /// Text files edited in place.
    static func textOverwrites(_ mebibytes: UInt64) -> Stream {
        Stream(bytesPerSecond: mebibytes * mebibyte, new: .text, old: .text, oldKnownPercent: 60)
    }

    /// An encryptor overwriting plain data in place with ciphertext; the first write after the
    /// snapshot to each grain, so the old content is known.
    static func encryption(_ mebibytes: UInt64, over old: Content = .text) -> Stream {
        Stream(bytesPerSecond: mebibytes * mebibyte, new: .random, old: old)
    }
}

/// Builds intervals from streams, sampling as the data plane would.
private struct WorkloadGenerator {
    var random: SeededRandom
    let pool: EntropyPool
    /// Bytes written since the last sample, carried across intervals.
    private var sinceSampleBytes: UInt64 = 0

    init(seed: UInt64, pool: EntropyPool) {
        random = SeededRandom(seed: seed)
        self.pool = pool
    }

    /// The interval starting at `second` (milliseconds `second * 1000`) in which each stream writes
    /// its rate times the share of the second given with it (1 for the whole second).
    mutating func interval(at second: Int64, _ streams: [(Stream, Double)]) -> IntervalStatistics {
        var statistics = IntervalStatistics(startMilliseconds: second * 1000)
        // Interleave the streams in 64 KiB writes, in proportion to their bytes.
        var remaining = streams.map { UInt64(Double($0.0.bytesPerSecond) * $0.1) }
        let writeBytes: UInt64 = 64 << 10
        while remaining.contains(where: { $0 > 0 }) {
            let total = remaining.reduce(0, +)
            var pick = random.uint64(0...(total - 1))
            var index = 0
            while pick >= remaining[index] {
                pick -= remaining[index]
                index += 1
            }
            let bytes = min(writeBytes, remaining[index])
            remaining[index] -= bytes
            statistics.addBytes(bytes)
            sinceSampleBytes += bytes
            while sinceSampleBytes >= sampleStrideBytes {
                sinceSampleBytes -= sampleStrideBytes
                let stream = streams[index].0
                let old = stream.old.flatMap { random.chance(stream.oldKnownPercent) ? pool.draw($0, &random) : nil }
                statistics.addSample(newBitsPerByte: pool.draw(stream.new, &random), oldBitsPerByte: old)
            }
        }
        return statistics
    }

    /// `count` whole seconds of `streams` from `second` on.
    mutating func intervals(from second: Int64, count: Int, _ streams: [Stream]) -> [IntervalStatistics] {
        (0..<Int64(count)).map { interval(at: second + $0, streams.map { ($0, 1.0) }) }
    }
}

/// The mixed everyday workload a baseline is learned on: database overwrites, text edits, a text
/// copy, and some compressed files into free space (about a fifth of the samples).
private let mixedWorkload: [Stream] = [
    .databaseOverwrites(6), .textOverwrites(2), .textCopy(2), .compressedIntoFreeSpace(3),
]

/// Runs `intervals` through the detector; returns the final state and every verdict with the
/// index of the interval that produced it.
private func run(
    _ intervals: [IntervalStatistics], sensitivity: DetectionSensitivity, from state: DetectorState = DetectorState()
) -> (state: DetectorState, verdicts: [(index: Int, verdict: DetectionVerdict)]) {
    var state = state
    var verdicts: [(index: Int, verdict: DetectionVerdict)] = []
    for (index, interval) in intervals.enumerated() {
        let (next, verdict) = detect(state, interval, sensitivity: sensitivity)
        #expect((0...100).contains(next.score))
        #expect(next.recent.count <= DetectionLimits.recentIntervalsMax)
        if let verdict { verdicts.append((index, verdict)) }
        state = next
    }
    return (state, verdicts)
}

/// A state whose baseline learned `seconds` of the mixed workload, from second 0.
private func learnedState(
    _ generator: inout WorkloadGenerator, seconds: Int = 120, sensitivity: DetectionSensitivity = .medium
) -> DetectorState {
    let (state, verdicts) = run(generator.intervals(from: 0, count: seconds, mixedWorkload), sensitivity: sensitivity)
    #expect(verdicts.isEmpty)
    #expect(state.baseline.learnedIntervals == UInt32(seconds))
    return state
}

/// The attack scenario of issue 14: after `state`'s history, at second `second` plus `offset`
/// (0..<1) the encryptor starts overwriting plain data at `mebibytes` MiB/s while the ordinary
/// mixed writes continue. Returns the intervals from `second` on and the first encrypted write's
/// time in milliseconds.
private func attack(
    _ generator: inout WorkloadGenerator, at second: Int64, offset: Double, seconds: Int = 20, mebibytes: UInt64 = 24,
    background: [Stream] = mixedWorkload
) -> (intervals: [IntervalStatistics], firstWriteMilliseconds: Int64) {
    let encryption = Stream.encryption(mebibytes)
    var intervals = [generator.interval(at: second, background.map { ($0, 1.0) } + [(encryption, 1 - offset)])]
    intervals += generator.intervals(from: second + 1, count: seconds - 1, background + [encryption])
    return (intervals, second * 1000 + Int64(offset * 1000))
}

/// The detector (`Specs/detection.md`): entropy, the baseline encoding, and the decision function on
/// synthetic interval sequences.
@Suite("detection")
struct DetectionTests {}

extension DetectionTests {
    // MARK: - Entropy

    @Suite("byte entropy")
    struct Entropy {
        @Test("zeros, one repeated byte and an empty buffer have entropy 0")
        func zero() {
            #expect(ByteEntropy.bitsPerByte([UInt8](repeating: 0, count: 4096)) == 0)
            #expect(ByteEntropy.bitsPerByte([UInt8](repeating: 0xA5, count: 512)) == 0)
            #expect(ByteEntropy.bitsPerByte([]) == 0)
            #expect(ByteEntropy.bitsPerByte([7]) == 0)
        }

        @Test("exact histograms: two values half each is 1 bit, all 256 values equally is 8 bits")
        func exact() {
            #expect(ByteEntropy.bitsPerByte((0..<4096).map { UInt8($0 & 1) }) == 1)
            #expect(ByteEntropy.bitsPerByte((0..<4096).map { UInt8($0 & 15) }) == 4)
            #expect(ByteEntropy.bitsPerByte((0..<4096).map { UInt8($0 & 255) }) == 8)
            // Beyond the table (counts above 4096).
            #expect(ByteEntropy.bitsPerByte((0..<(1 << 20)).map { UInt8($0 & 255) }) == 8)
            #expect(ByteEntropy.bitsPerByte([UInt8](repeating: 1, count: 1 << 16)) == 0)
            // 3 of one value, 1 of another: 2 - 0.75·log2(3).
            let expected = 2 - 0.75 * ByteEntropy.log2(3)
            #expect(abs(ByteEntropy.bitsPerByte([1, 1, 1, 2]) - expected) < 1e-12)
        }

        @Test("the interleaved histograms give exactly the entropy of one plain histogram, at any length and alignment")
        func sameAsOneHistogram() {
            /// The definition, one counter per byte value, summed in value order.
            func reference(_ bytes: ArraySlice<UInt8>) -> Double {
                guard !bytes.isEmpty else { return 0 }
                var counts = [Int](repeating: 0, count: 256)
                for byte in bytes { counts[Int(byte)] += 1 }
                var sum = 0.0
                for count in counts where count != 0 { sum += ByteEntropy.countLog2Count(count) }
                return min(8, max(0, ByteEntropy.countLog2Count(bytes.count) / Double(bytes.count) - sum / Double(bytes.count)))
            }
            var random = SeededRandom(seed: 5)
            for round in 0..<200 {
                var block = round % 5 == 4 ? Blocks.base64(&random) : Blocks.block(Content.allCases[round % 4], &random)
                if round % 7 == 0 { block += Blocks.random(&random) }  // counts beyond the table
                // Any start (unaligned loads) and any length (a tail shorter than a word).
                let start = Int(random.next() % 9)
                let end = block.count - Int(random.next() % 13)
                let expected = reference(block[start..<end])
                block.withUnsafeBytes { bytes in
                    #expect(ByteEntropy.bitsPerByte(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) == expected)
                }
            }
            for length in 0..<40 {
                let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next() % 5) }
                #expect(ByteEntropy.bitsPerByte(bytes) == reference(bytes[...]))
            }
        }

        @Test("log2 without the C library matches known values")
        func log2() {
            #expect(ByteEntropy.log2(1) == 0)
            #expect(ByteEntropy.log2(1024) == 10)
            #expect(ByteEntropy.log2(4096) == 12)
            #expect(abs(ByteEntropy.log2(3) - 1.584962500721156) < 1e-15)
            #expect(abs(ByteEntropy.log2(10) - 3.321928094887362) < 1e-15)
            #expect(abs(ByteEntropy.log2(4095) - 11.99964773652837) < 1e-14)
            #expect(abs(ByteEntropy.log2(1.4142135623730951) - 0.5) < 1e-15)
        }

        @Test("random 4 KiB blocks measure 7.9 to 8, far above the high threshold")
        func random() {
            var random = SeededRandom(seed: 1)
            for _ in 0..<64 {
                let bits = ByteEntropy.bitsPerByte(Blocks.random(&random))
                #expect(bits > 7.9 && bits <= 8)
                #expect(bits >= ByteEntropy.highBitsPerByte + 0.7)
            }
        }

        @Test("text measures 4 to 5, database pages and base64 stay plain, zero pages empty")
        func plain() {
            var random = SeededRandom(seed: 2)
            for _ in 0..<16 {
                let text = ByteEntropy.bitsPerByte(Blocks.text(&random))
                #expect(text > 4 && text < 5)
                let database = ByteEntropy.bitsPerByte(Blocks.database(&random))
                #expect(database >= ByteEntropy.emptyBitsPerByte && database < ByteEntropy.plainBitsPerByte)
                let base64 = ByteEntropy.bitsPerByte(Blocks.base64(&random))
                #expect(base64 > 5.9 && base64 <= 6)
            }
            #expect(ByteEntropy.bitsPerByte(Blocks.block(.zeros, &random)) < ByteEntropy.emptyBitsPerByte)
        }

        @Test("a sample counts as an overwrite only over data, and as an increase only from plain to high")
        func samples() {
            var interval = IntervalStatistics(startMilliseconds: 0)
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: nil)  // high, old unknown
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: 0)  // free space filled
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: 0.99)  // still empty
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: 4.5)  // text encrypted: increase
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: 7.9)  // high over high
            interval.addSample(newBitsPerByte: 7.95, oldBitsPerByte: 7.1)  // over media-like data
            interval.addSample(newBitsPerByte: 7.2, oldBitsPerByte: 6.99)  // both at the bounds: increase
            interval.addSample(newBitsPerByte: 6.3, oldBitsPerByte: 4.5)  // plain over plain
            interval.addBytes(1 << 20)
            interval.addBytes(5)
            #expect(
                interval
                    == IntervalStatistics(
                        startMilliseconds: 0, bytesWritten: (1 << 20) + 5, sampledBlocks: 8, highEntropyBlocks: 7,
                        overwriteSamples: 5, entropyIncreases: 2))
            #expect(interval.highEntropyShare == 7.0 / 8)
            #expect(interval.increaseShare == 2.0 / 5)
            #expect(interval.highEntropySharePartsPerMillion == 875_000)
            #expect(interval.increaseSharePartsPerMillion == 400_000)
            #expect(IntervalStatistics(startMilliseconds: 5).increaseShare == 0)
            #expect(IntervalStatistics(startMilliseconds: 5).highEntropyShare == 0)
        }
    }

    // MARK: - Encoding

    @Suite("baseline encoding")
    struct Encoding {
        private func learned() -> DetectorBaseline {
            var generator = WorkloadGenerator(seed: 11, pool: EntropyPool())
            return learnedState(&generator, seconds: 150).baseline
        }

        @Test("a learned baseline round-trips exactly in 33 bytes")
        func roundTrip() throws {
            let baseline = learned()
            #expect(baseline.learnedIntervals == 150 && baseline.learnedOverwriteIntervals == 150)
            #expect(baseline.highEntropyShareMeanPartsPerMillion > 100_000)
            let bytes = baseline.encoded()
            #expect(bytes.count == DetectorBaseline.encodedBytes && bytes.count == 33)
            #expect(try DetectorBaseline.decode(bytes) == baseline)
            #expect(try DetectorBaseline.decode(DetectorBaseline().encoded()) == DetectorBaseline())
            // Embedded in a larger payload.
            var writer = ByteWriter()
            writer.write(UInt32(7))
            baseline.encode(into: &writer)
            writer.write(UInt8(9))
            let (before, embedded, after) = try writer.bytes.withUnsafeBytes { buffer in
                var reader = ByteReader(buffer)
                return (try reader.readUInt32("x"), try DetectorBaseline.decode(from: &reader), try reader.readUInt8("y"))
            }
            #expect(before == 7 && embedded == baseline && after == 9)
        }

        @Test("the layout: version 1, then the fields little-endian in declaration order")
        func layout() {
            let baseline = DetectorBaseline(
                learnedIntervals: 0x0102_0304, learnedOverwriteIntervals: 5, highEntropyShareMeanPartsPerMillion: 1_000_000,
                highEntropyShareDeviationPartsPerMillion: 6, increaseShareMeanPartsPerMillion: 7,
                increaseShareDeviationPartsPerMillion: 8, bytesWrittenMean: 0x0A0B)
            #expect(
                baseline.encoded() == [
                    1, 4, 3, 2, 1, 5, 0, 0, 0, 0x40, 0x42, 0x0F, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0,
                    0x0B, 0x0A, 0, 0, 0, 0, 0, 0,
                ])
        }

        @Test("every truncation is rejected as truncated, trailing bytes as trailing")
        func truncated() {
            let bytes = learned().encoded()
            for length in 0..<bytes.count {
                #expect {
                    try DetectorBaseline.decode(Array(bytes.prefix(length)))
                } throws: { error in
                    guard case .truncated = error as? DecodeError else { return false }
                    return true
                }
            }
            #expect(throws: DecodeError.trailingBytes(count: 1)) { try DetectorBaseline.decode(bytes + [0]) }
        }

        @Test("another version, a share above one million and more overwrite intervals than intervals are rejected")
        func invalid() {
            let bytes = learned().encoded()
            var version = bytes
            version[0] = 2
            #expect(throws: DecodeError.invalidValue(field: "baseline.version", value: 2)) { try DetectorBaseline.decode(version) }
            var share = bytes
            share.replaceSubrange(9..<13, with: [0x41, 0x42, 0x0F, 0])  // 1,000,001
            #expect(throws: DecodeError.invalidValue(field: "baseline.highEntropyShareMean", value: 1_000_001)) {
                try DetectorBaseline.decode(share)
            }
            var overwrites = bytes
            overwrites.replaceSubrange(1..<5, with: [1, 0, 0, 0])
            #expect(throws: DecodeError.invalidValue(field: "baseline.learnedOverwriteIntervals", value: 150)) {
                try DetectorBaseline.decode(overwrites)
            }
            var bytesMean = bytes
            bytesMean.replaceSubrange(25..<33, with: [0, 0, 0, 0, 0, 2, 0, 0])  // 2^41
            #expect(throws: DecodeError.invalidValue(field: "baseline.bytesWrittenMean", value: 1 << 41)) {
                try DetectorBaseline.decode(bytesMean)
            }
        }

        @Test("detection continues identically from a decoded baseline")
        func replay() throws {
            var generator = WorkloadGenerator(seed: 12, pool: EntropyPool())
            let original = learnedState(&generator, seconds: 90)
            let restored = DetectorState(baseline: try DetectorBaseline.decode(original.baseline.encoded()))
            let (intervals, _) = attack(&generator, at: 90, offset: 0.5)
            let fromOriginal = run(intervals, sensitivity: .medium, from: DetectorState(baseline: original.baseline))
            let fromRestored = run(intervals, sensitivity: .medium, from: restored)
            #expect(fromOriginal.state == fromRestored.state)
            #expect(fromOriginal.verdicts.map(\.verdict) == fromRestored.verdicts.map(\.verdict))
            #expect(fromOriginal.verdicts.count == 1)
        }

        @Test("an interval round-trips in 32 bytes; counts that do not nest are rejected")
        func interval() throws {
            let interval = IntervalStatistics(
                startMilliseconds: -3, bytesWritten: 1 << 33, sampledBlocks: 90, highEntropyBlocks: 80, overwriteSamples: 70,
                entropyIncreases: 60)
            var writer = ByteWriter()
            interval.encode(into: &writer)
            #expect(writer.count == IntervalStatistics.encodedBytes && writer.count == 32)
            let decoded = try writer.bytes.withUnsafeBytes { buffer in
                var reader = ByteReader(buffer)
                return try IntervalStatistics.decode(from: &reader)
            }
            #expect(decoded == interval)
            let fields = [(20, "interval.highEntropyBlocks"), (24, "interval.overwriteSamples"), (28, "interval.entropyIncreases")]
            for (offset, field) in fields {
                var bytes = writer.bytes
                bytes[offset] = 91
                #expect(throws: DecodeError.invalidValue(field: field, value: 91)) {
                    try bytes.withUnsafeBytes { buffer in
                        var reader = ByteReader(buffer)
                        _ = try IntervalStatistics.decode(from: &reader)
                    }
                }
            }
        }
    }

    // MARK: - Judging one interval

    @Suite("judging an interval")
    struct Assess {
        private func interval(sampled: UInt32, overwrites: UInt32, increases: UInt32, high: UInt32? = nil) -> IntervalStatistics {
            IntervalStatistics(
                startMilliseconds: 0, bytesWritten: UInt64(sampled) * sampleStrideBytes, sampledBlocks: sampled,
                highEntropyBlocks: high ?? increases, overwriteSamples: overwrites, entropyIncreases: increases)
        }

        @Test("without a baseline, an entropy-increase share of 50 % is the threshold at every sensitivity")
        func withoutBaseline() {
            let empty = DetectorBaseline()
            for sensitivity in DetectionSensitivity.allCases {
                let half = assess(interval(sampled: 100, overwrites: 100, increases: 50), against: empty, sensitivity: sensitivity)
                #expect(half.eligible && half.anomalous)
                #expect(half.increaseDeparturePartsPerMillion == 1_000_000)
                #expect(half.highEntropyDeparturePartsPerMillion == 0)
                let below = assess(interval(sampled: 100, overwrites: 100, increases: 49), against: empty, sensitivity: sensitivity)
                #expect(!below.anomalous && below.increaseDeparturePartsPerMillion == 980_000)
                let all = assess(interval(sampled: 100, overwrites: 100, increases: 100), against: empty, sensitivity: sensitivity)
                #expect(all.departurePartsPerMillion == 2_000_000)
            }
        }

        @Test("too few sampled blocks: not eligible; too few overwrite samples: no increase departure")
        func minimums() {
            let empty = DetectorBaseline()
            let few = assess(interval(sampled: 15, overwrites: 15, increases: 15), against: empty, sensitivity: .high)
            #expect(!few.eligible && !few.anomalous && few.departurePartsPerMillion == 0)
            let fewOverwrites = assess(interval(sampled: 100, overwrites: 7, increases: 7), against: empty, sensitivity: .high)
            #expect(fewOverwrites.eligible && !fewOverwrites.anomalous && fewOverwrites.increaseDeparturePartsPerMillion == 0)
            let enough = assess(interval(sampled: 16, overwrites: 8, increases: 8), against: empty, sensitivity: .high)
            #expect(enough.anomalous)
        }

        @Test("a learned quiet baseline lowers the threshold to the sensitivity's floor")
        func learnedThreshold() {
            var state = DetectorState()
            for second in 0..<40 {
                // Half the samples high-entropy (into free space): a high-entropy share of 30 % is no departure.
                let quiet = IntervalStatistics(
                    startMilliseconds: Int64(second) * 1000, bytesWritten: 8 << 20, sampledBlocks: 32, highEntropyBlocks: 16,
                    overwriteSamples: 16)
                state = detect(state, quiet, sensitivity: .medium).0
            }
            #expect(state.baseline.learnedOverwriteIntervals == 40 && state.baseline.increaseShareMeanPartsPerMillion == 0)
            #expect(state.baseline.highEntropyShareMeanPartsPerMillion == 500_000)
            let thirty = interval(sampled: 100, overwrites: 100, increases: 30)
            #expect(assess(thirty, against: state.baseline, sensitivity: .medium).anomalous)
            #expect(assess(thirty, against: state.baseline, sensitivity: .high).anomalous)
            #expect(!assess(thirty, against: state.baseline, sensitivity: .low).anomalous)
            let twentyNine = interval(sampled: 100, overwrites: 100, increases: 29)
            #expect(!assess(twentyNine, against: state.baseline, sensitivity: .medium).anomalous)
            #expect(!assess(interval(sampled: 100, overwrites: 100, increases: 19), against: state.baseline, sensitivity: .high).anomalous)
        }

        @Test("a high-entropy surge alone reaches the threshold only at high sensitivity")
        func highEntropyWeight() {
            let baseline = DetectorBaseline(
                learnedIntervals: 100, learnedOverwriteIntervals: 0, highEntropyShareMeanPartsPerMillion: 200_000,
                highEntropyShareDeviationPartsPerMillion: 50_000, increaseShareMeanPartsPerMillion: 0,
                increaseShareDeviationPartsPerMillion: 0, bytesWrittenMean: 8 << 20)
            let surge = IntervalStatistics(startMilliseconds: 0, bytesWritten: 8 << 20, sampledBlocks: 32, highEntropyBlocks: 32)
            for sensitivity in DetectionSensitivity.allCases {
                let assessment = assess(surge, against: baseline, sensitivity: sensitivity)
                #expect(assessment.highEntropyDeparturePartsPerMillion == 1_000_000)
                #expect(assessment.departurePartsPerMillion == sensitivity.highEntropyWeightPartsPerMillion)
                #expect(assessment.anomalous == (sensitivity == .high))
            }
            // Weighted by bytes: half the usual bytes, half the departure.
            var quiet = surge
            quiet.bytesWritten = 4 << 20
            #expect(assess(quiet, against: baseline, sensitivity: .high).highEntropyDeparturePartsPerMillion == 500_000)
        }
    }

    // MARK: - Deciding

    @Suite("the decision function")
    struct Decide {
        private let pool = EntropyPool()

        @Test("the attack on a learned volume fires at medium within 4 s of the first encrypted write, the onset under 2 s before it")
        func attackAfterBaseline() {
            for (seed, offset) in [(1, 0.0), (2, 0.3), (3, 0.6), (4, 0.9), (5, 0.99)] as [(UInt64, Double)] {
                var generator = WorkloadGenerator(seed: seed, pool: pool)
                let state = learnedState(&generator)
                let (intervals, firstWrite) = attack(&generator, at: 120, offset: offset)
                let (_, verdicts) = run(intervals, sensitivity: .medium, from: state)
                #expect(verdicts.count == 1, "seed \(seed)")
                guard let (index, verdict) = verdicts.first else { continue }
                // Reported at the end of interval `index`: within 5 s of the first encrypted write.
                let reportedMilliseconds = intervals[index].startMilliseconds + DetectionLimits.intervalMilliseconds
                #expect(index <= 3 && reportedMilliseconds - firstWrite <= 4000, "seed \(seed): interval \(index)")
                #expect(verdict.onsetMilliseconds <= firstWrite && firstWrite - verdict.onsetMilliseconds < 2000, "seed \(seed)")
                #expect(verdict.evidence.count == 3 && verdict.evidence.allSatisfy { $0.increaseShare > 0.5 })
                #expect(verdict.score >= 50 && verdict.score <= 100)
            }
        }

        @Test("the attack on a fresh volume, without a baseline, still fires, with the right onset")
        func attackWithoutBaseline() {
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 21, pool: pool)
                var intervals = generator.intervals(from: 0, count: 5, mixedWorkload)
                let (attackIntervals, firstWrite) = attack(&generator, at: 5, offset: 0.4)
                intervals += attackIntervals
                let (_, verdicts) = run(intervals, sensitivity: sensitivity)
                #expect(verdicts.count == 1, "\(sensitivity)")
                guard let (index, verdict) = verdicts.first else { continue }
                #expect(index == 5 + sensitivity.streakIntervalsRequired - 1, "\(sensitivity)")
                #expect(verdict.onsetMilliseconds == 4000 && firstWrite == 5400)
                #expect(verdict.score >= 50)
            }
        }

        @Test("an attack starting at the very end of a second: the onset still precedes it")
        func attackAtSecondEnd() {
            var generator = WorkloadGenerator(seed: 22, pool: pool)
            let state = learnedState(&generator, seconds: 60)
            // 2 ms of encryption in second 60: one or no sample in that interval.
            let (intervals, firstWrite) = attack(&generator, at: 60, offset: 0.998)
            let (_, verdicts) = run(intervals, sensitivity: .medium, from: state)
            #expect(verdicts.count == 1)
            if let verdict = verdicts.first?.verdict {
                #expect(verdict.onsetMilliseconds <= firstWrite && firstWrite - verdict.onsetMilliseconds < 2000)
            }
        }

        @Test("high sensitivity fires sooner than medium, medium sooner than low")
        func sensitivityDelay() {
            var delays: [DetectionSensitivity: Int] = [:]
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 31, pool: pool)
                let state = learnedState(&generator, sensitivity: sensitivity)
                let (intervals, _) = attack(&generator, at: 120, offset: 0.2)
                let (_, verdicts) = run(intervals, sensitivity: sensitivity, from: state)
                #expect(verdicts.count == 1)
                delays[sensitivity] = verdicts.first?.index
            }
            #expect(delays == [.high: 1, .medium: 2, .low: 4])
        }

        @Test("an attack mixed into heavy ordinary overwrites fires at high and medium, not at low")
        func dilutedAttack() {
            // Plain-over-plain overwrites at 3× the encryption rate: the increase share is about 25 %.
            let background = mixedWorkload + [.databaseOverwrites(40)]
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 32, pool: pool)
                let (baselineState, baselineVerdicts) = run(generator.intervals(from: 0, count: 120, background), sensitivity: sensitivity)
                #expect(baselineVerdicts.isEmpty)
                let (intervals, _) = attack(&generator, at: 120, offset: 0, seconds: 30, mebibytes: 16, background: background)
                let (_, verdicts) = run(intervals, sensitivity: sensitivity, from: baselineState)
                #expect(verdicts.count == (sensitivity == .low ? 0 : 1), "\(sensitivity)")
            }
        }

        @Test("control workloads never fire at medium in 120 s, with or without a learned baseline")
        func controls() {
            let controls: [(String, [Stream])] = [
                ("database-like random overwrites of low-entropy pages", [.databaseOverwrites(40)]),
                ("new compressed files into free space", [.compressedIntoFreeSpace(40)]),
                ("sequential copy of text files", [.textCopy(60)]),
            ]
            for (seed, (name, streams)) in controls.enumerated() {
                for learned in [false, true] {
                    var generator = WorkloadGenerator(seed: 40 + UInt64(seed), pool: pool)
                    let state = learned ? learnedState(&generator) : DetectorState()
                    let start: Int64 = learned ? 120 : 0
                    let (final, verdicts) = run(generator.intervals(from: start, count: 120, streams), sensitivity: .medium, from: state)
                    #expect(verdicts.isEmpty, "\(name), learned \(learned)")
                    #expect(final.score < 50 && final.streakIntervals == 0, "\(name), learned \(learned)")
                }
            }
        }

        @Test("control workloads never fire at low either")
        func controlsLow() {
            for streams in [[Stream.databaseOverwrites(40)], [.compressedIntoFreeSpace(40)], [.textCopy(60)]] {
                var generator = WorkloadGenerator(seed: 50, pool: pool)
                let state = learnedState(&generator, sensitivity: .low)
                #expect(run(generator.intervals(from: 120, count: 120, streams), sensitivity: .low, from: state).verdicts.isEmpty)
            }
        }

        @Test("a baseline learned on mixed data does not fire on more of the same, at any sensitivity")
        func mixedBaseline() {
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 60, pool: pool)
                let state = learnedState(&generator, sensitivity: sensitivity)
                // The mix includes high-entropy writes into free space: learned as normal.
                #expect(state.baseline.highEntropyShareMeanPartsPerMillion > 150_000)
                let more = generator.intervals(from: 120, count: 600, mixedWorkload)
                let (final, verdicts) = run(more, sensitivity: sensitivity, from: state)
                #expect(verdicts.isEmpty, "\(sensitivity)")
                #expect(final.baseline.learnedIntervals == 720)
            }
        }

        @Test("high sensitivity also fires on a surge of high-entropy writes without overwrite evidence (its false alarm)")
        func highEntropySurge() {
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 70, pool: pool)
                let state = learnedState(&generator, sensitivity: sensitivity)
                let surge = generator.intervals(from: 120, count: 30, [.compressedIntoFreeSpace(40)])
                let verdicts = run(surge, sensitivity: sensitivity, from: state).verdicts
                #expect(verdicts.count == (sensitivity == .high ? 1 : 0), "\(sensitivity)")
            }
        }

        @Test("intervals with too few samples never fire: a slow encryptor is ignored")
        func insufficientSamples() {
            for sensitivity in DetectionSensitivity.allCases {
                var generator = WorkloadGenerator(seed: 80, pool: pool)
                // 3 MiB/s of encryption and nothing else: 12 samples per second, below 16.
                let slow = generator.intervals(from: 0, count: 120, [.encryption(3)])
                let (final, verdicts) = run(slow, sensitivity: sensitivity)
                #expect(verdicts.isEmpty && final.score == 0 && final.baseline.learnedIntervals == 0)
                // Enough sampled blocks but fewer than 8 with known old content.
                let unknown = Stream(bytesPerSecond: 24 * mebibyte, new: .random, old: .text, oldKnownPercent: 2)
                let blind = generator.intervals(from: 120, count: 120, [unknown])
                #expect(run(blind, sensitivity: sensitivity).verdicts.isEmpty)
            }
        }

        @Test("after firing, a continuing attack gives no second verdict; after 10 s of calm a new one can fire")
        func firesOnce() {
            var generator = WorkloadGenerator(seed: 90, pool: pool)
            let state = learnedState(&generator, seconds: 60)
            // 40 s of attack, one calm second in the middle (the encryptor lists a directory).
            var intervals = attack(&generator, at: 60, offset: 0.5, seconds: 20).intervals
            intervals += generator.intervals(from: 80, count: 1, mixedWorkload)
            intervals += attack(&generator, at: 81, offset: 0, seconds: 19).intervals
            let (afterAttack, verdicts) = run(intervals, sensitivity: .medium, from: state)
            #expect(verdicts.count == 1)
            #expect(afterAttack.fired && afterAttack.score == 100)
            // The last anomalous interval began at 99 s. Calm from 100 s to 107 s: resuming at 108 s is
            // within 10 s of it, the same departure.
            let calm = generator.intervals(from: 100, count: 8, mixedWorkload)
            let resumed = attack(&generator, at: 108, offset: 0, seconds: 10).intervals
            let (stillFired, noVerdict) = run(calm + resumed, sensitivity: .medium, from: afterAttack)
            #expect(noVerdict.isEmpty && stillFired.fired)
            // 15 s of calm (118 s to 132 s): a new attack fires again, with its own onset.
            let longCalm = generator.intervals(from: 118, count: 15, mixedWorkload)
            let (second, firstWrite) = attack(&generator, at: 133, offset: 0.5, seconds: 10)
            let (final, again) = run(longCalm + second, sensitivity: .medium, from: stillFired)
            #expect(again.count == 1)
            if let verdict = again.first?.verdict {
                #expect(verdict.onsetMilliseconds <= firstWrite && firstWrite - verdict.onsetMilliseconds < 2000)
            }
            #expect(final.fired)
        }

        @Test("anomalous intervals are not learned; the score decays after the attack")
        func noLearningOfAnomalies() {
            var generator = WorkloadGenerator(seed: 100, pool: pool)
            let state = learnedState(&generator, seconds: 60)
            let (intervals, _) = attack(&generator, at: 60, offset: 0, seconds: 30)
            let (afterAttack, _) = run(intervals, sensitivity: .medium, from: state)
            #expect(afterAttack.baseline == state.baseline)
            #expect(afterAttack.score == 100 && afterAttack.streakIntervals == 30)
            #expect(afterAttack.streakEvidence.count == DetectionLimits.evidenceIntervalsMax)
            let (calm, _) = run(generator.intervals(from: 90, count: 10, mixedWorkload), sensitivity: .medium, from: afterAttack)
            #expect(calm.score < 10 && calm.streakIntervals == 0 && calm.streakEvidence.isEmpty)
            #expect(calm.baseline.learnedIntervals == 70)
        }

        @Test("anomalous intervals further apart than 3 s do not make a streak")
        func gaps() {
            let burst = IntervalStatistics(
                startMilliseconds: 0, bytesWritten: 24 << 20, sampledBlocks: 96, highEntropyBlocks: 96, overwriteSamples: 96,
                entropyIncreases: 96)
            var state = DetectorState()
            var verdicts = 0
            for second in stride(from: 0, to: 120, by: 4) {
                var interval = burst
                interval.startMilliseconds = Int64(second) * 1000
                let (next, verdict) = detect(state, interval, sensitivity: .medium)
                if verdict != nil { verdicts += 1 }
                #expect(next.streakIntervals == 1)
                state = next
            }
            #expect(verdicts == 0)
            // Idle seconds in between are ignored, not breaking a streak: 3 bursts 2 s apart fire.
            state = DetectorState()
            for second in [200, 202, 204] as [Int64] {
                var interval = burst
                interval.startMilliseconds = second * 1000
                let (next, verdict) = detect(state, interval, sensitivity: .medium)
                state = next
                if second == 204 { #expect(verdict?.onsetMilliseconds == 199_000) } else { #expect(verdict == nil) }
            }
        }

        @Test("the decision is a pure function: the same intervals give the same states and verdicts")
        func deterministic() {
            func once() -> (DetectorState, [DetectionVerdict]) {
                var generator = WorkloadGenerator(seed: 110, pool: EntropyPool())
                var intervals = generator.intervals(from: 0, count: 80, mixedWorkload)
                intervals += attack(&generator, at: 80, offset: 0.7).intervals
                let result = run(intervals, sensitivity: .medium)
                return (result.state, result.verdicts.map(\.verdict))
            }
            let first = once()
            let second = once()
            #expect(first.0 == second.0 && first.1 == second.1 && first.1.count == 1)
        }

        @Test("sensitivity names")
        func names() {
            for sensitivity in DetectionSensitivity.allCases {
                #expect(DetectionSensitivity(name: sensitivity.description) == sensitivity)
            }
            #expect(DetectionSensitivity(name: "Medium") == nil)
            #expect(DetectionSensitivity.allCases.map(\.rawValue) == [0, 1, 2])
        }
    }

    // MARK: - Measurement

    /// The figures of `Specs/detection.md` section 6: 200 seeds of the attack (starting at every
    /// 10 ms offset within its second) and of each control workload after a learned mixed
    /// baseline, per sensitivity. About 3 minutes in a debug build.
    @Suite("measurement (DETECTION_MEASURE=1)", .enabled(if: ProcessInfo.processInfo.environment["DETECTION_MEASURE"] == "1"))
    struct Measurement {
        @Test("attack latency, onset and false alarms over 200 seeds")
        func measure() {
            let pool = EntropyPool()
            let controls: [[Stream]] = [[.databaseOverwrites(40)], [.compressedIntoFreeSpace(40)], [.textCopy(60)]]
            for sensitivity in DetectionSensitivity.allCases {
                var fired: [Int: Int] = [:]
                var latencies: [Int64] = []
                var onsetGaps: [Int64] = []
                var scores: [Int] = []
                var misses = 0
                var falseAlarms = [0, 0, 0]
                for seed in 0..<200 as Range<UInt64> {
                    var generator = WorkloadGenerator(seed: 1000 + seed, pool: pool)
                    let learned = run(generator.intervals(from: 0, count: 120, mixedWorkload), sensitivity: sensitivity)
                    #expect(learned.verdicts.isEmpty)
                    let (intervals, firstWrite) = attack(&generator, at: 120, offset: Double(seed % 100) / 100)
                    let verdicts = run(intervals, sensitivity: sensitivity, from: learned.state).verdicts
                    if let (index, verdict) = verdicts.first {
                        fired[index, default: 0] += 1
                        latencies.append((121 + Int64(index)) * 1000 - firstWrite)
                        onsetGaps.append(firstWrite - verdict.onsetMilliseconds)
                        scores.append(verdict.score)
                    } else {
                        misses += 1
                    }
                    for (control, streams) in controls.enumerated() {
                        var controlGenerator = WorkloadGenerator(seed: 5000 + seed, pool: pool)
                        let baseline = run(controlGenerator.intervals(from: 0, count: 120, mixedWorkload), sensitivity: sensitivity)
                        let intervals = controlGenerator.intervals(from: 120, count: 120, streams)
                        falseAlarms[control] += run(intervals, sensitivity: sensitivity, from: baseline.state).verdicts.count
                    }
                }
                print(
                    "detection \(sensitivity): misses \(misses), fired at +\(fired.sorted { $0.key < $1.key }),",
                    "latency \(latencies.min()!)...\(latencies.max()!) ms, onset before first write",
                    "\(onsetGaps.min()!)...\(onsetGaps.max()!) ms, scores \(scores.min()!)...\(scores.max()!),",
                    "false alarms per control \(falseAlarms)")
                #expect(misses == 0)
                #expect(onsetGaps.allSatisfy { $0 >= 0 && $0 < 2000 })
                #expect(falseAlarms == (sensitivity == .high ? [0, 200, 0] : [0, 0, 0]))
                if sensitivity != .low { #expect(latencies.allSatisfy { $0 <= 5000 }) }
            }
        }
    }
}
