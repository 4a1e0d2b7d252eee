/// The automatic-rollback policy of brief section 2.3, a pure function of the state.
///
/// Given that `volumeID` has a recorded fault, returns the forward map whose image must be rolled
/// back onto it, or `nil` when none must: the volume is already being restored, or no started map
/// of that source with a valid image has `autorestore on`. Among several candidates the most
/// recently started wins.
///
/// With an onset on the volume's fault (`snapback fault -onset`), only images taken at or before
/// it qualify (a map started before this rule was recorded has a start time from its record).
/// A member of a consistency group qualifies by its group's autorestore, when the whole group
/// can roll back to its images (the caller then rolls back the group).
/// `ignoringRunning`: choose even while a rollback runs onto the volume (to switch images).
public func automaticRollbackChoice(for volumeID: VolumeID, in state: ControllerState, ignoringRunning: Bool = false) -> LCMap? {
    guard let volume = state.volumes[volumeID], ignoringRunning || volume.status != .restoring else { return nil }
    let onset = volume.fault?.onsetMilliseconds
    var chosen: LCMap?
    for map in state.maps.values where map.role == .forward && map.sourceID == volumeID && map.rollback == nil {
        // A member of a group follows its group's autorestore, and is chosen only when the
        // whole group can roll back to its images.
        let group = map.groupID.flatMap { state.groups[$0] }
        guard group?.autorestore ?? map.autorestore, map.imageValid, let ordinal = map.startOrdinal else { continue }
        if let group {
            do throws(CommandError) { try requireGroupRollbackPossible(group, state, ignoringRestoring: ignoringRunning ? volumeID : nil) } catch { continue }
        }
        if let onset {
            guard let started = map.startedAtMilliseconds, started <= onset else { continue }
        }
        guard map.state == .copying || map.state == .idleOrCopied else { continue }
        guard let target = state.volumes[map.targetID], target.status == .online || target.status == .outOfSpace else { continue }
        if let best = chosen, let bestOrdinal = best.startOrdinal, bestOrdinal > ordinal { continue }
        chosen = map
    }
    return chosen
}
