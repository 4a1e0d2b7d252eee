import Foundation
import Testing

/// Who did what (issue 15, part 6): the control socket reads each caller's uid, gid and pid
/// (`SO_PEERCRED`), every event of a command records them, and `log show` and `log explain` print
/// them; the controller's own events record no caller.
@Suite("callers recorded in the log")
struct CallerTests {
    @Test func commandsRecordTheirCallerAndTheControllersOwnEventsNone() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x5C, length: 1 << 20)
            try await daemon.ok("fault", "-volume", "src", "-reason", "encrypted by an attacker")
            #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
            let daemonPID = try #require(daemon.pid)
            let events = try await daemon.events()

            // Every command's events carry this user's uid and gid and the pid of the snapback
            // process that sent them (a child of this test, not the daemon).
            let commanded = ["VolumeCreated", "MapCreated", "MapStarted", "VolumeFaulted"]
            for type in commanded {
                let event = try #require(events.of(type).first, "no \(type) in \(events)")
                #expect(event.fields["uid"] == String(geteuid()), "\(event)")
                #expect(event.fields["gid"] == String(getegid()), "\(event)")
                let pid = try #require(event.fields["pid"].flatMap { Int32($0) }, "\(event)")
                #expect(pid > 0 && pid != daemonPID && pid != getpid(), "\(event)")
            }
            // Four commands, four snapback processes.
            let pids = Set(commanded.compactMap { events.of($0).first?.fields["pid"] })
            #expect(pids.count == commanded.count, "one snapback process per command: \(pids)")
            // The controller's own: its start, the automatic rollback and its end.
            for type in ["ControllerStarted", "RollbackStarted", "RollbackCompleted"] {
                let event = try #require(events.of(type).first, "no \(type) in \(events)")
                #expect(event.fields["uid"] == nil && event.fields["gid"] == nil && event.fields["pid"] == nil, "\(event)")
            }

            // log show: "by uid N (name), pid P", or "by the controller".
            let shown = try await daemon.log("show")
            #expect(shown.exitCode == 0, "\(shown)")
            let lines = shown.stdout.split(separator: "\n").map(String.init)
            let userName = getpwuid(geteuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }
            let by = "by uid \(geteuid())" + (userName.map { " (\($0))" } ?? "") + ", pid "
            let created = try #require(lines.first { $0.contains("VolumeCreated") }, "\(lines)")
            #expect(created.contains("; " + by), "\(created)")
            let started = try #require(lines.first { $0.contains("ControllerStarted") }, "\(lines)")
            #expect(started.hasSuffix("; by the controller"), "\(started)")
            let automatic = try #require(lines.first { $0.contains("RollbackStarted") }, "\(lines)")
            #expect(automatic.hasSuffix("; by the controller"), "\(automatic)")

            // log explain: the caller ends a command's sentence; automatic sentences are as before.
            let story = try await daemon.log("explain", "m0")
            #expect(story.exitCode == 0, "\(story)")
            let sentences = story.stdout.split(separator: "\n").map(String.init)
            let made = try #require(sentences.first { $0.contains("created by mklcmap") }, "\(sentences)")
            #expect(made.contains("; " + by), "\(made)")
            let fault = try #require(sentences.first { $0.contains("faulted") }, "\(sentences)")
            #expect(fault.contains("; " + by), "\(fault)")
            let rollback = try #require(sentences.first { $0.contains("started automatically by the controller") }, "\(sentences)")
            #expect(!rollback.contains("by uid"), "\(rollback)")

            // export: the caller's numbers in the JSON lines and at the end of the CSV fields.
            let csv = try await daemon.log("export", "-format", "csv")
            let csvCreated = try #require(csv.stdout.split(separator: "\n").first { $0.contains(",VolumeCreated,") }, "\(csv)")
            #expect(csvCreated.contains(";uid=\(geteuid());gid=\(getegid());pid="), "\(csvCreated)")
            let csvStarted = try #require(csv.stdout.split(separator: "\n").first { $0.contains(",ControllerStarted,") }, "\(csv)")
            #expect(!csvStarted.contains("uid="), "\(csvStarted)")

            // The log with callers verifies, checksums and chain.
            let verified = try await daemon.log("verify")
            #expect(verified.exitCode == 0 && verified.stdout.hasPrefix("ok:"), "\(verified)")
        }
    }
}
