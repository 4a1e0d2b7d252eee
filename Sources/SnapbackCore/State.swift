/// The mapping tables: everything the controller knows, reduced from the log.
///
/// The state is a plain value. It is changed only by ``evolve(_:_:)``; commands are validated
/// against it by ``decide(_:_:)``.
public struct ControllerState: Sendable, Equatable {
    public internal(set) var volumes: [VolumeID: Volume] = [:]
    public internal(set) var maps: [MapID: LCMap] = [:]
    public internal(set) var groups: [GroupID: LCGroup] = [:]
    /// Derived indexes, kept in step with `volumes` and `maps` by `evolve`.
    public internal(set) var volumeIDsByName: [String: VolumeID] = [:]
    public internal(set) var mapIDsByName: [String: MapID] = [:]
    public internal(set) var groupIDsByName: [String: GroupID] = [:]
    public internal(set) var nextGroupID: GroupID = 0
    public internal(set) var nextVolumeID: VolumeID = 0
    public internal(set) var nextMapID: MapID = 0
    public internal(set) var nextFaultID: FaultID = 1
    public internal(set) var nextStartOrdinal: UInt64 = 1
    /// How many times a controller has started on this log.
    public internal(set) var controllerStarts: UInt64 = 0
    /// How many events have been folded into this state (the sequence number of the last one).
    public internal(set) var eventsApplied: UInt64 = 0

    public init() {}

    /// Volumes in id order.
    public var volumesByID: [Volume] { volumes.values.sorted { $0.id < $1.id } }
    /// Maps in id order.
    public var mapsByID: [LCMap] { maps.values.sorted { $0.id < $1.id } }

    /// The volume called `reference`, by name or by decimal id.
    public func volume(_ reference: String) -> Volume? {
        if let id = volumeIDsByName[reference] { return volumes[id] }
        if let id = VolumeID(reference), String(id) == reference { return volumes[id] }
        return nil
    }

    /// The map called `reference`, by name or by decimal id.
    public func map(_ reference: String) -> LCMap? {
        if let id = mapIDsByName[reference] { return maps[id] }
        if let id = MapID(reference), String(id) == reference { return maps[id] }
        return nil
    }

    /// Forward maps whose source is `volumeID`, in id order.
    public func forwardMaps(ofSource volumeID: VolumeID) -> [LCMap] {
        maps.values.filter { $0.role == .forward && $0.sourceID == volumeID }.sorted { $0.id < $1.id }
    }

    /// Maps that name `volumeID` as source or target.
    public func maps(touching volumeID: VolumeID) -> [LCMap] {
        maps.values.filter { $0.sourceID == volumeID || $0.targetID == volumeID }.sorted { $0.id < $1.id }
    }

    /// The forward map whose rollback is running onto `volumeID`, if any.
    public func runningRollback(onto volumeID: VolumeID) -> LCMap? {
        maps.values.first { $0.role == .forward && $0.sourceID == volumeID && $0.rollback != nil }
    }
}
