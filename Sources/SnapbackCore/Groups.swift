/// Identifier of a consistency group, assigned in creation order (0, 1, 2, ...).
public typealias GroupID = UInt32

/// A rollback of every member of a consistency group to the group's images: one decision, and
/// every member's `RollbackStarted` in the same commit.
public struct GroupRollback: Sendable, Equatable {
    public var trigger: RollbackTrigger
    /// The fault that caused it; `nil` for an operator's rollback of a group none of whose
    /// sources was faulted.
    public var faultID: FaultID?

    public init(trigger: RollbackTrigger, faultID: FaultID?) {
        self.trigger = trigger
        self.faultID = faultID
    }
}

/// A consistency group (`mklcgrp`): forward maps whose images are taken at one instant and
/// rolled back together (`Specs/state-machine.md`, "Consistency groups").
public struct LCGroup: Sendable, Equatable {
    public var id: GroupID
    public var name: String
    /// Governs its members' automatic rollbacks (their own `autorestore` does not).
    public var autorestore: Bool
    public var autorestoreDelaySeconds: UInt32
    /// The ordinal of the group's last start (every member's `MapStarted` carries it); `nil`
    /// before the first start.
    public var startOrdinal: UInt64?
    /// When the group last started (the `GroupStarted` record's time, ms since 1970).
    public var startedAtMilliseconds: Int64?
    /// The members when the group last started, ascending: membership is part of the image. A
    /// group whose members differ cannot be rolled back (`group_changed`).
    public var imageMembers: [MapID]
    /// The group rollback running, if any.
    public var rollback: GroupRollback?
    /// A group rollback waiting for the group's hold window.
    public var scheduledRollback: ScheduledRollback?

    public init(id: GroupID, name: String, autorestore: Bool, autorestoreDelaySeconds: UInt32) {
        self.id = id
        self.name = name
        self.autorestore = autorestore
        self.autorestoreDelaySeconds = autorestoreDelaySeconds
        imageMembers = []
    }
}

/// A group's status, derived from its members' states as IBM derives a consistency group's.
public enum GroupStatus: String, Sendable, CaseIterable {
    case empty
    case idleOrCopied = "idle_or_copied"
    case preparing
    case prepared
    case copying
    case stopping
    case stopped
}

/// A change of a map's group (`chlcmap -lcgrp GROUP` / `-nolcgrp`).
public enum MapGroupChange: Sendable, Equatable {
    case join(String)
    case leave
}

extension ControllerState {
    /// Groups in id order.
    public var groupsByID: [LCGroup] { groups.values.sorted { $0.id < $1.id } }

    /// The group called `reference`, by name or by decimal id.
    public func group(_ reference: String) -> LCGroup? {
        if let id = groupIDsByName[reference] { return groups[id] }
        if let id = GroupID(reference), String(id) == reference { return groups[id] }
        return nil
    }

    /// The forward maps in group `id`, in id order.
    public func members(of id: GroupID) -> [LCMap] {
        maps.values.filter { $0.role == .forward && $0.groupID == id }.sorted { $0.id < $1.id }
    }

    /// The group whose rollback `map`'s rollback belongs to, if any.
    public func groupRollback(of map: LCMap) -> LCGroup? {
        guard map.rollback != nil, let id = map.groupID, let group = groups[id], group.rollback != nil else { return nil }
        return group
    }

    /// The status of group `group`: `empty` without members; otherwise the state of the member
    /// furthest from rest (stopping, preparing, copying, prepared, stopped, idle_or_copied).
    public func status(of group: LCGroup) -> GroupStatus {
        let states = Set(members(of: group.id).map(\.state))
        if states.isEmpty { return .empty }
        let order: [(MapState, GroupStatus)] = [
            (.stopping, .stopping), (.preparing, .preparing), (.copying, .copying), (.prepared, .prepared), (.stopped, .stopped),
        ]
        return order.first { states.contains($0.0) }?.1 ?? .idleOrCopied
    }
}

// MARK: - Decisions

func decideCreateGroup(name: String?, autorestore: Bool, delay: UInt32, _ state: ControllerState) throws(CommandError) -> [Event] {
    try validateDelay(delay)
    guard state.groups.count < Limits.groupsMax else {
        throw CommandError(.limitReached, "the controller already holds \(Limits.groupsMax) consistency groups")
    }
    let id = state.nextGroupID
    let name = name ?? "lcgrp\(id)"
    try validateGroupName(name, state, renaming: nil)
    return [.groupCreated(id: id, name: name, autorestore: autorestore, autorestoreDelaySeconds: delay)]
}

func decideChangeGroup(
    _ reference: String, newName: String?, autorestore: Bool?, delay: UInt32?, _ state: ControllerState
) throws(CommandError) -> [Event] {
    let group = try resolveGroup(reference, state)
    guard newName != nil || autorestore != nil || delay != nil else {
        throw CommandError(.nothingToChange, "chlcgrp needs -name, -autorestore or -autorestoredelay")
    }
    if let delay { try validateDelay(delay) }
    var events: [Event] = []
    if let newName, newName != group.name {
        try validateGroupName(newName, state, renaming: group.id)
        events.append(.groupRenamed(id: group.id, name: newName))
    }
    if let autorestore, autorestore != group.autorestore {
        events.append(.groupAutorestoreChanged(id: group.id, autorestore: autorestore))
    }
    if let delay, delay != group.autorestoreDelaySeconds {
        events.append(.groupAutorestoreDelayChanged(id: group.id, seconds: delay))
    }
    return events
}

func decideRemoveGroup(_ reference: String, force: Bool, _ state: ControllerState) throws(CommandError) -> [Event] {
    let group = try resolveGroup(reference, state)
    if group.rollback != nil {
        throw CommandError(.groupRestoring, "lcgrp \(group.name) is rolling back; it cannot be removed until the rollback ends")
    }
    let members = state.members(of: group.id)
    if !members.isEmpty && !force {
        throw CommandError(.groupNotEmpty, "lcgrp \(group.name) holds \(members.count) lcmaps; move them out (chlcmap -nolcgrp) or use -force")
    }
    // -force leaves the maps as they are, stand-alone (IBM's rmfcconsistgrp -force).
    return members.map { .mapGroupChanged(id: $0.id, group: nil) } + [.groupRemoved(id: group.id)]
}

/// The event that moves `map` into or out of a group, or none when it is already there.
func decideMapGroupChange(_ map: LCMap, _ change: MapGroupChange, _ state: ControllerState) throws(CommandError) -> [Event] {
    switch change {
    case .leave:
        guard let current = map.groupID else { return [] }
        try requireMovable(map, state)
        if let group = state.groups[current], group.rollback != nil {
            throw CommandError(.groupRestoring, "lcgrp \(group.name) is rolling back; its lcmaps stay until the rollback ends")
        }
        return [.mapGroupChanged(id: map.id, group: nil)]
    case let .join(reference):
        let group = try resolveGroup(reference, state)
        guard map.groupID != group.id else { return [] }
        try requireMovable(map, state)
        if let current = map.groupID, let old = state.groups[current], old.rollback != nil {
            throw CommandError(.groupRestoring, "lcgrp \(old.name) is rolling back; its lcmaps stay until the rollback ends")
        }
        try requireMayJoin(map, group, state)
        return [.mapGroupChanged(id: map.id, group: group.id)]
    }
}

/// Refuses a map that may not move into or out of a group: only an idle or stopped map, with no
/// rollback, moves.
private func requireMovable(_ map: LCMap, _ state: ControllerState) throws(CommandError) {
    if map.rollback != nil {
        throw CommandError(.mapRestoring, "lcmap \(map.name) is rolling back onto its source")
    }
    switch map.state {
    case .idleOrCopied, .stopped: return
    case .preparing, .prepared, .copying, .stopping:
        throw CommandError(.mapActive, "lcmap \(map.name) is \(map.state); only an idle or stopped lcmap moves into or out of a group")
    }
}

/// Refuses `map` joining `group`: the group rolls back, is full, or already holds one of the
/// map's volumes (a group's maps have distinct volumes, so that its rollback writes each source
/// from one image).
func requireMayJoin(_ map: LCMap, _ group: LCGroup, _ state: ControllerState) throws(CommandError) {
    if group.rollback != nil {
        throw CommandError(.groupRestoring, "lcgrp \(group.name) is rolling back; no lcmap joins it until the rollback ends")
    }
    let members = state.members(of: group.id)
    guard members.count < Limits.groupMapsMax else {
        throw CommandError(.limitReached, "lcgrp \(group.name) already holds \(Limits.groupMapsMax) lcmaps")
    }
    let volumes: Set<VolumeID> = [map.sourceID, map.targetID]
    if let other = members.first(where: { !volumes.isDisjoint(with: [$0.sourceID, $0.targetID]) }) {
        let shared = volumes.intersection([other.sourceID, other.targetID]).min()!
        throw CommandError(
            .groupConflict,
            "volume \(state.volumes[shared]?.name ?? String(shared)) is already in lcgrp \(group.name) through lcmap \(other.name); a group's lcmaps have distinct volumes")
    }
}

func decideStartGroup(_ reference: String, _ state: ControllerState) throws(CommandError) -> [Event] {
    let group = try resolveGroup(reference, state)
    if group.rollback != nil {
        throw CommandError(.groupRestoring, "lcgrp \(group.name) is rolling back onto its sources")
    }
    let members = state.members(of: group.id)
    guard !members.isEmpty else { throw CommandError(.groupEmpty, "lcgrp \(group.name) holds no lcmap") }
    for member in members { try requireStartable(member, state) }
    // One instant: every member's image is taken in this one commit, with one ordinal.
    let ordinal = state.nextStartOrdinal
    var events: [Event] = []
    for member in members where member.state != .prepared {
        events += [.mapPreparing(id: member.id), .mapPrepared(id: member.id)]
    }
    events += members.map { .mapStarted(id: $0.id, startOrdinal: ordinal) }
    events.append(.groupStarted(id: group.id, startOrdinal: ordinal, members: members.map(\.id)))
    return events
}

func decideStartGroupRestore(_ reference: String, _ state: ControllerState) throws(CommandError) -> [Event] {
    let group = try resolveGroup(reference, state)
    try requireGroupRollbackPossible(group, state)
    return groupRollbackStart(group, trigger: .operator, faultID: nil, state)
}

func decideStopGroup(_ reference: String, force: Bool, _ state: ControllerState) throws(CommandError) -> [Event] {
    let group = try resolveGroup(reference, state)
    if group.rollback != nil {
        guard force else {
            throw CommandError(.groupRestoring, "lcgrp \(group.name) is rolling back; -force abandons the rollback and leaves every source faulted")
        }
        return groupAbandonment(group, reason: "stopped by operator (stoplcgrp -force)", state)
    }
    let events = state.members(of: group.id).flatMap { stopEvents($0, force: force) ?? [] }
    guard !events.isEmpty else {
        throw CommandError(.mapNotStarted, "lcgrp \(group.name) has no started lcmap to stop")
    }
    return events
}

func decideStartScheduledGroupRollback(_ id: GroupID, _ state: ControllerState) throws(CommandError) -> [Event] {
    guard let group = state.groups[id] else { throw CommandError(.unknownGroup, "lcgrp id \(id) does not exist") }
    guard let scheduled = group.scheduledRollback else {
        throw CommandError(.invalidState, "lcgrp \(group.name) has no automatic rollback waiting")
    }
    try requireGroupRollbackPossible(group, state)
    return groupRollbackStart(group, trigger: .auto, faultID: scheduled.faultID, state)
}

/// Every member restored its grains: all complete in one commit, so that every source goes
/// online at once.
func decideCompleteGroupRollback(_ id: GroupID, _ state: ControllerState) throws(CommandError) -> [Event] {
    guard let group = state.groups[id] else { throw CommandError(.unknownGroup, "lcgrp id \(id) does not exist") }
    guard group.rollback != nil else { throw CommandError(.invalidState, "lcgrp \(group.name) is not rolling back") }
    let members = state.members(of: id).filter { $0.rollback != nil }
    if let waiting = members.first(where: { $0.rollback?.awaitingGroup != true }) {
        throw CommandError(.invalidState, "lcmap \(waiting.name) of lcgrp \(group.name) has grains left to restore")
    }
    return members.map { .rollbackCompleted(id: $0.id) } + [.groupRollbackCompleted(id: id)]
}

/// The events that start `group`'s rollback: the group's record, then every member's, in one
/// commit. Each member's rollback names `faultID`, or (an operator's rollback) its source's fault.
func groupRollbackStart(_ group: LCGroup, trigger: RollbackTrigger, faultID: FaultID?, _ state: ControllerState) -> [Event] {
    [.groupRollbackStarted(id: group.id, trigger: trigger, faultID: faultID)]
        + state.members(of: group.id).map {
            .rollbackStarted(id: $0.id, trigger: trigger, faultID: faultID ?? state.volumes[$0.sourceID]?.fault?.id)
        }
}

/// The events that abandon `group`'s rollback: every member's rollback stops (its source left
/// faulted, with a fault of cause `rollback_abandoned` when it had none), then the group's.
func groupAbandonment(_ group: LCGroup, reason: String, _ state: ControllerState) -> [Event] {
    var preview = state
    var events: [Event] = []
    for member in state.members(of: group.id) where member.rollback != nil {
        let stopped = abandonment(of: member, reason: reason, preview)
        stopped.forEach { preview.apply($0) }
        events += stopped
    }
    return events + [.groupRollbackStopped(id: group.id, reason: reason)]
}

/// Refuses a rollback of `group` to its images: none taken, membership changed since, an image
/// no longer valid, a target unusable, or a source already being restored.
func requireGroupRollbackPossible(_ group: LCGroup, _ state: ControllerState, ignoringRestoring source: VolumeID? = nil) throws(CommandError) {
    if group.rollback != nil {
        throw CommandError(.groupRestoring, "lcgrp \(group.name) is already rolling back")
    }
    let members = state.members(of: group.id)
    guard !members.isEmpty else { throw CommandError(.groupEmpty, "lcgrp \(group.name) holds no lcmap") }
    guard let ordinal = group.startOrdinal else {
        throw CommandError(.noValidImage, "lcgrp \(group.name) has never been started and holds no images")
    }
    guard members.map(\.id) == group.imageMembers else {
        throw CommandError(
            .groupChanged, "lcgrp \(group.name)'s lcmaps changed since its images were taken; start it again before it can be rolled back")
    }
    for member in members {
        guard member.imageValid, member.startOrdinal == ordinal, member.state == .copying || member.state == .idleOrCopied else {
            throw CommandError(.noValidImage, "lcmap \(member.name) of lcgrp \(group.name) is \(member.state) and holds no image of the group's start")
        }
        // (A state decoded from a hand-made log may name volumes it does not hold: no image then.)
        guard let target = state.volumes[member.targetID], target.status == .online || target.status == .outOfSpace else {
            let status = state.volumes[member.targetID].map { "\($0.status)" } ?? "missing"
            throw CommandError(.noValidImage, "the target of lcmap \(member.name) in lcgrp \(group.name) is \(status)")
        }
        if member.sourceID != source, let running = state.runningRollback(onto: member.sourceID) {
            let name = state.volumes[member.sourceID]?.name ?? String(member.sourceID)
            throw CommandError(.volumeRestoring, "volume \(name) is being restored from lcmap \(running.name)")
        }
    }
}

/// Why `group` cannot roll back to its images now, or `nil` when it can (for `lsvolume`'s
/// `rollback_note`).
public func groupRollbackBlocker(_ group: LCGroup, in state: ControllerState) -> CommandError? {
    do throws(CommandError) {
        try requireGroupRollbackPossible(group, state)
        return nil
    } catch {
        return error
    }
}

/// The group rollback a fault on `volumeID` decides, when the choice of the policy is a member
/// of a group: started at once, or scheduled for the group's hold window.
func groupRollbackForFault(_ group: LCGroup, faultID: FaultID, _ state: ControllerState) -> [Event] {
    group.autorestoreDelaySeconds > 0
        ? [.groupRollbackScheduled(id: group.id, faultID: faultID)] : groupRollbackStart(group, trigger: .auto, faultID: faultID, state)
}

func resolveGroup(_ reference: String, _ state: ControllerState) throws(CommandError) -> LCGroup {
    guard let group = state.group(reference) else {
        throw CommandError(.unknownGroup, "lcgrp \(shown(reference)) does not exist")
    }
    return group
}

/// Refuses a member of a group acted on alone.
func requireNotGrouped(_ map: LCMap, _ state: ControllerState, verb: String) throws(CommandError) {
    guard let id = map.groupID else { return }
    let name = state.groups[id]?.name ?? String(id)
    throw CommandError(.mapInGroup, "lcmap \(map.name) is in lcgrp \(name); \(verb) it with the group (startlcgrp, stoplcgrp)")
}

/// A group name: valid, and held by no other group and no lcmap (so that `wait` and
/// `log explain` name one object).
private func validateGroupName(_ name: String, _ state: ControllerState, renaming: GroupID?) throws(CommandError) {
    try validateName(name, bytesMax: Limits.nameBytesMax, kind: "lcgrp")
    if let holder = state.groupIDsByName[name], holder != renaming {
        throw CommandError(.duplicateName, "an lcgrp named \"\(name)\" already exists")
    }
    if state.mapIDsByName[name] != nil {
        throw CommandError(.duplicateName, "an lcmap is named \"\(name)\"; a group's name differs from every lcmap's")
    }
}
