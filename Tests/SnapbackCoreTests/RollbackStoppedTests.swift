import Testing

@testable import SnapbackCore

/// `stoplcmap -force` on a rolling-back map and the controller's `abandonRollback`.
@Suite("abandoning a rollback")
struct RollbackStoppedTests {
    func restoring() throws -> ControllerState {
        var state = ControllerState()
        for command: Command in [
            .createVolume(name: "s", sizeBytes: 1 << 20, path: nil), .createVolume(name: "t", sizeBytes: 1 << 20, path: nil),
            .createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0)), .startMap(map: "m"),
            .reportFault(volume: "s", cause: .operator, reason: "x"),
        ] {
            for event in try decide(command, state) { state.apply(event) }
        }
        #expect(state.map("m")?.rollback != nil)
        return state
    }

    @Test func stopWithoutForceIsRefusedWithForceAbandons() throws {
        let state = try restoring()
        #expect(throws: CommandError.self) { try decide(.stopMap(map: "m", force: false), state) }
        let events = try decide(.stopMap(map: "m", force: true), state)
        guard case .rollbackStopped(let id, let reason) = try #require(events.first), events.count == 1 else {
            Issue.record("unexpected \(events)")
            return
        }
        #expect(id == state.map("m")!.id)
        #expect(reason.contains("operator"))
        let after = evolve(state, events[0])
        #expect(after.map("m")?.rollback == nil)
        #expect(after.volume("s")?.status == .faulted, "a half-restored source is faulted")
        #expect(after.map("m_rev")?.state == .idleOrCopied)
        #expect(after.volume("s")?.fault != nil)
        // The operator can then accept the data, or roll back again.
        #expect(try decide(.recoverVolume(volume: "s"), after).count == 1)
        #expect(try decide(.startRestore(map: "m"), after).count == 1)
    }

    @Test func theControllerAbandonsOnlyARunningRollback() throws {
        let state = try restoring()
        let id = state.map("m")!.id
        let events = try decide(.abandonRollback(map: id, reason: "store unavailable"), state)
        #expect(events == [.rollbackStopped(id: id, reason: "store unavailable")])
        let after = evolve(state, events[0])
        #expect(throws: CommandError.self) { try decide(.abandonRollback(map: id, reason: "again"), after) }
        #expect(throws: CommandError.self) { try decide(.abandonRollback(map: id, reason: ""), state) }
    }

    @Test func theEventRoundTrips() throws {
        let event = Event.rollbackStopped(id: 7, reason: "I/O error: EIO")
        let payload = event.encodedPayload()
        let decoded = try payload.withUnsafeBytes { (bytes) throws(DecodeError) in
            try Event.decode(typeCode: EventType.rollbackStopped.rawValue, payload: bytes)
        }
        #expect(decoded == event)
        #expect(EventType.rollbackStopped.rawValue == 21)
        #expect(EventType(name: "RollbackStopped") == .rollbackStopped)
    }
}
