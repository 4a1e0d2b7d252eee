@testable import SnapbackCore
import SnapbackRandom
import Testing

// MARK: - Deterministic randomness

extension SeededRandom {
    /// A uniform integer in `range`.
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func uint64(_ range: ClosedRange<UInt64>) -> UInt64 { UInt64.random(in: range, using: &self) }
    /// True with probability `percent`/100.
    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }
    mutating func pick<T>(_ choices: [T]) -> T { choices[int(0...(choices.count - 1))] }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) } }
}

// MARK: - Running commands

/// A state and the log of every event accepted so far, driven through `decide` and `evolve` as the
/// controller would.
struct Harness {
    var state = ControllerState()
    var log: [Event] = []

    /// Decides `command`, folds its events and returns them. Throws the rejection unchanged.
    @discardableResult
    mutating func run(_ command: Command) throws(CommandError) -> [Event] {
        let events = try decide(command, state)
        for event in events { state = evolve(state, event) }
        log += events
        return events
    }

    /// Applies events directly, bypassing `decide` (to build states `decide` cannot reach).
    mutating func force(_ events: Event...) {
        for event in events { state.apply(event) }
        log += events
    }
}

/// The code `decide` rejects `command` with, or `nil` when it accepts it.
func rejection(_ command: Command, _ state: ControllerState) -> CommandError.Code? {
    do {
        _ = try decide(command, state)
        return nil
    } catch {
        #expect(!error.message.isEmpty)
        #expect(!error.message.contains("\n"))
        return error.code
    }
}

/// Expects `decide` to reject `command` with `code`.
func expectRejected(
    _ command: Command, _ state: ControllerState, _ code: CommandError.Code,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(rejection(command, state) == code, "\(command)", sourceLocation: sourceLocation)
}

/// Expects `decide` to accept `command` with exactly `events`.
func expectAccepted(
    _ command: Command, _ state: ControllerState, _ events: [Event],
    sourceLocation: SourceLocation = #_sourceLocation
) {
    do {
        let decided = try decide(command, state)
        #expect(decided == events, "\(command)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(command) rejected: \(error)", sourceLocation: sourceLocation)
    }
}

// MARK: - Fixtures

enum Fixture {
    static let mebibyte: UInt64 = 1 << 20
    static let kibibyte: UInt32 = 1 << 10

    /// Volumes "src" (id 0) and "tgt" (id 1), 1 MiB each.
    static func twoVolumes(sizeBytes: UInt64 = mebibyte) throws -> Harness {
        var harness = Harness()
        try harness.run(.createVolume(name: "src", sizeBytes: sizeBytes, path: nil))
        try harness.run(.createVolume(name: "tgt", sizeBytes: sizeBytes, path: nil))
        return harness
    }

    /// `twoVolumes` and lcmap "m" (id 0) src → tgt with reverse "m_rev" (id 1); 4 grains of 256 KiB.
    static func mapped(autorestore: Bool = false, copyRate: Int = 50) throws -> Harness {
        var harness = try twoVolumes()
        try harness.run(.createMap(CreateMap(source: "src", target: "tgt", name: "m", autorestore: autorestore, copyRate: copyRate)))
        return harness
    }

    /// `mapped`, started (state copying, start ordinal 1).
    static func started(autorestore: Bool = false) throws -> Harness {
        var harness = try mapped(autorestore: autorestore)
        try harness.run(.startMap(map: "m"))
        return harness
    }

    /// `started` with the background copy complete (idle_or_copied, image valid).
    static func copied(autorestore: Bool = false) throws -> Harness {
        var harness = try started(autorestore: autorestore)
        try harness.run(.completeCopy(map: 0))
        return harness
    }

    /// `started`, the source faulted by an operator and a rollback through "m" running.
    static func restoring(autorestore: Bool = true) throws -> Harness {
        var harness = try started(autorestore: autorestore)
        try harness.run(.reportFault(volume: "src", cause: .operator, reason: "ransomware"))
        if harness.state.maps[0]?.rollback == nil { try harness.run(.startRestore(map: "m")) }
        return harness
    }
}

// MARK: - Invariants

/// Structural invariants that every state reachable through `decide` must hold.
func checkInvariants(_ state: ControllerState, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(state.volumeIDsByName.count == state.volumes.count, sourceLocation: sourceLocation)
    for volume in state.volumes.values {
        #expect(state.volumeIDsByName[volume.name] == volume.id, "volume index: \(volume.name)", sourceLocation: sourceLocation)
        #expect(volume.id < state.nextVolumeID, sourceLocation: sourceLocation)
        let rollback = state.runningRollback(onto: volume.id)
        #expect((volume.status == .restoring) == (rollback != nil), "volume \(volume.name) \(volume.status)", sourceLocation: sourceLocation)
        if volume.status == .faulted { #expect(volume.fault != nil, sourceLocation: sourceLocation) }
        if volume.status == .online { #expect(volume.fault == nil, sourceLocation: sourceLocation) }
        if let fault = volume.fault { #expect(fault.id < state.nextFaultID, sourceLocation: sourceLocation) }
        if let baseline = volume.detectorBaseline { #expect(baseline.isValid, "volume \(volume.name) baseline", sourceLocation: sourceLocation) }
        let restoring = state.maps.values.filter { $0.role == .forward && $0.sourceID == volume.id && $0.rollback != nil }
        #expect(restoring.count <= 1, "two rollbacks onto \(volume.name)", sourceLocation: sourceLocation)
        let targetOf = state.maps.values.filter { $0.role == .forward && $0.targetID == volume.id }
        #expect(targetOf.count <= 1, "\(volume.name) is the target of two maps", sourceLocation: sourceLocation)
        if !targetOf.isEmpty {
            #expect(state.forwardMaps(ofSource: volume.id).isEmpty, "\(volume.name) is source and target", sourceLocation: sourceLocation)
        }
    }
    #expect(state.mapIDsByName.count == state.maps.count, sourceLocation: sourceLocation)
    for map in state.maps.values {
        #expect(state.mapIDsByName[map.name] == map.id, "map index: \(map.name)", sourceLocation: sourceLocation)
        #expect(map.id < state.nextMapID, sourceLocation: sourceLocation)
        guard let partner = state.maps[map.partnerID] else {
            Issue.record("map \(map.name) has no partner", sourceLocation: sourceLocation)
            continue
        }
        #expect(partner.partnerID == map.id, sourceLocation: sourceLocation)
        #expect(partner.role != map.role, sourceLocation: sourceLocation)
        #expect(partner.sourceID == map.targetID && partner.targetID == map.sourceID, sourceLocation: sourceLocation)
        #expect(partner.autorestore == map.autorestore, sourceLocation: sourceLocation)
        #expect(partner.grainSizeBytes == map.grainSizeBytes, sourceLocation: sourceLocation)
        #expect(state.volumes[map.sourceID] != nil && state.volumes[map.targetID] != nil, sourceLocation: sourceLocation)
        #expect(Limits.grainSizesBytes.contains(map.grainSizeBytes), sourceLocation: sourceLocation)
        #expect((0...Limits.copyRateMax).contains(map.copyRate), sourceLocation: sourceLocation)
        guard map.role == .forward else {
            #expect(map.rollback == nil, sourceLocation: sourceLocation)
            #expect(map.startOrdinal == nil, sourceLocation: sourceLocation)
            #expect(map.name == "\(partner.name)\(Limits.reverseNameSuffix)", sourceLocation: sourceLocation)
            continue
        }
        #expect(map.grainsCopied <= map.grainsTotal, sourceLocation: sourceLocation)
        if map.imageValid { #expect(map.startOrdinal != nil, sourceLocation: sourceLocation) }
        if let ordinal = map.startOrdinal { #expect(ordinal < state.nextStartOrdinal, sourceLocation: sourceLocation) }
        #expect(map.state != .stopping && map.state != .preparing, "transient state persisted", sourceLocation: sourceLocation)
        if let rollback = map.rollback {
            #expect(partner.state == .copying, sourceLocation: sourceLocation)
            #expect(rollback.grainsRestored <= rollback.grainsToRestore, sourceLocation: sourceLocation)
            #expect(rollback.grainsToRestore <= map.grainsTotal, sourceLocation: sourceLocation)
            if let faultID = rollback.faultID { #expect(faultID < state.nextFaultID, sourceLocation: sourceLocation) }
        } else {
            #expect(partner.state == .idleOrCopied, sourceLocation: sourceLocation)
        }
    }
    // Start ordinals are unique per start: only the members of one group start share one. While
    // that group's last start is the one, each is still in the group or among the members its
    // images were taken with. The group may since have been removed (`rmlcgrp -force` leaves its
    // maps as they are) or started again without them: the state no longer says which start it
    // was (`checkSharedStartOrdinals` checks that against the log), but the maps of one start
    // have distinct volumes, so no two maps of one source ever tie in the policy's choice.
    let mapsByOrdinal = Dictionary(grouping: state.mapsByID.filter { $0.startOrdinal != nil }) { $0.startOrdinal! }
    for (ordinal, sharing) in mapsByOrdinal where sharing.count > 1 {
        #expect(sharing.count <= Limits.groupMapsMax, sourceLocation: sourceLocation)
        let volumes = sharing.flatMap { [$0.sourceID, $0.targetID] }
        #expect(Set(volumes).count == volumes.count, "lcmaps \(sharing.map(\.name)) of start \(ordinal) share a volume", sourceLocation: sourceLocation)
        guard let group = state.groups.values.first(where: { $0.startOrdinal == ordinal }) else { continue }
        for map in sharing {
            #expect(
                map.groupID == group.id || group.imageMembers.contains(map.id),
                "lcmap \(map.name) shares start ordinal \(ordinal) of lcgrp \(group.name) without being one of its members",
                sourceLocation: sourceLocation)
        }
    }
    let groupOrdinals = state.groups.values.compactMap(\.startOrdinal)
    #expect(Set(groupOrdinals).count == groupOrdinals.count, "two groups share a start ordinal", sourceLocation: sourceLocation)
    checkConsistencyGroups(state, sourceLocation: sourceLocation)
}

/// The exact rule for start ordinals, which needs the log: a start ordinal held by several maps
/// is one a `GroupStarted` record handed out, and every map holding it is among that record's
/// members. `groupStarts` maps each `GroupStarted` ordinal of the log to its members.
func checkSharedStartOrdinals(
    _ state: ControllerState, groupStarts: [UInt64: [MapID]], sourceLocation: SourceLocation = #_sourceLocation
) {
    let mapsByOrdinal = Dictionary(grouping: state.mapsByID.filter { $0.startOrdinal != nil }) { $0.startOrdinal! }
    for (ordinal, sharing) in mapsByOrdinal where sharing.count > 1 {
        guard let members = groupStarts[ordinal] else {
            Issue.record("lcmaps \(sharing.map(\.name)) share start ordinal \(ordinal) of no group start", sourceLocation: sourceLocation)
            continue
        }
        #expect(Set(sharing.map(\.id)).isSubset(of: members), "lcmaps \(sharing.map(\.name)), start \(ordinal) of \(members)", sourceLocation: sourceLocation)
    }
}

/// The invariants of consistency groups, part of `checkInvariants`.
private func checkConsistencyGroups(_ state: ControllerState, sourceLocation: SourceLocation) {
    #expect(state.groupIDsByName.count == state.groups.count, sourceLocation: sourceLocation)
    for map in state.maps.values {
        guard let id = map.groupID else { continue }
        #expect(map.role == .forward, "reverse lcmap \(map.name) in a group", sourceLocation: sourceLocation)
        #expect(state.groups[id] != nil, "lcmap \(map.name) in missing lcgrp \(id)", sourceLocation: sourceLocation)
        #expect(map.scheduledRollback == nil, "lcmap \(map.name) of a group waits for a rollback of its own", sourceLocation: sourceLocation)
    }
    for group in state.groups.values {
        #expect(state.groupIDsByName[group.name] == group.id, "group index: \(group.name)", sourceLocation: sourceLocation)
        #expect(state.mapIDsByName[group.name] == nil, "lcgrp \(group.name) has an lcmap's name", sourceLocation: sourceLocation)
        #expect(group.id < state.nextGroupID, sourceLocation: sourceLocation)
        #expect(group.autorestoreDelaySeconds <= Limits.autorestoreDelaySecondsMax, sourceLocation: sourceLocation)
        if let ordinal = group.startOrdinal { #expect(ordinal < state.nextStartOrdinal, sourceLocation: sourceLocation) }
        #expect((group.startOrdinal == nil) == (group.startedAtMilliseconds == nil), sourceLocation: sourceLocation)
        #expect(group.imageMembers == group.imageMembers.sorted(), sourceLocation: sourceLocation)
        #expect(Set(group.imageMembers).count == group.imageMembers.count, sourceLocation: sourceLocation)
        let members = state.members(of: group.id)
        #expect(members.count <= Limits.groupMapsMax, sourceLocation: sourceLocation)
        let volumes = members.flatMap { [$0.sourceID, $0.targetID] }
        #expect(Set(volumes).count == volumes.count, "members of lcgrp \(group.name) share a volume", sourceLocation: sourceLocation)
        // A group rolls back whole: from GroupRollbackStarted to GroupRollbackCompleted or
        // GroupRollbackStopped every member has a rollback, and otherwise none has.
        for member in members {
            #expect(
                (member.rollback != nil) == (group.rollback != nil),
                "lcmap \(member.name) rollback \(String(describing: member.rollback)), lcgrp \(group.name) rollback \(String(describing: group.rollback))",
                sourceLocation: sourceLocation)
        }
        if let rollback = group.rollback {
            #expect(!members.isEmpty, "lcgrp \(group.name) rolls back without members", sourceLocation: sourceLocation)
            #expect(group.scheduledRollback == nil, sourceLocation: sourceLocation)
            if let faultID = rollback.faultID { #expect(faultID < state.nextFaultID, sourceLocation: sourceLocation) }
        }
        if let scheduled = group.scheduledRollback { #expect(scheduled.faultID < state.nextFaultID, sourceLocation: sourceLocation) }
    }
}

// MARK: - Bytes

extension ControllerState {
    /// Decodes `bytes` (a test convenience over the buffer-pointer API).
    static func decode(_ bytes: [UInt8]) throws(DecodeError) -> ControllerState {
        do {
            return try bytes.withUnsafeBytes { buffer in try ControllerState.decode(buffer) }
        } catch let error as DecodeError {
            throw error
        } catch {
            fatalError("unexpected error \(error)")
        }
    }
}

extension Event {
    static func decode(typeCode: UInt16, _ bytes: [UInt8]) throws(DecodeError) -> Event {
        do {
            return try bytes.withUnsafeBytes { buffer in try Event.decode(typeCode: typeCode, payload: buffer) }
        } catch let error as DecodeError {
            throw error
        } catch {
            fatalError("unexpected error \(error)")
        }
    }
}

/// The result of decoding, as a value the tests can compare.
func decodeResult<T>(_ body: () throws(DecodeError) -> T) -> Result<T, DecodeError> {
    do { return .success(try body()) } catch { return .failure(error) }
}
