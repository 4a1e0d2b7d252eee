// Writes the seed corpus of the `event-record` fuzz target (`tools/fuzz seeds`): one record, the
// same record with a caller block, and one bare payload of every event type, checkpoints of the
// states of a short scenario, and that scenario's log. Built like the target (one module `SnapbackCore` with LogRecord.swift and the
// Crypto stub), without sanitizers. Usage: event-record-seeds DIRECTORY

import Foundation

@main
struct EventRecordSeeds {
    static func main() throws {
        let directory = URL(fileURLWithPath: CommandLine.arguments[1])
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        func write(_ name: String, _ mode: UInt8, _ bytes: [UInt8]) throws {
            try Data([mode] + bytes).write(to: directory.appendingPathComponent(name))
        }

        for (index, event) in sampleEvents.enumerated() {
            let name = "\(String(format: "%02d", index))-\(event.type)"
            let record = LogRecord.encode(
                event: event, timestampMilliseconds: 1_700_000_000_000 + Int64(index), previousHash: LogRecord.zeroHash)
            try write("record-\(name).bin", 0, record)
            // The same record with a caller block (flag bit 0).
            let called = LogRecord.encode(
                event: event, caller: Caller(uid: 1000, gid: 1000, pid: 4242 + UInt32(index)),
                timestampMilliseconds: 1_700_000_000_000 + Int64(index), previousHash: LogRecord.zeroHash)
            try write("record-caller-\(name).bin", 0, called)
            try write("event-\(name).bin", 1, littleEndian(event.type.rawValue) + event.encodedPayload())
        }

        var state = ControllerState()
        var log: [Event] = []
        for (step, command) in scenario.enumerated() {
            let events = try decide(command, state)
            for event in events { state = evolve(state, event) }
            log += events
            try write("state-\(String(format: "%02d", step)).bin", 2, state.encoded())
        }
        try write("state-empty.bin", 2, ControllerState().encoded())
        try write("log-scenario.bin", 3, log.flatMap(logEntry))
        try write("log-all-types.bin", 3, sampleEvents.flatMap(logEntry))
    }

    static func littleEndian(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }

    static func logEntry(_ event: Event) -> [UInt8] {
        let payload = event.encodedPayload()
        return littleEndian(event.type.rawValue) + littleEndian(UInt16(payload.count)) + payload
    }

    /// Every event type, and both shapes of the ones with an optional field.
    static let sampleEvents: [Event] = [
        .volumeCreated(id: 0, name: "src", sizeBytes: 1 << 20, path: nil),
        .volumeCreated(id: 1, name: "tgt", sizeBytes: 1 << 20, path: "/srv/tgt.img"),
        .mapCreated(
            MapCreated(
                id: 0, name: "m", reverseID: 1, reverseName: "m_rev", sourceID: 0, targetID: 1, copyRate: 50,
                grainSizeBytes: 256 << 10, autorestore: true)),
        .mapRenamed(id: 0, name: "n", reverseName: "n_rev"),
        .mapAutorestoreChanged(id: 0, autorestore: false),
        .mapCopyRateChanged(id: 0, copyRate: 150),
        .mapPreparing(id: 0),
        .mapPrepared(id: 0),
        .mapStarted(id: 0, startOrdinal: 1),
        .mapCopyProgressed(id: 0, grainsCopied: 2),
        .mapCopyCompleted(id: 0),
        .volumeFaulted(id: 0, faultID: 1, cause: .ioError, reason: "EIO at 4096"),
        .rollbackStarted(id: 0, trigger: .auto, faultID: 1),
        .rollbackStarted(id: 0, trigger: .operator, faultID: nil),
        .rollbackProgressed(id: 0, grainsRestored: 1, grainsToRestore: 3),
        .rollbackCompleted(id: 0),
        .rollbackStopped(id: 0, reason: "stopped by operator (stoplcmap -force)"),
        .volumeRecovered(id: 0),
        .mapStopping(id: 0),
        .mapStopped(id: 0),
        .mapRemoved(id: 0),
        .volumeRemoved(id: 1),
        .controllerStarted(version: "0.1.0"),
        .volumeOutOfSpace(id: 0, reason: "pwrite failed: errno 28"),
        .volumeSpaceRestored(id: 0),
        .rollbackRestarted(id: 0, faultID: 2),
        .mapAutorestoreDelayChanged(id: 0, seconds: 30),
        .rollbackScheduled(id: 0, faultID: 3),
        .faultOnset(id: 0, faultID: 3, onsetMilliseconds: 1_700_000_000_000),
        .groupCreated(id: 0, name: "g", autorestore: true, autorestoreDelaySeconds: 0),
        .groupRenamed(id: 0, name: "h"),
        .groupAutorestoreChanged(id: 0, autorestore: false),
        .groupAutorestoreDelayChanged(id: 0, seconds: 60),
        .mapGroupChanged(id: 0, group: 0),
        .mapGroupChanged(id: 0, group: nil),
        .groupStarted(id: 0, startOrdinal: 4, members: [0, 2]),
        .groupRollbackStarted(id: 0, trigger: .auto, faultID: 5),
        .groupRollbackStarted(id: 0, trigger: .operator, faultID: nil),
        .groupMemberRestored(id: 0),
        .groupRollbackCompleted(id: 0),
        .groupRollbackStopped(id: 0, reason: "stopped: target tgt of lcmap m faulted (fault 6)"),
        .groupRollbackScheduled(id: 0, faultID: 5),
        .groupRemoved(id: 0),
        .volumeRenamed(id: 0, name: "src2"),
        .volumeDetectionChanged(id: 0, enabled: true, sensitivity: .high),
        .volumeDetectionChanged(id: 0, enabled: false, sensitivity: .low),
        .anomalyDetected(id: 0, score: 0, onsetMilliseconds: 1_700_000_000_000, evidence: []),
        .anomalyDetected(
            id: 0, score: 97, onsetMilliseconds: 1_700_000_000_000,
            evidence: [
                IntervalStatistics(
                    startMilliseconds: 1_700_000_001_000, bytesWritten: 20 << 20, sampledBlocks: 320, highEntropyBlocks: 300,
                    overwriteSamples: 300, entropyIncreases: 290)
            ]),
        .detectorBaselineSaved(id: 0, baseline: DetectorBaseline()),
        .volumeFaulted(id: 0, faultID: 7, cause: .detector, reason: "anomaly score 97"),
    ]

    /// Create, start, copy, fault with autorestore, roll back, stop, abandon a rollback: every
    /// kind of map and volume record a checkpoint holds.
    static let scenario: [Command] = [
        .recordControllerStart(version: "0.1.0"),
        .createVolume(name: "src", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "tgt", sizeBytes: 1 << 20, path: "/srv/tgt.img"),
        .createMap(CreateMap(source: "src", target: "tgt", name: "m", autorestore: true, copyRate: 80, grainSizeBytes: 64 << 10)),
        .startMap(map: "m"),
        .recordCopyProgress(map: 0, grainsCopied: 5),
        .completeCopy(map: 0),
        .reportFault(volume: "src", cause: .ioError, reason: "EIO at 0"),
        .recordRollbackProgress(map: 0, grainsRestored: 1, grainsToRestore: 4),
        .completeRollback(map: 0),
        .stopMap(map: "m", force: false),
        .startMap(map: "m"),
        .startRestore(map: "m"),
        .stopMap(map: "m", force: true),
        .recoverVolume(volume: "src"),
        .createVolume(name: "other", sizeBytes: 4096, path: nil),
        .reportFault(volume: "other", cause: .operator, reason: "checked by hand"),
        // A consistency group: created, joined, started, rolled back after a member's fault.
        .createVolume(name: "src2", sizeBytes: 1 << 20, path: nil),
        .createVolume(name: "tgt2", sizeBytes: 1 << 20, path: nil),
        .createGroup(name: "g", autorestore: true, autorestoreDelaySeconds: 0),
        .stopMap(map: "m", force: true),
        .changeMap(map: "m", autorestore: nil, copyRate: nil, newName: nil, group: .join("g")),
        .createMap(CreateMap(source: "src2", target: "tgt2", name: "m2", copyRate: 0, grainSizeBytes: 64 << 10, group: "g")),
        .startGroup(group: "g"),
        .reportFault(volume: "src2", cause: .operator, reason: "encrypted"),
        .completeRollback(map: 0),
        // Detection on a volume, renamed, a verdict that faults it.
        .createVolume(name: "watched", sizeBytes: 1 << 20, path: nil, detection: .medium),
        .changeVolume(volume: "watched", newName: "watched2", detect: nil, sensitivity: .high),
        .recordDetectorBaseline(volume: 5, baseline: DetectorBaseline()),
        .reportAnomaly(
            volume: 5,
            verdict: DetectionVerdict(
                score: 90, onsetMilliseconds: 1_700_000_000_000,
                evidence: [IntervalStatistics(startMilliseconds: 1_700_000_001_000, bytesWritten: 1 << 20, sampledBlocks: 16, highEntropyBlocks: 16, overwriteSamples: 16, entropyIncreases: 16)])),
    ]
}
