/// The binary encodings of the detector's persisted values (`Specs/detection.md`, "Encoding"):
/// fixed-width little-endian integers, no floating point, so that decoding gives back exactly what
/// was encoded.
extension DetectorBaseline {
    /// The version of this encoding; a decoder refuses any other.
    public static let encodingVersion: UInt8 = 1
    /// The length of ``encoded()``.
    public static let encodedBytes = 1 + 4 * 6 + 8

    /// The baseline as bytes: version, then the fields in declaration order (33 bytes).
    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.encodedBytes)
        encode(into: &writer)
        return writer.bytes
    }

    /// Appends ``encoded()`` to `writer` (to embed the baseline in an event payload).
    public func encode(into writer: inout ByteWriter) {
        precondition(isValid, "invalid detector baseline: \(self)")
        writer.write(Self.encodingVersion)
        writer.write(learnedIntervals)
        writer.write(learnedOverwriteIntervals)
        writer.write(highEntropyShareMeanPartsPerMillion)
        writer.write(highEntropyShareDeviationPartsPerMillion)
        writer.write(increaseShareMeanPartsPerMillion)
        writer.write(increaseShareDeviationPartsPerMillion)
        writer.write(bytesWrittenMean)
    }

    /// Decodes what ``encoded()`` wrote, and nothing more.
    /// - Throws: ``DecodeError`` for another version, a truncated buffer, trailing bytes or a field
    ///   outside its domain.
    public static func decode(_ buffer: UnsafeRawBufferPointer) throws(DecodeError) -> DetectorBaseline {
        var reader = ByteReader(buffer)
        let baseline = try decode(from: &reader)
        try reader.expectEnd()
        return baseline
    }

    /// Decodes what ``encoded()`` wrote, and nothing more (see ``decode(_:)-(UnsafeRawBufferPointer)``).
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> DetectorBaseline {
        // withUnsafeBytes does not forward typed throws: carry the result out instead.
        let result: Result<DetectorBaseline, DecodeError> = bytes.withUnsafeBytes { buffer in
            do throws(DecodeError) { return .success(try decode(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Reads one baseline from `reader` (embedded in a larger payload).
    /// - Throws: ``DecodeError`` as ``decode(_:)-(UnsafeRawBufferPointer)``, except trailing bytes.
    public static func decode(from reader: inout ByteReader) throws(DecodeError) -> DetectorBaseline {
        let version = try reader.readUInt8("baseline.version")
        guard version == encodingVersion else { throw .invalidValue(field: "baseline.version", value: UInt64(version)) }
        let learnedIntervals = try reader.readUInt32("baseline.learnedIntervals")
        let learnedOverwriteIntervals = try reader.readUInt32("baseline.learnedOverwriteIntervals")
        guard learnedOverwriteIntervals <= learnedIntervals else {
            throw .invalidValue(field: "baseline.learnedOverwriteIntervals", value: UInt64(learnedOverwriteIntervals))
        }
        let highMean = try readShare(&reader, "baseline.highEntropyShareMean")
        let highDeviation = try readShare(&reader, "baseline.highEntropyShareDeviation")
        let increaseMean = try readShare(&reader, "baseline.increaseShareMean")
        let increaseDeviation = try readShare(&reader, "baseline.increaseShareDeviation")
        let bytesWrittenMean = try reader.readUInt64("baseline.bytesWrittenMean")
        guard bytesWrittenMean <= DetectionLimits.bytesPerIntervalMax else {
            throw .invalidValue(field: "baseline.bytesWrittenMean", value: bytesWrittenMean)
        }
        return DetectorBaseline(
            learnedIntervals: learnedIntervals, learnedOverwriteIntervals: learnedOverwriteIntervals,
            highEntropyShareMeanPartsPerMillion: highMean, highEntropyShareDeviationPartsPerMillion: highDeviation,
            increaseShareMeanPartsPerMillion: increaseMean, increaseShareDeviationPartsPerMillion: increaseDeviation,
            bytesWrittenMean: bytesWrittenMean)
    }

    private static func readShare(_ reader: inout ByteReader, _ field: String) throws(DecodeError) -> UInt32 {
        let value = try reader.readUInt32(field)
        guard Int64(value) <= DetectionLimits.partsPerMillion else { throw .invalidValue(field: field, value: UInt64(value)) }
        return value
    }
}

extension IntervalStatistics {
    /// The length of one encoded interval.
    public static let encodedBytes = 8 + 8 + 4 * 4

    /// Appends the interval (for a verdict's evidence in an event payload): start (Int64), bytes
    /// written (UInt64), then the four counts (UInt32) in declaration order, 32 bytes.
    public func encode(into writer: inout ByteWriter) {
        precondition(isConsistent, "inconsistent interval counts: \(self)")
        writer.write(startMilliseconds)
        writer.write(bytesWritten)
        writer.write(sampledBlocks)
        writer.write(highEntropyBlocks)
        writer.write(overwriteSamples)
        writer.write(entropyIncreases)
    }

    /// Reads one interval that ``encode(into:)`` wrote.
    /// - Throws: ``DecodeError/truncated(field:)``, or ``DecodeError/invalidValue(field:value:)``
    ///   when the counts do not nest (a high-entropy block or an overwrite sample that is not a
    ///   sampled block, an increase that is not an overwrite sample or not a high-entropy block).
    public static func decode(from reader: inout ByteReader) throws(DecodeError) -> IntervalStatistics {
        let start = try reader.readInt64("interval.startMilliseconds")
        let bytesWritten = try reader.readUInt64("interval.bytesWritten")
        let sampled = try reader.readUInt32("interval.sampledBlocks")
        let high = try reader.readUInt32("interval.highEntropyBlocks")
        guard high <= sampled else { throw .invalidValue(field: "interval.highEntropyBlocks", value: UInt64(high)) }
        let overwrites = try reader.readUInt32("interval.overwriteSamples")
        guard overwrites <= sampled else { throw .invalidValue(field: "interval.overwriteSamples", value: UInt64(overwrites)) }
        let increases = try reader.readUInt32("interval.entropyIncreases")
        guard increases <= overwrites, increases <= high else {
            throw .invalidValue(field: "interval.entropyIncreases", value: UInt64(increases))
        }
        return IntervalStatistics(
            startMilliseconds: start, bytesWritten: bytesWritten, sampledBlocks: sampled, highEntropyBlocks: high,
            overwriteSamples: overwrites, entropyIncreases: increases)
    }
}
