/// The automatic-rollback policy of brief section 2.3, a pure function of the state.
///
/// Given that `volumeID` has a recorded fault, returns the forward map whose image must be rolled
/// back onto it, or `nil` when none must: the volume is already being restored, or no started map
/// of that source with a valid image has `autorestore on`. Among several candidates the most
/// recently started wins.
public func automaticRollbackChoice(for volumeID: VolumeID, in state: ControllerState) -> LCMap? {
    guard let volume = state.volumes[volumeID], volume.status != .restoring else { return nil }
    var chosen: LCMap?
    for map in state.maps.values where map.role == .forward && map.sourceID == volumeID {
        guard map.autorestore, map.imageValid, let ordinal = map.startOrdinal else { continue }
        guard map.state == .copying || map.state == .idleOrCopied else { continue }
        guard let target = state.volumes[map.targetID], target.status == .online || target.status == .outOfSpace else { continue }
        if let best = chosen, let bestOrdinal = best.startOrdinal, bestOrdinal > ordinal { continue }
        chosen = map
    }
    return chosen
}
