import ArgumentParser
import Foundation
import SnapbackAPI

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
        var loop = WaitLoop(timeout: timeout)
        var row = try forward(client)
        // An automatic rollback waiting for its hold window: wait for it to start, then follow it.
        if row.restoring == "no", !row.rollback_at.isEmpty {
            printResult("\(row.name): automatic rollback scheduled at \(row.rollback_at)")
            row = try loop.awaitStart(row, name: row.name, scheduled: { $0.restoring == "no" && !$0.rollback_at.isEmpty }) { try forward(client) }
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
        let copyBytes = loop.progress.terminal && following == "copy"
            ? try client.call("GET", "/v1/volumes/\(pathSegment(row.source))", as: VolumeRow.self).size : nil
        try loop.follow(
            row, name: row.name, following: following, totalBytes: copyBytes,
            done: { following == "rollback" ? $0.restoring == "no" : $0.status != "copying" },
            percent: { following == "rollback" ? $0.restore_progress : $0.progress },
            check: { row in
                // A copy whose source is faulted waits for ever: say so and end.
                guard following == "copy" else { return }
                let source = try client.call("GET", "/v1/volumes/\(pathSegment(row.source))", as: VolumeRow.self)
                if source.status == "faulted" {
                    throw CLIError(
                        code: "source_faulted",
                        message: "\(row.name)'s background copy cannot go on: its source \(source.name) is faulted (\(source.fault_reason))")
                }
            },
            finish: { row in
                if following == "rollback" {
                    try report(try client.call("GET", "/v1/lcmaps/\(pathSegment(row.name))/rollback", as: RollbackRow.self))
                } else if row.status == "idle_or_copied" {
                    printResult("\(row.name): copy finished, \(row.status)")
                } else {
                    throw CLIError(code: "copy_stopped", message: "\(row.name)'s background copy ended unfinished: the map is \(row.status)")
                }
            },
            fetch: { try forward(client) })
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

/// The polling `snapback wait` does for a map and for a group, every 200 ms: the hold window of
/// a scheduled rollback, then the rollback or copy with its progress line, until it ends or the
/// `-timeout` (exit 4).
struct WaitLoop {
    static let pollMicroseconds: useconds_t = 200_000
    let timeout: Double?
    let deadline: Date?
    var progress = ProgressLine()

    init(timeout: Double?) {
        self.timeout = timeout
        deadline = timeout.map { Date().addingTimeInterval($0) }
    }

    /// Throws the timeout (exit 4) once the deadline has passed: "NAME's WHAT after T s".
    func checkDeadline(_ name: String, _ what: String) throws {
        guard let deadline, Date() >= deadline else { return }
        if progress.terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
        throw CLIError(code: "timeout", message: "\(name)'s \(what) after \(timeout!) s", exitCode: 4)
    }

    /// Polls while `scheduled(row)` (an automatic rollback waiting for its hold window); returns
    /// the first row that is not.
    func awaitStart<Row>(_ row: Row, name: String, scheduled: (Row) -> Bool, fetch: () throws -> Row) throws -> Row {
        var row = row
        while scheduled(row) {
            try checkDeadline(name, "scheduled rollback has not started")
            usleep(Self.pollMicroseconds)
            row = try fetch()
        }
        return row
    }

    /// Shows the progress of `following` (rollback or copy) until `done`, then ends the line and
    /// calls `finish`; `check` may end the wait early (by throwing) on each poll.
    mutating func follow<Row>(
        _ row: Row, name: String, following: String, totalBytes: UInt64? = nil, done: (Row) -> Bool, percent: (Row) throws -> Int,
        check: (Row) throws -> Void = { _ in }, finish: (Row) throws -> Void, fetch: () throws -> Row
    ) throws {
        var row = row
        while true {
            let finished = done(row)
            let shown = finished ? 100 : try percent(row)
            progress.show(name, following, shown, totalBytes: totalBytes)
            if finished {
                if progress.terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
                return try finish(row)
            }
            do {
                try check(row)
            } catch {
                if progress.terminal { FileHandle.standardOutput.write(Data("\n".utf8)) }
                throw error
            }
            try checkDeadline(name, "\(following) is at \(shown)%")
            usleep(Self.pollMicroseconds)
            row = try fetch()
        }
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
