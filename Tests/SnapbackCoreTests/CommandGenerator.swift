@testable import SnapbackCore
import SnapbackRandom

/// Generates random commands, valid and invalid mixed, biased towards ones that make progress
/// (starts, faults, rollbacks, data-plane reports) so that long sequences reach every state.
///
/// Every choice is made from sorted arrays, never from dictionary iteration order (which Swift
/// seeds per process), so a seed reproduces the same sequence in every run.
///
/// Names, references and paths never contain a newline: see `KnownIssueTests` (a newline in a
/// refused name traps the process).
struct CommandGenerator {
    var random: SeededRandom
    /// The anomaly-detection commands' own stream: whether a step is one, and all its choices.
    /// Added with them, it leaves the draws of every other command as they were, so the other
    /// commands' coverage (rare ones like `GroupRollbackScheduled`) does not hang on them.
    var detectionRandom: SeededRandom

    init(seed: UInt64) {
        random = SeededRandom(seed: seed)
        detectionRandom = SeededRandom(seed: seed ^ 0xD37E_C7D3_7EC7_D37E)
    }

    static let volumeNames = ["v0", "v1", "v2", "v3", "v4", "v5", "v6"]
    static let mapNames = ["m0", "m1", "m2", "m3", "m4", "daily", "m0_rev"]
    static let badNames = ["", "9lives", "has space", "slash/", String(repeating: "x", count: 64)]
    static let sizes: [UInt64] = [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 2 << 20, 512, 0, 513, (256 << 40) + 512]
    static let reasons = ["ransomware", "EIO on read", "x", "", "   ", "two\nlines", String(repeating: "r", count: 257)]
    /// Group names: valid ones, one that is also an lcmap's name ("daily"), and the default name
    /// of group 1 ("lcgrp1").
    static let groupNames = ["g0", "g1", "db", "lcgrp1", "daily"]
    static let delays: [UInt32] = [0, 0, 0, 30, 600, 86_400, 86_401]

    mutating func volumeReference(_ state: ControllerState) -> String {
        let volumes = state.volumesByID
        switch random.int(0...39) {
        case 0: return "ghost"
        case 1: return String(random.int(0...12))
        case 2: return random.pick(Self.volumeNames)
        default:
            guard !volumes.isEmpty else { return random.pick(Self.volumeNames) }
            let volume = random.pick(volumes)
            return random.chance(80) ? volume.name : String(volume.id)
        }
    }

    mutating func mapReference(_ state: ControllerState, forwardBias: Int = 85) -> String {
        let maps = state.mapsByID
        switch random.int(0...39) {
        case 0: return "nope"
        case 1: return String(random.int(0...12))
        default:
            guard !maps.isEmpty else { return random.pick(Self.mapNames) }
            let forward = maps.filter { $0.role == .forward }
            let map = random.chance(forwardBias) && !forward.isEmpty ? random.pick(forward) : random.pick(maps)
            return random.chance(80) ? map.name : String(map.id)
        }
    }

    /// A map id for the data plane's commands: mostly one that is copying or rolling back.
    mutating func mapID(_ state: ControllerState, rollingBack: Bool) -> MapID {
        let busy = state.mapsByID.filter { rollingBack ? $0.rollback != nil : ($0.role == .forward && $0.state == .copying) }
        if !busy.isEmpty && random.chance(85) { return random.pick(busy).id }
        return MapID(random.int(0...Int(state.nextMapID) + 1))
    }

    /// Two volumes a map may join: the source not a target, the target in no map, same size.
    mutating func mappablePair(_ state: ControllerState) -> (String, String)? {
        let volumes = state.volumesByID
        let sources = volumes.filter { volume in !state.maps.values.contains { $0.role == .forward && $0.targetID == volume.id } }
        guard !sources.isEmpty else { return nil }
        let source = random.pick(sources)
        let targets = volumes.filter { $0.id != source.id && $0.sizeBytes == source.sizeBytes && state.maps(touching: $0.id).isEmpty }
        guard !targets.isEmpty else { return nil }
        return (source.name, random.pick(targets).name)
    }

    /// A group as the user names it: mostly one that exists (by name or id), sometimes none.
    mutating func groupReference(_ state: ControllerState) -> String {
        let groups = state.groupsByID
        switch random.int(0...19) {
        case 0: return "nogroup"
        case 1: return String(random.int(0...5))
        default:
            guard !groups.isEmpty else { return random.pick(Self.groupNames) }
            let group = random.pick(groups)
            return random.chance(80) ? group.name : String(group.id)
        }
    }

    /// A group id for the controller's commands: mostly one that `ready` accepts, sometimes any id.
    mutating func groupID(_ state: ControllerState, where ready: (LCGroup) -> Bool) -> GroupID {
        let candidates = state.groupsByID.filter(ready)
        if !candidates.isEmpty && random.chance(85) { return random.pick(candidates).id }
        return GroupID(random.int(0...Int(state.nextGroupID) + 1))
    }

    mutating func copyRate() -> Int { random.pick([0, 50, 150, -1, 151, random.int(0...150), random.int(0...150)]) }

    mutating func next(_ state: ControllerState) -> Command {
        // Bootstrap: without volumes and maps, most map commands would only be refused.
        let forwardMaps = state.maps.values.filter { $0.role == .forward }.count
        if forwardMaps < 2, random.chance(50) {
            if random.chance(50), let (source, target) = mappablePair(state) {
                let group = !state.groups.isEmpty && random.chance(50) ? groupReference(state) : nil
                return .createMap(
                    CreateMap(
                        source: source, target: target, autorestore: random.chance(60), copyRate: random.int(0...150),
                        autorestoreDelaySeconds: random.chance(20) ? UInt32(random.int(1...600)) : 0, group: group))
            }
            if state.groups.isEmpty, random.chance(20) {
                return .createGroup(name: nil, autorestore: random.chance(70), autorestoreDelaySeconds: random.chance(20) ? 60 : 0)
            }
            let unused = Self.volumeNames.filter { state.volumeIDsByName[$0] == nil }
            if !unused.isEmpty {
                let detection = detectionRandom.chance(40) ? detectionRandom.pick(DetectionSensitivity.allCases) : nil
                return .createVolume(name: random.pick(unused), sizeBytes: 1 << 20, path: nil, detection: detection)
            }
        }
        if detectionRandom.chance(6) {
            // Every choice of the command from the detection stream (the helpers draw from `random`).
            swap(&random, &detectionRandom)
            defer { swap(&random, &detectionRandom) }
            return detectionCommand(state)
        }
        if random.chance(20) { return groupCommand(state) }
        return anyCommand(state)
    }

    /// A consistency-group command, or a map command that names a group.
    mutating func groupCommand(_ state: ControllerState) -> Command {
        switch random.int(0...99) {
        case 0..<10:
            let name: String? = switch random.int(0...9) {
            case 0...4: nil
            case 5...8: random.pick(Self.groupNames)
            default: random.pick(Self.badNames)
            }
            return .createGroup(name: name, autorestore: random.chance(70), autorestoreDelaySeconds: random.pick(Self.delays))
        case 10..<16:
            let newName: String? = random.chance(30) ? (random.chance(80) ? random.pick(Self.groupNames + Self.mapNames) : random.pick(Self.badNames)) : nil
            return .changeGroup(
                group: groupReference(state), newName: newName, autorestore: random.chance(50) ? random.chance(50) : nil,
                autorestoreDelaySeconds: random.chance(30) ? random.pick(Self.delays) : nil)
        case 16..<21:
            return .removeGroup(group: groupReference(state), force: random.chance(40))
        case 21..<38:
            // Now and then an idle lcmap joins a group started before (its images then have other
            // members: group_changed).
            let started = state.groupsByID.filter { $0.startOrdinal != nil }
            let idle = state.mapsByID.filter { $0.role == .forward && $0.rollback == nil && ($0.state == .idleOrCopied || $0.state == .stopped) }
            if random.chance(30), !started.isEmpty, !idle.isEmpty {
                return .changeMap(map: random.pick(idle).name, autorestore: nil, copyRate: nil, newName: nil, group: .join(random.pick(started).name))
            }
            let change: MapGroupChange = random.chance(75) ? .join(groupReference(state)) : .leave
            return .changeMap(map: mapReference(state), autorestore: nil, copyRate: nil, newName: nil, group: change)
        case 38..<54:
            return .startGroup(group: groupReference(state))
        case 54..<63:
            return .startGroupRestore(group: groupReference(state))
        case 63..<70:
            return .stopGroup(group: groupReference(state), force: random.chance(50))
        case 70..<78:
            return .startScheduledGroupRollback(group: groupID(state) { $0.scheduledRollback != nil })
        default:
            // A member still restoring completes first; the group, once every member waits.
            let rolling = state.groupsByID.filter { $0.rollback != nil }
            if random.chance(60), let group = rolling.first,
                let member = state.members(of: group.id).first(where: { $0.rollback?.awaitingGroup == false })
            {
                return .completeRollback(map: member.id)
            }
            return .completeGroupRollback(group: groupID(state) { $0.rollback != nil })
        }
    }

    /// An anomaly-detection command: `chvolume`, `mkvolume -detect`, a detector's verdict or saved
    /// baseline, mostly on volumes where `decide` accepts them.
    mutating func detectionCommand(_ state: ControllerState) -> Command {
        switch random.int(0...99) {
        case 0..<30:
            // Often a map's source, whose verdicts then roll back (alone or with its group).
            let sources = state.mapsByID.filter { $0.role == .forward }.compactMap { state.volumes[$0.sourceID]?.name }
            let reference = !sources.isEmpty && random.chance(50) ? random.pick(sources) : volumeReference(state)
            var newName: String?
            switch random.int(0...9) {
            case 0...4: newName = nil
            case 5...7: newName = random.pick(Self.volumeNames)  // free or another volume's (duplicate_name)
            case 8: newName = state.volume(reference)?.name ?? "v0"  // its own: nothing recorded for the name
            default: newName = random.pick(Self.badNames)
            }
            let detect: Bool? = random.chance(55) ? random.chance(70) : nil
            let sensitivity = random.chance(40) ? random.pick(DetectionSensitivity.allCases) : nil
            return .changeVolume(volume: reference, newName: newName, detect: detect, sensitivity: sensitivity)
        case 30..<40:
            let name = random.chance(85) ? random.pick(Self.volumeNames) : random.pick(Self.badNames)
            return .createVolume(name: name, sizeBytes: 1 << 20, path: nil, detection: random.pick(DetectionSensitivity.allCases))
        case 40..<80:
            return .reportAnomaly(volume: detectingVolumeID(state) { $0.status == .online || $0.status == .outOfSpace }, verdict: verdict())
        default:
            return .recordDetectorBaseline(volume: detectingVolumeID(state) { _ in true }, baseline: baseline())
        }
    }

    /// A volume id for the detector's commands: mostly a volume with detection on that `ready`
    /// accepts, sometimes any volume or an id that does not exist.
    mutating func detectingVolumeID(_ state: ControllerState, where ready: (Volume) -> Bool) -> VolumeID {
        let watched = state.volumesByID.filter { $0.detect && ready($0) }
        if !watched.isEmpty && random.chance(85) { return random.pick(watched).id }
        if !state.volumes.isEmpty && random.chance(70) { return random.pick(state.volumesByID).id }
        return VolumeID(random.int(0...Int(state.nextVolumeID) + 1))
    }

    /// A verdict as `detect` returns one (score 50–100, 1–8 intervals, an onset before the first),
    /// now and then out of range (`invalid_progress`).
    mutating func verdict() -> DetectionVerdict {
        let onset: Int64 = random.chance(15) ? 0 : 1_790_000_000_000 + Int64(random.int(0...400))
        let evidence = (0..<random.int(1...DetectionLimits.evidenceIntervalsMax)).map { index in
            evidenceInterval(startMilliseconds: onset + DetectionLimits.intervalMilliseconds * Int64(index + 1))
        }
        var verdict = DetectionVerdict(score: random.int(50...100), onsetMilliseconds: onset, evidence: evidence)
        switch random.int(0...99) {
        case 0..<4: verdict.onsetMilliseconds = -1
        case 4..<7: verdict.score = random.pick([101, 255, -1])
        case 7..<10: verdict.evidence += Array(repeating: evidence[0], count: DetectionLimits.evidenceIntervalsMax + 1 - evidence.count)
        default: break
        }
        return verdict
    }

    /// One interval of evidence: any counts that nest (every increase is an overwrite sample and a
    /// high-entropy block, both sampled blocks).
    mutating func evidenceInterval(startMilliseconds: Int64) -> IntervalStatistics {
        let sampled = UInt32(random.int(Int(DetectionLimits.sampledBlocksMin)...1024))
        let high = UInt32(random.int(0...Int(sampled)))
        let overwrites = UInt32(random.int(0...Int(sampled)))
        let increases = UInt32(random.int(0...Int(min(high, overwrites))))
        return IntervalStatistics(
            startMilliseconds: startMilliseconds, bytesWritten: UInt64(sampled) * 65_536, sampledBlocks: sampled, highEntropyBlocks: high,
            overwriteSamples: overwrites, entropyIncreases: increases)
    }

    /// A baseline as the detector learns one: valid fields, sometimes empty.
    mutating func baseline() -> DetectorBaseline {
        guard random.chance(85) else { return DetectorBaseline() }
        let learned = UInt32(random.int(1...100_000))
        func share() -> UInt32 { UInt32(random.int(0...Int(DetectionLimits.partsPerMillion))) }
        return DetectorBaseline(
            learnedIntervals: learned, learnedOverwriteIntervals: UInt32(random.int(0...Int(learned))), highEntropyShareMeanPartsPerMillion: share(),
            highEntropyShareDeviationPartsPerMillion: share(), increaseShareMeanPartsPerMillion: share(),
            increaseShareDeviationPartsPerMillion: share(), bytesWrittenMean: random.uint64(0...DetectionLimits.bytesPerIntervalMax))
    }

    mutating func anyCommand(_ state: ControllerState) -> Command {
        switch random.int(0...99) {
        case 0..<12:
            let name = random.chance(85) ? random.pick(Self.volumeNames) : random.pick(Self.badNames)
            let path: String? = switch random.int(0...9) {
            case 0...6: nil
            case 7, 8: "/srv/volumes/\(random.int(0...3)).img"
            default: random.pick(["relative.img", "", "/with\u{0}nul"])
            }
            return .createVolume(name: name, sizeBytes: random.pick(Self.sizes), path: path)
        case 12..<15:
            return .removeVolume(volume: volumeReference(state))
        case 15..<27:
            let name: String? = switch random.int(0...9) {
            case 0...3: nil
            case 4...8: random.pick(Self.mapNames)
            default: random.pick(Self.badNames)
            }
            let grainSizeBytes: UInt32 = random.pick([64 << 10, 256 << 10, 256 << 10, 128 << 10])
            var source = volumeReference(state)
            var target = volumeReference(state)
            if random.chance(80), let (guidedSource, guidedTarget) = mappablePair(state) {
                source = guidedSource
                target = guidedTarget
            }
            return .createMap(
                CreateMap(
                    source: source, target: target, name: name, autorestore: random.chance(60),
                    copyRate: random.chance(90) ? random.int(0...150) : copyRate(), grainSizeBytes: grainSizeBytes,
                    group: random.chance(15) ? groupReference(state) : nil))
        case 27..<33:
            let reference = mapReference(state)
            var newName: String? = random.chance(30) ? (random.chance(85) ? random.pick(Self.mapNames) : random.pick(Self.badNames)) : nil
            // Now and then, the map's own reverse name (a rename within the pair).
            if let map = state.map(reference), map.role == .forward, random.chance(10) { newName = map.name + Limits.reverseNameSuffix }
            let delay: UInt32? = random.chance(20) ? random.pick([0, 30, 86_400, 86_401, UInt32(random.int(0...600))]) : nil
            return .changeMap(
                map: reference, autorestore: random.chance(50) ? random.chance(50) : nil,
                copyRate: random.chance(30) ? copyRate() : nil, newName: newName, autorestoreDelaySeconds: delay)
        case 33..<36:
            return .prepareMap(map: mapReference(state))
        case 36..<48:
            return .startMap(map: mapReference(state))
        case 48..<53:
            return .startRestore(map: mapReference(state, forwardBias: 70))
        case 53..<57:
            return .stopMap(map: mapReference(state), force: random.chance(50))
        case 57..<60:
            return .removeMap(map: mapReference(state), force: random.chance(50))
        case 60..<70:
            let reason = random.chance(80) ? random.pick(Array(Self.reasons.prefix(3))) : random.pick(Self.reasons)
            // An onset now and then: before, between or after the maps' start times, or invalid.
            let onset: Int64? = random.chance(25) ? random.pick([-1, 0, 1_790_000_000_000 + Int64(random.int(0...400)), .max]) : nil
            if random.chance(8), let scheduled = state.mapsByID.first(where: { $0.scheduledRollback != nil }) {
                return .startScheduledRollback(map: scheduled.id)
            }
            return .reportFault(volume: volumeReference(state), cause: random.pick(FaultCause.allCases), reason: reason, onsetMilliseconds: onset)
        case 70..<72:
            return .recoverVolume(volume: volumeReference(state))
        case 72..<74:
            let id = state.volumesByID.isEmpty || random.chance(10) ? VolumeID(random.int(0...9)) : random.pick(state.volumesByID).id
            if random.chance(50) {
                return .reportOutOfSpace(volume: id, reason: random.chance(90) ? "pwrite failed: errno 28" : random.pick(Self.reasons))
            }
            return .recordSpaceRestored(volume: id)
        case 74..<82:
            let id = mapID(state, rollingBack: false)
            let map = state.maps[id]
            let copied = map?.grainsCopied ?? 0
            let total = map?.grainsTotal ?? 4
            let grains: UInt64 = switch random.int(0...9) {
            case 0: copied == 0 ? 1 : copied - 1
            case 1: total + 1
            default: random.uint64(copied...max(copied, total))
            }
            return .recordCopyProgress(map: id, grainsCopied: grains)
        case 82..<86:
            return .completeCopy(map: mapID(state, rollingBack: false))
        case 86..<94:
            let id = mapID(state, rollingBack: true)
            let map = state.maps[id]
            let rollback = map?.rollback ?? Rollback(trigger: .operator, faultID: nil)
            let total = map?.grainsTotal ?? 4
            var toRestore = rollback.grainsToRestore == 0 || random.chance(10) ? random.uint64(0...total) : rollback.grainsToRestore
            if random.chance(5) { toRestore = total + 1 }
            let restored: UInt64 = switch random.int(0...9) {
            case 0: rollback.grainsRestored == 0 ? toRestore + 1 : rollback.grainsRestored - 1
            default: random.uint64(min(rollback.grainsRestored, toRestore)...toRestore)
            }
            return .recordRollbackProgress(map: id, grainsRestored: restored, grainsToRestore: toRestore)
        case 94..<98:
            return .completeRollback(map: mapID(state, rollingBack: true))
        default:
            return .recordControllerStart(version: random.pick(["1.0.0", "2.0.0-beta", "", String(repeating: "v", count: 65)]))
        }
    }
}

/// A random run: the commands, the events accepted for each, and the state after each.
struct RandomRun {
    struct Step {
        var command: Command
        var outcome: Result<[Event], CommandError>
        var logCount: Int
        var state: ControllerState
    }

    var seed: UInt64
    var steps: [Step] = []
    var log: [Event] = []
    var state = ControllerState()

    init(seed: UInt64, commands: Int) {
        self.seed = seed
        var generator = CommandGenerator(seed: seed)
        for _ in 0..<commands {
            let command = generator.next(state)
            let outcome: Result<[Event], CommandError>
            do {
                let events = try decide(command, state)
                for event in events { state.apply(event) }
                log += events
                outcome = .success(events)
            } catch {
                outcome = .failure(error)
            }
            steps.append(Step(command: command, outcome: outcome, logCount: log.count, state: state))
        }
    }
}
