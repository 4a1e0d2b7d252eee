import ArgumentParser
import Foundation
import SnapbackAPI
import SnapbackCore
import SnapbackLog

/// `snapback log ...`: the audit CLI. It opens the data directory's LMDB log read-only, needs no
/// daemon, and works while one runs.
struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Inspect, verify, export and archive the event log (no daemon needed).",
        subcommands: [
            LogShow.self, LogFollow.self, LogExplain.self, LogVerify.self, LogHead.self, LogState.self, LogStats.self, LogExport.self,
            LogArchiveCommand.self,
        ]
    )
}

/// Where the log is: `-data-dir`, else the data directory of the daemon the control commands
/// would talk to (``ControlClient/resolve(_:)``): the directory of its control socket when that
/// holds a log (`DIR/control.sock` → `DIR`), the installed service's ``serviceDataDirectory``
/// for the service's socket, else `./var`.
struct LogLocation: ParsableArguments {
    @Option(
        name: .ibm("data-dir"),
        help: "The snapbackd data directory (default: the one beside the control socket in use, /var/lib/snapback for the installed service's, else ./var).")
    var explicitDataDirectory: String?

    /// The data directory of `tools/install`'s systemd unit.
    static let serviceDataDirectory = "/var/lib/snapback"

    var dataDirectory: String { explicitDataDirectory ?? Self.defaultDataDirectory(socketPath: ControlClient.resolve(nil).socketPath) }

    /// The data directory that goes with the control socket at `socketPath`.
    static func defaultDataDirectory(socketPath: String) -> String {
        let parent = (socketPath as NSString).deletingLastPathComponent
        let beside = parent.isEmpty ? "." : parent
        if FileManager.default.fileExists(atPath: logDirectory(beside) + "/data.mdb") { return beside }
        if socketPath == ControlClient.serviceSocketPath { return serviceDataDirectory }
        return "./var"
    }

    /// The log directory inside the data directory.
    static func logDirectory(_ dataDirectory: String) -> String { dataDirectory + "/log" }

    /// The archive's directory inside the data directory.
    static func archiveDirectory(_ dataDirectory: String) -> String { dataDirectory + "/archive" }

    /// `-cluster ENDPOINTS -cluster-name NAME`: read a cluster's log in etcd instead.
    @OptionGroup var cluster: ClusterLocation

    func open() throws -> EventLog {
        if cluster.isGiven { return try ClusterLocation.copy(try cluster.reader(dataDirectory: dataDirectory)) }
        return try EventLog(directory: Self.logDirectory(dataDirectory), readOnly: true, archiveDirectory: Self.archiveDirectory(dataDirectory))
    }
}

/// Buffers standard output and writes it in large chunks.
final class OutputBuffer {
    private var buffer: [UInt8] = []
    private let flushBytes = 1 << 16

    init() { buffer.reserveCapacity(flushBytes * 2) }

    func line(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        buffer.append(0x0A)
        if buffer.count >= flushBytes { flush() }
    }

    func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }

    deinit { flush() }
}

/// Parses a time given as ISO 8601 (`2026-11-26T12:00:00Z`, fractional seconds allowed) or as
/// milliseconds since 1970.
func parseTime(_ text: String) -> Int64? {
    if let milliseconds = Int64(text) { return milliseconds }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    return nil
}

struct LogShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Print events: seq, time, type, the objects touched and the cause.")

    @OptionGroup var location: LogLocation
    @Option(name: .ibm("from"), help: "First sequence number.") var from: UInt64?
    @Option(name: .ibm("to"), help: "Last sequence number.") var to: UInt64?
    @Option(name: .ibm("since"), help: "Earliest time (ISO 8601 or ms since 1970).") var since: String?
    @Option(name: .ibm("until"), help: "Latest time (ISO 8601 or ms since 1970).") var until: String?
    @Option(name: .ibm("volume"), help: "Only events about this volume (name or id) and its maps.") var volume: String?
    @Option(name: .ibm("map"), help: "Only events about this lcmap (name or id).") var map: String?
    @Option(name: .ibm("group"), help: "Only events about this lcgrp (name or id) and its lcmaps while they were members.")
    var group: String?
    @Option(name: .ibm("type"), help: "Only events of this type, e.g. RollbackStarted.") var type: String?
    @Option(name: .ibm("last"), help: "Only the last N matching events.") var last: Int?
    @Flag(name: .ibm("json"), help: "One JSON object per line.") var json = false

    /// Values that parse but mean nothing are rejected like any command error (exit 1).
    func checkValues() throws {
        if let type, EventType(name: type) == nil {
            throw CLIError(code: "unknown_event_type", message: "unknown event type \(type); known: \(EventType.allCases.map(\.description).joined(separator: ", "))")
        }
        if let since, parseTime(since) == nil { throw CLIError(code: "invalid_time", message: "-since \(since) is not a time") }
        if let until, parseTime(until) == nil { throw CLIError(code: "invalid_time", message: "-until \(until) is not a time") }
        if let last, last < 0 { throw CLIError(code: "invalid_value", message: "-last must be 0 or more") }
    }

    func run() throws {
        try checkValues()
        let log = try location.open()
        let sinceMilliseconds = since.flatMap(parseTime)
        let untilMilliseconds = until.flatMap(parseTime)
        let wantedType = type.flatMap { EventType(name: $0) }
        var first = from ?? 1
        let lastSequence = to ?? .max
        // With no filter but -last, read only the tail.
        if let last, volume == nil, map == nil, group == nil, wantedType == nil, since == nil, until == nil {
            let end = min(lastSequence, log.lastSequence)
            first = max(first, end >= UInt64(last) ? end - UInt64(last) + 1 : 1)
        }
        // Objects are matched by identity: every id that ever carried the name (a rename keeps
        // the history of the map).
        let identities = try log.identities(volume: volume, map: map, group: group)
        var state = first > 1 ? try log.replay(through: first - 1).state : ControllerState()
        let output = OutputBuffer()
        var kept: [String] = []
        try log.scan(from: first, through: lastSequence) { record in
            let stored = try EventLog.storedEvent(record)
            defer { state.apply(stored.event, at: stored.timestampMilliseconds) }
            if let wantedType, stored.event.type != wantedType { return true }
            if let sinceMilliseconds, stored.timestampMilliseconds < sinceMilliseconds { return true }
            if let untilMilliseconds, stored.timestampMilliseconds > untilMilliseconds { return true }
            if volume != nil, !Self.touches(stored.event, volumes: identities.volumeIDs, state) { return true }
            if map != nil, !Self.touches(stored.event, maps: identities.mapIDs) { return true }
            if group != nil, !Self.touches(stored.event, groups: identities.groupIDs, state) { return true }
            let line = json ? EventText.jsonLine(stored) : Self.humanLine(stored, state)
            if let last {
                kept.append(line)
                if kept.count > last { kept.removeFirst(kept.count - last) }
            } else {
                output.line(line)
            }
            return true
        }
        kept.forEach(output.line)
        output.flush()
    }

    static func humanLine(_ stored: StoredEvent, _ state: ControllerState) -> String {
        "\(stored.sequence)  \(EventText.time(stored.timestampMilliseconds))  \(stored.event.type)  \(EventText.sentence(stored.event, state)); \(EventProse.caller(stored.caller))"
    }

    /// True when the event names one of the volumes, or a map whose source or target is one.
    static func touches(_ event: Event, volumes: Set<VolumeID>, _ state: ControllerState) -> Bool {
        if event.volumeIDs.contains(where: volumes.contains) { return true }
        return event.mapIDs.contains { id in
            guard let map = state.maps[id] else { return false }
            return volumes.contains(map.sourceID) || volumes.contains(map.targetID)
        }
    }

    /// True when the event names one of the maps.
    static func touches(_ event: Event, maps: Set<MapID>) -> Bool {
        event.mapIDs.contains(where: maps.contains)
    }

    /// True when the event names one of the groups, or a map that was a member of one when it
    /// happened (`state` is the state before the event: a map's leaving is its group's, its
    /// joining names the group).
    static func touches(_ event: Event, groups: Set<GroupID>, _ state: ControllerState) -> Bool {
        if event.groupIDs.contains(where: groups.contains) { return true }
        return event.mapIDs.contains { id in state.maps[id]?.groupID.map(groups.contains) ?? false }
    }
}

struct LogVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every record's checksum, the hash chain, gaps, versions and checkpoints.",
        discussion: "Exit 0 when all hold; otherwise the first bad record is named and the exit code tells the kind: 3 checksum, 4 chain (or an -anchor the chain does not pass through), 5 gap or missing records, 6 unsupported version, 7 malformed or undecodable record, 8 checkpoint, 9 unreadable log, 10 a missing or altered archive segment."
    )

    /// `-anchor SEQ:HASH`; anything else is malformed syntax (exit 2).
    struct Anchor: ExpressibleByArgument {
        var anchor: LogAnchor

        init?(argument: String) {
            guard let anchor = LogAnchor(argument) else { return nil }
            self.anchor = anchor
        }

        static var defaultValueDescription: String { "SEQ:HASH" }
    }

    @OptionGroup var location: LogLocation
    @Flag(name: .ibm("json"), help: "Print the report as JSON.") var json = false
    @Option(
        name: .ibm("anchor"),
        help: ArgumentHelp(
            "A sequence number and its chain hash published earlier (`snapback log head`); the chain must pass through it. Repeatable.",
            valueName: "SEQ:HASH"))
    var anchors: [Anchor] = []

    func run() throws {
        if location.cluster.isGiven {
            // The cluster's stored records themselves, not a copy: a damaged one is found.
            try report(try location.cluster.reader(dataDirectory: location.dataDirectory).verify(anchors: anchors.map(\.anchor)))
            return
        }
        let log: EventLog
        do {
            log = try location.open()
        } catch let error as LogError {
            if case .noLog = error { throw error }
            throw CLIError(code: "log_unreadable", message: error.description, exitCode: VerifyProblem.Kind.unreadable.exitCode)
        }
        try report(log.verify(anchors: anchors.map(\.anchor)))
    }

    func report(_ report: VerifyReport) throws {
        if json {
            var object: [String: Any] = [
                "ok": report.isSound, "records": report.recordsChecked, "lastSeq": report.lastSequence,
                "checkpoints": report.checkpointsChecked,
            ]
            if !anchors.isEmpty { object["anchors"] = report.anchorsChecked }
            if let problem = report.problem {
                object["problem"] = ["kind": problem.kind.rawValue, "seq": problem.sequence as Any, "detail": problem.detail]
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
        if let problem = report.problem {
            throw CLIError(code: "log_\(problem.kind.rawValue)", message: problem.description, exitCode: problem.kind.exitCode)
        }
        if !json {
            let anchored = anchors.isEmpty ? "" : ", the chain passes through \(report.anchorsChecked) anchor\(report.anchorsChecked == 1 ? "" : "s")"
            print("ok: \(report.recordsChecked) records (seq 1 to \(report.lastSequence)), checksums and hash chain intact, \(report.checkpointsChecked) checkpoints match the log\(anchored)")
        }
    }
}

struct LogHead: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "head",
        abstract: "The last sequence number and its chain hash, as SEQ:HASH, to publish elsewhere.",
        discussion: "Publish the line (a ticket, another system's log); later `snapback log verify -anchor SEQ:HASH` checks that the log still passes through it, so rewriting the whole log is caught."
    )

    @OptionGroup var location: LogLocation
    @Flag(name: .ibm("json"), help: "Print {seq, hash, anchor, time}.") var json = false

    func run() throws {
        let log = try location.open()
        guard let (anchor, timestampMilliseconds) = try log.chainHead() else {
            throw CLIError(code: "empty_log", message: "the log in \(LogLocation.logDirectory(location.dataDirectory)) holds no records yet")
        }
        guard json else {
            print(anchor.description)
            return
        }
        let object: [String: Any] = [
            "seq": anchor.sequence, "hash": anchor.hashHex, "anchor": anchor.description, "time": EventText.time(timestampMilliseconds),
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct LogState: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state", abstract: "The mapping tables as they stood at a sequence number.")

    @OptionGroup var location: LogLocation
    @Option(name: .ibm("at"), help: "The sequence number (default: the last).") var at: UInt64?
    @Option(name: .ibm("delim"), help: "Separate columns with this character.") var delimiter: String?
    @Flag(name: .ibm("json"), help: "Print JSON.") var json = false

    func run() throws {
        let log = try location.open()
        let lastSequence = log.lastSequence
        if let at, at > lastSequence {
            throw CLIError(code: "seq_out_of_range", message: "-at \(at) is past the last record, seq \(lastSequence)")
        }
        let state = try log.replay(through: at ?? lastSequence).state
        let volumes = Listing.volumes(state.volumesByID.map { VolumeRow($0, in: state) })
        let maps = Listing.maps(state.mapsByID, in: state)
        let groupRows = state.groupsByID.map { GroupRow($0, in: state) }
        if json {
            let volumesJSON = volumes.json()
            let mapsJSON = maps.json()
            // The API's rows, with each group's lcmaps as an array.
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let groupsJSON = String(decoding: try encoder.encode(groupRows), as: UTF8.self)
            print("{\"seq\": \(state.eventsApplied), \"volumes\": \(volumesJSON), \"lcmaps\": \(mapsJSON), \"lcgroups\": \(groupsJSON)}")
        } else {
            print("seq \(state.eventsApplied)")
            print("volumes:")
            print(volumes.table(delimiter: delimiter))
            print("lcmaps:")
            print(maps.table(delimiter: delimiter))
            print("groups:")
            print(Listing.groups(groupRows, withMaps: true).table(delimiter: delimiter))
        }
    }
}

struct LogStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Counts by type, first and last times, size on disk, LMDB map usage and the archive.")

    @OptionGroup var location: LogLocation
    @Flag(name: .ibm("json"), help: "Print JSON.") var json = false

    func run() throws {
        let log = try location.open()
        var counts: [EventType: UInt64] = [:]
        var unknown: UInt64 = 0
        var firstTime: Int64?
        var lastTime: Int64?
        var records: UInt64 = 0
        try log.scan { record in
            if let type = EventType(rawValue: record.typeCode) { counts[type, default: 0] += 1 } else { unknown += 1 }
            if firstTime == nil { firstTime = record.timestampMilliseconds }
            lastTime = record.timestampMilliseconds
            records += 1
            return true
        }
        let directory = LogLocation.logDirectory(location.dataDirectory)
        let fileBytes: Int
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/data.mdb")
            guard let size = (attributes[.size] as? NSNumber)?.intValue else { throw CocoaError(.fileReadUnknown) }
            fileBytes = size
        } catch {
            throw CLIError(code: "log_unreadable", message: "cannot read the size of \(directory)/data.mdb: \(error)")
        }
        let info = log.environment.info()
        let usedBytes = (info.lastPageNumber + 1) * info.pageSizeBytes
        let checkpoints = try log.checkpointSequences()
        let archivedThrough = try log.archivedThrough()
        let segments = try log.archive.listing().filter { $0.last <= archivedThrough }
        // A segment that cannot be read is an error here, as in every other reader of the archive.
        let archiveBytes = try segments.reduce(0) { total, segment in
            total + (try FileManager.default.attributesOfItem(atPath: log.archive.directory + "/" + segment.name)[.size] as? Int ?? 0)
        }
        if json {
            var object: [String: Any] = [
                "records": records, "lastSeq": log.lastSequence, "fileBytes": fileBytes, "mapUsedBytes": usedBytes,
                "mapSizeBytes": info.mapSizeBytes, "checkpoints": checkpoints,
                "archivedThrough": archivedThrough, "archiveSegments": segments.count, "archiveBytes": archiveBytes,
                "countsByType": Dictionary(uniqueKeysWithValues: counts.map { ($0.key.description, $0.value) }),
            ]
            if let firstTime { object["firstTime"] = EventText.time(firstTime) }
            if let lastTime { object["lastTime"] = EventText.time(lastTime) }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("records: \(records) (last seq \(log.lastSequence))")
        print("first: \(firstTime.map(EventText.time) ?? "-")")
        print("last: \(lastTime.map(EventText.time) ?? "-")")
        print("size on disk: \(fileBytes) bytes")
        let percent = info.mapSizeBytes > 0 ? Double(usedBytes) * 100 / Double(info.mapSizeBytes) : 0
        print("LMDB map: \(usedBytes) of \(info.mapSizeBytes) bytes used (\(String(format: "%.2f", percent))%)")
        print("checkpoints: \(checkpoints.isEmpty ? "none" : checkpoints.map(String.init).joined(separator: ", "))")
        if archivedThrough > 0 {
            print("archive: records 1 to \(archivedThrough) in \(segments.count) segments, \(archiveBytes) bytes (\(log.archive.directory))")
        } else {
            print("archive: none")
        }
        print("by type:")
        for type in EventType.allCases where counts[type] != nil {
            print("  \(type.description) \(counts[type]!)")
        }
        if unknown > 0 { print("  (unknown types) \(unknown)") }
    }
}

struct LogExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Stream the log as JSON lines or CSV for external audit tools.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case jsonl
        case csv
    }

    @OptionGroup var location: LogLocation
    @Option(name: .ibm("format"), help: "jsonl or csv.") var format: Format = .jsonl
    @Option(name: .ibm("from"), help: "First sequence number.") var from: UInt64 = 1

    func run() throws {
        let log = try location.open()
        let output = OutputBuffer()
        if format == .csv { output.line("seq,time,type,fields") }
        try log.scan(from: from) { record in
            let stored = try EventLog.storedEvent(record)
            switch format {
            case .jsonl:
                output.line(EventText.jsonLine(stored))
            case .csv:
                // The caller's numbers end the fields, as in the JSON (none for the controller's own).
                let caller = stored.caller.map { ["uid=\($0.uid)", "gid=\($0.gid)", "pid=\($0.pid)"] } ?? []
                let fields = (EventText.fields(stored.event).map { "\($0.0)=\($0.1.text)" } + caller).joined(separator: ";")
                output.line("\(stored.sequence),\(EventText.time(stored.timestampMilliseconds)),\(stored.event.type),\(Self.csvQuoted(fields))")
            }
            return true
        }
        output.flush()
    }

    /// RFC 4180 quoting.
    static func csvQuoted(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
