@testable import SnapbackCore
import Testing
import SnapbackRandom

/// At least one event of every type, with each optional present and absent and extreme values.
let sampleEvents: [Event] = [
    .volumeCreated(id: 0, name: "v0", sizeBytes: 512, path: nil),
    .volumeCreated(id: .max, name: "vølume-ünïcode", sizeBytes: 16 << 40, path: "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"),
    .volumeCreated(id: 3, name: "", sizeBytes: 0, path: ""),
    .volumeRemoved(id: 7),
    .mapCreated(
        MapCreated(id: 0, name: "m", reverseID: 1, reverseName: "m_rev", sourceID: 0, targetID: 1, copyRate: 0, grainSizeBytes: 64 << 10, autorestore: false)),
    .mapCreated(
        MapCreated(id: .max - 1, name: String(repeating: "n", count: 59), reverseID: .max, reverseName: String(repeating: "n", count: 59) + "_rev", sourceID: .max, targetID: 0, copyRate: 150, grainSizeBytes: 256 << 10, autorestore: true)),
    .mapRenamed(id: 2, name: "daily", reverseName: "daily_rev"),
    .mapAutorestoreChanged(id: 2, autorestore: true),
    .mapAutorestoreChanged(id: 2, autorestore: false),
    .mapCopyRateChanged(id: 2, copyRate: 0),
    .mapCopyRateChanged(id: 2, copyRate: 150),
    .mapRemoved(id: 4),
    .mapPreparing(id: 5),
    .mapPrepared(id: 6),
    .mapStarted(id: 7, startOrdinal: 1),
    .mapStarted(id: 7, startOrdinal: .max),
    .mapCopyProgressed(id: 8, grainsCopied: 123_456_789),
    .mapCopyCompleted(id: 9),
    .mapStopping(id: 10),
    .mapStopped(id: 11),
    .volumeFaulted(id: 1, faultID: 1, cause: .operator, reason: "ransomware detected"),
    .volumeFaulted(id: 1, faultID: .max, cause: .ioError, reason: "EIO 🔥"),
    .volumeFaulted(id: 1, faultID: 2, cause: .backingMissing, reason: ""),
    .volumeFaulted(id: 1, faultID: 3, cause: .backingResized, reason: String(repeating: "r", count: 256)),
    .rollbackStarted(id: 0, trigger: .auto, faultID: 1),
    .rollbackStarted(id: 0, trigger: .operator, faultID: nil),
    .rollbackStarted(id: 0, trigger: .operator, faultID: .max),
    .rollbackProgressed(id: 0, grainsRestored: 0, grainsToRestore: 0),
    .rollbackProgressed(id: 0, grainsRestored: 5, grainsToRestore: .max),
    .rollbackCompleted(id: 12),
    .volumeRecovered(id: 13),
    .controllerStarted(version: "1.0.0"),
    .rollbackStopped(id: 3, reason: "stopped by operator (stoplcmap -force)"),
    .controllerStarted(version: ""),
    .volumeFaulted(id: 1, faultID: 4, cause: .rollbackAbandoned, reason: "stopped by operator (stoplcmap -force)"),
    .volumeOutOfSpace(id: 2, reason: "pwrite /v/src.img failed: errno 28"),
    .volumeSpaceRestored(id: 2),
    .rollbackRestarted(id: 3, faultID: 7),
    .mapAutorestoreDelayChanged(id: 0, seconds: 86_400),
    .rollbackScheduled(id: 2, faultID: 9),
    .faultOnset(id: 1, faultID: 9, onsetMilliseconds: 1_790_000_000_123),
    .groupCreated(id: 0, name: "db", autorestore: true, autorestoreDelaySeconds: 0),
    .groupCreated(id: .max, name: String(repeating: "g", count: 63), autorestore: false, autorestoreDelaySeconds: 86_400),
    .groupRenamed(id: 1, name: "oracle-prod"),
    .groupAutorestoreChanged(id: 1, autorestore: true),
    .groupAutorestoreChanged(id: 1, autorestore: false),
    .groupAutorestoreDelayChanged(id: 1, seconds: 600),
    .groupRemoved(id: 2),
    .mapGroupChanged(id: 4, group: 1),
    .mapGroupChanged(id: 4, group: nil),
    .mapGroupChanged(id: .max - 1, group: .max),
    .groupStarted(id: 1, startOrdinal: 3, members: [0, 2, 4]),
    .groupStarted(id: 1, startOrdinal: .max, members: Array(stride(from: 0, to: MapID(2 * Limits.groupMapsMax), by: 2))),
    .groupRollbackStarted(id: 1, trigger: .auto, faultID: 5),
    .groupRollbackStarted(id: 1, trigger: .operator, faultID: nil),
    .groupMemberRestored(id: 2),
    .groupRollbackCompleted(id: 1),
    .groupRollbackStopped(id: 1, reason: "stopped: target t1 of lcmap a faulted (fault 6)"),
    .groupRollbackScheduled(id: 1, faultID: 9),
    .volumeFaulted(id: 1, faultID: 5, cause: .detector, reason: "anomaly score 87: 2345 of 2500 sampled overwrites raised the entropy of plain data"),
    .volumeRenamed(id: 0, name: "v0-renamed"),
    .volumeRenamed(id: .max, name: String(repeating: "w", count: 63)),
    .volumeDetectionChanged(id: 1, enabled: true, sensitivity: .low),
    .volumeDetectionChanged(id: 1, enabled: true, sensitivity: .medium),
    .volumeDetectionChanged(id: 1, enabled: true, sensitivity: .high),
    .volumeDetectionChanged(id: .max, enabled: false, sensitivity: .low),
    .volumeDetectionChanged(id: 1, enabled: false, sensitivity: .high),
    .anomalyDetected(id: 2, score: 0, onsetMilliseconds: 0, evidence: []),
    .anomalyDetected(id: 2, score: 100, onsetMilliseconds: 1_790_000_000_000, evidence: sampleEvidence),
    // The decoder does not check the onset (decide refuses a negative one).
    .anomalyDetected(id: .max, score: 50, onsetMilliseconds: .min, evidence: Array(sampleEvidence.prefix(1))),
    .detectorBaselineSaved(id: 3, baseline: DetectorBaseline()),
    .detectorBaselineSaved(
        id: .max,
        baseline: DetectorBaseline(
            learnedIntervals: .max, learnedOverwriteIntervals: .max, highEntropyShareMeanPartsPerMillion: 1_000_000,
            highEntropyShareDeviationPartsPerMillion: 1_000_000, increaseShareMeanPartsPerMillion: 1_000_000,
            increaseShareDeviationPartsPerMillion: 1_000_000, bytesWrittenMean: DetectionLimits.bytesPerIntervalMax)),
    .detectorBaselineSaved(
        id: 0,
        baseline: DetectorBaseline(
            learnedIntervals: 4000, learnedOverwriteIntervals: 1200, highEntropyShareMeanPartsPerMillion: 61_000,
            highEntropyShareDeviationPartsPerMillion: 23_500, increaseShareMeanPartsPerMillion: 4_200,
            increaseShareDeviationPartsPerMillion: 3_100, bytesWrittenMean: 7 << 20)),
]

/// Eight intervals of an attack (the most a verdict carries), the first with no overwrite
/// samples, the last with extreme values.
private let sampleEvidence: [IntervalStatistics] =
    [IntervalStatistics(startMilliseconds: 1_790_000_000_000, bytesWritten: 3 << 20, sampledBlocks: 48, highEntropyBlocks: 45)]
    + (1..<7).map { index in
        let step = UInt32(index)
        return IntervalStatistics(
            startMilliseconds: 1_790_000_000_000 + Int64(index) * 1000, bytesWritten: (20 << 20) + UInt64(index) * 4096,
            sampledBlocks: 320 + step, highEntropyBlocks: 300 + step, overwriteSamples: 290 + step, entropyIncreases: 280 + step)
    } + [
        IntervalStatistics(
            startMilliseconds: .max, bytesWritten: .max, sampledBlocks: .max, highEntropyBlocks: .max, overwriteSamples: .max,
            entropyIncreases: .max)
    ]

private func payload(_ build: (inout ByteWriter) -> Void) -> [UInt8] {
    var writer = ByteWriter()
    build(&writer)
    return writer.bytes
}

/// One interval of `AnomalyDetected` evidence, field by field with raw counts (`Specs/events.md`
/// section 2), so that tests can write counts `IntervalStatistics` never holds.
private func writeInterval(
    _ writer: inout ByteWriter, sampled: UInt32, high: UInt32, overwrites: UInt32, increases: UInt32,
    startMilliseconds: Int64 = 1_790_000_000_000, bytesWritten: UInt64 = 1 << 20
) {
    writer.write(startMilliseconds)
    writer.write(bytesWritten)
    writer.write(sampled)
    writer.write(high)
    writer.write(overwrites)
    writer.write(increases)
}

/// An `AnomalyDetected` payload of volume 1 at onset 1000, with the given raw score, count and
/// intervals.
private func anomalyPayload(score: UInt8 = 80, count: UInt8? = nil, intervals: [(UInt32, UInt32, UInt32, UInt32)]) -> [UInt8] {
    payload {
        $0.write(UInt32(1))
        $0.write(score)
        $0.write(Int64(1000))
        $0.write(count ?? UInt8(intervals.count))
        for (sampled, high, overwrites, increases) in intervals {
            writeInterval(&$0, sampled: sampled, high: high, overwrites: overwrites, increases: increases)
        }
    }
}

/// A `DetectorBaselineSaved` payload of volume 1 with raw fields.
private func baselinePayload(
    version: UInt8 = 1, learned: UInt32 = 100, learnedOverwrites: UInt32 = 40, shares: [UInt32] = [50_000, 10_000, 2_000, 1_000],
    bytesWrittenMean: UInt64 = 1 << 20
) -> [UInt8] {
    payload {
        $0.write(UInt32(1))
        $0.write(version)
        $0.write(learned)
        $0.write(learnedOverwrites)
        for share in shares { $0.write(share) }
        $0.write(bytesWrittenMean)
    }
}

@Suite("event encoding")
struct EventEncodingTests {
    @Test("the samples cover every event type")
    func coverage() {
        #expect(Set(sampleEvents.map(\.type)) == Set(EventType.allCases))
    }

    @Test("every event round-trips through its payload", arguments: sampleEvents)
    func roundTrip(event: Event) throws {
        let bytes = event.encodedPayload()
        let decoded = try Event.decode(typeCode: event.type.rawValue, bytes)
        #expect(decoded == event)
        #expect(decoded.encodedPayload() == bytes)
        // encodePayload(into:) appends exactly the same bytes.
        var writer = ByteWriter()
        writer.write(UInt8(0xAB))
        event.encodePayload(into: &writer)
        #expect(writer.bytes == [0xAB] + bytes)
    }

    @Test("every strict prefix of a payload is refused as truncated", arguments: sampleEvents)
    func truncation(event: Event) {
        let bytes = event.encodedPayload()
        for length in 0..<bytes.count {
            let result = decodeResult { () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, Array(bytes[..<length])) }
            guard case .failure(.truncated) = result else {
                Issue.record("\(event) prefix of \(length)/\(bytes.count) bytes: \(result)")
                continue
            }
        }
    }

    @Test("trailing bytes are refused", arguments: sampleEvents)
    func trailingBytes(event: Event) {
        let bytes = event.encodedPayload()
        for extra in [[UInt8(0)], [1, 2, 3]] {
            let result = decodeResult { () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, bytes + extra) }
            #expect(result == .failure(.trailingBytes(count: extra.count)))
        }
    }

    @Test("unknown type codes are refused", arguments: [0, 44, 45, 100, 1000, 0x8000, UInt16.max] as [UInt16])
    func unknownType(code: UInt16) {
        #expect(EventType(rawValue: code) == nil)
        for bytes in [[], [0, 0, 0, 0]] as [[UInt8]] {
            #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: code, bytes) } == .failure(.unknownEventType(code)))
        }
    }

    @Test("any single-byte change of a sample payload is refused or decodes to an event that re-encodes to the changed bytes")
    func byteChanges() {
        var random = SeededRandom(seed: 0xB1B1)
        for event in sampleEvents {
            let bytes = event.encodedPayload()
            for index in bytes.indices {
                for _ in 0..<12 {
                    var changed = bytes
                    changed[index] ^= UInt8(random.int(1...255))
                    if case let .success(other) = decodeResult({ () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, changed) }) {
                        #expect(other != event)
                        #expect(other.encodedPayload() == changed, "\(event) byte \(index)")
                    }
                }
            }
        }
    }

    @Test("a payload decoded under another type's code is refused or is that type")
    func crossType() {
        for event in sampleEvents {
            let bytes = event.encodedPayload()
            for type in EventType.allCases where type != event.type {
                if case let .success(other) = decodeResult({ () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) }) {
                    #expect(other.type == type)
                    #expect(other.encodedPayload() == bytes)
                }
            }
        }
    }

    @Test("the payload layout is the documented one: little-endian integers, UInt16-prefixed strings, presence bytes")
    func layout() {
        #expect(
            Event.volumeCreated(id: 1, name: "ab", sizeBytes: 512, path: nil).encodedPayload()
                == [1, 0, 0, 0, 2, 0, 0x61, 0x62, 0, 2, 0, 0, 0, 0, 0, 0, 0])
        #expect(
            Event.volumeCreated(id: 0x0102_0304, name: "", sizeBytes: 0, path: "/x").encodedPayload()
                == [4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0x2F, 0x78])
        #expect(
            Event.mapCreated(MapCreated(id: 2, name: "m", reverseID: 3, reverseName: "r", sourceID: 4, targetID: 5, copyRate: 150, grainSizeBytes: 64 << 10, autorestore: true)).encodedPayload()
                == [2, 0, 0, 0, 1, 0, 0x6D, 3, 0, 0, 0, 1, 0, 0x72, 4, 0, 0, 0, 5, 0, 0, 0, 150, 0, 0, 1, 0, 1])
        #expect(Event.mapStarted(id: 1, startOrdinal: 0x0102).encodedPayload() == [1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0])
        #expect(
            Event.volumeFaulted(id: 1, faultID: 2, cause: .backingResized, reason: "r").encodedPayload()
                == [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0x72])
        #expect(Event.rollbackStarted(id: 1, trigger: .auto, faultID: nil).encodedPayload() == [1, 0, 0, 0, 1, 0])
        #expect(Event.rollbackStarted(id: 1, trigger: .operator, faultID: 9).encodedPayload() == [1, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0])
        #expect(Event.mapCopyRateChanged(id: 1, copyRate: 42).encodedPayload() == [1, 0, 0, 0, 42])
        #expect(Event.controllerStarted(version: "1").encodedPayload() == [1, 0, 0x31])
        #expect(
            Event.groupCreated(id: 2, name: "g", autorestore: true, autorestoreDelaySeconds: 0x0102).encodedPayload()
                == [2, 0, 0, 0, 1, 0, 0x67, 1, 2, 1, 0, 0])
        #expect(Event.mapGroupChanged(id: 1, group: nil).encodedPayload() == [1, 0, 0, 0, 0])
        #expect(Event.mapGroupChanged(id: 1, group: 3).encodedPayload() == [1, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0])
        #expect(
            Event.groupStarted(id: 1, startOrdinal: 7, members: [0, 2]).encodedPayload()
                == [1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0])
        #expect(Event.groupRollbackStarted(id: 1, trigger: .auto, faultID: nil).encodedPayload() == [1, 0, 0, 0, 1, 0])
        #expect(Event.groupRollbackScheduled(id: 1, faultID: 9).encodedPayload() == [1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0])
        #expect(
            Event.volumeFaulted(id: 1, faultID: 2, cause: .detector, reason: "r").encodedPayload()
                == [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0x72])
        // Anomaly detection (codes 40–43): sizes 6 + name, 6, 14 + 32 × intervals, 37.
        #expect(Event.volumeRenamed(id: 1, name: "ab").encodedPayload() == [1, 0, 0, 0, 2, 0, 0x61, 0x62])
        #expect(Event.volumeDetectionChanged(id: 1, enabled: true, sensitivity: .high).encodedPayload() == [1, 0, 0, 0, 1, 2])
        #expect(Event.volumeDetectionChanged(id: 2, enabled: false, sensitivity: .low).encodedPayload() == [2, 0, 0, 0, 0, 0])
        #expect(Event.volumeDetectionChanged(id: 2, enabled: true, sensitivity: .medium).encodedPayload() == [2, 0, 0, 0, 1, 1])
        #expect(
            Event.anomalyDetected(id: 1, score: 87, onsetMilliseconds: 0x0102, evidence: []).encodedPayload()
                == [1, 0, 0, 0, 87, 2, 1, 0, 0, 0, 0, 0, 0, 0])
        let interval = IntervalStatistics(
            startMilliseconds: 0x0304, bytesWritten: 0x0506, sampledBlocks: 7, highEntropyBlocks: 6, overwriteSamples: 5, entropyIncreases: 4)
        #expect(
            Event.anomalyDetected(id: 1, score: 100, onsetMilliseconds: -1, evidence: [interval]).encodedPayload()
                == [1, 0, 0, 0, 100] + [UInt8](repeating: 0xFF, count: 8) + [1]
                + [4, 3, 0, 0, 0, 0, 0, 0] + [6, 5, 0, 0, 0, 0, 0, 0] + [7, 0, 0, 0, 6, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0])
        #expect(Event.anomalyDetected(id: 1, score: 100, onsetMilliseconds: 0, evidence: sampleEvidence).encodedPayload().count == 14 + 32 * 8)
        let baseline = DetectorBaseline(
            learnedIntervals: 0x0102, learnedOverwriteIntervals: 3, highEntropyShareMeanPartsPerMillion: 4,
            highEntropyShareDeviationPartsPerMillion: 5, increaseShareMeanPartsPerMillion: 6, increaseShareDeviationPartsPerMillion: 7,
            bytesWrittenMean: 0x0809)
        #expect(
            Event.detectorBaselineSaved(id: 1, baseline: baseline).encodedPayload()
                == [1, 0, 0, 0, 1, 2, 1, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 9, 8, 0, 0, 0, 0, 0, 0])
        #expect(Event.detectorBaselineSaved(id: 1, baseline: baseline).encodedPayload() == [1, 0, 0, 0] + baseline.encoded())
        #expect(DetectorBaseline().encoded() == [1] + [UInt8](repeating: 0, count: 32))
    }

    @Test("booleans other than 0 and 1 are refused")
    func invalidBools() {
        let cases: [(EventType, [UInt8], String)] = [
            (.mapAutorestoreChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(2)) }, "autorestore"),
            (.mapAutorestoreChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(0xFF)) }, "autorestore"),
            (.volumeCreated, payload { $0.write(UInt32(1)); $0.write("v"); $0.write(UInt64(512)); $0.write(UInt8(2)) }, "path"),
            (.rollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(0)); $0.write(UInt8(2)) }, "faultID"),
            (.groupCreated, payload { $0.write(UInt32(1)); $0.write("g"); $0.write(UInt8(2)); $0.write(UInt32(0)) }, "autorestore"),
            (.groupAutorestoreChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(0xFF)) }, "autorestore"),
            (.mapGroupChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(2)) }, "group"),
            (.groupRollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(1)); $0.write(UInt8(3)) }, "faultID"),
            (.volumeDetectionChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(2)); $0.write(UInt8(1)) }, "enabled"),
            (
                .mapCreated,
                payload {
                    $0.write(UInt32(0)); $0.write("m"); $0.write(UInt32(1)); $0.write("m_rev"); $0.write(UInt32(0)); $0.write(UInt32(1))
                    $0.write(UInt8(50)); $0.write(UInt32(64 << 10)); $0.write(UInt8(7))
                }, "autorestore"
            ),
        ]
        for (type, bytes, field) in cases {
            let result = decodeResult { () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) }
            guard case let .failure(.invalidValue(actual, _)) = result else {
                Issue.record("\(type): \(result)")
                continue
            }
            #expect(actual == field)
        }
    }

    @Test("enum raw values, copy rates, grain sizes and rollback counts outside their domains are refused")
    func invalidValues() {
        let mapCreated = { (copyRate: UInt8, grainSizeBytes: UInt32) in
            payload {
                $0.write(UInt32(0)); $0.write("m"); $0.write(UInt32(1)); $0.write("m_rev"); $0.write(UInt32(0)); $0.write(UInt32(1))
                $0.write(copyRate); $0.write(grainSizeBytes); $0.write(false)
            }
        }
        let cases: [(EventType, [UInt8], DecodeError)] = [
            (.volumeFaulted, payload { $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(UInt8(6)); $0.write("r") }, .invalidValue(field: "cause", value: 6)),
            (.volumeFaulted, payload { $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(UInt8(255)); $0.write("r") }, .invalidValue(field: "cause", value: 255)),
            (.rollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(2)); $0.write(UInt64?.none) }, .invalidValue(field: "trigger", value: 2)),
            (.mapCopyRateChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(151)) }, .invalidValue(field: "copyRate", value: 151)),
            (.mapCopyRateChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(255)) }, .invalidValue(field: "copyRate", value: 255)),
            (.mapCreated, mapCreated(151, 64 << 10), .invalidValue(field: "copyRate", value: 151)),
            (.mapCreated, mapCreated(50, 128 << 10), .invalidValue(field: "grainSizeBytes", value: 128 << 10)),
            (.mapCreated, mapCreated(50, 0), .invalidValue(field: "grainSizeBytes", value: 0)),
            (
                .rollbackProgressed, payload { $0.write(UInt32(1)); $0.write(UInt64(3)); $0.write(UInt64(2)) },
                .invalidValue(field: "grainsRestored", value: 3)
            ),
            (
                .groupCreated, payload { $0.write(UInt32(1)); $0.write("g"); $0.write(false); $0.write(UInt32(86_401)) },
                .invalidValue(field: "seconds", value: 86_401)
            ),
            (.groupAutorestoreDelayChanged, payload { $0.write(UInt32(1)); $0.write(UInt32.max) }, .invalidValue(field: "seconds", value: UInt64(UInt32.max))),
            (
                .mapGroupChanged, payload { $0.write(UInt32(1)); $0.write(UInt64?.some(UInt64(UInt32.max) + 1)) },
                .invalidValue(field: "group", value: UInt64(UInt32.max) + 1)
            ),
            (
                .groupStarted, payload { $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(UInt32(Limits.groupMapsMax + 1)) },
                .invalidValue(field: "memberCount", value: UInt64(Limits.groupMapsMax + 1))
            ),
            (
                .groupRollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(2)); $0.write(UInt64?.none) },
                .invalidValue(field: "trigger", value: 2)
            ),
        ]
        for (type, bytes, expected) in cases {
            #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) } == .failure(expected), "\(type)")
        }
        // The boundary values are accepted.
        #expect(throws: Never.self) { try Event.decode(typeCode: EventType.mapCopyRateChanged.rawValue, payload { $0.write(UInt32(1)); $0.write(UInt8(150)) }) }
        #expect(throws: Never.self) { try Event.decode(typeCode: EventType.mapCreated.rawValue, mapCreated(150, 256 << 10)) }
        // Cause 5 is the anomaly detector's.
        #expect(
            decodeResult { () throws(DecodeError) in
                try Event.decode(typeCode: EventType.volumeFaulted.rawValue, payload { $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(UInt8(5)); $0.write("r") })
            } == .success(.volumeFaulted(id: 1, faultID: 1, cause: .detector, reason: "r")))
    }

    @Test("anomaly detection events: sensitivities, scores, evidence counts and nesting, and baselines outside their domains are refused")
    func invalidDetectionValues() {
        let detectionChanged = { (sensitivity: UInt8) in payload { $0.write(UInt32(1)); $0.write(true); $0.write(sensitivity) } }
        let attack: (UInt32, UInt32, UInt32, UInt32) = (320, 300, 290, 280)
        let shareMax = UInt32(DetectionLimits.partsPerMillion)
        let cases: [(EventType, [UInt8], DecodeError)] = [
            (.volumeDetectionChanged, detectionChanged(3), .invalidValue(field: "sensitivity", value: 3)),
            (.volumeDetectionChanged, detectionChanged(255), .invalidValue(field: "sensitivity", value: 255)),
            (.anomalyDetected, anomalyPayload(score: 101, intervals: [attack]), .invalidValue(field: "score", value: 101)),
            (.anomalyDetected, anomalyPayload(score: 255, intervals: []), .invalidValue(field: "score", value: 255)),
            // The count is refused before any interval is read.
            (.anomalyDetected, anomalyPayload(count: 9, intervals: []), .invalidValue(field: "evidenceCount", value: 9)),
            (.anomalyDetected, anomalyPayload(intervals: Array(repeating: attack, count: 9)), .invalidValue(field: "evidenceCount", value: 9)),
            (.anomalyDetected, anomalyPayload(count: 255, intervals: []), .invalidValue(field: "evidenceCount", value: 255)),
            // Counts that do not nest, in any interval (the interval codec's fields and values).
            (
                .anomalyDetected, anomalyPayload(intervals: [attack, (320, 300, 290, 291)]),
                .invalidValue(field: "interval.entropyIncreases", value: 291)
            ),
            (.anomalyDetected, anomalyPayload(intervals: [(320, 5, 0, 1)]), .invalidValue(field: "interval.entropyIncreases", value: 1)),
            (.anomalyDetected, anomalyPayload(intervals: [attack, attack, (320, 321, 0, 0)]), .invalidValue(field: "interval.highEntropyBlocks", value: 321)),
            (.anomalyDetected, anomalyPayload(intervals: [(320, 300, 321, 0)]), .invalidValue(field: "interval.overwriteSamples", value: 321)),
            (.detectorBaselineSaved, baselinePayload(version: 0), .invalidValue(field: "baseline.version", value: 0)),
            (.detectorBaselineSaved, baselinePayload(version: 2), .invalidValue(field: "baseline.version", value: 2)),
            (.detectorBaselineSaved, baselinePayload(version: 255), .invalidValue(field: "baseline.version", value: 255)),
            (
                .detectorBaselineSaved, baselinePayload(learned: 40, learnedOverwrites: 41),
                .invalidValue(field: "baseline.learnedOverwriteIntervals", value: 41)
            ),
            (
                .detectorBaselineSaved, baselinePayload(shares: [shareMax + 1, 0, 0, 0]),
                .invalidValue(field: "baseline.highEntropyShareMean", value: UInt64(shareMax) + 1)
            ),
            (
                .detectorBaselineSaved, baselinePayload(shares: [0, shareMax + 1, 0, 0]),
                .invalidValue(field: "baseline.highEntropyShareDeviation", value: UInt64(shareMax) + 1)
            ),
            (
                .detectorBaselineSaved, baselinePayload(shares: [0, 0, .max, 0]),
                .invalidValue(field: "baseline.increaseShareMean", value: UInt64(UInt32.max))
            ),
            (
                .detectorBaselineSaved, baselinePayload(shares: [0, 0, 0, shareMax + 1]),
                .invalidValue(field: "baseline.increaseShareDeviation", value: UInt64(shareMax) + 1)
            ),
            (
                .detectorBaselineSaved, baselinePayload(bytesWrittenMean: DetectionLimits.bytesPerIntervalMax + 1),
                .invalidValue(field: "baseline.bytesWrittenMean", value: DetectionLimits.bytesPerIntervalMax + 1)
            ),
        ]
        for (type, bytes, expected) in cases {
            #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) } == .failure(expected), "\(type) \(expected)")
        }
        // The boundary values are accepted: sensitivity 2, score 100, 8 intervals whose counts are
        // all equal, shares of exactly one million, 2^40 bytes, as many overwrite intervals as intervals.
        #expect(
            decodeResult { () throws(DecodeError) in try Event.decode(typeCode: EventType.volumeDetectionChanged.rawValue, detectionChanged(2)) }
                == .success(.volumeDetectionChanged(id: 1, enabled: true, sensitivity: .high)))
        let full = IntervalStatistics(
            startMilliseconds: 1_790_000_000_000, bytesWritten: 1 << 20, sampledBlocks: 300, highEntropyBlocks: 300, overwriteSamples: 300,
            entropyIncreases: 300)
        #expect(
            decodeResult { () throws(DecodeError) in
                try Event.decode(typeCode: EventType.anomalyDetected.rawValue, anomalyPayload(score: 100, intervals: Array(repeating: (300, 300, 300, 300), count: 8)))
            } == .success(.anomalyDetected(id: 1, score: 100, onsetMilliseconds: 1000, evidence: Array(repeating: full, count: 8))))
        let bounds = baselinePayload(
            learned: 7, learnedOverwrites: 7, shares: Array(repeating: shareMax, count: 4), bytesWrittenMean: DetectionLimits.bytesPerIntervalMax)
        #expect(
            decodeResult { () throws(DecodeError) in try Event.decode(typeCode: EventType.detectorBaselineSaved.rawValue, bounds) }
                == .success(
                    .detectorBaselineSaved(
                        id: 1,
                        baseline: DetectorBaseline(
                            learnedIntervals: 7, learnedOverwriteIntervals: 7, highEntropyShareMeanPartsPerMillion: shareMax,
                            highEntropyShareDeviationPartsPerMillion: shareMax, increaseShareMeanPartsPerMillion: shareMax,
                            increaseShareDeviationPartsPerMillion: shareMax, bytesWrittenMean: DetectionLimits.bytesPerIntervalMax))))
    }

    // Was a defect: the evidence decoder checked high ≤ sampled, overwrites ≤ sampled and
    // increases ≤ overwrites, but not increases ≤ high, which `IntervalStatistics.init` requires
    // with a precondition, so such a payload (which `decide` never writes, but a damaged or
    // hand-made log can hold) trapped the reader. It now reads intervals with the interval codec.
    // In its own process, so that a regression fails this test, not the test runner.
    @Test("fixed: evidence with more entropy increases than high-entropy blocks is refused, not a trap")
    func evidenceIncreasesAboveHighEntropy() async {
        await #expect(processExitsWith: .success) {
            // 10 sampled blocks, 2 of high entropy, 5 overwrite samples, 3 "increases".
            let bytes = anomalyPayload(intervals: [(10, 2, 5, 3)])
            let result = decodeResult { () throws(DecodeError) in try Event.decode(typeCode: EventType.anomalyDetected.rawValue, bytes) }
            precondition(result == .failure(.invalidValue(field: "interval.entropyIncreases", value: 3)), "\(result)")
        }
    }

    @Test("strings that are not valid UTF-8 are refused", arguments: [
        [0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0x61, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xF0, 0x9F, 0x94],
    ] as [[UInt8]])
    func invalidUTF8(bad: [UInt8]) {
        func string(_ writer: inout ByteWriter) {
            writer.write(UInt16(bad.count))
            writer.write(bytes: bad)
        }
        let cases: [(EventType, [UInt8], String)] = [
            (.volumeCreated, payload { $0.write(UInt32(1)); string(&$0); $0.write(UInt64(512)); $0.write(false) }, "name"),
            (.volumeCreated, payload { $0.write(UInt32(1)); $0.write("v"); $0.write(UInt64(512)); $0.write(true); string(&$0) }, "path"),
            (.mapRenamed, payload { $0.write(UInt32(1)); string(&$0); $0.write("r") }, "name"),
            (.mapRenamed, payload { $0.write(UInt32(1)); $0.write("n"); string(&$0) }, "reverseName"),
            (.volumeFaulted, payload { $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(UInt8(0)); string(&$0) }, "reason"),
            (.controllerStarted, payload { string(&$0) }, "version"),
            (.groupCreated, payload { $0.write(UInt32(1)); string(&$0); $0.write(false); $0.write(UInt32(0)) }, "name"),
            (.groupRenamed, payload { $0.write(UInt32(1)); string(&$0) }, "name"),
            (.groupRollbackStopped, payload { $0.write(UInt32(1)); string(&$0) }, "reason"),
            (.volumeRenamed, payload { $0.write(UInt32(1)); string(&$0) }, "name"),
            (
                .mapCreated,
                payload {
                    $0.write(UInt32(0)); string(&$0); $0.write(UInt32(1)); $0.write("r"); $0.write(UInt32(0)); $0.write(UInt32(1))
                    $0.write(UInt8(0)); $0.write(UInt32(64 << 10)); $0.write(false)
                }, "name"
            ),
        ]
        for (type, bytes, field) in cases {
            #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) } == .failure(.invalidUTF8(field: field)), "\(type) \(field)")
        }
    }

    @Test("a string length running past the end is truncation, not a crash")
    func stringLengthPastEnd() {
        let bytes = payload { $0.write(UInt16.max); $0.write(bytes: [0x61, 0x62]) }
        #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: EventType.controllerStarted.rawValue, bytes) } == .failure(.truncated(field: "version")))
    }

    @Test("event type names round-trip, case-insensitively")
    func typeNames() {
        for type in EventType.allCases {
            #expect(EventType(name: type.description) == type)
            #expect(EventType(name: type.description.uppercased()) == type)
            #expect(EventType(name: type.description.lowercased()) == type)
        }
        #expect(EventType(name: "") == nil)
        #expect(EventType(name: "VolumeCreatedX") == nil)
        #expect(
            [EventType.volumeRenamed, .volumeDetectionChanged, .anomalyDetected, .detectorBaselineSaved].map(\.description)
                == ["VolumeRenamed", "VolumeDetectionChanged", "AnomalyDetected", "DetectorBaselineSaved"])
        #expect([EventType.volumeRenamed, .volumeDetectionChanged, .anomalyDetected, .detectorBaselineSaved].map(\.rawValue) == [40, 41, 42, 43])
        #expect(EventType.allCases.map(\.rawValue) == Array(1...43))
        #expect(Set(EventType.allCases.map(\.description)).count == EventType.allCases.count)
    }

    @Test("events name the maps and volumes they touch")
    func namedObjects() {
        let created = Event.mapCreated(MapCreated(id: 4, name: "m", reverseID: 5, reverseName: "m_rev", sourceID: 1, targetID: 2, copyRate: 0, grainSizeBytes: 64 << 10, autorestore: false))
        #expect(created.mapIDs == [4, 5])
        #expect(created.volumeIDs == [1, 2])
        #expect(Event.rollbackStarted(id: 3, trigger: .auto, faultID: 1).mapIDs == [3])
        #expect(Event.rollbackStarted(id: 3, trigger: .auto, faultID: 1).volumeIDs == [])
        #expect(Event.volumeFaulted(id: 6, faultID: 1, cause: .operator, reason: "x").volumeIDs == [6])
        #expect(Event.volumeFaulted(id: 6, faultID: 1, cause: .operator, reason: "x").mapIDs == [])
        #expect(Event.controllerStarted(version: "1").mapIDs.isEmpty && Event.controllerStarted(version: "1").volumeIDs.isEmpty)
        #expect(Event.groupStarted(id: 2, startOrdinal: 5, members: [0, 4]).mapIDs == [0, 4])
        #expect(Event.groupStarted(id: 2, startOrdinal: 5, members: [0, 4]).groupIDs == [2])
        #expect(Event.mapGroupChanged(id: 4, group: 2).mapIDs == [4] && Event.mapGroupChanged(id: 4, group: 2).groupIDs == [2])
        #expect(Event.mapGroupChanged(id: 4, group: nil).groupIDs == [])
        #expect(Event.groupMemberRestored(id: 4).mapIDs == [4] && Event.groupMemberRestored(id: 4).groupIDs == [])
        #expect(Event.volumeRenamed(id: 6, name: "x").volumeIDs == [6])
        #expect(Event.anomalyDetected(id: 6, score: 90, onsetMilliseconds: 0, evidence: []).volumeIDs == [6])
        #expect(Event.detectorBaselineSaved(id: 6, baseline: DetectorBaseline()).volumeIDs == [6])
        for event in sampleEvents {
            switch event {
            case .volumeCreated, .volumeRemoved, .volumeFaulted, .volumeRecovered, .volumeOutOfSpace, .volumeSpaceRestored, .faultOnset,
                .volumeRenamed, .volumeDetectionChanged, .anomalyDetected, .detectorBaselineSaved:
                #expect(event.volumeIDs.count == 1 && event.mapIDs.isEmpty && event.groupIDs.isEmpty)
            case .controllerStarted: #expect(event.volumeIDs.isEmpty && event.mapIDs.isEmpty && event.groupIDs.isEmpty)
            case .mapCreated: #expect(event.mapIDs.count == 2 && event.groupIDs.isEmpty)
            case .groupCreated, .groupRenamed, .groupAutorestoreChanged, .groupAutorestoreDelayChanged, .groupRemoved, .groupRollbackStarted,
                .groupRollbackCompleted, .groupRollbackStopped, .groupRollbackScheduled:
                #expect(event.groupIDs.count == 1 && event.mapIDs.isEmpty && event.volumeIDs.isEmpty)
            case let .groupStarted(id, _, members): #expect(event.groupIDs == [id] && event.mapIDs == members && event.volumeIDs.isEmpty)
            case let .mapGroupChanged(id, group):
                #expect(event.mapIDs == [id] && event.groupIDs == (group.map { [$0] } ?? []) && event.volumeIDs.isEmpty)
            default: #expect(event.mapIDs.count == 1 && event.volumeIDs.isEmpty && event.groupIDs.isEmpty)
            }
        }
    }

    @Test("DecodeError descriptions are one line and name the field")
    func decodeErrorDescriptions() {
        let errors: [DecodeError] = [
            .truncated(field: "id"), .trailingBytes(count: 3), .invalidValue(field: "cause", value: 9), .invalidUTF8(field: "name"),
            .unknownEventType(99),
        ]
        for error in errors {
            #expect(!error.description.isEmpty)
            #expect(!error.description.contains("\n"))
        }
        #expect(DecodeError.invalidValue(field: "cause", value: 9).description.contains("cause"))
        #expect(DecodeError.unknownEventType(99).description.contains("99"))
    }
}

@Suite("byte codec")
struct ByteCodecTests {
    @Test("integers, strings and optionals read back what was written")
    func roundTrip() throws {
        var writer = ByteWriter()
        writer.write(UInt8(0xFE))
        writer.write(true)
        writer.write(UInt16(0xBEEF))
        writer.write(UInt32(0xDEAD_BEEF))
        writer.write(UInt64.max - 1)
        writer.write(Int64.min)
        writer.write("héllo")
        writer.write(String?.none)
        writer.write(String?.some(""))
        writer.write(UInt64?.none)
        writer.write(UInt64?.some(7))
        writer.write(bytes: [1, 2, 3])
        let bytes = writer.bytes
        try bytes.withUnsafeBytes { buffer in
            var reader = ByteReader(buffer)
            #expect(try reader.readUInt8("a") == 0xFE)
            #expect(try reader.readBool("b") == true)
            #expect(try reader.readUInt16("c") == 0xBEEF)
            #expect(try reader.readUInt32("d") == 0xDEAD_BEEF)
            #expect(try reader.readUInt64("e") == UInt64.max - 1)
            #expect(try reader.readInt64("f") == Int64.min)
            #expect(try reader.readString("g") == "héllo")
            #expect(try reader.readOptionalString("h") == nil)
            #expect(try reader.readOptionalString("i") == "")
            #expect(try reader.readOptionalUInt64("j") == nil)
            #expect(try reader.readOptionalUInt64("k") == 7)
            #expect(Array(try reader.readBytes(3, "l")) == [1, 2, 3])
            #expect(reader.remaining == 0)
            try reader.expectEnd()
            #expect(throws: DecodeError.truncated(field: "m")) { try reader.readUInt8("m") }
            #expect(throws: DecodeError.truncated(field: "n")) { try reader.readBytes(-1, "n") }
        }
    }

    @Test("integers are little-endian")
    func littleEndian() {
        var writer = ByteWriter()
        writer.write(UInt16(0x0102))
        writer.write(UInt32(0x0304_0506))
        writer.write(UInt64(0x0708_090A_0B0C_0D0E))
        writer.write(Int64(-2))
        #expect(writer.bytes == [2, 1, 6, 5, 4, 3, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 9, 8, 7, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test("count, removeAll and patch: a placeholder overwritten later, the writer reused")
    func patchAndReuse() {
        var writer = ByteWriter()
        writer.write(UInt8(9))
        let placeholder = writer.count
        writer.write(UInt32(0))
        writer.write("ab")
        #expect(writer.count == 1 + 4 + 2 + 2)
        writer.patch(0x0A0B_0C0D, at: placeholder)
        #expect(writer.bytes == [9, 0x0D, 0x0C, 0x0B, 0x0A, 2, 0, 0x61, 0x62])
        writer.patch(UInt32.max, at: writer.count - 4)
        #expect(writer.bytes == [9, 0x0D, 0x0C, 0x0B, 0x0A, 0xFF, 0xFF, 0xFF, 0xFF])
        writer.removeAll()
        #expect(writer.count == 0 && writer.bytes.isEmpty)
        writer.write(true)
        #expect(writer.bytes == [1])
    }

    @Test("patch outside the written bytes traps")
    func patchOutOfBounds() async {
        await #expect(processExitsWith: .failure) {
            var writer = ByteWriter()
            writer.write(UInt16(0))
            writer.patch(1, at: 0)
        }
    }

    @Test("a failed read does not consume bytes")
    func failedReadKeepsOffset() throws {
        let bytes: [UInt8] = [1, 2, 3]
        bytes.withUnsafeBytes { buffer in
            var reader = ByteReader(buffer)
            #expect(throws: DecodeError.truncated(field: "x")) { try reader.readUInt32("x") }
            #expect(reader.offset == 0)
            #expect(throws: DecodeError.trailingBytes(count: 3)) { try reader.expectEnd() }
        }
    }
}
