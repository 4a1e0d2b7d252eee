import Foundation
import SnapbackAPI
import Testing

/// Issue 12: restore points by onset, and a hold window. An automatic rollback restores the
/// newest image taken at or before the fault's onset (none: no rollback, and lsvolume says why);
/// with `-autorestoredelay` it waits, `recovervolume` cancels it, and the schedule survives a
/// restart (a restart after the deadline starts it at once).
@Suite("restore points and hold windows")
struct RestorePointTests {
    /// Volumes `src`, `t1`, `t2` of 4 MiB and maps `m1` (src → t1), `m2` (src → t2), autorestore on.
    static func twoImages(_ daemon: Daemon) async throws -> (first: String, second: String) {
        for name in ["src", "t1", "t2"] { try await daemon.ok("mkvolume", "-name", name, "-size", "4m") }
        for (map, target) in [("m1", "t1"), ("m2", "t2")] {
            try await daemon.ok("mklcmap", "-source", "src", "-target", target, "-name", map, "-autorestore", "on", "-copyrate", "0")
        }
        try await daemon.write("src", byte: 0x11, length: 4 * mebibyte)
        try await daemon.ok("startlcmap", "m1")
        try await daemon.write("src", byte: 0x22, length: 4 * mebibyte)
        try await daemon.ok("startlcmap", "m2")
        try await daemon.write("src", byte: 0x66, length: 4 * mebibyte)  // the damage
        let first = try await daemon.map("m1").start_time
        let second = try await daemon.map("m2").start_time
        #expect(!first.isEmpty && !second.isEmpty && first < second, "\(first) \(second)")
        return (first, second)
    }

    /// `time` (RFC 3339 with milliseconds) moved by `milliseconds`.
    static func shifted(_ time: String, _ milliseconds: Int64) throws -> String {
        let parsed = try #require(parseRFC3339(time))
        return rfc3339(parsed + milliseconds)
    }

    @Test("-onset between two images: the older one is restored")
    func onsetBetweenImages() async throws {
        try await withDaemon { daemon in
            let (_, second) = try await Self.twoImages(daemon)
            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware found late", "-onset", try Self.shifted(second, -1))
            #expect(faulted.stdout.contains("automatic rollback started"), "\(faulted)")
            #expect(try await daemon.snapback("wait", "m1").exitCode == 0)
            #expect(try await daemon.holds("src", byte: 0x11, length: 4 * mebibyte), "m1's image (before the onset) is restored")
            let events = try await daemon.events()
            #expect(events.of("FaultOnset").count == 1)
            #expect(events.of("RollbackStarted").first?["mapID"] == String(try await daemon.map("m1").id))
        }
    }

    @Test("-onset before every image: no automatic rollback, and lsvolume says why")
    func onsetBeforeEveryImage() async throws {
        try await withDaemon { daemon in
            let (first, _) = try await Self.twoImages(daemon)
            try await daemon.ok("fault", "-volume", "src", "-reason", "encrypted long ago", "-onset", try Self.shifted(first, -60_000))
            try await Task.sleep(for: .milliseconds(500))
            let row = try await daemon.volume("src")
            #expect(row.status == "faulted" && !row.fault_onset.isEmpty, "\(row)")
            #expect(row.rollback_note.contains("no image"), "\(row)")
            #expect(try await daemon.events().of("RollbackStarted").isEmpty)
            // A relative onset is accepted too; a malformed one is refused and changes nothing.
            let bad = try await daemon.snapback("fault", "-volume", "src", "-reason", "x", "-onset", "yesterday")
            #expect(bad.exitCode == 1 && bad.stderr.contains("invalid_onset"), "\(bad)")
            try await daemon.ok("fault", "-volume", "src", "-reason", "again", "-onset", "-5")
        }
    }

    @Test("a hold window: the rollback waits, recovervolume cancels it; after a restart past the deadline it starts at once")
    func holdWindow() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.ok("chlcmap", "-autorestoredelay", "2", "m0")
            #expect(try await daemon.map("m0").autorestoredelay == 2)
            try await daemon.write("src", byte: 0x11, length: 4 * mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x66, length: 4 * mebibyte)

            // Scheduled, then cancelled by recovervolume: the data is accepted as it is.
            let scheduled = try await daemon.ok("fault", "-volume", "src", "-reason", "suspicious")
            #expect(scheduled.stdout.contains("scheduled"), "\(scheduled)")
            let waiting = try await daemon.volume("src")
            #expect(waiting.status == "faulted" && !waiting.rollback_at.isEmpty, "\(waiting)")
            #expect(try await daemon.map("m0").rollback_at == waiting.rollback_at)
            try await daemon.ok("recovervolume", "src")
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await daemon.events().of("RollbackStarted").isEmpty, "a cancelled rollback started")
            #expect(try await daemon.volume("src").rollback_at.isEmpty)
            #expect(try await daemon.holds("src", byte: 0x66, length: 4 * mebibyte))

            // Scheduled again: wait follows it from the schedule to the end.
            try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware, the first time")
            let followed = try await daemon.snapback("wait", "-timeout", "20", "m0")
            #expect(followed.exitCode == 0 && followed.stdout.contains("scheduled") && followed.stdout.contains("completed"), "\(followed)")
            #expect(try await daemon.holds("src", byte: 0x11, length: 4 * mebibyte))
            try await daemon.write("src", byte: 0x66, length: 4 * mebibyte)

            // Scheduled again; the daemon is down when the deadline passes; it starts at once.
            try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            await daemon.stop()
            try await Task.sleep(for: .milliseconds(2500))
            try await daemon.restart()
            #expect(try await daemon.snapback("wait", "-timeout", "20", "m0").exitCode == 0)
            let events = try await daemon.events()
            let started = try #require(events.of("RollbackStarted").last)
            #expect(started["trigger"] == "auto")
            let restartedAt = try #require(events.of("ControllerStarted").last)
            #expect(started.sequence > restartedAt.sequence)
            #expect(try await daemon.holds("src", byte: 0x11, length: 4 * mebibyte))
            #expect(try await daemon.volume("src").status == "online")
        }
    }
}
