import Foundation
import Testing

/// `snapback log` on logs made by the real daemon: every subcommand, filter and output format,
/// read while the daemon runs and after it stops.
@Suite("audit CLI on a real daemon's log")
struct AuditTests {
    /// A history: two volumes, a map, a rename, a start, host writes, a fault with an automatic
    /// rollback, a restart, a lone volume faulted and recovered.
    func history(_ daemon: Daemon) async throws {
        try await daemon.makeSourceTargetMap(size: "4m")
        try await daemon.ok("chlcmap", "-name", "nightly", "m0")
        try await daemon.ok("startlcmap", "nightly")
        try await daemon.write("src", byte: 0x66, length: 1 << 20)
        try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware detected")
        #expect(try await daemon.waitForRollbackEnd("nightly").restoring == "no")
        try await daemon.restart()
        try await daemon.ok("mkvolume", "-name", "lonely", "-size", "1m")
        try await daemon.ok("fault", "-volume", "lonely", "-reason", "disk noise")
        try await daemon.ok("recovervolume", "lonely")
    }

    @Test func everySubcommandFilterAndFormat() async throws {
        try await withDaemon { daemon in
            try await history(daemon)
            // show: human lines with seq, time, type and the cause.
            let all = try await daemon.log("show")
            #expect(all.exitCode == 0)
            let lines = all.stdout.split(separator: "\n")
            #expect(lines.count >= 15)
            #expect(lines.allSatisfy { $0.split(separator: " ").first.map { UInt64($0) != nil } ?? false })
            #expect(all.stdout.contains("RollbackStarted  rollback of lcmap nightly onto its source started automatically after fault 1"))
            // -json: one object per line, each with seq, time and type.
            let json = try await daemon.log("show", "-json")
            for line in json.stdout.split(separator: "\n") {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(object["seq"] != nil && object["time"] != nil && object["type"] != nil)
            }
            // -type, -map (across the rename), -volume, -from/-to, -last, -since/-until.
            let faults = try await daemon.log("show", "-type", "VolumeFaulted")
            #expect(faults.stdout.split(separator: "\n").count == 2)
            let byMap = try await daemon.log("show", "-map", "nightly")
            #expect(byMap.stdout.contains("MapCreated") && byMap.stdout.contains("RollbackCompleted"), "\(byMap)")
            #expect(!byMap.stdout.contains("lonely"))
            let byVolume = try await daemon.log("show", "-volume", "lonely")
            #expect(byVolume.stdout.split(separator: "\n").count == 3, "\(byVolume)")  // created, faulted, recovered
            let range = try await daemon.log("show", "-from", "2", "-to", "4")
            #expect(range.stdout.split(separator: "\n").map { $0.split(separator: " ")[0] } == ["2", "3", "4"])
            let last = try await daemon.log("show", "-last", "2")
            #expect(last.stdout.contains("VolumeRecovered") && last.stdout.split(separator: "\n").count == 2)
            let future = try await daemon.log("show", "-since", "2100-01-01T00:00:00Z")
            #expect(future.exitCode == 0 && future.stdout.isEmpty)
            let past = try await daemon.log("show", "-until", "2000-01-01T00:00:00Z")
            #expect(past.exitCode == 0 && past.stdout.isEmpty)
            let badType = try await daemon.log("show", "-type", "Nonsense")
            #expect(badType.exitCode == 1 && badType.stderr.contains("unknown_event_type"))
            // explain: the story with the cause and the restart.
            let story = try await daemon.log("explain", "nightly")
            #expect(story.stdout.contains("created by mklcmap"))
            #expect(story.stdout.contains("renamed to nightly"))
            #expect(story.stdout.contains("started automatically by the controller (autorestore on) because of fault 1"))
            #expect(story.stdout.contains("finished"))
            let unknown = try await daemon.log("explain", "nothing")
            #expect(unknown.exitCode == 1 && unknown.stderr.contains("unknown_object"))
            // state at a point in time, in table and JSON form.
            // The state just after the second volume was created (sequence numbers depend on how
            // many times the daemon started, so they are read from the log).
            let created = try await daemon.log("show", "-type", "VolumeCreated", "-json")
            let secondVolumeSeq = try #require(created.stdout.split(separator: "\n").dropFirst().first.flatMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["seq"] as? Int
            })
            let early = try await daemon.log("state", "-at", String(secondVolumeSeq), "-json")
            let earlyState = try #require(try JSONSerialization.jsonObject(with: Data(early.stdout.utf8)) as? [String: Any])
            #expect((earlyState["volumes"] as? [[String: Any]])?.count == 2)
            #expect((earlyState["lcmaps"] as? [[String: Any]])?.isEmpty == true)
            let now = try await daemon.log("state")
            #expect(now.stdout.contains("nightly") && now.stdout.contains("lonely"))
            let tooFar = try await daemon.log("state", "-at", "999999")
            #expect(tooFar.exitCode == 1 && tooFar.stderr.contains("seq_out_of_range"))
            // export: jsonl and csv, streaming from a sequence number.
            let jsonl = try await daemon.log("export", "-format", "jsonl", "-from", "5")
            #expect(jsonl.stdout.split(separator: "\n").first?.contains("\"seq\":5") == true)
            let csv = try await daemon.log("export", "-format", "csv")
            #expect(csv.stdout.hasPrefix("seq,time,type,fields\n"))
            #expect(csv.stdout.contains(",VolumeFaulted,") && csv.stdout.contains("reason=ransomware detected"))
            // stats: counts by type, map usage.
            let stats = try await daemon.log("stats", "-json")
            let statsObject = try #require(try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any])
            let counts = try #require(statsObject["countsByType"] as? [String: Any])
            let starts = try await daemon.log("show", "-type", "ControllerStarted")
            #expect(counts["ControllerStarted"] as? Int == starts.stdout.split(separator: "\n").count)
            #expect((counts["ControllerStarted"] as? Int ?? 0) >= 2)
            #expect((statsObject["mapUsedBytes"] as? Int ?? 0) > 0)
            // verify, while the daemon runs, and after it stopped.
            let verify = try await daemon.log("verify")
            #expect(verify.exitCode == 0 && verify.stdout.hasPrefix("ok:"), "\(verify)")
            _ = await daemon.stop()
            let verifyStopped = try await daemon.log("verify", "-json")
            #expect(verifyStopped.exitCode == 0 && verifyStopped.stdout.contains("\"ok\":true"), "\(verifyStopped)")
        }
    }

    @Test func verifyNamesTheFirstBadRecordWithItsExitCode() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "v", "-size", "1m")
            let volumeSeq = try await daemon.log("show", "-type", "VolumeCreated").stdout.split(separator: " ").first.map(String.init) ?? "?"
            // SIGKILL: no shutdown checkpoint holds the name too.
            await daemon.kill()
            // Flip the volume name's byte in the data file (every copy LMDB holds of that page):
            // the VolumeCreated record's checksum no longer matches.
            let path = daemon.directory + "/log/data.mdb"
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let marker: [UInt8] = [0x01, 0x00, 0x76]  // name length 1 followed by "v"
            var flipped = 0
            var start = bytes.startIndex
            while let at = bytes[start...].firstRange(of: marker) {
                bytes[at.upperBound - 1] ^= 0x20  // "v" -> "V"
                flipped += 1
                start = at.upperBound
            }
            #expect(flipped > 0, "the VolumeCreated record was not found in the data file")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let verify = try await daemon.log("verify")
            #expect(verify.exitCode == 3, "\(verify)")
            #expect(verify.stderr.contains("seq \(volumeSeq): checksum"), "\(verify)")
        }
    }
}
