import ArgumentParser
import Foundation
import SnapbackAPI

/// `-socket PATH`: where the daemon listens.
struct Connection: ParsableArguments {
    @Option(name: .ibm("socket"), help: "The control socket (default: $SNAPBACK_SOCKET, else ./var/control.sock).")
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

/// `wait`'s progress: a bar with the rate and the time left, redrawn in place on a terminal;
/// else a plain line whenever the percentage changes (`m0 rollback 42%`).
struct ProgressLine {
    let terminal = isatty(STDOUT_FILENO) == 1
    private var last = ""
    /// The first percentage seen and when: the rate is measured from there.
    private var first: (percent: Int, time: Date)?

    /// Shows `percent` of `name`'s `following` (rollback or copy). `totalBytes`, when known, is
    /// the size 100 % stands for: the rate is then in bytes per second, else in percent.
    mutating func show(_ name: String, _ following: String, _ percent: Int, totalBytes: UInt64? = nil) {
        let line = "\(name) \(following) \(percent)%"
        if terminal {
            let now = Date()
            let start = first ?? (percent, now)
            first = start
            let text = Self.bar(
                name, following, percent, percentSinceStart: percent - start.percent,
                elapsedSeconds: now.timeIntervalSince(start.time), totalBytes: totalBytes)
            // Erase to the end of the line: the new text may be shorter than the old.
            FileHandle.standardOutput.write(Data("\r\(text)\u{1B}[K".utf8))
        } else if line != last {
            printResult(line)
        }
        last = line
    }

    /// One terminal line: `m0 rollback [####----] 42%  12.5 MiB/s  ETA 0:17`. The rate is the
    /// average since the first percentage seen; the ETA shows `--:--` until that has moved, and
    /// the elapsed time once at 100 %.
    static func bar(
        _ name: String, _ following: String, _ percent: Int, percentSinceStart: Int, elapsedSeconds: Double, totalBytes: UInt64?
    ) -> String {
        let shown = min(max(percent, 0), 100)
        let filled = shown * 40 / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: 40 - filled)
        var text = "\(name) \(following) [\(bar)] \(shown)%"
        let percentPerSecond = elapsedSeconds > 0.5 && percentSinceStart > 0 ? Double(percentSinceStart) / elapsedSeconds : nil
        if let percentPerSecond {
            if let totalBytes {
                text += "  " + bytesPerSecondText(percentPerSecond * Double(totalBytes) / 100)
            } else {
                text += "  " + String(format: "%.1f %%/s", percentPerSecond)
            }
        }
        if shown == 100 {
            text += "  in " + durationText(elapsedSeconds)
        } else if let percentPerSecond {
            text += "  ETA " + durationText(Double(100 - shown) / percentPerSecond)
        } else {
            text += "  ETA --:--"
        }
        return text
    }

    /// `512 KiB/s`, `12.5 MiB/s`, `1.2 GiB/s`.
    static func bytesPerSecondText(_ bytesPerSecond: Double) -> String {
        let units = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"]
        var value = bytesPerSecond
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return value >= 100 || unit == 0 ? "\(Int(value.rounded())) \(units[unit])" : String(format: "%.1f", value) + " " + units[unit]
    }

    /// `m:ss`, or `h:mm:ss` from an hour on.
    static func durationText(_ seconds: Double) -> String {
        let total = Int(min(max(seconds, 0), 359_999).rounded())
        let (hours, minutes, remainder) = (total / 3600, total / 60 % 60, total % 60)
        let tail = String(format: "%02d", remainder)
        return hours > 0 ? "\(hours):\(String(format: "%02d", minutes)):\(tail)" : "\(minutes):\(tail)"
    }
}

struct WaitForMap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Follow a map's or a consistency group's rollback if one runs (or is scheduled), else its background copy if copyrate > 0, else report the last rollback.",
        discussion: """
            Exit 0: the rollback completed (or the copy finished, or there was nothing to wait for).
            Exit 1: the rollback was abandoned (the reason is printed; the source is left faulted), or
            the copy cannot go on (its source is faulted, or the map stopped). Exit 4: -timeout.
            """)
    @OptionGroup var connection: Connection
    @Option(name: .ibm("timeout"), help: "Give up after this many seconds (exit 4).") var timeout: Double?
    @Argument(help: "The map or consistency group (name or id).") var map: String

    func run() throws {
        let client = connection.client
        // Not a map: a group (their names never collide).
        let (status, _) = try client.send("GET", "/v1/lcmaps/\(pathSegment(map))")
        if status == 404 {
            let (groupStatus, _) = try client.send("GET", "/v1/lcgroups/\(pathSegment(map))")
            if groupStatus != 404 { return try GroupWait(client: client, group: map, timeout: timeout).run() }
        }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        var progress = ProgressLine()
        let terminal = progress.terminal
        var row = try forward(client)
        // An automatic rollback waiting for its hold window: wait for it to start, then follow it.
        if row.restoring == "no", !row.rollback_at.isEmpty {
            printResult("\(row.name): automatic rollback scheduled at \(row.rollback_at)")
            while row.restoring == "no", !row.rollback_at.isEmpty {
                if let deadline, Date() >= deadline {
                    throw CLIError(code: "timeout", message: "\(row.name)'s scheduled rollback has not started after \(timeout!) s", exitCode: 4)
                }
                usleep(200_000)
                row = try forward(client)
            }
        }
        let following: String
        if row.restoring == "yes" {
            following = "rollback"
        } else if row.copyrate > 0 && row.status == "copying" {
            following = "copy"
        } else {
            // Nothing runs: say how the last rollback ended, if there was one.
            let last = try client.call("GET", "/v1/lcmaps/\(pathSegment(row.name))/rollback", as: RollbackRow.self)
            guard last.outcome != "none" else {
                printResult("\(row.name): \(row.status), nothing to wait for")
                return
            }
            try report(last)
            return
        }
        // A background copy covers the whole source: the bar's rate is then in bytes per second.
        let copyBytes = terminal && following == "copy"
            ? try client.call("GET", "/v1/volumes/\(pathSegment(row.source))", as: VolumeRow.self).size : nil
        while true {
            let done = following == "rollback" ? row.restoring == "no" : row.status != "copying"
            let percent = done ? 100 : (following == "rollback" ? row.restore_progress : row.progress)
            progress.show(row.name, following, percent, totalBytes: copyBytes)
            if done {
                if terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
                if following == "rollback" {
                    try report(try client.call("GET", "/v1/lcmaps/\(pathSegment(row.name))/rollback", as: RollbackRow.self))
                } else if row.status == "idle_or_copied" {
                    printResult("\(row.name): copy finished, \(row.status)")
                } else {
                    throw CLIError(code: "copy_stopped", message: "\(row.name)'s background copy ended unfinished: the map is \(row.status)")
                }
                return
            }
            if following == "copy" {
                // A copy whose source is faulted waits for ever: say so and end.
                let source = try client.call("GET", "/v1/volumes/\(pathSegment(row.source))", as: VolumeRow.self)
                if source.status == "faulted" {
                    if terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
                    throw CLIError(
                        code: "source_faulted",
                        message: "\(row.name)'s background copy cannot go on: its source \(source.name) is faulted (\(source.fault_reason))")
                }
            }
            if let deadline, Date() >= deadline {
                if terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
                throw CLIError(code: "timeout", message: "\(row.name)'s \(following) is at \(percent)% after \(timeout!) s", exitCode: 4)
            }
            usleep(200_000)
            row = try forward(client)
        }
    }

    /// Prints how a rollback ended; throws (exit 1) when it was abandoned.
    func report(_ last: RollbackRow) throws {
        let which = "rollback of \(last.map) (\(last.trigger)\(last.fault_id.isEmpty ? "" : ", fault \(last.fault_id)"), seq \(last.started_seq)"
        switch last.outcome {
        case "completed":
            printResult("\(which)) completed at seq \(last.ended_seq), \(last.ended_time)")
        case "abandoned":
            throw CLIError(
                code: "rollback_abandoned",
                message: "\(which)) was abandoned at seq \(last.ended_seq): \(last.reason); its source is left faulted")
        default:
            printResult("\(which)) is \(last.outcome)")
        }
    }

    /// The forward map's row (a reverse map's partner).
    func forward(_ client: ControlClient) throws -> MapRow {
        let row = try client.call("GET", "/v1/lcmaps/\(pathSegment(map))", as: MapRow.self)
        guard row.role == "reverse" else { return row }
        return try client.call("GET", "/v1/lcmaps/\(pathSegment(row.partner))", as: MapRow.self)
    }
}
