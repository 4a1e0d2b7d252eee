import ArgumentParser
import Foundation
import SnapbackAPI
import SnapbackCLIFastPath

/// `-socket PATH`: where the daemon listens.
struct Connection: ParsableArguments {
    @Option(name: .ibm("socket"), help: "The control socket (default: $SNAPBACK_SOCKET, else ./var/control.sock, else the installed service's /run/snapback/control.sock).")
    var socket: String?

    var client: ControlClient { ControlClient.resolve(socket) }
}

/// `-delim C` and `-json`.
struct ListingOptions: ParsableArguments {
    @Option(name: .ibm("delim"), help: "Separate columns with this character.") var delimiter: String?
    @Flag(name: .ibm("json"), help: "Print a JSON array of objects.") var json = false
}

struct Size: ExpressibleByArgument {
    var bytes: UInt64
    init?(argument: String) {
        guard let bytes = parseSize(argument) else { return nil }
        self.bytes = bytes
    }
}

func printResult(_ text: String) { print(text) }

struct MakeVolume: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mkvolume", abstract: "Create a volume.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("name"), help: "The volume's name.") var name: String
    @Option(name: .ibm("size"), help: "Size such as 64m or 1g (binary units).") var size: Size
    @Option(name: .ibm("path"), help: "A backing file or block device (default: a sparse file in the data directory).") var path: String?
    @Flag(name: .ibm("adopt"), help: "Take an existing -path (file or device) and its bytes as the volume; without it an existing path is refused.")
    var adopt = false
    @Option(name: .ibm("detect"), help: "on or off (default off): the anomaly detector watches the volume's writes.") var detect: String?
    @Option(name: .ibm("sensitivity"), help: "low, medium (default) or high: how readily the detector fires (with -detect on).")
    var sensitivity: String?

    func run() throws {
        var absolute = path
        if let path, !path.hasPrefix("/") { absolute = FileManager.default.currentDirectoryPath + "/" + path }
        let request = CreateVolumeRequest(
            name: name, size: size.bytes, path: absolute, adopt: adopt ? true : nil, detect: detect, sensitivity: sensitivity)
        _ = try connection.client.call("POST", "/v1/volumes", body: request, as: CommandResult.self)
        let row = try connection.client.call("GET", "/v1/volumes/\(pathSegment(name))", as: VolumeRow.self)
        printResult("Volume, id [\(row.id)], successfully created")
    }
}

struct ChangeVolume: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chvolume", abstract: "Change a volume's name, or its anomaly detection and sensitivity.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("name"), help: "A new name.") var name: String?
    @Option(name: .ibm("detect"), help: "on or off: the anomaly detector watches the volume's writes.") var detect: String?
    @Option(name: .ibm("sensitivity"), help: "low, medium or high.") var sensitivity: String?
    @Argument(help: "The volume (name or id).") var volume: String

    func run() throws {
        _ = try connection.client.call(
            "PATCH", "/v1/volumes/\(pathSegment(volume))", body: ChangeVolumeRequest(name: name, detect: detect, sensitivity: sensitivity),
            as: CommandResult.self)
    }
}

struct ListSystem: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lssystem", abstract: "Show the controller: online or degraded (and why), the log's size and last sequence.")
    @OptionGroup var connection: Connection
    @OptionGroup var listing: ListingOptions

    func run() throws {
        let row = try connection.client.call("GET", "/v1/system", as: SystemRow.self)
        // One object: key/value lines like a detail view; -json gives an array of one, like every listing.
        printResult(Listing.system(row).render(json: listing.json, delimiter: listing.delimiter, detail: true))
    }
}

struct ListVolumes: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lsvolume", abstract: "List volumes, or show one in detail.")
    @OptionGroup var connection: Connection
    @OptionGroup var listing: ListingOptions
    @Argument(help: "A volume (name or id) to show in detail.") var volume: String?

    func run() throws {
        let rows = try connection.client.rows("/v1/volumes", volume, as: VolumeRow.self)
        printResult(Listing.volumes(rows).render(json: listing.json, delimiter: listing.delimiter, detail: volume != nil))
    }
}

struct RemoveVolume: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmvolume", abstract: "Remove a volume that is in no map.")
    @OptionGroup var connection: Connection
    @Argument(help: "The volume (name or id).") var volume: String

    func run() throws {
        _ = try connection.client.call("DELETE", "/v1/volumes/\(pathSegment(volume))", as: CommandResult.self)
    }
}

struct MakeMap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mklcmap", abstract: "Create an lcmap from a source to a target, with its reverse map.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("source"), help: "The source volume.") var source: String
    @Option(name: .ibm("target"), help: "The target volume (same size).") var target: String
    @Option(name: .ibm("name"), help: "The map's name (default lcmapN).") var name: String?
    @Option(name: .ibm("autorestore"), help: "on or off (default off).") var autorestore: String?
    @Option(name: .ibm("copyrate"), help: "0–150 (default 50; 0 = no background copy).") var copyRate: Int?
    @Option(name: .ibm("grainsize"), help: "64 or 256 KiB (default 256).") var grainSize: Int?
    @Option(name: .ibm("autorestoredelay"), help: "Hold window of automatic rollbacks, 0–86400 s (default 0: at once).")
    var autorestoreDelay: Int?
    @Option(name: .ibm("lcgrp"), help: "A consistency group the map joins.") var group: String?

    func run() throws {
        let client = connection.client
        _ = try client.call(
            "POST", "/v1/lcmaps",
            body: CreateMapRequest(
                source: source, target: target, name: name, autorestore: autorestore, copyrate: copyRate, grainsize: grainSize,
                autorestoredelay: autorestoreDelay, lcgrp: group),
            as: CommandResult.self)
        let rows = try client.call("GET", "/v1/lcmaps", as: [MapRow].self)
        let created = rows.filter { $0.role == "forward" && $0.source == source && $0.target == target }.last
            ?? rows.first { $0.name == name }
        printResult("LC Mapping, id [\(created.map { String($0.id) } ?? "?")], successfully created")
    }
}

struct ChangeMap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chlcmap", abstract: "Change an lcmap's autorestore, copy rate, name, hold window or consistency group.")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("autorestore"), help: "on or off.") var autorestore: String?
    @Option(name: .ibm("copyrate"), help: "0–150.") var copyRate: Int?
    @Option(name: .ibm("name"), help: "A new name.") var name: String?
    @Option(name: .ibm("autorestoredelay"), help: "Hold window of automatic rollbacks, 0–86400 s.") var autorestoreDelay: Int?
    @Option(name: .ibm("lcgrp"), help: "Move the (idle or stopped) map into this consistency group.") var group: String?
    @Flag(name: .ibm("nolcgrp"), help: "Move the (idle or stopped) map out of its consistency group.") var noGroup = false
    @Argument(help: "The map (name or id).") var map: String

    func validate() throws {
        if group != nil && noGroup { throw ValidationError("-lcgrp and -nolcgrp exclude each other") }
    }

    func run() throws {
        _ = try connection.client.call(
            "PATCH", "/v1/lcmaps/\(pathSegment(map))",
            body: ChangeMapRequest(
                autorestore: autorestore, copyrate: copyRate, name: name, autorestoredelay: autorestoreDelay, lcgrp: group,
                nolcgrp: noGroup ? true : nil),
            as: CommandResult.self)
    }
}

struct ListMaps: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lslcmap", abstract: "List lcmaps, or show one in detail.")
    @OptionGroup var connection: Connection
    @OptionGroup var listing: ListingOptions
    @Argument(help: "A map (name or id) to show in detail.") var map: String?

    func run() throws {
        let rows = try connection.client.rows("/v1/lcmaps", map, as: MapRow.self)
        printResult(Listing.maps(rows).render(json: listing.json, delimiter: listing.delimiter, detail: map != nil))
    }
}

struct StartMap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "startlcmap", abstract: "Start an lcmap (take its point-in-time image), or with -restore roll its image back onto its source.")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("prep"), help: "Prepare first (Snapback prepares as part of every start).") var prepare = false
    @Flag(name: .ibm("restore"), help: "Roll the map's image back onto its source.") var restore = false
    @Argument(help: "The map (name or id).") var map: String

    func run() throws {
        _ = try connection.client.call(
            "POST", "/v1/lcmaps/\(pathSegment(map))/start", body: StartMapRequest(prep: prepare, restore: restore), as: CommandResult.self)
    }
}

struct StopMap: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stoplcmap", abstract: "Stop an lcmap: its image is no longer valid.")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("force"), help: "Stop at once.") var force = false
    @Argument(help: "The map (name or id).") var map: String

    func run() throws {
        _ = try connection.client.call("POST", "/v1/lcmaps/\(pathSegment(map))/stop", body: ForceRequest(force: force), as: CommandResult.self)
    }
}

struct RemoveMap: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmlcmap", abstract: "Remove an lcmap and its reverse map.")
    @OptionGroup var connection: Connection
    @Flag(name: .ibm("force"), help: "Remove even if the map is active.") var force = false
    @Argument(help: "The map (name or id).") var map: String

    func run() throws {
        _ = try connection.client.call("DELETE", "/v1/lcmaps/\(pathSegment(map))?force=\(force)", as: CommandResult.self)
    }
}

struct ReportFault: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault", abstract: "Record a fault on a volume (it goes offline; autorestore may roll it back).")
    @OptionGroup var connection: Connection
    @Option(name: .ibm("volume"), help: "The faulted volume.") var volume: String
    @Option(name: .ibm("reason"), help: "Why, in one line.") var reason: String
    @Option(
        name: .ibm("onset"), parsing: .unconditional,
        help: "When the damage began: an RFC 3339 time (2026-12-02T09:30:00Z), or -N for N seconds before now.")
    var onset: String?

    func run() throws {
        var absolute: String?
        if let onset {
            if onset.hasPrefix("-"), let seconds = Double(onset.dropFirst()), seconds >= 0, seconds.isFinite {
                absolute = rfc3339(Int64((Date().timeIntervalSince1970 - seconds) * 1000))
            } else if parseRFC3339(onset) != nil {
                absolute = onset
            } else {
                throw CLIError(code: "invalid_onset", message: "-onset must be an RFC 3339 time such as 2026-12-02T09:30:00Z or -N (seconds before now), not \(onset)")
            }
        }
        let result = try connection.client.call(
            "POST", "/v1/volumes/\(pathSegment(volume))/fault", body: FaultRequest(reason: reason, onset: absolute), as: CommandResult.self)
        if result.events.contains("GroupRollbackStarted") {
            printResult("automatic group rollback started")
        } else if result.events.contains("RollbackStarted") {
            printResult("automatic rollback started")
        }
        if result.events.contains("GroupRollbackScheduled") { printResult("automatic group rollback scheduled (hold window); recovervolume cancels it") }
        if result.events.contains("RollbackScheduled") { printResult("automatic rollback scheduled (hold window); recovervolume cancels it") }
    }
}

struct RecoverVolume: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovervolume", abstract: "Accept a faulted volume's data as it is (recorded).")
    @OptionGroup var connection: Connection
    @Argument(help: "The volume (name or id).") var volume: String

    func run() throws {
        _ = try connection.client.call("POST", "/v1/volumes/\(pathSegment(volume))/recover", as: CommandResult.self)
    }
}

