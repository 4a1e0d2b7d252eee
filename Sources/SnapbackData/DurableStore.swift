import SnapbackCore

/// The three durable bitmaps of a forward map.
public enum BitmapKind: UInt8, Sendable, CaseIterable {
    /// The target holds the grain.
    case split = 1
    /// The source was written after the map started.
    case dirty = 2
    /// During a rollback, the grain is back on the source.
    case restored = 3
}

/// A change to the durable bitmaps, committed atomically with the events that go with it.
public enum BitmapChange: Sendable, Equatable {
    /// Store part `part` of a bitmap (see ``GrainBitmap/partBytes(_:)``): 1 KiB, 8,192 grains.
    case setPart(map: MapID, kind: BitmapKind, part: Int, bytes: [UInt8])
    /// Clear the whole bitmap (its parts, and the whole chunks an older log may hold).
    case clear(map: MapID, kind: BitmapKind)
}

/// An error from a durable store that can say whether it means "no space" (the controller then
/// answers `storage_full` instead of `storage_error`).
public protocol StorageFailure: Error {
    /// True for ENOSPC, EDQUOT, or an LMDB map full beyond its bound.
    var isOutOfSpace: Bool { get }
    /// A stable code when the store refuses this node's commits rather than failing them (a
    /// cluster node that does not lead: `not_leader`; that cannot reach its cluster:
    /// `cluster_unavailable`); `nil` for a failure of the store itself.
    var unavailableCode: String? { get }
    /// True when the commit may still be recorded (a cluster store that lost etcd mid-commit):
    /// the controller then keeps what it made for it (a new volume's file), since the next
    /// leader may replay it.
    var outcomeUnknown: Bool { get }
}

extension StorageFailure {
    public var unavailableCode: String? { nil }
    public var outcomeUnknown: Bool { false }
}

/// The port through which the controller makes decisions and bitmap marks durable: the LMDB log
/// in snapbackd, a simulated log in the simulator. A commit is atomic: after a crash, all of its
/// events and bitmap changes are there, or none.
public protocol DurableStore: AnyObject, Sendable {
    /// Appends `events` (possibly none) and applies `bitmapChanges`, atomically and durably.
    /// `callers` is parallel to `events` (who asked for each; `nil` for the controller's own), or
    /// empty when no event has a caller: a group commit carries several callers' events.
    func commit(events: [Event], callers: [Caller?], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt
    /// The durable bitmap of `kind` for `map`, all clear when nothing was stored.
    func loadBitmap(map: MapID, kind: BitmapKind, grainCount: UInt64) throws -> GrainBitmap
    /// `reduce(log)`: the state the durable events add up to.
    func replayState() throws -> ControllerState
    /// Saves a checkpoint of `state` (which must be `reduce` of the first `state.eventsApplied`
    /// events); a store without checkpoints may ignore it.
    func checkpoint(_ state: ControllerState) throws
}

extension DurableStore {
    /// Commits events that have no caller (the controller's own, or a test's).
    public func commit(events: [Event], bitmapChanges: [BitmapChange], timestampMilliseconds: Int64) throws -> AppendReceipt {
        try commit(events: events, callers: [], bitmapChanges: bitmapChanges, timestampMilliseconds: timestampMilliseconds)
    }
}
