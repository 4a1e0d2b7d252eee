@testable import SnapbackCore
import Testing

/// Issue 14 in the state machine: `chvolume -name/-detect/-sensitivity`, `mkvolume -detect`, the
/// detector's verdicts and saved baselines (`Specs/events.md` 3.40–3.43). The detector itself is
/// tested in `DetectionTests`.
@Suite("decide: anomaly detection")
struct DetectionDecideTests {
    /// Commands applied at times of their own (each record's timestamp), as the controller and a
    /// replay do: an image's time is its `MapStarted` record's.
    struct Timed {
        var state = ControllerState()

        @discardableResult
        mutating func run(_ command: Command, at time: Int64) throws(CommandError) -> [Event] {
            let events = try decide(command, state)
            for event in events { state.apply(event, at: time) }
            return events
        }
    }

    /// Two intervals of an attack that began at `onset`: 575 of 590 sampled overwrites raised the
    /// entropy of plain data.
    static func attack(onset: Int64, score: Int = 92) -> DetectionVerdict {
        let evidence = [
            IntervalStatistics(
                startMilliseconds: onset + 1000, bytesWritten: 20 << 20, sampledBlocks: 320, highEntropyBlocks: 300, overwriteSamples: 290,
                entropyIncreases: 280),
            IntervalStatistics(
                startMilliseconds: onset + 2000, bytesWritten: 21 << 20, sampledBlocks: 336, highEntropyBlocks: 310, overwriteSamples: 300,
                entropyIncreases: 295),
        ]
        return DetectionVerdict(score: score, onsetMilliseconds: onset, evidence: evidence)
    }

    static let attackReason = "anomaly score 92: 575 of 590 sampled overwrites raised the entropy of plain data"

    static let baseline = DetectorBaseline(
        learnedIntervals: 600, learnedOverwriteIntervals: 200, highEntropyShareMeanPartsPerMillion: 80_000,
        highEntropyShareDeviationPartsPerMillion: 30_000, increaseShareMeanPartsPerMillion: 5_000, increaseShareDeviationPartsPerMillion: 4_000,
        bytesWrittenMean: 3 << 20)

    /// src (id 0, detection on at medium) and tgt (id 1); lcmap "m" (id 0) src → tgt with
    /// autorestore, created at 20 and started at `start` when one is given.
    static func watched(startedAt start: Int64?) throws -> Timed {
        var timed = Timed()
        try timed.run(.createVolume(name: "src", sizeBytes: 1 << 20, path: nil, detection: .medium), at: 10)
        try timed.run(.createVolume(name: "tgt", sizeBytes: 1 << 20, path: nil), at: 10)
        try timed.run(.createMap(CreateMap(source: "src", target: "tgt", name: "m", autorestore: true)), at: 20)
        if let start { try timed.run(.startMap(map: "m"), at: start) }
        return timed
    }

    // MARK: chvolume -name

    @Test("chvolume -name records VolumeRenamed: the name index follows, the id, maps and detection settings stay")
    func rename() throws {
        var harness = try Fixture.started()
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: .high))
        let events = try harness.run(.changeVolume(volume: "src", newName: "db", detect: nil, sensitivity: nil))
        #expect(events == [.volumeRenamed(id: 0, name: "db")])
        let volume = harness.state.volumes[0]
        #expect(volume?.name == "db" && volume?.detect == true && volume?.sensitivity == .high)
        #expect(harness.state.volumeIDsByName == ["db": 0, "tgt": 1])
        #expect(harness.state.volume("db")?.id == 0 && harness.state.volume("src") == nil)
        #expect(harness.state.maps[0]?.sourceID == 0 && harness.state.maps[0]?.isActive == true)
        checkInvariants(harness.state)
        // Commands find it by its new name (or id) only; its old name is free again.
        expectRejected(.removeVolume(volume: "src"), harness.state, .unknownVolume)
        expectRejected(.removeVolume(volume: "db"), harness.state, .volumeInMap)
        expectRejected(.createVolume(name: "db", sizeBytes: 512, path: nil), harness.state, .duplicateName)
        expectAccepted(
            .createVolume(name: "src", sizeBytes: 512, path: nil), harness.state, [.volumeCreated(id: 2, name: "src", sizeBytes: 512, path: nil)])
        expectAccepted(.changeVolume(volume: "0", newName: "src", detect: nil, sensitivity: nil), harness.state, [.volumeRenamed(id: 0, name: "src")])
        // Its current name: nothing to record.
        expectAccepted(.changeVolume(volume: "db", newName: "db", detect: nil, sensitivity: nil), harness.state, [])
    }

    @Test("chvolume -name refuses another volume's name and invalid names, and then records nothing at all")
    func renameRefused() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.changeVolume(volume: "src", newName: "tgt", detect: nil, sensitivity: nil), harness.state, .duplicateName)
        // A refused name refuses the whole command, detection change included.
        expectRejected(.changeVolume(volume: "src", newName: "tgt", detect: true, sensitivity: .low), harness.state, .duplicateName)
        for name in ["", "9lives", "-dash", "a b", "é", String(repeating: "x", count: 64)] {
            expectRejected(.changeVolume(volume: "src", newName: name, detect: nil, sensitivity: nil), harness.state, .invalidName)
        }
        expectRejected(.changeVolume(volume: "ghost", newName: "new", detect: nil, sensitivity: nil), harness.state, .unknownVolume)
        expectRejected(.changeVolume(volume: "7", newName: "new", detect: true, sensitivity: nil), harness.state, .unknownVolume)
        // A swap goes through a free name; the index holds each name once.
        var swap = harness
        try swap.run(.changeVolume(volume: "src", newName: "tmp", detect: nil, sensitivity: nil))
        try swap.run(.changeVolume(volume: "tgt", newName: "src", detect: nil, sensitivity: nil))
        try swap.run(.changeVolume(volume: "tmp", newName: "tgt", detect: nil, sensitivity: nil))
        #expect(swap.state.volumeIDsByName == ["src": 1, "tgt": 0])
        checkInvariants(swap.state)
    }

    @Test("chvolume without -name, -detect or -sensitivity is nothing_to_change")
    func nothingToChange() throws {
        let harness = try Fixture.twoVolumes()
        expectRejected(.changeVolume(volume: "src", newName: nil, detect: nil, sensitivity: nil), harness.state, .nothingToChange)
        expectRejected(.changeVolume(volume: "1", newName: nil, detect: nil, sensitivity: nil), harness.state, .nothingToChange)
    }

    // MARK: chvolume -detect / -sensitivity, mkvolume -detect

    @Test("chvolume -detect and -sensitivity record both values when either differs, nothing otherwise")
    func detectionSettings() throws {
        var harness = try Fixture.twoVolumes()
        let fresh = harness.state.volumes[0]
        #expect(fresh?.detect == false && fresh?.sensitivity == .medium && fresh?.detectorBaseline == nil)
        expectAccepted(
            .changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil), harness.state,
            [.volumeDetectionChanged(id: 0, enabled: true, sensitivity: .medium)])
        // Off on a volume whose detection is off: nothing.
        expectAccepted(.changeVolume(volume: "tgt", newName: nil, detect: false, sensitivity: nil), harness.state, [])

        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: .low))
        #expect(harness.state.volumes[0]?.detect == true && harness.state.volumes[0]?.sensitivity == .low)
        expectAccepted(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil), harness.state, [])
        expectAccepted(.changeVolume(volume: "src", newName: "src", detect: true, sensitivity: .low), harness.state, [])
        expectAccepted(
            .changeVolume(volume: "src", newName: nil, detect: nil, sensitivity: .high), harness.state,
            [.volumeDetectionChanged(id: 0, enabled: true, sensitivity: .high)])

        // Off keeps the sensitivity and the saved baseline; on again starts from them.
        try harness.run(.recordDetectorBaseline(volume: 0, baseline: Self.baseline))
        let off = try harness.run(.changeVolume(volume: "src", newName: nil, detect: false, sensitivity: nil))
        #expect(off == [.volumeDetectionChanged(id: 0, enabled: false, sensitivity: .low)])
        #expect(harness.state.volumes[0]?.detect == false && harness.state.volumes[0]?.sensitivity == .low)
        #expect(harness.state.volumes[0]?.detectorBaseline == Self.baseline)
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil))
        #expect(harness.state.volumes[0]?.detect == true && harness.state.volumes[0]?.detectorBaseline == Self.baseline)

        // A new name and detection in one command: VolumeRenamed first.
        expectAccepted(
            .changeVolume(volume: "src", newName: "db", detect: true, sensitivity: .high), harness.state,
            [.volumeRenamed(id: 0, name: "db"), .volumeDetectionChanged(id: 0, enabled: true, sensitivity: .high)])
        checkInvariants(harness.state)
    }

    @Test("chvolume -sensitivity needs detection on: refused whole (invalid_state) when detection is or turns off")
    func sensitivityNeedsDetection() throws {
        var harness = try Fixture.twoVolumes()
        expectRejected(.changeVolume(volume: "tgt", newName: nil, detect: nil, sensitivity: .high), harness.state, .invalidState)
        expectRejected(.changeVolume(volume: "tgt", newName: nil, detect: false, sensitivity: .low), harness.state, .invalidState)
        // Even with the values the volume has.
        expectRejected(.changeVolume(volume: "tgt", newName: nil, detect: false, sensitivity: .medium), harness.state, .invalidState)
        // With -detect on, or on a volume whose detection is on, it is taken.
        expectAccepted(
            .changeVolume(volume: "tgt", newName: nil, detect: true, sensitivity: .high), harness.state,
            [.volumeDetectionChanged(id: 1, enabled: true, sensitivity: .high)])
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil))
        expectAccepted(
            .changeVolume(volume: "src", newName: nil, detect: nil, sensitivity: .low), harness.state,
            [.volumeDetectionChanged(id: 0, enabled: true, sensitivity: .low)])
        // Turning it off with a sensitivity refuses the whole command: no rename either.
        expectRejected(.changeVolume(volume: "src", newName: "db", detect: false, sensitivity: .high), harness.state, .invalidState)
        #expect(harness.state.volume("src")?.detect == true && harness.state.volume("src")?.sensitivity == .medium)
    }

    @Test("mkvolume -detect records VolumeDetectionChanged right after VolumeCreated, or nothing when refused")
    func createWithDetection() throws {
        for sensitivity in DetectionSensitivity.allCases {
            expectAccepted(
                .createVolume(name: "v", sizeBytes: 512, path: nil, detection: sensitivity), ControllerState(),
                [.volumeCreated(id: 0, name: "v", sizeBytes: 512, path: nil), .volumeDetectionChanged(id: 0, enabled: true, sensitivity: sensitivity)])
        }
        expectRejected(.createVolume(name: "9v", sizeBytes: 512, path: nil, detection: .high), ControllerState(), .invalidName)
        expectRejected(.createVolume(name: "v", sizeBytes: 511, path: nil, detection: .high), ControllerState(), .invalidSize)
        var harness = Harness()
        try harness.run(.createVolume(name: "v", sizeBytes: 512, path: nil, detection: .low))
        #expect(harness.state.volumes[0]?.detect == true && harness.state.volumes[0]?.sensitivity == .low)
        #expect(harness.state.volumes[0]?.detectorBaseline == nil)
        expectRejected(.createVolume(name: "v", sizeBytes: 512, path: nil, detection: .low), harness.state, .duplicateName)
    }

    // MARK: reportAnomaly

    @Test("reportAnomaly is refused for an unknown volume, one without detection, or one that is not online")
    func anomalyRefused() throws {
        let verdict = Self.attack(onset: 4000)
        // Detection off.
        var harness = try Fixture.started(autorestore: false)
        expectRejected(.reportAnomaly(volume: 0, verdict: verdict), harness.state, .invalidState)
        expectRejected(.reportAnomaly(volume: 9, verdict: verdict), harness.state, .unknownVolume)
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil))
        #expect(rejection(.reportAnomaly(volume: 0, verdict: verdict), harness.state) == nil)
        // Faulted (autorestore off: no rollback).
        var faulted = harness
        try faulted.run(.reportFault(volume: "src", cause: .ioError, reason: "EIO"))
        #expect(faulted.state.volumes[0]?.status == .faulted)
        expectRejected(.reportAnomaly(volume: 0, verdict: verdict), faulted.state, .invalidState)
        // Restoring (an operator's rollback).
        var restoring = harness
        try restoring.run(.startRestore(map: "m"))
        #expect(restoring.state.volumes[0]?.status == .restoring)
        expectRejected(.reportAnomaly(volume: 0, verdict: verdict), restoring.state, .invalidState)
        // Out of space is online to hosts: accepted.
        var full = harness
        try full.run(.reportOutOfSpace(volume: 0, reason: "pwrite failed: errno 28"))
        #expect(rejection(.reportAnomaly(volume: 0, verdict: verdict), full.state) == nil)
        // A verdict out of range.
        var early = verdict
        early.onsetMilliseconds = -1
        expectRejected(.reportAnomaly(volume: 0, verdict: early), harness.state, .invalidProgress)
        var high = verdict
        high.score = 101
        expectRejected(.reportAnomaly(volume: 0, verdict: high), harness.state, .invalidProgress)
        var long = verdict
        long.evidence = Array(repeating: verdict.evidence[0], count: DetectionLimits.evidenceIntervalsMax + 1)
        expectRejected(.reportAnomaly(volume: 0, verdict: long), harness.state, .invalidProgress)
    }

    @Test("a verdict records AnomalyDetected, a fault of cause detector with its onset, and rolls back to an image taken before the onset")
    func anomalyRollsBack() throws {
        var timed = try Self.watched(startedAt: 1000)
        let before = timed.state
        let verdict = Self.attack(onset: 4000)
        let events = try timed.run(.reportAnomaly(volume: 0, verdict: verdict), at: 7000)
        #expect(
            events == [
                .anomalyDetected(id: 0, score: 92, onsetMilliseconds: 4000, evidence: verdict.evidence),
                .volumeFaulted(id: 0, faultID: 1, cause: .detector, reason: Self.attackReason),
                .faultOnset(id: 0, faultID: 1, onsetMilliseconds: 4000),
                .rollbackStarted(id: 0, trigger: .auto, faultID: 1),
            ])
        // AnomalyDetected itself changes nothing but the count.
        var counted = before
        counted.eventsApplied += 1
        #expect(evolve(before, events[0]) == counted)
        let volume = timed.state.volumes[0]
        #expect(volume?.status == .restoring)
        #expect(volume?.fault == Fault(id: 1, cause: .detector, reason: Self.attackReason, onsetMilliseconds: 4000))
        #expect(timed.state.maps[0]?.rollback == Rollback(trigger: .auto, faultID: 1))
        checkInvariants(timed.state)
        // The detector reports nothing more while the rollback runs.
        expectRejected(.reportAnomaly(volume: 0, verdict: Self.attack(onset: 8000)), timed.state, .invalidState)
        // An image taken at the onset itself counts as before it.
        var onTime = try Self.watched(startedAt: 4000)
        #expect(try onTime.run(.reportAnomaly(volume: 0, verdict: verdict), at: 7000).last == .rollbackStarted(id: 0, trigger: .auto, faultID: 1))
    }

    @Test("of two images, the rollback takes the newest one taken before the onset, not the newest")
    func anomalySkipsImageAfterOnset() throws {
        var timed = Timed()
        try timed.run(.createVolume(name: "src", sizeBytes: 1 << 20, path: nil, detection: .high), at: 10)
        for name in ["t1", "t2"] { try timed.run(.createVolume(name: name, sizeBytes: 1 << 20, path: nil), at: 10) }
        try timed.run(.createMap(CreateMap(source: "src", target: "t1", name: "a", autorestore: true)), at: 20)
        try timed.run(.createMap(CreateMap(source: "src", target: "t2", name: "b", autorestore: true)), at: 20)
        try timed.run(.startMap(map: "a"), at: 1000)
        try timed.run(.startMap(map: "b"), at: 5000)
        let (a, b) = (timed.state.map("a")!, timed.state.map("b")!)
        let events = try timed.run(.reportAnomaly(volume: 0, verdict: Self.attack(onset: 4000)), at: 7000)
        #expect(events.count == 4 && events.last == .rollbackStarted(id: a.id, trigger: .auto, faultID: 1))
        #expect(timed.state.runningRollback(onto: 0)?.id == a.id && timed.state.maps[b.id]?.rollback == nil)
    }

    @Test("with the only image taken after the onset, the volume stays faulted with its onset and nothing rolls back")
    func anomalyWithoutEarlierImage() throws {
        var timed = try Self.watched(startedAt: 5000)
        let verdict = Self.attack(onset: 4000)
        let events = try timed.run(.reportAnomaly(volume: 0, verdict: verdict), at: 7000)
        #expect(
            events == [
                .anomalyDetected(id: 0, score: 92, onsetMilliseconds: 4000, evidence: verdict.evidence),
                .volumeFaulted(id: 0, faultID: 1, cause: .detector, reason: Self.attackReason),
                .faultOnset(id: 0, faultID: 1, onsetMilliseconds: 4000),
            ])
        #expect(timed.state.volumes[0]?.status == .faulted)
        #expect(timed.state.volumes[0]?.fault?.onsetMilliseconds == 4000 && timed.state.volumes[0]?.fault?.cause == .detector)
        // The image is still there for an operator who chooses it anyway.
        #expect(timed.state.maps[0]?.rollback == nil && timed.state.maps[0]?.imageValid == true)
        // And without any image at all, the same three events.
        var unstarted = try Self.watched(startedAt: nil)
        #expect(try unstarted.run(.reportAnomaly(volume: 0, verdict: verdict), at: 7000) == events)
        checkInvariants(timed.state)
    }

    // MARK: recordDetectorBaseline

    @Test("recordDetectorBaseline is refused without detection; saved on any status; the last one counts")
    func baselines() throws {
        var harness = try Fixture.twoVolumes()
        expectRejected(.recordDetectorBaseline(volume: 0, baseline: Self.baseline), harness.state, .invalidState)
        expectRejected(.recordDetectorBaseline(volume: 7, baseline: Self.baseline), harness.state, .unknownVolume)
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: true, sensitivity: nil))
        let events = try harness.run(.recordDetectorBaseline(volume: 0, baseline: DetectorBaseline()))
        #expect(events == [.detectorBaselineSaved(id: 0, baseline: DetectorBaseline())])
        #expect(harness.state.volumes[0]?.detectorBaseline == DetectorBaseline())
        try harness.run(.recordDetectorBaseline(volume: 0, baseline: Self.baseline))
        #expect(harness.state.volumes[0]?.detectorBaseline == Self.baseline)
        // Any status: a faulted volume's detector may still save what it learned.
        try harness.run(.reportFault(volume: "src", cause: .ioError, reason: "EIO"))
        expectAccepted(.recordDetectorBaseline(volume: 0, baseline: Self.baseline), harness.state, [.detectorBaselineSaved(id: 0, baseline: Self.baseline)])
        // Detection off: refused, and the saved baseline stays.
        try harness.run(.changeVolume(volume: "src", newName: nil, detect: false, sensitivity: nil))
        expectRejected(.recordDetectorBaseline(volume: 0, baseline: DetectorBaseline()), harness.state, .invalidState)
        #expect(harness.state.volumes[0]?.detectorBaseline == Self.baseline)
    }
}
