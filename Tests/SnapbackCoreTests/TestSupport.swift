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
    // Start ordinals are unique.
    let ordinals = state.maps.values.compactMap(\.startOrdinal)
    #expect(Set(ordinals).count == ordinals.count, sourceLocation: sourceLocation)
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
