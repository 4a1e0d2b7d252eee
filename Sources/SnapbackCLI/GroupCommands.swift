import ArgumentParser
import Foundation
import SnapbackAPI

// Consistency groups (`Specs/state-machine.md`, "Consistency groups"): IBM's
// mkfcconsistgrp/startfcconsistgrp, as mklcgrp/startlcgrp.

struct MakeGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mklcgrp", abstract: "Create an empty consistency group: its lcmaps take their images at one instant and roll back together.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("name"), help: "The group's name (default lcgrpN).") var name: String?
    @Option(name: .ibm("autorestore"), help: "on or off (default off): governs its lcmaps' automatic rollbacks.") var autorestore: String?
    @Option(name: .ibm("autorestoredelay"), help: "Hold window of automatic group rollbacks, 0–86400 s (default 0: at once).")
    var autorestoreDelay: Int?

    func run() throws {
        let client = connection.client
        _ = try client.call(
            "POST", "/v1/lcgroups", body: CreateGroupRequest(name: name, autorestore: autorestore, autorestoredelay: autorestoreDelay),
            as: CommandResult.self)
        let rows = try client.call("GET", "/v1/lcgroups", as: [GroupRow].self)
        let created = name.flatMap { name in rows.first { $0.name == name } } ?? rows.max { $0.id < $1.id }
        printResult("LC Consistency Group, id [\(created.map { String($0.id) } ?? "?")], successfully created")
    }
}

struct ChangeGroup: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chlcgrp", abstract: "Change a consistency group's name, autorestore or hold window.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("name"), help: "A new name.") var name: String?
    @Option(name: .ibm("autorestore"), help: "on or off.") var autorestore: String?
    @Option(name: .ibm("autorestoredelay"), help: "Hold window of automatic group rollbacks, 0–86400 s.") var autorestoreDelay: Int?
    @Argument(help: "The group (name or id).") var group: String

    func run() throws {
        _ = try connection.client.call(
            "PATCH", "/v1/lcgroups/\(pathSegment(group))",
            body: ChangeGroupRequest(name: name, autorestore: autorestore, autorestoredelay: autorestoreDelay), as: CommandResult.self)
    }
}

struct ListGroups: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lslcgrp", abstract: "List consistency groups, or show one in detail with its lcmaps.")
    @OptionGroup var connection: Connection
    @OptionGroup var listing: ListingOptions
    @Argument(help: "A group (name or id) to show in detail.") var group: String?

    func run() throws {
        let rows = try connection.client.rows("/v1/lcgroups", group, as: GroupRow.self)
        printResult(Listing.groups(rows, withMaps: group != nil || listing.json).render(json: listing.json, delimiter: listing.delimiter, detail: group != nil))
    }
}

struct StartGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "startlcgrp",
        abstract: "Start a consistency group (every lcmap's image at one instant), or with -restore roll every lcmap back to the group's images.")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("prep"), help: "Prepare first (Snapback prepares as part of every start).") var prepare = false
    @Flag(name: .ibm("restore"), help: "Roll every lcmap of the group back to the group's images.") var restore = false
    @Argument(help: "The group (name or id).") var group: String

    func run() throws {
        _ = try connection.client.call(
            "POST", "/v1/lcgroups/\(pathSegment(group))/start", body: StartMapRequest(prep: prepare, restore: restore), as: CommandResult.self)
    }
}

struct StopGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stoplcgrp", abstract: "Stop every lcmap of a consistency group; with -force, abandon its rollback (every source left faulted).")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("force"), help: "Stop at once; abandons a running group rollback.") var force = false
    @Argument(help: "The group (name or id).") var group: String

    func run() throws {
        _ = try connection.client.call("POST", "/v1/lcgroups/\(pathSegment(group))/stop", body: ForceRequest(force: force), as: CommandResult.self)
    }
}

struct RemoveGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rmlcgrp", abstract: "Remove a consistency group; with -force, its lcmaps are left stand-alone.")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("force"), help: "Remove even if the group holds lcmaps (they stay, stand-alone).") var force = false
    @Argument(help: "The group (name or id).") var group: String

    func run() throws {
        _ = try connection.client.call("DELETE", "/v1/lcgroups/\(pathSegment(group))?force=\(force)", as: CommandResult.self)
    }
}

extension Listing {
    /// `lslcgrp`'s listing (the columns of ``GroupRow``); `withMaps` adds `lcmaps` (the detail
    /// view and JSON): names joined by commas in text, an array in JSON.
    static func groups(_ rows: [GroupRow], withMaps: Bool) -> Listing {
        Listing(
            columns: GroupRow.columns + (withMaps ? ["lcmaps"] : []),
            rows: rows.map { row in
                [
                    .number(UInt64(row.id)), .text(row.name), .text(row.status), .text(row.autorestore), .number(UInt64(row.maps)),
                    .text(row.start_time), .text(row.restoring), .number(UInt64(row.restore_progress)),
                    .number(UInt64(row.autorestoredelay)), .text(row.rollback_at),
                ] + (withMaps ? [.list(row.lcmaps)] : [])
            })
    }
}

/// `snapback wait GROUP`: a group rollback (scheduled or running) until every member is online
/// or it is abandoned, else the group's background copy, else the last rollback.
struct GroupWait {
    let client: ControlClient
    let group: String
    let timeout: Double?

    func run() throws {
        var loop = WaitLoop(timeout: timeout)
        let fetch = { try client.call("GET", "/v1/lcgroups/\(pathSegment(group))", as: GroupRow.self) }
        var row = try fetch()
        if row.restoring == "no", !row.rollback_at.isEmpty {
            printResult("\(row.name): automatic group rollback scheduled at \(row.rollback_at)")
            row = try loop.awaitStart(row, name: row.name, scheduled: { $0.restoring == "no" && !$0.rollback_at.isEmpty }, fetch: fetch)
        }
        let following: String
        if row.restoring == "yes" {
            following = "rollback"
        } else if row.status == "copying", try members(row).contains(where: { $0.copyrate > 0 && $0.status == "copying" }) {
            following = "copy"
        } else {
            try reportLastRollback(row, nothing: "\(row.name): \(row.status), nothing to wait for")
            return
        }
        try loop.follow(
            row, name: row.name, following: following,
            done: { following == "rollback" ? $0.restoring == "no" : $0.status != "copying" },
            percent: { following == "rollback" ? $0.restore_progress : try copyPercent($0) },
            finish: { row in
                if following == "rollback" {
                    try reportLastRollback(row, nothing: "\(row.name): rollback ended")
                } else if row.status == "idle_or_copied" {
                    printResult("\(row.name): copy finished, \(row.status)")
                } else {
                    throw CLIError(code: "copy_stopped", message: "\(row.name)'s background copy ended unfinished: the group is \(row.status)")
                }
            },
            fetch: fetch)
    }

    /// The members' mean background-copy progress.
    private func copyPercent(_ row: GroupRow) throws -> Int {
        let maps = try members(row)
        return maps.isEmpty ? 0 : maps.reduce(0) { $0 + $1.progress } / maps.count
    }

    private func members(_ row: GroupRow) throws -> [MapRow] {
        try row.lcmaps.map { try client.call("GET", "/v1/lcmaps/\(pathSegment($0))", as: MapRow.self) }
    }

    /// How the group's last rollback ended: its members end together, so the first member's
    /// last rollback tells it. Throws (exit 1) when it was abandoned.
    private func reportLastRollback(_ row: GroupRow, nothing: String) throws {
        guard let first = row.lcmaps.first else {
            printResult(nothing)
            return
        }
        let last = try client.call("GET", "/v1/lcmaps/\(pathSegment(first))/rollback", as: RollbackRow.self)
        switch last.outcome {
        case "completed":
            printResult("rollback of lcgrp \(row.name) (\(last.trigger)\(last.fault_id.isEmpty ? "" : ", fault \(last.fault_id)")) completed at seq \(last.ended_seq), \(last.ended_time); every source online")
        case "abandoned":
            throw CLIError(
                code: "rollback_abandoned",
                message: "rollback of lcgrp \(row.name) was abandoned at seq \(last.ended_seq): \(last.reason); every source is left faulted")
        case "none":
            printResult(nothing)
        default:
            printResult("rollback of lcgrp \(row.name) is \(last.outcome)")
        }
    }
}
