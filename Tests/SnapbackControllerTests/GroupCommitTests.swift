import Foundation
@testable import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated
import Testing

/// Group commit: concurrent commands share durable commits, each is decided against the state
/// the ones before it in the group leave, and a failed commit fails the whole group and changes
/// nothing.
@Suite("group commit")
struct GroupCommitTests {
    /// A simulated log whose commits take `delay` (an fsync's time) and can be made to fail.
    final class SlowStore: DurableStore, @unchecked Sendable {
        let inner: SimulatedDurableStore
        let delay: TimeInterval
        private let lock = NSLock()
        private var failing = false
        private(set) var commitCalls = 0
        private var inCommit = false

        init(world: SimulatedWorld, delay: TimeInterval) {
            inner = SimulatedDurableStore(world: world)
            self.delay = delay
        }

        func fail(_ on: Bool) { lock.withLock { failing = on } }

        func commit(events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
            let fails = lock.withLock { () -> Bool in
                precondition(!inCommit, "two durable commits at once")
                inCommit = true
                commitCalls += 1
                return failing
            }
            defer { lock.withLock { inCommit = false } }
            Thread.sleep(forTimeInterval: delay)
            if fails { throw SimulatedCommitFailure(errno: ENOSPC) }
            return try inner.commit(events: events, callers: callers, bitmapChanges: bitmapChanges, timestampMilliseconds: timestampMilliseconds)
        }

        func loadBitmap(map: MapID, kind: BitmapKind, grainCount: UInt64) throws -> GrainBitmap {
            try inner.loadBitmap(map: map, kind: kind, grainCount: grainCount)
        }

        func replayState() throws -> ControllerState { try inner.replayState() }
        func checkpoint(_ state: ControllerState) throws { try inner.checkpoint(state) }
    }

    /// A controller on a ``SlowStore`` (the world must outlive it: its clock refers to it).
    static func controller(_ world: SimulatedWorld, delay: TimeInterval) throws -> (Controller, SlowStore) {
        let store = SlowStore(world: world, delay: delay)
        return (try Controller(durable: store, volumes: SimulatedVolumeProvider(world: world), clock: world.clock, version: "test"), store)
    }

    /// Runs `body(i)` on `count` threads at once; returns their results in order.
    static func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
        let results = NSLock()
        nonisolated(unsafe) var collected: [Int: T] = [:]
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            Thread {
                let result = body(index)
                results.withLock { collected[index] = result }
                group.leave()
            }.start()
        }
        group.wait()
        return (0..<count).map { collected[$0]! }
    }

    @Test("16 concurrent commands share durable commits, and the state is the log's")
    func concurrentCommandsShareCommits() throws {
        let world = SimulatedWorld(seed: 1)
        let (controller, store) = try Self.controller(world, delay: 0.02)
        let before = store.commitCalls
        let outcomes = Self.concurrently(16) { index in
            (0..<4).map { round in
                Result { try controller.execute(.createVolume(name: "v\(index)-\(round)", sizeBytes: 1 << 20, path: nil)) }
            }
        }
        for outcome in outcomes.joined() { #expect(throws: Never.self) { try outcome.get() } }
        let commits = store.commitCalls - before
        // 64 commands; while one group's fsync runs, the other threads queue for the next.
        #expect(commits < 32, "64 commands took \(commits) durable commits")
        #expect(controller.state.volumesByID.count == 64)
        #expect(try store.replayState() == controller.state)
    }

    @Test("a command rejected within a group is answered alone; the others commit")
    func rejectedCommandAlone() throws {
        let world = SimulatedWorld(seed: 2)
        let (controller, store) = try Self.controller(world, delay: 0.02)
        // Eight threads create the same name twice over: exactly one creation per name wins,
        // decided against the state the group's earlier commands leave.
        let outcomes = Self.concurrently(16) { index in
            Result { try controller.execute(.createVolume(name: "same\(index % 8)", sizeBytes: 1 << 20, path: nil)) }
        }
        let failures = outcomes.compactMap { outcome -> ControllerError? in
            if case let .failure(error as ControllerError) = outcome { return error }
            return nil
        }
        #expect(failures.count == 8)
        for failure in failures {
            guard case let .rejected(error) = failure else { Issue.record("unexpected \(failure)"); continue }
            #expect(error.code == .duplicateName)
        }
        #expect(controller.state.volumesByID.count == 8)
        #expect(try store.replayState() == controller.state)
    }

    @Test("a failed durable commit fails every command of its group and changes nothing")
    func failedGroupChangesNothing() throws {
        let world = SimulatedWorld(seed: 3)
        let (controller, store) = try Self.controller(world, delay: 0.02)
        let before = controller.state
        store.fail(true)
        let outcomes = Self.concurrently(8) { index in
            Result { try controller.execute(.createVolume(name: "f\(index)", sizeBytes: 1 << 20, path: nil)) }
        }
        for outcome in outcomes {
            guard case let .failure(error as ControllerError) = outcome, case .storageFull = error else {
                Issue.record("expected storage_full, got \(outcome)")
                continue
            }
        }
        #expect(controller.state == before)
        #expect(controller.health.status == .degraded)
        store.fail(false)
        try controller.execute(.createVolume(name: "after", sizeBytes: 1 << 20, path: nil))
        #expect(controller.health.status == .online)
        #expect(try store.replayState() == controller.state)
    }

    @Test("a checkpoint waits for the group in flight and saves reduce(log)")
    func checkpointBetweenGroups() throws {
        let world = SimulatedWorld(seed: 4)
        let (controller, store) = try Self.controller(world, delay: 0.01)
        let outcomes = Self.concurrently(8) { index in
            Result {
                if index == 0 { try controller.checkpoint() } else {
                    try controller.execute(.createVolume(name: "c\(index)", sizeBytes: 1 << 20, path: nil))
                }
            }
        }
        for outcome in outcomes { #expect(throws: Never.self) { try outcome.get() } }
        #expect(try store.replayState() == controller.state)
    }
}

extension GroupCommitTests {
    @Test("a group of several callers' commands records each event's own caller; the controller's decisions none")
    func callersPerEventInAGroup() throws {
        let world = SimulatedWorld(seed: 6)
        let (controller, store) = try Self.controller(world, delay: 0.02)
        // Half the commands come with a caller, half without (a test's own), in shared groups.
        let outcomes = Self.concurrently(16) { index in
            Result {
                try controller.execute(
                    .createVolume(name: "c\(index)", sizeBytes: 1 << 20, path: nil),
                    caller: index.isMultiple(of: 2) ? Caller(uid: UInt32(1000 + index), gid: 100, pid: UInt32(4000 + index)) : nil)
            }
        }
        for outcome in outcomes { #expect(throws: Never.self) { try outcome.get() } }
        for stored in store.inner.events {
            guard case let .volumeCreated(_, name, _, _) = stored.event, let index = Int(name.dropFirst()) else {
                #expect(stored.caller == nil, "\(stored)")
                continue
            }
            let expected: Caller? = index.isMultiple(of: 2) ? Caller(uid: UInt32(1000 + index), gid: 100, pid: UInt32(4000 + index)) : nil
            #expect(stored.caller == expected, "\(stored)")
        }
        // A fault an operator reports records the operator; the automatic rollback it sets off
        // records no caller.
        let operatorCaller = Caller(uid: 7, gid: 7, pid: 77)
        try controller.execute(.createVolume(name: "t", sizeBytes: 1 << 20, path: nil))
        try controller.execute(.createMap(CreateMap(source: "c0", target: "t", name: "m", autorestore: true, copyRate: 0)))
        try controller.execute(.startMap(map: "m"), caller: operatorCaller)
        let decided = try controller.execute(.reportFault(volume: "c0", cause: .operator, reason: "test"), caller: operatorCaller)
        let recorded = store.inner.events.suffix(decided.count)
        let automatic = decided.filter(\.isDecidedByController)
        #expect(automatic.map(\.type) == [.rollbackStarted], "\(decided)")
        for stored in recorded {
            let expected: Caller? = stored.event.isDecidedByController ? nil : operatorCaller
            #expect(stored.caller == expected, "\(stored)")
        }
    }
}
