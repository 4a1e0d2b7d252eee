@testable import SnapbackCore
import Testing
import SnapbackRandom

/// Seeded random command sequences; a failure names its seed, and `RandomRun(seed:commands:)`
/// replays it exactly.
@Suite("properties of random command sequences")
struct PropertyTests {
    static let seeds: [UInt64] = Array(1...300)
    static let commandsPerRun = 60

    static let runs: [RandomRun] = seeds.map { RandomRun(seed: $0, commands: commandsPerRun) }

    @Test("the generator reaches every event type and most rejections")
    func generatorCoverage() {
        var eventTypes = Set<EventType>()
        var codes = Set<CommandError.Code>()
        var accepted = 0
        var rejected = 0
        for run in Self.runs {
            for step in run.steps {
                switch step.outcome {
                case let .success(events):
                    accepted += 1
                    eventTypes.formUnion(events.map(\.type))
                case let .failure(error):
                    rejected += 1
                    codes.insert(error.code)
                }
            }
        }
        #expect(eventTypes == Set(EventType.allCases), "missing: \(Set(EventType.allCases).subtracting(eventTypes))")
        // limit_reached needs thousands of objects; backing_unavailable comes from the data plane
        // (creating or opening a store), never from decide (path_exists does too, and from decide
        // for a path another volume uses).
        let expectedCodes = Set(CommandError.Code.allCases).subtracting([.limitReached, .backingUnavailable])
        #expect(codes == expectedCodes, "missing: \(expectedCodes.subtracting(codes))")
        // Both paths are well exercised.
        #expect(accepted > 3000)
        #expect(rejected > 3000)
    }

    @Test("decide is deterministic, a rejection leaves the state unchanged, every reached state is consistent")
    func rejectionsChangeNothing() {
        for run in Self.runs {
            var before = ControllerState()
            var groupStarts: [UInt64: [MapID]] = [:]
            for (index, step) in run.steps.enumerated() {
                let again = Result { () throws(CommandError) in try decide(step.command, before) }
                #expect(again == step.outcome, "seed \(run.seed) step \(index)")
                switch step.outcome {
                case let .success(events):
                    #expect(step.state.eventsApplied == before.eventsApplied + UInt64(events.count))
                    if events.isEmpty { #expect(step.state == before, "seed \(run.seed) step \(index)") }
                case let .failure(error):
                    #expect(step.state == before, "seed \(run.seed) step \(index): \(step.command)")
                    #expect(!error.message.isEmpty && !error.message.contains("\n"))
                    #expect(error.description.hasPrefix(error.code.rawValue + ": "))
                }
                checkInvariants(step.state)
                if case let .success(events) = step.outcome {
                    for case let .groupStarted(_, ordinal, members) in events {
                        #expect(groupStarts[ordinal] == nil, "seed \(run.seed) step \(index): start ordinal \(ordinal) handed out twice")
                        groupStarts[ordinal] = members
                    }
                }
                checkSharedStartOrdinals(step.state, groupStarts: groupStarts)
                before = step.state
            }
        }
    }

    @Test("folding the events of any prefix of the log equals the state recorded at that point")
    func prefixFolding() {
        var random = SeededRandom(seed: 0xF01D)
        for run in Self.runs {
            var state = ControllerState()
            var folded = 0
            for (index, step) in run.steps.enumerated() {
                while folded < step.logCount {
                    state = evolve(state, run.log[folded])
                    folded += 1
                }
                #expect(state == step.state, "seed \(run.seed) step \(index)")
                #expect(state.eventsApplied == UInt64(step.logCount))
            }
            // A random prefix, folded from scratch with `reduce`.
            let step = random.pick(run.steps)
            #expect(run.log[..<step.logCount].reduce(ControllerState()) { evolve($0, $1) } == step.state, "seed \(run.seed)")
            // Checkpoint law: encode a prefix's state, decode it, fold the rest: the final state.
            let checkpoint = random.pick(run.steps)
            let restored = try? ControllerState.decode(checkpoint.state.encoded())
            #expect(restored.map { run.log[checkpoint.logCount...].reduce($0) { evolve($0, $1) } } == run.state, "seed \(run.seed)")
        }
    }

    @Test("every reached state round-trips through its encoding, which is deterministic")
    func stateRoundTrip() throws {
        for run in Self.runs {
            for (index, step) in run.steps.enumerated() {
                let bytes = step.state.encoded()
                let decoded = decodeResult { () throws(DecodeError) in try ControllerState.decode(bytes) }
                #expect(decoded == .success(step.state), "seed \(run.seed) step \(index)")
                if case let .success(state) = decoded { #expect(state.encoded() == bytes) }
            }
        }
    }

    @Test("every event accepted in a run round-trips through its payload")
    func eventRoundTrip() {
        for run in Self.runs {
            for event in run.log {
                let bytes = event.encodedPayload()
                #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, bytes) } == .success(event), "seed \(run.seed)")
            }
        }
    }

    @Test("every truncation of a reached state's encoding is refused")
    func stateTruncation() {
        var random = SeededRandom(seed: 0x7C)
        for run in Self.runs.prefix(60) {
            let state = random.pick(run.steps).state
            let bytes = state.encoded()
            for length in 0..<bytes.count {
                let result = decodeResult { () throws(DecodeError) in try ControllerState.decode(Array(bytes[..<length])) }
                guard case .failure(.truncated) = result else {
                    Issue.record("seed \(run.seed): prefix \(length)/\(bytes.count) gave \(result)")
                    break
                }
            }
        }
    }

    @Test("a flipped byte in an event payload is refused or decodes to an event that re-encodes to the flipped bytes")
    func eventByteFlips() {
        var random = SeededRandom(seed: 0xB17F)
        var refused = 0
        var decoded = 0
        for run in Self.runs {
            for event in run.log {
                var bytes = event.encodedPayload()
                guard !bytes.isEmpty else { continue }
                let index = random.int(0...(bytes.count - 1))
                bytes[index] ^= UInt8(random.int(1...255))
                switch decodeResult({ () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, bytes) }) {
                case .failure: refused += 1
                case let .success(other):
                    decoded += 1
                    #expect(other.type == event.type)
                    #expect(other != event)
                    #expect(other.encodedPayload() == bytes, "seed \(run.seed): \(event) → \(other)")
                }
            }
        }
        #expect(refused > 0 && decoded > 0)
    }

    /// The weaker law that holds for checkpoints: a flipped byte is refused or decodes to a state
    /// whose encoding decodes to itself (the strict law is `KnownIssueTests.stateDecodeAcceptsUnsortedRecords`).
    @Test("a flipped byte in a state's encoding is refused or decodes to a stable state, never crashes")
    func stateByteFlips() {
        var random = SeededRandom(seed: 0x5F11)
        var refused = 0
        var decoded = 0
        for run in Self.runs {
            for step in run.steps where random.chance(25) {
                var bytes = step.state.encoded()
                let index = random.int(0...(bytes.count - 1))
                bytes[index] ^= UInt8(random.int(1...255))
                switch decodeResult({ () throws(DecodeError) in try ControllerState.decode(bytes) }) {
                case .failure: refused += 1
                case let .success(state):
                    decoded += 1
                    #expect(state != step.state)
                    let again = state.encoded()
                    #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(again) } == .success(state), "seed \(run.seed)")
                }
            }
        }
        #expect(refused > 0 && decoded > 0)
    }

    @Test("reportFault and reportAnomaly append an automatic rollback exactly when the policy picks a map")
    func reportFaultMatchesPolicy() {
        var faults = 0
        var anomalies = 0
        var anomalyRollbacks = 0
        var automatic = 0
        var groupChoices = 0
        var groupAbandonments = 0
        var groupRestarts = 0
        for run in Self.runs {
            var previous = ControllerState()
            for step in run.steps {
                defer { previous = step.state }
                guard case let .success(decided) = step.outcome else { continue }
                // A verdict records AnomalyDetected, then exactly what a fault report of cause
                // detector with the verdict's onset records (Specs/events.md 3.42).
                let before: ControllerState
                let events: [Event]
                let reportedOnset: Int64?
                switch step.command {
                case let .reportFault(_, _, _, onset):
                    (before, events, reportedOnset) = (previous, decided, onset)
                case let .reportAnomaly(volume, verdict):
                    anomalies += 1
                    let anomaly = Event.anomalyDetected(
                        id: volume, score: UInt8(verdict.score), onsetMilliseconds: verdict.onsetMilliseconds, evidence: verdict.evidence)
                    guard decided.first == anomaly else {
                        Issue.record("seed \(run.seed): \(decided)")
                        continue
                    }
                    let increases = verdict.evidence.reduce(0) { $0 + Int($1.entropyIncreases) }
                    let overwrites = verdict.evidence.reduce(0) { $0 + Int($1.overwriteSamples) }
                    let reason = "anomaly score \(verdict.score): \(increases) of \(overwrites) sampled overwrites raised the entropy of plain data"
                    #expect(
                        decided.dropFirst().first == .volumeFaulted(id: volume, faultID: previous.nextFaultID, cause: .detector, reason: reason),
                        "seed \(run.seed)")
                    #expect(step.state.volumes[volume]?.fault?.cause == .detector, "seed \(run.seed)")
                    if decided.contains(where: { $0.type == .rollbackStarted || $0.type == .rollbackScheduled || $0.type == .groupRollbackScheduled }) {
                        anomalyRollbacks += 1
                    }
                    (before, events, reportedOnset) = (evolve(previous, anomaly), Array(decided.dropFirst()), verdict.onsetMilliseconds)
                default:
                    continue
                }
                faults += 1
                guard case let .volumeFaulted(volumeID, faultID, _, _) = events.first else {
                    Issue.record("seed \(run.seed): \(events)")
                    continue
                }
                #expect(faultID == before.nextFaultID)
                // The fault, and its onset when the report gave one.
                var head = [events[0]]
                if let onset = reportedOnset {
                    head.append(.faultOnset(id: volumeID, faultID: faultID, onsetMilliseconds: onset))
                }
                #expect(Array(events.prefix(head.count)) == head, "seed \(run.seed)")
                let faulted = head.reduce(before) { evolve($0, $1) }
                let rest = Array(events.dropFirst(head.count))
                let volume = faulted.volumes[volumeID]!
                let onset = volume.fault?.onsetMilliseconds
                if let member = before.maps.values.first(where: { $0.role == .forward && $0.targetID == volumeID && $0.rollback != nil }),
                    let group = member.groupID.flatMap({ before.groups[$0] }), group.rollback != nil
                {
                    // The target of a member of a running group rollback: the whole group rollback
                    // is abandoned, and every member's source is left faulted.
                    groupAbandonments += 1
                    let reason = "stopped: target \(volume.name) of lcmap \(member.name) faulted (fault \(faultID))"
                    #expect(rest == Self.abandonment(of: group, reason: reason, faulted), "seed \(run.seed)")
                    #expect(step.state.groups[group.id]?.rollback == nil, "seed \(run.seed)")
                    for member in before.members(of: group.id) {
                        #expect(step.state.volumes[member.sourceID]?.status == .faulted, "seed \(run.seed)")
                    }
                } else if let running = before.runningRollback(onto: volumeID), let group = running.groupID.flatMap({ before.groups[$0] }),
                    group.rollback != nil
                {
                    if let onset, let imageTime = group.startedAtMilliseconds, imageTime > onset {
                        // The group's images postdate the onset: the group rollback is abandoned,
                        // and the policy chooses again for this volume.
                        let reason = "stopped: the images of lcgrp \(group.name) postdate the onset of fault \(faultID)"
                        let abandonment = Self.abandonment(of: group, reason: reason, faulted)
                        #expect(Array(rest.prefix(abandonment.count)) == abandonment, "seed \(run.seed)")
                        let stopped = abandonment.reduce(faulted) { evolve($0, $1) }
                        let choice = automaticRollbackChoice(for: volumeID, in: stopped, ignoringRunning: true)
                        #expect(Array(rest.dropFirst(abandonment.count)) == Self.switchedRollback(to: choice, faultID: faultID, stopped), "seed \(run.seed)")
                    } else {
                        // Every member starts over, so that the members stay at one instant.
                        groupRestarts += 1
                        let members = before.members(of: group.id)
                        #expect(members.allSatisfy { $0.rollback != nil }, "seed \(run.seed)")
                        #expect(rest == members.map { .rollbackRestarted(id: $0.id, faultID: faultID) }, "seed \(run.seed)")
                        #expect(step.state.groups[group.id]?.rollback?.faultID == faultID, "seed \(run.seed)")
                    }
                } else if let running = before.runningRollback(onto: volumeID) {
                    if let onset, let imageTime = running.startedAtMilliseconds, imageTime > onset {
                        // The running image postdates the onset: stopped, and an older one started if any.
                        let stop = Event.rollbackStopped(id: running.id, reason: "switched: its image postdates the onset of fault \(faultID)")
                        #expect(rest.first == stop, "seed \(run.seed)")
                        let choice = automaticRollbackChoice(for: volumeID, in: faulted, ignoringRunning: true)
                        #expect(Array(rest.dropFirst()) == Self.switchedRollback(to: choice, faultID: faultID, evolve(faulted, stop)), "seed \(run.seed)")
                    } else {
                        #expect(rest == [.rollbackRestarted(id: running.id, faultID: faultID)], "seed \(run.seed)")
                    }
                } else if let choice = automaticRollbackChoice(for: volumeID, in: faulted) {
                    automatic += 1
                    if let group = choice.groupID.flatMap({ faulted.groups[$0] }) {
                        // A member's fault rolls back its whole group, after the group's hold window.
                        groupChoices += 1
                        let members = faulted.members(of: group.id)
                        #expect(members.contains { $0.id == choice.id }, "seed \(run.seed)")
                        if group.autorestoreDelaySeconds > 0 {
                            #expect(rest == [.groupRollbackScheduled(id: group.id, faultID: faultID)], "seed \(run.seed)")
                            #expect(step.state.groups[group.id]?.scheduledRollback?.faultID == faultID, "seed \(run.seed)")
                        } else {
                            let started: [Event] = members.map { .rollbackStarted(id: $0.id, trigger: .auto, faultID: faultID) }
                            #expect(rest == [.groupRollbackStarted(id: group.id, trigger: .auto, faultID: faultID)] + started, "seed \(run.seed)")
                            #expect(step.state.groups[group.id]?.rollback == GroupRollback(trigger: .auto, faultID: faultID), "seed \(run.seed)")
                            for member in members {
                                #expect(step.state.volumes[member.sourceID]?.status == .restoring, "seed \(run.seed)")
                            }
                        }
                    } else if choice.autorestoreDelaySeconds > 0 {
                        #expect(rest == [.rollbackScheduled(id: choice.id, faultID: faultID)], "seed \(run.seed)")
                        #expect(step.state.maps[choice.id]?.scheduledRollback?.faultID == faultID)
                    } else {
                        #expect(rest == [.rollbackStarted(id: choice.id, trigger: .auto, faultID: faultID)], "seed \(run.seed)")
                        #expect(step.state.volumes[volumeID]?.status == .restoring)
                    }
                } else {
                    #expect(rest.isEmpty, "seed \(run.seed)")
                }
            }
        }
        #expect(faults > 100 && automatic > 20)
        #expect(anomalies > 20 && anomalyRollbacks > 5, "\(anomalies) \(anomalyRollbacks)")
        #expect(groupChoices > 0 && groupAbandonments > 0 && groupRestarts > 0, "\(groupChoices) \(groupAbandonments) \(groupRestarts)")
    }

    /// The events that abandon `group`'s rollback, written out from `Specs/events.md`: in member
    /// id order, each member's `RollbackStopped`, after a `VolumeFaulted` of cause
    /// `rollback_abandoned` when its source has no fault; then `GroupRollbackStopped`.
    static func abandonment(of group: LCGroup, reason: String, _ state: ControllerState) -> [Event] {
        var nextFaultID = state.nextFaultID
        var events: [Event] = []
        for member in state.members(of: group.id) where member.rollback != nil {
            if state.volumes[member.sourceID]?.fault == nil {
                events.append(.volumeFaulted(id: member.sourceID, faultID: nextFaultID, cause: .rollbackAbandoned, reason: reason))
                nextFaultID += 1
            }
            events.append(.rollbackStopped(id: member.id, reason: reason))
        }
        return events + [.groupRollbackStopped(id: group.id, reason: reason)]
    }

    /// The rollback that replaces one stopped because its images postdate the onset: none without
    /// a choice; the choice's group's rollback (at once, or after the group's hold window) when it
    /// is a member; otherwise the choice's own, at once.
    static func switchedRollback(to choice: LCMap?, faultID: FaultID, _ state: ControllerState) -> [Event] {
        guard let choice else { return [] }
        guard let group = choice.groupID.flatMap({ state.groups[$0] }) else {
            return [.rollbackStarted(id: choice.id, trigger: .auto, faultID: faultID)]
        }
        if group.autorestoreDelaySeconds > 0 { return [.groupRollbackScheduled(id: group.id, faultID: faultID)] }
        return [.groupRollbackStarted(id: group.id, trigger: .auto, faultID: faultID)]
            + state.members(of: group.id).map { .rollbackStarted(id: $0.id, trigger: .auto, faultID: faultID) }
    }
}
