@testable import SnapbackCore
import SnapbackRandom
import Testing

// Issue 13: consistency groups, as pure decisions. Each command is applied at a time of its own
// (the record's timestamp), as the controller and a replay do, so that start times and hold
// windows are those of the records.

// MARK: - Fixture

// The fixed ids of `GroupRig.grouped`.
private let s1: VolumeID = 0
private let t1: VolumeID = 1
private let s2: VolumeID = 2
private let t2: VolumeID = 3
private let s3: VolumeID = 4
private let t3: VolumeID = 5
private let mapA: MapID = 0
private let mapB: MapID = 2
private let mapC: MapID = 4
private let groupG: GroupID = 0

/// A state driven through `decide` and `evolve`, with the log of every accepted event and its time.
struct GroupRig {
    var state = ControllerState()
    var log: [(event: Event, at: Int64)] = []

    /// Decides `command`, applies its events at `time` (ms since 1970) and returns them.
    @discardableResult
    mutating func run(_ command: Command, at time: Int64 = 10) throws(CommandError) -> [Event] {
        let events = try decide(command, state)
        for event in events { state.apply(event, at: time) }
        log += events.map { ($0, time) }
        return events
    }

    /// Volumes s1 t1 s2 t2 s3 t3 (ids 0–5, 1 MiB); group g (id 0); lcmaps a (s1 → t1, id 0) and
    /// b (s2 → t2, id 2) in g, and c (s3 → t3, id 4, autorestore on) stand-alone.
    static func grouped(
        autorestore: Bool = true, delay: UInt32 = 0, mapAutorestore: Bool = false, mapDelay: UInt32 = 0
    ) throws -> GroupRig {
        var rig = GroupRig()
        for name in ["s1", "t1", "s2", "t2", "s3", "t3"] { try rig.run(.createVolume(name: name, sizeBytes: 1 << 20, path: nil)) }
        try rig.run(.createGroup(name: "g", autorestore: autorestore, autorestoreDelaySeconds: delay))
        for (name, source, target) in [("a", "s1", "t1"), ("b", "s2", "t2")] {
            try rig.run(
                .createMap(
                    CreateMap(
                        source: source, target: target, name: name, autorestore: mapAutorestore, autorestoreDelaySeconds: mapDelay,
                        group: "g")))
        }
        try rig.run(.createMap(CreateMap(source: "s3", target: "t3", name: "c", autorestore: true)))
        return rig
    }

    /// `grouped`, and g started at 1000 ms (start ordinal 1).
    static func started(
        autorestore: Bool = true, delay: UInt32 = 0, mapAutorestore: Bool = false, mapDelay: UInt32 = 0
    ) throws -> GroupRig {
        var rig = try grouped(autorestore: autorestore, delay: delay, mapAutorestore: mapAutorestore, mapDelay: mapDelay)
        try rig.run(.startGroup(group: "g"), at: 1000)
        return rig
    }

    /// `started` with autorestore on, and s1 faulted at 5000 ms (fault 1): g rolls back.
    static func restoring() throws -> GroupRig {
        var rig = try started()
        try rig.run(fault("s1"), at: 5000)
        #expect(rig.state.groups[groupG]?.rollback != nil)
        return rig
    }
}

private func fault(_ volume: String, reason: String = "EIO", onset: Int64? = nil) -> Command {
    .reportFault(volume: volume, cause: .ioError, reason: reason, onsetMilliseconds: onset)
}

private func joinGroup(_ map: String, _ group: String) -> Command {
    .changeMap(map: map, autorestore: nil, copyRate: nil, newName: nil, group: .join(group))
}

private func leaveGroup(_ map: String) -> Command {
    .changeMap(map: map, autorestore: nil, copyRate: nil, newName: nil, group: .leave)
}

private func createGroup(_ name: String?, autorestore: Bool = false, delay: UInt32 = 0) -> Command {
    .createGroup(name: name, autorestore: autorestore, autorestoreDelaySeconds: delay)
}

private func mapCreated(_ id: MapID, _ name: String, source: VolumeID, target: VolumeID, autorestore: Bool = false) -> Event {
    .mapCreated(
        MapCreated(
            id: id, name: name, reverseID: id + 1, reverseName: name + "_rev", sourceID: source, targetID: target, copyRate: 50,
            grainSizeBytes: 256 << 10, autorestore: autorestore))
}

/// The events that start g's rollback for `faultID`: the group's record first, then a's and b's.
private func groupRollbackStarted(_ trigger: RollbackTrigger, faultID: FaultID?) -> [Event] {
    [
        .groupRollbackStarted(id: groupG, trigger: trigger, faultID: faultID), .rollbackStarted(id: mapA, trigger: trigger, faultID: faultID),
        .rollbackStarted(id: mapB, trigger: trigger, faultID: faultID),
    ]
}

/// Invariants of groups that every state reachable through `decide` holds. (`checkInvariants`
/// cannot be used on a started group with two members: it still requires start ordinals to be
/// unique across maps, and the members of one group start share one.)
private func checkGroupInvariants(_ state: ControllerState, _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(state.groupIDsByName.count == state.groups.count, "\(context)", sourceLocation: sourceLocation)
    for group in state.groupsByID {
        #expect(state.groupIDsByName[group.name] == group.id, "\(context): index of \(group.name)", sourceLocation: sourceLocation)
        #expect(state.mapIDsByName[group.name] == nil, "\(context): lcgrp \(group.name) has an lcmap's name", sourceLocation: sourceLocation)
        #expect(group.id < state.nextGroupID, "\(context)", sourceLocation: sourceLocation)
        if let ordinal = group.startOrdinal { #expect(ordinal < state.nextStartOrdinal, "\(context)", sourceLocation: sourceLocation) }
        #expect(group.imageMembers == group.imageMembers.sorted(), "\(context)", sourceLocation: sourceLocation)
        let members = state.members(of: group.id)
        #expect(members.count <= Limits.groupMapsMax, "\(context)", sourceLocation: sourceLocation)
        let volumes = members.flatMap { [$0.sourceID, $0.targetID] }
        #expect(Set(volumes).count == volumes.count, "\(context): members of \(group.name) share a volume", sourceLocation: sourceLocation)
        if group.rollback != nil { #expect(group.scheduledRollback == nil, "\(context)", sourceLocation: sourceLocation) }
        // A group rolls back as a whole: every member or none, and never a member alone.
        for member in members {
            #expect(
                (member.rollback != nil) == (group.rollback != nil),
                "\(context): lcmap \(member.name) rollback \(String(describing: member.rollback)), lcgrp \(group.name) rollback \(String(describing: group.rollback))",
                sourceLocation: sourceLocation)
            #expect(member.scheduledRollback == nil, "\(context): lcmap \(member.name) of \(group.name) waits for a rollback of its own", sourceLocation: sourceLocation)
        }
    }
    for map in state.maps.values {
        guard let id = map.groupID else { continue }
        #expect(map.role == .forward, "\(context)", sourceLocation: sourceLocation)
        #expect(state.groups[id] != nil, "\(context): lcmap \(map.name) in a missing group", sourceLocation: sourceLocation)
    }
}

// MARK: - Creating, changing and removing groups

@Suite("consistency groups: mklcgrp, chlcgrp, rmlcgrp")
struct GroupCreateTests {
    @Test("mklcgrp records GroupCreated; the default name is lcgrpN with N the new group's id, and ids are never reused")
    func create() throws {
        var rig = GroupRig()
        expectAccepted(createGroup(nil), rig.state, [.groupCreated(id: 0, name: "lcgrp0", autorestore: false, autorestoreDelaySeconds: 0)])
        let events = try rig.run(createGroup("db", autorestore: true, delay: 30))
        #expect(events == [.groupCreated(id: 0, name: "db", autorestore: true, autorestoreDelaySeconds: 30)])
        #expect(rig.state.group("db") == LCGroup(id: 0, name: "db", autorestore: true, autorestoreDelaySeconds: 30))
        #expect(rig.state.group("0")?.name == "db")
        #expect(rig.state.group("00") == nil)
        #expect(rig.state.status(of: rig.state.groups[0]!) == .empty)
        expectAccepted(createGroup(nil, autorestore: true), rig.state, [.groupCreated(id: 1, name: "lcgrp1", autorestore: true, autorestoreDelaySeconds: 0)])
        #expect(try rig.run(.removeGroup(group: "db", force: false)) == [.groupRemoved(id: 0)])
        #expect(rig.state.groups.isEmpty && rig.state.groupIDsByName.isEmpty)
        expectAccepted(createGroup(nil), rig.state, [.groupCreated(id: 1, name: "lcgrp1", autorestore: false, autorestoreDelaySeconds: 0)])
        // The name is free again.
        expectAccepted(createGroup("db"), rig.state, [.groupCreated(id: 1, name: "db", autorestore: false, autorestoreDelaySeconds: 0)])
    }

    @Test("group names follow the volume-name rules: 1–63 bytes", arguments: ["", "9g", "g g", "-g", "g/", String(repeating: "g", count: 64)])
    func invalidName(name: String) throws {
        expectRejected(createGroup(name), ControllerState(), .invalidName)
        var rig = GroupRig()
        try rig.run(createGroup("g"))
        expectRejected(.changeGroup(group: "g", newName: name, autorestore: nil, autorestoreDelaySeconds: nil), rig.state, .invalidName)
    }

    @Test("a group name of 63 bytes is accepted")
    func longestName() {
        let name = String(repeating: "g", count: Limits.nameBytesMax)
        expectAccepted(createGroup(name), ControllerState(), [.groupCreated(id: 0, name: name, autorestore: false, autorestoreDelaySeconds: 0)])
    }

    @Test("group names are unique, and differ from every lcmap's name (reverse names included), both ways")
    func duplicateNames() throws {
        var harness = try Fixture.mapped()  // volumes src, tgt; lcmaps m, m_rev
        for name in ["a", "b"] { try harness.run(.createVolume(name: name, sizeBytes: Fixture.mebibyte, path: nil)) }
        try harness.run(createGroup("g"))
        try harness.run(createGroup("x_rev"))
        // Against groups.
        expectRejected(createGroup("g"), harness.state, .duplicateName)
        expectRejected(.changeGroup(group: "g", newName: "x_rev", autorestore: nil, autorestoreDelaySeconds: nil), harness.state, .duplicateName)
        // A group against lcmaps.
        expectRejected(createGroup("m"), harness.state, .duplicateName)
        expectRejected(createGroup("m_rev"), harness.state, .duplicateName)
        expectRejected(.changeGroup(group: "g", newName: "m", autorestore: nil, autorestoreDelaySeconds: nil), harness.state, .duplicateName)
        expectRejected(.changeGroup(group: "g", newName: "m_rev", autorestore: nil, autorestoreDelaySeconds: nil), harness.state, .duplicateName)
        // An lcmap against groups: its name, and its derived reverse name.
        expectRejected(.createMap(CreateMap(source: "a", target: "b", name: "g")), harness.state, .duplicateName)
        expectRejected(.createMap(CreateMap(source: "a", target: "b", name: "x")), harness.state, .duplicateName)
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "g"), harness.state, .duplicateName)
        expectRejected(.changeMap(map: "m", autorestore: nil, copyRate: nil, newName: "x"), harness.state, .duplicateName)
        // Volumes have their own namespace.
        expectAccepted(createGroup("src"), harness.state, [.groupCreated(id: 2, name: "src", autorestore: false, autorestoreDelaySeconds: 0)])
        // Renaming a group to its own name changes nothing.
        expectAccepted(.changeGroup(group: "g", newName: "g", autorestore: nil, autorestoreDelaySeconds: nil), harness.state, [])
    }

    @Test("mklcgrp refuses a 501st group; a removal makes room")
    func groupLimit() throws {
        var harness = Harness()
        for _ in 0..<Limits.groupsMax { try harness.run(createGroup(nil)) }
        #expect(harness.state.groups.count == 500)
        expectRejected(createGroup(nil), harness.state, .limitReached)
        expectRejected(createGroup("another"), harness.state, .limitReached)
        try harness.run(.removeGroup(group: "lcgrp7", force: false))
        expectAccepted(createGroup(nil), harness.state, [.groupCreated(id: 500, name: "lcgrp500", autorestore: false, autorestoreDelaySeconds: 0)])
    }

    @Test("a group holds at most 512 lcmaps: the 513th is refused by mklcmap -lcgrp and chlcmap -lcgrp")
    func memberLimit() throws {
        var harness = Harness()
        try harness.run(createGroup("g"))
        // 512 members built directly, on volumes outside the state (512 real maps need 1024 volumes).
        for index in 0..<MapID(Limits.groupMapsMax) {
            harness.force(
                mapCreated(2 * index, "f\(index)", source: 100_000 + 2 * index, target: 100_001 + 2 * index),
                .mapGroupChanged(id: 2 * index, group: groupG))
        }
        #expect(harness.state.members(of: groupG).count == 512)
        try harness.run(.createVolume(name: "src", sizeBytes: Fixture.mebibyte, path: nil))
        try harness.run(.createVolume(name: "tgt", sizeBytes: Fixture.mebibyte, path: nil))
        expectRejected(.createMap(CreateMap(source: "src", target: "tgt", name: "m", group: "g")), harness.state, .limitReached)
        try harness.run(.createMap(CreateMap(source: "src", target: "tgt", name: "m")))
        expectRejected(joinGroup("m", "g"), harness.state, .limitReached)
        harness.force(.mapGroupChanged(id: 0, group: nil))
        expectAccepted(joinGroup("m", "g"), harness.state, [.mapGroupChanged(id: 1024, group: groupG)])
    }

    @Test("autorestoredelay: 0–86400 s on mklcgrp and chlcgrp, invalid_delay otherwise, checked first")
    func delayBounds() throws {
        var rig = GroupRig()
        expectRejected(createGroup("g", delay: 86_401), rig.state, .invalidDelay)
        expectRejected(createGroup("9bad", delay: .max), rig.state, .invalidDelay)
        try rig.run(createGroup("g", delay: 86_400))
        #expect(rig.state.group("g")?.autorestoreDelaySeconds == 86_400)
        expectRejected(.changeGroup(group: "g", newName: nil, autorestore: nil, autorestoreDelaySeconds: 86_401), rig.state, .invalidDelay)
        expectRejected(.changeGroup(group: "g", newName: "h", autorestore: true, autorestoreDelaySeconds: 86_401), rig.state, .invalidDelay)
    }

    @Test("chlcgrp records one event per changed setting: rename, autorestore, delay")
    func change() throws {
        var rig = GroupRig()
        try rig.run(createGroup("g"))
        expectAccepted(
            .changeGroup(group: "g", newName: "h", autorestore: true, autorestoreDelaySeconds: 60), rig.state,
            [
                .groupRenamed(id: groupG, name: "h"), .groupAutorestoreChanged(id: groupG, autorestore: true),
                .groupAutorestoreDelayChanged(id: groupG, seconds: 60),
            ])
        expectAccepted(.changeGroup(group: "0", newName: nil, autorestore: false, autorestoreDelaySeconds: 0), rig.state, [])
        expectRejected(.changeGroup(group: "g", newName: nil, autorestore: nil, autorestoreDelaySeconds: nil), rig.state, .nothingToChange)
        expectRejected(.changeGroup(group: "nope", newName: "h", autorestore: nil, autorestoreDelaySeconds: nil), rig.state, .unknownGroup)
        expectRejected(.changeGroup(group: "1", newName: "h", autorestore: nil, autorestoreDelaySeconds: nil), rig.state, .unknownGroup)
        try rig.run(.changeGroup(group: "g", newName: "h", autorestore: true, autorestoreDelaySeconds: 60))
        #expect(rig.state.group("g") == nil)
        #expect(rig.state.groupIDsByName == ["h": groupG])
        #expect(rig.state.group("h")?.autorestore == true && rig.state.group("h")?.autorestoreDelaySeconds == 60)
        // The old name is free for an lcmap.
        for name in ["v", "w"] { try rig.run(.createVolume(name: name, sizeBytes: 512, path: nil)) }
        #expect(rejection(.createMap(CreateMap(source: "v", target: "w", name: "g")), rig.state) == nil)
    }

    @Test("rmlcgrp: an empty group goes; one with lcmaps only with -force, which leaves them stand-alone")
    func remove() throws {
        var rig = try GroupRig.started()
        expectRejected(.removeGroup(group: "nope", force: true), rig.state, .unknownGroup)
        expectRejected(.removeGroup(group: "g", force: false), rig.state, .groupNotEmpty)
        let events = try rig.run(.removeGroup(group: "g", force: true))
        #expect(events == [.mapGroupChanged(id: mapA, group: nil), .mapGroupChanged(id: mapB, group: nil), .groupRemoved(id: groupG)])
        #expect(rig.state.groups.isEmpty && rig.state.group("g") == nil)
        #expect(rig.state.maps[mapA]?.groupID == nil && rig.state.maps[mapB]?.groupID == nil)
        // The maps keep their images and are now acted on alone.
        #expect(rig.state.maps[mapA]?.state == .copying && rig.state.maps[mapA]?.imageValid == true)
        expectAccepted(.stopMap(map: "a", force: true), rig.state, [.mapStopped(id: mapA)])
        expectAccepted(.startRestore(map: "b"), rig.state, [.rollbackStarted(id: mapB, trigger: .operator, faultID: nil)])
        // The name is free.
        expectAccepted(createGroup("g"), rig.state, [.groupCreated(id: 1, name: "g", autorestore: false, autorestoreDelaySeconds: 0)])
    }

    @Test("rmlcgrp refuses a group that rolls back, even with -force")
    func removeWhileRestoring() throws {
        let rig = try GroupRig.restoring()
        expectRejected(.removeGroup(group: "g", force: true), rig.state, .groupRestoring)
        expectRejected(.removeGroup(group: "g", force: false), rig.state, .groupRestoring)
    }
}

// MARK: - Membership

@Suite("consistency groups: membership")
struct GroupMembershipTests {
    /// s1 t1 s2 t2 s3 t3, groups g (0) and h (1), lcmaps a (s1 → t1) and b (s2 → t2) in no group.
    static func ungrouped() throws -> GroupRig {
        var rig = GroupRig()
        for name in ["s1", "t1", "s2", "t2", "s3", "t3"] { try rig.run(.createVolume(name: name, sizeBytes: 1 << 20, path: nil)) }
        try rig.run(createGroup("g"))
        try rig.run(createGroup("h"))
        try rig.run(.createMap(CreateMap(source: "s1", target: "t1", name: "a")))
        try rig.run(.createMap(CreateMap(source: "s2", target: "t2", name: "b")))
        return rig
    }

    @Test("chlcmap -lcgrp and -nolcgrp record MapGroupChanged; nothing when already there")
    func joinAndLeave() throws {
        var rig = try Self.ungrouped()
        expectAccepted(joinGroup("a", "g"), rig.state, [.mapGroupChanged(id: mapA, group: 0)])
        expectAccepted(joinGroup("0", "1"), rig.state, [.mapGroupChanged(id: mapA, group: 1)])
        try rig.run(joinGroup("a", "g"))
        #expect(rig.state.maps[mapA]?.groupID == 0 && rig.state.maps[1]?.groupID == nil)
        #expect(rig.state.members(of: 0).map(\.id) == [mapA])
        #expect(rig.state.status(of: rig.state.groups[0]!) == .idleOrCopied)
        expectAccepted(joinGroup("a", "g"), rig.state, [])
        // From one group straight into another.
        expectAccepted(joinGroup("a", "h"), rig.state, [.mapGroupChanged(id: mapA, group: 1)])
        expectAccepted(leaveGroup("a"), rig.state, [.mapGroupChanged(id: mapA, group: nil)])
        expectAccepted(leaveGroup("b"), rig.state, [])
        expectRejected(joinGroup("a", "nope"), rig.state, .unknownGroup)
        expectRejected(joinGroup("a_rev", "g"), rig.state, .mapIsReverse)
        expectRejected(leaveGroup("a_rev"), rig.state, .mapIsReverse)
        expectRejected(joinGroup("nope", "g"), rig.state, .unknownMap)
        // With other changes: rename, autorestore, then the group.
        expectAccepted(
            .changeMap(map: "b", autorestore: true, copyRate: nil, newName: "b2", group: .join("g")), rig.state,
            [
                .mapRenamed(id: mapB, name: "b2", reverseName: "b2_rev"), .mapAutorestoreChanged(id: mapB, autorestore: true),
                .mapGroupChanged(id: mapB, group: 0),
            ])
        try rig.run(leaveGroup("a"))
        #expect(rig.state.maps[mapA]?.groupID == nil && rig.state.members(of: 0).isEmpty)
    }

    @Test("only an idle_or_copied or stopped lcmap without a rollback moves into or out of a group")
    func onlyIdleOrStoppedMove() throws {
        var rig = try Self.ungrouped()
        try rig.run(.prepareMap(map: "a"))
        expectRejected(joinGroup("a", "g"), rig.state, .mapActive)
        try rig.run(.startMap(map: "a"))
        expectRejected(joinGroup("a", "g"), rig.state, .mapActive)
        // Copied: idle_or_copied with its image.
        try rig.run(.completeCopy(map: mapA))
        expectAccepted(joinGroup("a", "g"), rig.state, [.mapGroupChanged(id: mapA, group: 0)])
        try rig.run(.stopMap(map: "a", force: false))
        #expect(rig.state.maps[mapA]?.state == .stopped)
        expectAccepted(joinGroup("a", "g"), rig.state, [.mapGroupChanged(id: mapA, group: 0)])
        // Rolling back (idle_or_copied, but its reverse map copies onto the source).
        try rig.run(.startMap(map: "b"))
        try rig.run(.completeCopy(map: mapB))
        try rig.run(.startRestore(map: "b"))
        expectRejected(joinGroup("b", "g"), rig.state, .mapRestoring)
        // A member copying may not leave.
        try rig.run(joinGroup("a", "g"))
        try rig.run(.startGroup(group: "g"))
        expectRejected(leaveGroup("a"), rig.state, .mapActive)
        expectRejected(joinGroup("a", "h"), rig.state, .mapActive)
    }

    @Test("a group's lcmaps have distinct volumes: a second lcmap of a member's source is group_conflict")
    func distinctVolumes() throws {
        var rig = try Self.ungrouped()
        try rig.run(.createMap(CreateMap(source: "s1", target: "t3", name: "d")))  // d (4): s1 → t3
        try rig.run(joinGroup("a", "g"))
        do {
            _ = try decide(joinGroup("d", "g"), rig.state)
            Issue.record("d joined g, which holds its source s1 through a")
        } catch {
            #expect(error.code == .groupConflict)
            #expect(error.message.contains("s1") && error.message.contains("lcmap a"), "\(error.message)")
        }
        expectRejected(.createMap(CreateMap(source: "s1", target: "s3", name: "e", group: "g")), rig.state, .groupConflict)
        // Another group may hold either.
        expectAccepted(joinGroup("d", "h"), rig.state, [.mapGroupChanged(id: 4, group: 1)])
        expectAccepted(
            .createMap(CreateMap(source: "s1", target: "s3", name: "e", group: "h")), rig.state,
            [mapCreated(6, "e", source: s1, target: s3), .mapGroupChanged(id: 6, group: 1)])
    }

    @Test("mklcmap -lcgrp records MapCreated (and the hold window) then MapGroupChanged")
    func createMapInGroup() throws {
        let rig = try Self.ungrouped()
        expectAccepted(
            .createMap(CreateMap(source: "s3", target: "t3", name: "c", group: "g")), rig.state,
            [mapCreated(mapC, "c", source: s3, target: t3), .mapGroupChanged(id: mapC, group: 0)])
        expectAccepted(
            .createMap(CreateMap(source: "s3", target: "t3", name: "c", autorestore: true, autorestoreDelaySeconds: 30, group: "1")), rig.state,
            [
                mapCreated(mapC, "c", source: s3, target: t3, autorestore: true), .mapAutorestoreDelayChanged(id: mapC, seconds: 30),
                .mapGroupChanged(id: mapC, group: 1),
            ])
        expectRejected(.createMap(CreateMap(source: "s3", target: "t3", name: "c", group: "nope")), rig.state, .unknownGroup)
        var created = rig
        try created.run(.createMap(CreateMap(source: "s3", target: "t3", name: "c", group: "g")))
        #expect(created.state.maps[mapC]?.groupID == 0)
        #expect(created.state.maps[mapC + 1]?.groupID == nil)
    }

    @Test("no lcmap joins or leaves a group that rolls back")
    func membershipFrozenDuringRollback() throws {
        var rig = try GroupRig.restoring()
        expectRejected(joinGroup("c", "g"), rig.state, .groupRestoring)
        try rig.run(.createVolume(name: "s4", sizeBytes: 1 << 20, path: nil))
        try rig.run(.createVolume(name: "t4", sizeBytes: 1 << 20, path: nil))
        expectRejected(.createMap(CreateMap(source: "s4", target: "t4", group: "g")), rig.state, .groupRestoring)
        // A member rolls back itself, so it is refused as restoring.
        expectRejected(leaveGroup("a"), rig.state, .mapRestoring)
        // A join to the group it is already in records nothing.
        expectAccepted(joinGroup("b", "0"), rig.state, [])
    }
}

// MARK: - A member is not acted on alone

@Suite("consistency groups: a member is started, stopped and restored only with its group")
struct GroupMemberAloneTests {
    @Test("startlcmap, prestart, stoplcmap and startlcmap -restore of an idle member: map_in_group")
    func idleMember() throws {
        let rig = try GroupRig.grouped()
        for command: Command in [
            .startMap(map: "a"), .startMap(map: "0"), .prepareMap(map: "a"), .stopMap(map: "a", force: false),
            .stopMap(map: "a", force: true), .startRestore(map: "a"), .startRestore(map: "a_rev"), .startRestore(map: "1"),
        ] {
            expectRejected(command, rig.state, .mapInGroup)
        }
        // The stand-alone map is not concerned.
        expectAccepted(.startMap(map: "c"), rig.state, [.mapPreparing(id: mapC), .mapPrepared(id: mapC), .mapStarted(id: mapC, startOrdinal: 1)])
    }

    @Test("stoplcmap and startlcmap -restore of a started member (its image valid): map_in_group")
    func startedMember() throws {
        var rig = try GroupRig.started()
        for command: Command in [
            .stopMap(map: "a", force: false), .stopMap(map: "b", force: true), .startRestore(map: "a"), .startRestore(map: "a_rev"),
            .startRestore(map: "b_rev"),
        ] {
            expectRejected(command, rig.state, .mapInGroup)
        }
        try rig.run(.completeCopy(map: mapA))
        expectRejected(.startMap(map: "a"), rig.state, .mapInGroup)
        expectRejected(.startRestore(map: "a"), rig.state, .mapInGroup)
        // Out of the group, it is acted on alone again.
        try rig.run(leaveGroup("a"))
        expectAccepted(.startRestore(map: "a_rev"), rig.state, [.rollbackStarted(id: mapA, trigger: .operator, faultID: nil)])
        expectAccepted(.startMap(map: "a"), rig.state, [.mapPreparing(id: mapA), .mapPrepared(id: mapA), .mapStarted(id: mapA, startOrdinal: 2)])
    }
}

// MARK: - Starting a group

@Suite("consistency groups: startlcgrp")
struct GroupStartTests {
    @Test("startlcgrp: every member prepared and started in one commit with one start ordinal, then GroupStarted")
    func start() throws {
        var rig = try GroupRig.grouped()
        let events = try rig.run(.startGroup(group: "g"), at: 1000)
        #expect(
            events == [
                .mapPreparing(id: mapA), .mapPrepared(id: mapA), .mapPreparing(id: mapB), .mapPrepared(id: mapB),
                .mapStarted(id: mapA, startOrdinal: 1), .mapStarted(id: mapB, startOrdinal: 1),
                .groupStarted(id: groupG, startOrdinal: 1, members: [mapA, mapB]),
            ])
        let group = try #require(rig.state.groups[groupG])
        #expect(group.startOrdinal == 1 && group.startedAtMilliseconds == 1000 && group.imageMembers == [mapA, mapB])
        for id in [mapA, mapB] {
            let map = try #require(rig.state.maps[id])
            #expect(map.state == .copying && map.imageValid && map.startOrdinal == 1 && map.startedAtMilliseconds == 1000)
        }
        #expect(rig.state.nextStartOrdinal == 2)
        #expect(rig.state.status(of: group) == .copying)
        // The next start, of any map, takes the next ordinal.
        expectAccepted(.startMap(map: "c"), rig.state, [.mapPreparing(id: mapC), .mapPrepared(id: mapC), .mapStarted(id: mapC, startOrdinal: 2)])
        // Started members are not started again; copied ones are (a new point in time).
        expectRejected(.startGroup(group: "g"), rig.state, .mapAlreadyStarted)
        try rig.run(.completeCopy(map: mapA))
        expectRejected(.startGroup(group: "0"), rig.state, .mapAlreadyStarted)
        try rig.run(.completeCopy(map: mapB))
        #expect(rig.state.status(of: rig.state.groups[groupG]!) == .idleOrCopied)
        let again = try rig.run(.startGroup(group: "0"), at: 2000)
        #expect(again.last == .groupStarted(id: groupG, startOrdinal: 2, members: [mapA, mapB]))
        #expect(again.filter { $0.type == .mapStarted } == [.mapStarted(id: mapA, startOrdinal: 2), .mapStarted(id: mapB, startOrdinal: 2)])
        #expect(rig.state.groups[groupG]?.startedAtMilliseconds == 2000)
    }

    @Test("startlcgrp refuses an unknown group and an empty one")
    func unknownAndEmpty() throws {
        var rig = try GroupRig.grouped()
        expectRejected(.startGroup(group: "nope"), rig.state, .unknownGroup)
        expectRejected(.startGroup(group: "7"), rig.state, .unknownGroup)
        try rig.run(createGroup("empty"))
        expectRejected(.startGroup(group: "empty"), rig.state, .groupEmpty)
        expectRejected(.startGroupRestore(group: "empty"), rig.state, .groupEmpty)
    }

    @Test("a member whose source or target is faulted or restoring refuses the whole start; nothing is recorded")
    func memberVolumeUnusable() throws {
        // Source of b faulted (g never started: no image, nothing rolls back).
        var faultedSource = try GroupRig.grouped()
        #expect(try faultedSource.run(fault("s2"), at: 500).count == 1)
        let before = faultedSource.state
        expectRejected(.startGroup(group: "g"), faultedSource.state, .volumeFaulted)
        #expect(faultedSource.state == before)
        #expect(faultedSource.state.maps[mapA]?.state == .idleOrCopied && faultedSource.state.maps[mapA]?.imageValid == false)
        // Target of a faulted.
        var faultedTarget = try GroupRig.grouped()
        try faultedTarget.run(fault("t1"))
        expectRejected(.startGroup(group: "g"), faultedTarget.state, .volumeFaulted)
        // Source of b being restored by a stand-alone map.
        var restoring = try GroupRig.grouped()
        try restoring.run(.createVolume(name: "t4", sizeBytes: 1 << 20, path: nil))
        try restoring.run(.createMap(CreateMap(source: "s2", target: "t4", name: "d")))
        try restoring.run(.startMap(map: "d"))
        try restoring.run(.startRestore(map: "d"))
        expectRejected(.startGroup(group: "g"), restoring.state, .volumeRestoring)
        // Recovered: the group starts.
        try faultedSource.run(.recoverVolume(volume: "s2"))
        #expect(rejection(.startGroup(group: "g"), faultedSource.state) == nil)
    }

    @Test("the group's status follows its members: empty, idle_or_copied, copying, stopped")
    func status() throws {
        var rig = try GroupRig.grouped()
        #expect(rig.state.status(of: rig.state.groups[groupG]!) == .idleOrCopied)
        try rig.run(.startGroup(group: "g"))
        try rig.run(.completeCopy(map: mapA))
        #expect(rig.state.status(of: rig.state.groups[groupG]!) == .copying)
        try rig.run(.stopGroup(group: "g", force: false))
        #expect(rig.state.status(of: rig.state.groups[groupG]!) == .stopped)
        try rig.run(.removeGroup(group: "g", force: true))
        try rig.run(createGroup("e"))
        #expect(rig.state.status(of: rig.state.group("e")!) == .empty)
    }
}

// MARK: - Automatic group rollback

@Suite("consistency groups: automatic rollback")
struct GroupAutomaticRollbackTests {
    @Test("a fault on a member's source rolls back every member in the same commit, GroupRollbackStarted first")
    func faultRollsBackEveryMember() throws {
        var rig = try GroupRig.started()
        let events = try rig.run(.reportFault(volume: "s1", cause: .operator, reason: "ransomware"), at: 5000)
        #expect(events == [.volumeFaulted(id: s1, faultID: 1, cause: .operator, reason: "ransomware")] + groupRollbackStarted(.auto, faultID: 1))
        #expect(rig.state.groups[groupG]?.rollback == GroupRollback(trigger: .auto, faultID: 1))
        for (map, source) in [(mapA, s1), (mapB, s2)] {
            #expect(rig.state.maps[map]?.rollback == Rollback(trigger: .auto, faultID: 1))
            #expect(rig.state.maps[map + 1]?.state == .copying)
            #expect(rig.state.volumes[source]?.status == .restoring)
        }
        // The source that did not fault rolls back too, without a fault of its own.
        #expect(rig.state.volumes[s2]?.fault == nil)
        checkGroupInvariants(rig.state, "after the group rollback started")
        // A fault on the other member's source does the same.
        var other = try GroupRig.started()
        #expect(try other.run(fault("s2"), at: 5000) == [.volumeFaulted(id: s2, faultID: 1, cause: .ioError, reason: "EIO")] + groupRollbackStarted(.auto, faultID: 1))
    }

    @Test("with the group's autorestore off, no member rolls back, whatever the member's own autorestore")
    func groupAutorestoreOff() throws {
        var rig = try GroupRig.started(autorestore: false, mapAutorestore: true)
        #expect(rig.state.maps[mapA]?.autorestore == true)
        #expect(try rig.run(fault("s1"), at: 5000) == [.volumeFaulted(id: s1, faultID: 1, cause: .ioError, reason: "EIO")])
        #expect(rig.state.volumes[s1]?.status == .faulted && rig.state.groups[groupG]?.rollback == nil)
        #expect(rig.state.maps.values.allSatisfy { $0.rollback == nil && $0.scheduledRollback == nil })
        // chlcgrp -autorestore on governs the next fault.
        try rig.run(.changeGroup(group: "g", newName: nil, autorestore: true, autorestoreDelaySeconds: nil))
        #expect(try rig.run(fault("s2"), at: 6000) == [.volumeFaulted(id: s2, faultID: 2, cause: .ioError, reason: "EIO")] + groupRollbackStarted(.auto, faultID: 2))
    }

    @Test("the member's own autorestore and hold window are ignored while it is in a group")
    func memberSettingsIgnored() throws {
        // Members with autorestore off and a hold window of 30 s; the group: on, no hold window.
        var rig = try GroupRig.started(autorestore: true, delay: 0, mapAutorestore: false, mapDelay: 30)
        #expect(rig.state.maps[mapA]?.autorestoreDelaySeconds == 30 && rig.state.maps[mapA]?.autorestore == false)
        #expect(try rig.run(fault("s1"), at: 5000).dropFirst() == ArraySlice(groupRollbackStarted(.auto, faultID: 1)))
        #expect(rig.state.maps[mapA]?.scheduledRollback == nil)
    }

    @Test("a hold window schedules the group rollback at the fault's time plus the group's delay")
    func holdWindow() throws {
        var rig = try GroupRig.started(delay: 60, mapDelay: 5)
        let events = try rig.run(fault("s2"), at: 10_000)
        #expect(events == [.volumeFaulted(id: s2, faultID: 1, cause: .ioError, reason: "EIO"), .groupRollbackScheduled(id: groupG, faultID: 1)])
        #expect(rig.state.groups[groupG]?.scheduledRollback == ScheduledRollback(faultID: 1, atMilliseconds: 70_000))
        #expect(rig.state.maps[mapA]?.scheduledRollback == nil && rig.state.maps[mapB]?.scheduledRollback == nil)
        #expect(rig.state.volumes[s2]?.status == .faulted && rig.state.volumes[s1]?.status == .online)
        checkGroupInvariants(rig.state, "scheduled")
        expectRejected(.startScheduledGroupRollback(group: 7), rig.state, .unknownGroup)
        let started = try rig.run(.startScheduledGroupRollback(group: groupG), at: 70_000)
        #expect(started == groupRollbackStarted(.auto, faultID: 1))
        #expect(rig.state.groups[groupG]?.scheduledRollback == nil)
        expectRejected(.startScheduledGroupRollback(group: groupG), rig.state, .invalidState)
    }

    @Test("recovervolume, chlcgrp -autorestore off, a member leaving, an operator's group restore and a target fault each drop the schedule")
    func scheduleEnds() throws {
        var recovered = try GroupRig.started(delay: 60)
        try recovered.run(fault("s1"), at: 10_000)
        try recovered.run(.recoverVolume(volume: "s1"), at: 11_000)
        #expect(recovered.state.groups[groupG]?.scheduledRollback == nil && recovered.state.volumes[s1]?.status == .online)
        expectRejected(.startScheduledGroupRollback(group: groupG), recovered.state, .invalidState)

        var off = try GroupRig.started(delay: 60)
        try off.run(fault("s1"), at: 10_000)
        try off.run(.changeGroup(group: "g", newName: nil, autorestore: false, autorestoreDelaySeconds: nil), at: 11_000)
        #expect(off.state.groups[groupG]?.scheduledRollback == nil)

        var left = try GroupRig.started(delay: 60)
        try left.run(.completeCopy(map: mapB))
        try left.run(fault("s1"), at: 10_000)
        try left.run(leaveGroup("b"), at: 11_000)
        #expect(left.state.groups[groupG]?.scheduledRollback == nil)

        var chosen = try GroupRig.started(delay: 60)
        try chosen.run(fault("s1"), at: 10_000)
        // The operator's rollback names each member's source's fault: a's source has fault 1.
        #expect(
            try chosen.run(.startGroupRestore(group: "g"), at: 11_000) == [
                .groupRollbackStarted(id: groupG, trigger: .operator, faultID: nil), .rollbackStarted(id: mapA, trigger: .operator, faultID: 1),
                .rollbackStarted(id: mapB, trigger: .operator, faultID: nil),
            ])
        #expect(chosen.state.groups[groupG]?.scheduledRollback == nil)

        var target = try GroupRig.started(delay: 60)
        try target.run(fault("s1"), at: 10_000)
        try target.run(fault("t2"), at: 11_000)
        #expect(target.state.groups[groupG]?.scheduledRollback == nil)
        #expect(target.state.maps[mapB]?.state == .stopped && target.state.maps[mapB]?.imageValid == false)
    }

    @Test(
        "stoplcgrp drops the group's schedule (its images are gone), as stoplcmap drops a map's")
    func stopDropsSchedule() throws {
        var rig = try GroupRig.started(delay: 60)
        try rig.run(fault("s1"), at: 10_000)
        try rig.run(.stopGroup(group: "g", force: false), at: 11_000)
        #expect(rig.state.groups[groupG]?.scheduledRollback == nil)
        expectRejected(.startScheduledGroupRollback(group: groupG), rig.state, .invalidState)
    }

    @Test("with an onset, the group's images qualify only when taken at or before it")
    func onset() throws {
        for (onset, rollsBack) in [(2000 as Int64, true), (1000, true), (999, false)] {
            var rig = try GroupRig.started()
            let events = try rig.run(fault("s1", onset: onset), at: 5000)
            let head: [Event] = [
                .volumeFaulted(id: s1, faultID: 1, cause: .ioError, reason: "EIO"), .faultOnset(id: s1, faultID: 1, onsetMilliseconds: onset),
            ]
            #expect(events == head + (rollsBack ? groupRollbackStarted(.auto, faultID: 1) : []), "onset \(onset)")
            #expect((rig.state.groups[groupG]?.rollback != nil) == rollsBack)
            #expect(rig.state.volumes[s1]?.status == (rollsBack ? .restoring : .faulted))
        }
    }

    /// `grouped`, with d (s1 → old, id 6, autorestore on, stand-alone) started at 500 and g at 1000.
    static func olderStandAloneImage() throws -> GroupRig {
        var rig = try GroupRig.grouped()
        try rig.run(.createVolume(name: "old", sizeBytes: 1 << 20, path: nil))
        try rig.run(.createMap(CreateMap(source: "s1", target: "old", name: "d", autorestore: true)))
        try rig.run(.startMap(map: "d"), at: 500)
        try rig.run(.startGroup(group: "g"), at: 1000)
        return rig
    }

    @Test("the newest image wins: the group's; an onset before the group's start picks an older stand-alone image of that source alone")
    func onsetBeforeGroupStart() throws {
        var newest = try Self.olderStandAloneImage()
        #expect(try newest.run(fault("s1"), at: 5000).dropFirst() == ArraySlice(groupRollbackStarted(.auto, faultID: 1)))
        var older = try Self.olderStandAloneImage()
        let events = try older.run(fault("s1", onset: 700), at: 5000)
        #expect(
            events == [
                .volumeFaulted(id: s1, faultID: 1, cause: .ioError, reason: "EIO"), .faultOnset(id: s1, faultID: 1, onsetMilliseconds: 700),
                .rollbackStarted(id: 6, trigger: .auto, faultID: 1),
            ])
        #expect(older.state.groups[groupG]?.rollback == nil && older.state.volumes[s2]?.status == .online)
    }

    @Test(
        "an onset that switches a stand-alone rollback to a member's older image rolls back the member's whole group")
    func switchToGroupImage() throws {
        // d (s1 → new, stand-alone, autorestore on) started at 2000, after g (1000).
        var rig = try GroupRig.started()
        try rig.run(.createVolume(name: "new", sizeBytes: 1 << 20, path: nil))
        try rig.run(.createMap(CreateMap(source: "s1", target: "new", name: "d", autorestore: true)))
        try rig.run(.startMap(map: "d"), at: 2000)
        // The newest image, d's, is rolled back first.
        #expect(try rig.run(fault("s1"), at: 5000).last == .rollbackStarted(id: 6, trigger: .auto, faultID: 1))
        // The damage began before d's image: g's images (1000) are the newest before it.
        let events = try rig.run(fault("s1", onset: 1500), at: 6000)
        #expect(
            events == [
                .volumeFaulted(id: s1, faultID: 2, cause: .ioError, reason: "EIO"), .faultOnset(id: s1, faultID: 2, onsetMilliseconds: 1500),
                .rollbackStopped(id: 6, reason: "switched: its image postdates the onset of fault 2"),
            ] + groupRollbackStarted(.auto, faultID: 2))
        checkGroupInvariants(rig.state, "after the switch")
    }

    @Test(
        "a group rollback scheduled for a later fault replaces a stand-alone one waiting onto the same source, as RollbackScheduled does")
    func groupScheduleReplacesStandAloneSchedule() throws {
        // g (hold window 60 s) started at 1000; d (s1 → new, stand-alone, hold window 60 s) at 2000.
        var rig = try GroupRig.started(delay: 60)
        try rig.run(.createVolume(name: "new", sizeBytes: 1 << 20, path: nil))
        try rig.run(.createMap(CreateMap(source: "s1", target: "new", name: "d", autorestore: true, autorestoreDelaySeconds: 60)))
        try rig.run(.startMap(map: "d"), at: 2000)
        #expect(try rig.run(fault("s1"), at: 5000).last == .rollbackScheduled(id: 6, faultID: 1))
        // The damage began before d's image: g's images are the newest before it.
        #expect(try rig.run(fault("s1", onset: 1500), at: 6000).last == .groupRollbackScheduled(id: groupG, faultID: 2))
        #expect(rig.state.groups[groupG]?.scheduledRollback == ScheduledRollback(faultID: 2, atMilliseconds: 66_000))
        // d's image postdates the onset: its wait ends, and it is not started at 65 000.
        #expect(rig.state.maps[6]?.scheduledRollback == nil)
        expectRejected(.startScheduledRollback(map: 6), rig.state, .invalidState)
    }

    @Test(
        "a stand-alone lcmap that joins a group while its own automatic rollback waits does not roll back alone")
    func joinDropsOwnSchedule() throws {
        var rig = try GroupMembershipTests.ungrouped()
        try rig.run(.changeMap(map: "a", autorestore: true, copyRate: nil, newName: nil, autorestoreDelaySeconds: 60))
        try rig.run(.startMap(map: "a"), at: 1000)
        try rig.run(.completeCopy(map: mapA))
        #expect(try rig.run(fault("s1"), at: 5000).last == .rollbackScheduled(id: mapA, faultID: 1))
        try rig.run(joinGroup("a", "g"), at: 6000)
        #expect(rig.state.maps[mapA]?.scheduledRollback == nil)
        let refused = rejection(.startScheduledRollback(map: mapA), rig.state)
        #expect(refused == .invalidState || refused == .mapInGroup)
        checkGroupInvariants(rig.state, "after the join")
    }
}

// MARK: - Group rollback: refusals, completion, stops and restarts

@Suite("consistency groups: group rollback")
struct GroupRollbackTests {
    @Test("startlcgrp -restore rolls back every member; each names its source's fault")
    func operatorRestore() throws {
        var rig = try GroupRig.started(autorestore: false)
        expectAccepted(.startGroupRestore(group: "g"), rig.state, groupRollbackStarted(.operator, faultID: nil))
        try rig.run(fault("s2"), at: 5000)
        let events = try rig.run(.startGroupRestore(group: "0"), at: 6000)
        #expect(
            events == [
                .groupRollbackStarted(id: groupG, trigger: .operator, faultID: nil), .rollbackStarted(id: mapA, trigger: .operator, faultID: nil),
                .rollbackStarted(id: mapB, trigger: .operator, faultID: 1),
            ])
        expectRejected(.startGroupRestore(group: "g"), rig.state, .groupRestoring)
        expectRejected(.startGroup(group: "g"), rig.state, .groupRestoring)
        expectRejected(.startGroupRestore(group: "nope"), rig.state, .unknownGroup)
    }

    @Test("no_valid_image: a group never started, stopped, or with a member's target faulted")
    func noValidImage() throws {
        var never = try GroupRig.grouped()
        expectRejected(.startGroupRestore(group: "g"), never.state, .noValidImage)
        // A fault rolls nothing back.
        #expect(try never.run(fault("s1"), at: 5000) == [.volumeFaulted(id: s1, faultID: 1, cause: .ioError, reason: "EIO")])

        var stopped = try GroupRig.started()
        try stopped.run(.stopGroup(group: "g", force: true))
        expectRejected(.startGroupRestore(group: "g"), stopped.state, .noValidImage)
        #expect(try stopped.run(fault("s1"), at: 5000).count == 1)

        var target = try GroupRig.started()
        try target.run(fault("t2"), at: 2000)
        #expect(target.state.maps[mapB]?.imageValid == false)
        expectRejected(.startGroupRestore(group: "g"), target.state, .noValidImage)
        #expect(try target.run(fault("s1"), at: 5000).count == 1)
    }

    @Test("group_changed: a member joined since the start; nothing rolls back until the group starts again")
    func memberJoined() throws {
        var rig = try GroupRig.started()
        try rig.run(joinGroup("c", "g"))
        expectRejected(.startGroupRestore(group: "g"), rig.state, .groupChanged)
        #expect(try rig.run(fault("s1"), at: 5000) == [.volumeFaulted(id: s1, faultID: 1, cause: .ioError, reason: "EIO")])
        // Started again, the new membership is the image.
        try rig.run(.recoverVolume(volume: "s1"))
        try rig.run(.completeCopy(map: mapA))
        try rig.run(.completeCopy(map: mapB))
        let started = try rig.run(.startGroup(group: "g"), at: 6000)
        #expect(started.last == .groupStarted(id: groupG, startOrdinal: 2, members: [mapA, mapB, mapC]))
        expectAccepted(
            .startGroupRestore(group: "g"), rig.state,
            groupRollbackStarted(.operator, faultID: nil) + [.rollbackStarted(id: mapC, trigger: .operator, faultID: nil)])
    }

    @Test("group_changed: a member left, or was removed, since the start")
    func memberLeft() throws {
        var left = try GroupRig.started()
        try left.run(.completeCopy(map: mapB))
        try left.run(leaveGroup("b"))
        #expect(left.state.groups[groupG]?.imageMembers == [mapA, mapB])
        expectRejected(.startGroupRestore(group: "g"), left.state, .groupChanged)
        #expect(try left.run(fault("s1"), at: 5000).count == 1)
        // Back in the group, with the same image: the group is whole again.
        try left.run(.recoverVolume(volume: "s1"))
        try left.run(joinGroup("b", "g"))
        expectAccepted(.startGroupRestore(group: "g"), left.state, groupRollbackStarted(.operator, faultID: nil))

        var removed = try GroupRig.started()
        try removed.run(.removeMap(map: "b", force: true))
        expectRejected(.startGroupRestore(group: "g"), removed.state, .groupChanged)
    }

    @Test("completeRollback of a member records GroupMemberRestored; the group completes only when every member waits")
    func completion() throws {
        var rig = try GroupRig.restoring()
        expectRejected(.completeGroupRollback(group: groupG), rig.state, .invalidState)
        expectRejected(.completeGroupRollback(group: 9), rig.state, .unknownGroup)
        #expect(try rig.run(.completeRollback(map: mapA)) == [.groupMemberRestored(id: mapA)])
        #expect(rig.state.maps[mapA]?.rollback?.awaitingGroup == true)
        // a's source stays restoring until every member's is restored.
        #expect(rig.state.volumes[s1]?.status == .restoring)
        expectRejected(.completeRollback(map: mapA), rig.state, .invalidState)
        expectRejected(.completeGroupRollback(group: groupG), rig.state, .invalidState)
        try rig.run(.recordRollbackProgress(map: mapB, grainsRestored: 1, grainsToRestore: 2))
        #expect(try rig.run(.completeRollback(map: mapB)) == [.groupMemberRestored(id: mapB)])
        checkGroupInvariants(rig.state, "every member waits")
        let events = try rig.run(.completeGroupRollback(group: groupG), at: 7000)
        #expect(events == [.rollbackCompleted(id: mapA), .rollbackCompleted(id: mapB), .groupRollbackCompleted(id: groupG)])
        for (map, source) in [(mapA, s1), (mapB, s2)] {
            #expect(rig.state.volumes[source]?.status == .online && rig.state.volumes[source]?.fault == nil)
            #expect(rig.state.maps[map]?.rollback == nil && rig.state.maps[map + 1]?.state == .idleOrCopied)
        }
        #expect(rig.state.groups[groupG]?.rollback == nil)
        expectRejected(.completeGroupRollback(group: groupG), rig.state, .invalidState)
        // The images remain: the group may roll back again.
        expectAccepted(.startGroupRestore(group: "g"), rig.state, groupRollbackStarted(.operator, faultID: nil))
        checkGroupInvariants(rig.state, "completed")
    }

    @Test("a fault on a member's target during a group rollback stops the whole group and leaves every source faulted")
    func targetFaultStopsGroup() throws {
        for aWaits in [false, true] {
            var rig = try GroupRig.restoring()
            if aWaits { try rig.run(.completeRollback(map: mapA)) }
            let events = try rig.run(fault("t2"), at: 6000)
            let reason = "stopped: target t2 of lcmap b faulted (fault 2)"
            #expect(
                events == [
                    .volumeFaulted(id: t2, faultID: 2, cause: .ioError, reason: "EIO"),
                    .rollbackStopped(id: mapA, reason: reason),
                    .volumeFaulted(id: s2, faultID: 3, cause: .rollbackAbandoned, reason: reason),
                    .rollbackStopped(id: mapB, reason: reason),
                    .groupRollbackStopped(id: groupG, reason: reason),
                ], "a waits: \(aWaits)")
            #expect(rig.state.groups[groupG]?.rollback == nil)
            #expect(rig.state.maps.values.allSatisfy { $0.rollback == nil })
            #expect(rig.state.volumes[s1]?.status == .faulted && rig.state.volumes[s1]?.fault?.id == 1)
            #expect(rig.state.volumes[s2]?.status == .faulted && rig.state.volumes[s2]?.fault?.cause == .rollbackAbandoned)
            #expect(rig.state.volumes[t2]?.status == .faulted)
            #expect(rig.state.maps[mapB]?.state == .stopped && rig.state.maps[mapB]?.imageValid == false)
            #expect(rig.state.maps[mapA]?.imageValid == true)
            checkGroupInvariants(rig.state, "stopped by a target fault")
        }
        // A fault on a's target, with a fault onset: the same.
        var rig = try GroupRig.restoring()
        let events = try rig.run(fault("t1", onset: 4000), at: 6000)
        #expect(events.map(\.type) == [.volumeFaulted, .faultOnset, .rollbackStopped, .volumeFaulted, .rollbackStopped, .groupRollbackStopped])
        #expect(events.last == .groupRollbackStopped(id: groupG, reason: "stopped: target t1 of lcmap a faulted (fault 2)"))
    }

    @Test("the controller's abandonRollback of one member abandons the whole group's rollback")
    func abandonMember() throws {
        let rig = try GroupRig.restoring()
        let reason = "store of t1 unavailable"
        expectAccepted(
            .abandonRollback(map: mapA, reason: reason), rig.state,
            [
                .rollbackStopped(id: mapA, reason: reason), .volumeFaulted(id: s2, faultID: 2, cause: .rollbackAbandoned, reason: reason),
                .rollbackStopped(id: mapB, reason: reason), .groupRollbackStopped(id: groupG, reason: reason),
            ])
    }

    @Test("a second fault on any member's source during the group rollback restarts every member")
    func secondFaultRestartsEveryMember() throws {
        for volume in ["s1", "s2"] {
            var rig = try GroupRig.restoring()
            try rig.run(.recordRollbackProgress(map: mapB, grainsRestored: 1, grainsToRestore: 3))
            try rig.run(.completeRollback(map: mapA))
            let events = try rig.run(fault(volume, reason: "again"), at: 6000)
            let id = volume == "s1" ? s1 : s2
            #expect(
                events == [
                    .volumeFaulted(id: id, faultID: 2, cause: .ioError, reason: "again"), .rollbackRestarted(id: mapA, faultID: 2),
                    .rollbackRestarted(id: mapB, faultID: 2),
                ], "\(volume)")
            #expect(rig.state.maps[mapA]?.rollback == Rollback(trigger: .auto, faultID: 2))
            #expect(rig.state.maps[mapB]?.rollback == Rollback(trigger: .auto, faultID: 2))
            #expect(rig.state.groups[groupG]?.rollback != nil)
            expectRejected(.completeGroupRollback(group: groupG), rig.state, .invalidState)
            checkGroupInvariants(rig.state, "restarted")
        }
        // An onset after the group's start: restarted too.
        var rig = try GroupRig.restoring()
        #expect(try rig.run(fault("s2", onset: 1000), at: 6000).suffix(2) == [.rollbackRestarted(id: mapA, faultID: 2), .rollbackRestarted(id: mapB, faultID: 2)])
    }

    @Test("a second fault whose onset precedes the group's images stops the group and chooses again for that source")
    func secondFaultOnsetBeforeImages() throws {
        let reason = "stopped: the images of lcgrp g postdate the onset of fault 2"
        let stop: [Event] = [
            .volumeFaulted(id: s1, faultID: 2, cause: .ioError, reason: "EIO"), .faultOnset(id: s1, faultID: 2, onsetMilliseconds: 700),
            .rollbackStopped(id: mapA, reason: reason), .volumeFaulted(id: s2, faultID: 3, cause: .rollbackAbandoned, reason: reason),
            .rollbackStopped(id: mapB, reason: reason), .groupRollbackStopped(id: groupG, reason: reason),
        ]
        // No older image: every source is left faulted.
        var alone = try GroupRig.restoring()
        #expect(try alone.run(fault("s1", onset: 700), at: 6000) == stop)
        #expect(alone.state.volumes[s1]?.status == .faulted && alone.state.volumes[s2]?.status == .faulted)
        #expect(alone.state.groups[groupG]?.rollback == nil)
        checkGroupInvariants(alone.state, "stopped by an onset")
        // An older stand-alone image of s1 (d, 500 ms): it is rolled back onto s1 alone.
        var older = try GroupAutomaticRollbackTests.olderStandAloneImage()
        try older.run(fault("s1"), at: 5000)
        #expect(older.state.groups[groupG]?.rollback != nil)
        #expect(try older.run(fault("s1", onset: 700), at: 6000) == stop + [.rollbackStarted(id: 6, trigger: .auto, faultID: 2)])
        #expect(older.state.volumes[s1]?.status == .restoring && older.state.volumes[s2]?.status == .faulted)
        checkGroupInvariants(older.state, "switched to d")
    }

    @Test("stoplcgrp: stops the members; during a rollback only with -force, which abandons it and leaves every source faulted")
    func stop() throws {
        let copying = try GroupRig.started()
        expectAccepted(
            .stopGroup(group: "g", force: false), copying.state,
            [.mapStopping(id: mapA), .mapStopped(id: mapA), .mapStopping(id: mapB), .mapStopped(id: mapB)])
        expectAccepted(.stopGroup(group: "0", force: true), copying.state, [.mapStopped(id: mapA), .mapStopped(id: mapB)])
        expectRejected(.stopGroup(group: "nope", force: false), copying.state, .unknownGroup)
        expectRejected(.stopGroup(group: "g", force: false), try GroupRig.grouped().state, .mapNotStarted)

        var rig = try GroupRig.restoring()
        expectRejected(.stopGroup(group: "g", force: false), rig.state, .groupRestoring)
        let reason = "stopped by operator (stoplcgrp -force)"
        let events = try rig.run(.stopGroup(group: "g", force: true), at: 6000)
        #expect(
            events == [
                .rollbackStopped(id: mapA, reason: reason), .volumeFaulted(id: s2, faultID: 2, cause: .rollbackAbandoned, reason: reason),
                .rollbackStopped(id: mapB, reason: reason), .groupRollbackStopped(id: groupG, reason: reason),
            ])
        #expect(rig.state.volumes[s1]?.status == .faulted && rig.state.volumes[s2]?.status == .faulted)
        #expect(rig.state.groups[groupG]?.rollback == nil)
        // The images are intact: the operator may roll the group back again.
        expectAccepted(
            .startGroupRestore(group: "g"), rig.state,
            [
                .groupRollbackStarted(id: groupG, trigger: .operator, faultID: nil), .rollbackStarted(id: mapA, trigger: .operator, faultID: 1),
                .rollbackStarted(id: mapB, trigger: .operator, faultID: 2),
            ])
        checkGroupInvariants(rig.state, "stopped by the operator")
    }
}

// MARK: - Encodings

/// At least one event of every group type, with each optional present and absent and extreme values.
let sampleGroupEvents: [Event] = [
    .groupCreated(id: 0, name: "lcgrp0", autorestore: false, autorestoreDelaySeconds: 0),
    .groupCreated(id: .max, name: "db-and-journal", autorestore: true, autorestoreDelaySeconds: 86_400),
    .groupRenamed(id: 3, name: "vm"),
    .groupAutorestoreChanged(id: 3, autorestore: true),
    .groupAutorestoreChanged(id: 3, autorestore: false),
    .groupAutorestoreDelayChanged(id: 3, seconds: 0),
    .groupAutorestoreDelayChanged(id: 3, seconds: 86_400),
    .groupRemoved(id: 4),
    .mapGroupChanged(id: 2, group: 0),
    .mapGroupChanged(id: 2, group: nil),
    .mapGroupChanged(id: .max, group: .max),
    .groupStarted(id: 0, startOrdinal: 1, members: []),
    .groupStarted(id: 1, startOrdinal: 7, members: [0, 2, 4]),
    .groupStarted(id: .max, startOrdinal: .max, members: (0..<MapID(Limits.groupMapsMax)).map { 2 * $0 }),
    .groupRollbackStarted(id: 0, trigger: .auto, faultID: 1),
    .groupRollbackStarted(id: 0, trigger: .operator, faultID: nil),
    .groupRollbackStarted(id: 0, trigger: .operator, faultID: .max),
    .groupMemberRestored(id: 2),
    .groupRollbackCompleted(id: 0),
    .groupRollbackStopped(id: 0, reason: "stopped: target t2 of lcmap b faulted (fault 2)"),
    .groupRollbackStopped(id: 0, reason: ""),
    .groupRollbackScheduled(id: 0, faultID: 9),
]

private func payload(_ build: (inout ByteWriter) -> Void) -> [UInt8] {
    var writer = ByteWriter()
    build(&writer)
    return writer.bytes
}

@Suite("consistency groups: event encoding")
struct GroupEventEncodingTests {
    static let groupTypes: [EventType] = [
        .groupCreated, .groupRenamed, .groupAutorestoreChanged, .groupAutorestoreDelayChanged, .groupRemoved, .mapGroupChanged,
        .groupStarted, .groupRollbackStarted, .groupMemberRestored, .groupRollbackCompleted, .groupRollbackStopped,
        .groupRollbackScheduled,
    ]

    @Test("the group event types have stable codes 28–39 and names")
    func typeCodes() {
        #expect(Self.groupTypes.map(\.rawValue) == Array(28...39))
        #expect(
            Self.groupTypes.map(\.description) == [
                "GroupCreated", "GroupRenamed", "GroupAutorestoreChanged", "GroupAutorestoreDelayChanged", "GroupRemoved",
                "MapGroupChanged", "GroupStarted", "GroupRollbackStarted", "GroupMemberRestored", "GroupRollbackCompleted",
                "GroupRollbackStopped", "GroupRollbackScheduled",
            ])
        for type in Self.groupTypes { #expect(EventType(name: type.description.lowercased()) == type) }
        // The codes on either side belong to other features (restore points, anomaly detection).
        #expect(EventType(rawValue: 27) == .faultOnset && EventType(rawValue: 40) == .volumeRenamed)
        #expect(Set(sampleGroupEvents.map(\.type)) == Set(Self.groupTypes))
    }

    @Test("every group event round-trips through its payload", arguments: sampleGroupEvents)
    func roundTrip(event: Event) throws {
        let bytes = event.encodedPayload()
        let decoded = try Event.decode(typeCode: event.type.rawValue, bytes)
        #expect(decoded == event)
        #expect(decoded.encodedPayload() == bytes)
        #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, bytes + [0]) } == .failure(.trailingBytes(count: 1)))
    }

    @Test("every strict prefix of a group event's payload is refused as truncated", arguments: sampleGroupEvents.filter { $0.encodedPayload().count < 200 })
    func truncation(event: Event) {
        let bytes = event.encodedPayload()
        for length in 0..<bytes.count {
            let result = decodeResult { () throws(DecodeError) in try Event.decode(typeCode: event.type.rawValue, Array(bytes[..<length])) }
            guard case .failure(.truncated) = result else {
                Issue.record("\(event) prefix of \(length)/\(bytes.count) bytes: \(result)")
                continue
            }
        }
    }

    @Test("the payload layout: GroupStarted's member count and ids, MapGroupChanged's optional group")
    func layout() {
        #expect(
            Event.groupStarted(id: 1, startOrdinal: 0x0102, members: [3, 5]).encodedPayload()
                == [1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0])
        #expect(Event.mapGroupChanged(id: 2, group: 7).encodedPayload() == [2, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0])
        #expect(Event.mapGroupChanged(id: 2, group: nil).encodedPayload() == [2, 0, 0, 0, 0])
        #expect(Event.groupCreated(id: 1, name: "g", autorestore: true, autorestoreDelaySeconds: 60).encodedPayload() == [1, 0, 0, 0, 1, 0, 0x67, 1, 60, 0, 0, 0])
        #expect(Event.groupRollbackStarted(id: 1, trigger: .auto, faultID: nil).encodedPayload() == [1, 0, 0, 0, 1, 0])
        #expect(Event.groupRollbackScheduled(id: 1, faultID: 9).encodedPayload() == [1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("decoding refuses a GroupStarted member count above Limits.groupMapsMax before reading the members")
    func memberCountAboveLimit() throws {
        let groupStarted = { (count: UInt32, members: Int) in
            payload {
                $0.write(UInt32(0))
                $0.write(UInt64(1))
                $0.write(count)
                for member in 0..<members { $0.write(UInt32(member)) }
            }
        }
        let code = EventType.groupStarted.rawValue
        let max = UInt32(Limits.groupMapsMax)
        #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: code, groupStarted(max + 1, Int(max) + 1)) } == .failure(.invalidValue(field: "memberCount", value: 513)))
        #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: code, groupStarted(.max, 0)) } == .failure(.invalidValue(field: "memberCount", value: UInt64(UInt32.max))))
        let full = try Event.decode(typeCode: code, groupStarted(max, Int(max)))
        #expect(full == .groupStarted(id: 0, startOrdinal: 1, members: Array(0..<max)))
        // A count larger than the members present is truncation.
        guard case .failure(.truncated) = decodeResult({ () throws(DecodeError) in try Event.decode(typeCode: code, groupStarted(3, 2)) }) else {
            Issue.record("expected truncation")
            return
        }
    }

    @Test("fields outside their domains are refused")
    func invalidValues() {
        let cases: [(EventType, [UInt8], DecodeError)] = [
            (.mapGroupChanged, payload { $0.write(UInt32(1)); $0.write(UInt64?.some(1 << 32)) }, .invalidValue(field: "group", value: 1 << 32)),
            (.mapGroupChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(2)) }, .invalidValue(field: "group", value: 2)),
            (
                .groupCreated, payload { $0.write(UInt32(1)); $0.write("g"); $0.write(true); $0.write(UInt32(86_401)) },
                .invalidValue(field: "seconds", value: 86_401)
            ),
            (
                .groupCreated, payload { $0.write(UInt32(1)); $0.write("g"); $0.write(UInt8(2)); $0.write(UInt32(0)) },
                .invalidValue(field: "autorestore", value: 2)
            ),
            (.groupAutorestoreDelayChanged, payload { $0.write(UInt32(1)); $0.write(UInt32.max) }, .invalidValue(field: "seconds", value: UInt64(UInt32.max))),
            (.groupAutorestoreChanged, payload { $0.write(UInt32(1)); $0.write(UInt8(0xFF)) }, .invalidValue(field: "autorestore", value: 0xFF)),
            (.groupRollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(2)); $0.write(UInt64?.none) }, .invalidValue(field: "trigger", value: 2)),
            (.groupRollbackStarted, payload { $0.write(UInt32(1)); $0.write(UInt8(0)); $0.write(UInt8(3)) }, .invalidValue(field: "faultID", value: 3)),
            (.groupRenamed, payload { $0.write(UInt32(1)); $0.write(UInt16(1)); $0.write(bytes: [0xFF]) }, .invalidUTF8(field: "name")),
            (.groupRollbackStopped, payload { $0.write(UInt32(1)); $0.write(UInt16(1)); $0.write(bytes: [0x80]) }, .invalidUTF8(field: "reason")),
        ]
        for (type, bytes, expected) in cases {
            #expect(decodeResult { () throws(DecodeError) in try Event.decode(typeCode: type.rawValue, bytes) } == .failure(expected), "\(type)")
        }
    }

    @Test("group events name their groups and maps (log show -group, -map)")
    func namedObjects() {
        #expect(Event.groupStarted(id: 3, startOrdinal: 1, members: [0, 2]).groupIDs == [3])
        #expect(Event.groupStarted(id: 3, startOrdinal: 1, members: [0, 2]).mapIDs == [0, 2])
        #expect(Event.mapGroupChanged(id: 4, group: 3).groupIDs == [3] && Event.mapGroupChanged(id: 4, group: 3).mapIDs == [4])
        #expect(Event.mapGroupChanged(id: 4, group: nil).groupIDs.isEmpty)
        #expect(Event.groupMemberRestored(id: 4).mapIDs == [4] && Event.groupMemberRestored(id: 4).groupIDs.isEmpty)
        for event in sampleGroupEvents where event.type != .mapGroupChanged && event.type != .groupMemberRestored {
            #expect(event.groupIDs.count == 1, "\(event.type)")
            #expect(event.volumeIDs.isEmpty, "\(event.type)")
        }
    }
}

@Suite("consistency groups: state encoding")
struct GroupStateEncodingTests {
    /// Volumes s1–s4, t1–t4. g (autorestore on): a (s1 → t1) and b (s2 → t2), started at 1000,
    /// rolling back for s1's fault with a waiting and b at 1 of 3 grains. h (autorestore on, hold
    /// window 60 s): c (s3 → t3) and d (s4 → t4), started at 2000, its rollback scheduled for
    /// s3's fault at 66 000. spare: empty, renamed, autorestore off, hold window 5 s.
    static func groupState() throws -> GroupRig {
        var rig = GroupRig()
        for name in ["s1", "t1", "s2", "t2", "s3", "t3", "s4", "t4"] {
            try rig.run(.createVolume(name: name, sizeBytes: 1 << 20, path: nil))
        }
        try rig.run(createGroup("g", autorestore: true))
        try rig.run(createGroup("h", autorestore: true, delay: 60))
        try rig.run(createGroup(nil, delay: 5))
        try rig.run(.changeGroup(group: "lcgrp2", newName: "spare", autorestore: nil, autorestoreDelaySeconds: nil))
        for (name, source, target, group) in [("a", "s1", "t1", "g"), ("b", "s2", "t2", "g"), ("c", "s3", "t3", "h"), ("d", "s4", "t4", "h")] {
            try rig.run(.createMap(CreateMap(source: source, target: target, name: name, group: group)), at: 20)
        }
        try rig.run(.startGroup(group: "g"), at: 1000)
        try rig.run(.startGroup(group: "h"), at: 2000)
        try rig.run(fault("s1"), at: 5000)
        try rig.run(.completeRollback(map: mapA), at: 5100)
        try rig.run(.recordRollbackProgress(map: mapB, grainsRestored: 1, grainsToRestore: 3), at: 5200)
        try rig.run(fault("s3"), at: 6000)
        return rig
    }

    @Test("a state with groups, members, a running group rollback with a waiting member and a scheduled one round-trips")
    func roundTrip() throws {
        let state = try Self.groupState().state
        let g = try #require(state.group("g"))
        let h = try #require(state.group("h"))
        #expect(g.rollback == GroupRollback(trigger: .auto, faultID: 1) && g.startedAtMilliseconds == 1000 && g.imageMembers == [0, 2])
        #expect(h.scheduledRollback == ScheduledRollback(faultID: 2, atMilliseconds: 66_000) && h.startOrdinal == 2)
        #expect(state.maps[mapA]?.rollback?.awaitingGroup == true && state.maps[mapB]?.rollback?.awaitingGroup == false)
        #expect(state.group("spare") == LCGroup(id: 2, name: "spare", autorestore: false, autorestoreDelaySeconds: 5))
        checkGroupInvariants(state, "group state")

        let bytes = state.encoded()
        #expect(bytes.first == 3)
        let decoded = try ControllerState.decode(bytes)
        #expect(decoded == state)
        #expect(decoded.encoded() == bytes)
        #expect(decoded.groupIDsByName == ["g": 0, "h": 1, "spare": 2] && decoded.nextGroupID == 3)
        #expect(decoded.members(of: 1).map(\.name) == ["c", "d"])
        // Decisions on the decoded state are those on the original.
        for command: Command in [
            .completeRollback(map: mapB), .completeGroupRollback(group: 0), .startScheduledGroupRollback(group: 1), .startGroup(group: "spare"),
            .stopGroup(group: "g", force: true), fault("s4"),
        ] {
            #expect(Result { () throws(CommandError) in try decide(command, decoded) } == Result { () throws(CommandError) in try decide(command, state) })
        }
    }

    @Test("every strict prefix of the group state's encoding is refused as truncated, and a trailing byte is refused")
    func truncation() throws {
        let bytes = try Self.groupState().state.encoded()
        for length in 0..<bytes.count {
            guard case .failure(.truncated) = decodeResult({ () throws(DecodeError) in try ControllerState.decode(Array(bytes[..<length])) }) else {
                Issue.record("prefix \(length)/\(bytes.count) was not refused as truncated")
                break
            }
        }
        #expect(decodeResult { () throws(DecodeError) in try ControllerState.decode(bytes + [0]) } == .failure(.trailingBytes(count: 1)))
    }

    @Test("checkpoint law: a checkpoint of any prefix, decoded, then the rest of the log folded at its times, is the final state")
    func checkpointThenReplay() throws {
        let rig = try Self.groupState()
        var folded = ControllerState()
        for (index, entry) in rig.log.enumerated() {
            let restored = try ControllerState.decode(folded.encoded())
            let rest = rig.log[index...].reduce(restored) { evolve($0, $1.event, at: $1.at) }
            #expect(rest == rig.state, "checkpoint after \(index) events")
            folded.apply(entry.event, at: entry.at)
        }
        #expect(folded == rig.state)
    }
}

// MARK: - Random runs

@Suite("consistency groups: properties of random command sequences")
struct GroupPropertyTests {
    static let runs: [RandomRun] = (UInt64(1)...300).map { RandomRun(seed: $0, commands: 60) }

    @Test("the generator reaches every group event type and every group error code")
    func coverage() {
        var types = Set<EventType>()
        var codes = Set<CommandError.Code>()
        for run in Self.runs {
            for step in run.steps {
                switch step.outcome {
                case let .success(events): types.formUnion(events.map(\.type))
                case let .failure(error): codes.insert(error.code)
                }
            }
        }
        let groupTypes = Set(GroupEventEncodingTests.groupTypes)
        #expect(groupTypes.isSubset(of: types), "missing: \(groupTypes.subtracting(types))")
        let groupCodes: Set<CommandError.Code> = [.unknownGroup, .groupNotEmpty, .groupEmpty, .groupRestoring, .groupConflict, .groupChanged, .mapInGroup]
        #expect(groupCodes.isSubset(of: codes), "missing: \(groupCodes.subtracting(codes))")
    }

    @Test("every reached state holds the group invariants")
    func invariants() {
        for run in Self.runs {
            for (index, step) in run.steps.enumerated() {
                checkGroupInvariants(step.state, "seed \(run.seed) step \(index) \(step.command)")
            }
        }
    }

    @Test("a group start is one commit: every member started with one new ordinal, then GroupStarted naming them")
    func groupStarts() {
        var starts = 0
        for run in Self.runs {
            var before = ControllerState()
            for step in run.steps {
                defer { before = step.state }
                guard case let .startGroup(reference) = step.command, case let .success(events) = step.outcome,
                    let group = before.group(reference)
                else { continue }
                starts += 1
                let members = before.members(of: group.id).map(\.id)
                let started = events.compactMap { event -> MapID? in
                    guard case let .mapStarted(id, ordinal) = event, ordinal == before.nextStartOrdinal else { return nil }
                    return id
                }
                #expect(started == members, "seed \(run.seed)")
                #expect(events.last == .groupStarted(id: group.id, startOrdinal: before.nextStartOrdinal, members: members), "seed \(run.seed)")
                #expect(events.filter { $0.type == .mapStarted }.count == members.count, "seed \(run.seed)")
            }
        }
        #expect(starts > 20)
    }

    @Test("a group rollback starts for every member in the commit that records GroupRollbackStarted, after it")
    func groupRollbackStarts() {
        var rollbacks = 0
        for run in Self.runs {
            var before = ControllerState()
            for step in run.steps {
                defer { before = step.state }
                guard case let .success(events) = step.outcome,
                    let index = events.firstIndex(where: { $0.type == .groupRollbackStarted }),
                    case let .groupRollbackStarted(id, trigger, faultID) = events[index]
                else { continue }
                rollbacks += 1
                let members = before.members(of: id).map(\.id)
                let started = events[index...].compactMap { event -> MapID? in
                    guard case let .rollbackStarted(map, memberTrigger, memberFault) = event else { return nil }
                    #expect(memberTrigger == trigger, "seed \(run.seed)")
                    if trigger == .auto { #expect(memberFault == faultID, "seed \(run.seed)") }
                    return map
                }
                #expect(started == members, "seed \(run.seed): \(step.command)")
                #expect(!events[..<index].contains { $0.type == .rollbackStarted }, "seed \(run.seed)")
            }
        }
        #expect(rollbacks > 10)
    }
}
