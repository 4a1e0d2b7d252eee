import Foundation
import SnapbackAPI
import Testing

/// Issues 5 and 3: the automatic-rollback method in the order the brief (section 2) gives it,
/// and the same flow with autorestore off (manual rollback, or accepting the data).
@Suite("automatic rollback")
struct AutorestoreTests {
    static let imageBytes = 8 * mebibyte

    /// Volumes src and tgt (64 MiB), map m0 with `autorestore` and `copyRate`, and pattern A
    /// (0xAA) on the first 8 MiB of src.
    static func prepare(_ daemon: Daemon, autorestore: String, copyRate: Int = 0) async throws {
        try await daemon.makeSourceTargetMap(size: "64m", autorestore: autorestore, copyRate: copyRate)
        try await daemon.write("src", byte: 0xAA, length: imageBytes)
    }

    @Test("the patent's flow: autorestore on, chlcmap, start, overwrite, fault, automatic rollback, audit")
    func patentFlow() async throws {
        try await withDaemon { daemon in
            try await Self.prepare(daemon, autorestore: "on")

            // 1. mklcmap -autorestore on: the map, its reverse map, the parameter.
            var forward = try await daemon.map("m0")
            #expect(forward.autorestore == "on")
            #expect(forward.partner == "m0_rev")
            #expect(forward.role == "forward")
            let reverse = try await daemon.map("m0_rev")
            #expect(reverse.role == "reverse" && reverse.partner == "m0")
            #expect(reverse.source == "tgt" && reverse.target == "src")

            // 2. chlcmap sets the parameter, lslcmap queries it.
            try await daemon.ok("chlcmap", "-autorestore", "off", "m0")
            #expect(try await daemon.map("m0").autorestore == "off")
            #expect(try await daemon.map("m0_rev").autorestore == "off")
            let detail = try await daemon.ok("lslcmap", "m0")
            #expect(detail.stdout.split(separator: "\n").contains("autorestore off"))
            try await daemon.ok("chlcmap", "-autorestore", "on", "m0")
            #expect(try await daemon.map("m0").autorestore == "on")
            #expect(try await daemon.ok("lslcmap", "m0").stdout.split(separator: "\n").contains("autorestore on"))

            // Start, then overwrite pattern A with pattern B.
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0xBB, length: Self.imageBytes)
            #expect(try await daemon.holds("src", byte: 0xBB, length: Self.imageBytes))
            #expect(try await daemon.holds("tgt", byte: 0xAA, length: Self.imageBytes))

            // 3. A fault: the controller starts the rollback by itself.
            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            #expect(faulted.stdout.contains("automatic rollback started"))
            let status = try await daemon.volume("src").status
            #expect(status == "restoring" || status == "online")
            let waited = try await daemon.snapback("wait", "m0")
            #expect(waited.exitCode == 0, "wait: \(waited)")

            // 4. The source is online again, with pattern A; the map keeps its snapshot.
            let source = try await daemon.volume("src")
            #expect(source.status == "online")
            #expect(source.fault_id.isEmpty)
            #expect(try await daemon.holds("src", byte: 0xAA, length: Self.imageBytes))
            #expect(try await daemon.holds("src", byte: 0, offset: Self.imageBytes, length: 64 * mebibyte - Self.imageBytes))
            forward = try await daemon.map("m0")
            #expect(forward.restoring == "no")
            #expect(forward.status == "copying" || forward.status == "idle_or_copied")
            #expect(try await daemon.holds("tgt", byte: 0xAA, length: Self.imageBytes))

            // The audit (read while the daemon runs): the fault, the automatic decision with its
            // cause, the completion, in that order.
            let events = try await daemon.events()
            let fault = try #require(events.of("VolumeFaulted").first)
            #expect(fault["reason"] == "ransomware")
            #expect(fault["cause"] == "operator")
            #expect(fault["volumeID"] == String(source.id))
            let faultID = try #require(fault["faultID"])
            let started = try #require(events.of("RollbackStarted").first)
            #expect(started["trigger"] == "auto")
            #expect(started["faultID"] == faultID)
            #expect(started["mapID"] == String(forward.id))
            let completed = try #require(events.of("RollbackCompleted").first)
            #expect(completed["mapID"] == String(forward.id))
            #expect(fault.sequence < started.sequence && started.sequence < completed.sequence)
            // Within 1 s of the fault being recorded.
            let faultTime = try #require(Int(fault["timestampMilliseconds"] ?? ""))
            let startTime = try #require(Int(started["timestampMilliseconds"] ?? ""))
            #expect(startTime - faultTime <= 1000)
            let changes = events.of("MapAutorestoreChanged").compactMap { $0["autorestore"] }
            #expect(changes == ["off", "on"])

            // The human view names the cause too.
            let human = try await daemon.log("show", "-type", "RollbackStarted")
            #expect(human.stdout.contains("started automatically after fault \(faultID)"), "log show: \(human)")

            // A second fault rolls back again, to the same image.
            try await daemon.write("src", byte: 0xCC, offset: 2 * mebibyte, length: 2 * mebibyte)
            let again = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware again")
            #expect(again.stdout.contains("automatic rollback started"))
            #expect(try await daemon.snapback("wait", "m0").exitCode == 0)
            #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", byte: 0xAA, length: Self.imageBytes))
            let later = try await daemon.events()
            #expect(later.of("RollbackStarted").count == 2)
            #expect(later.of("RollbackCompleted").count == 2)
            #expect(later.of("RollbackStarted").last?["faultID"] == later.of("VolumeFaulted").last?["faultID"])
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }

    @Test("autorestore off: the volume stays faulted until startlcmap -restore")
    func manualRollback() async throws {
        try await withDaemon { daemon in
            // Copy rate 100 (64 MiB/s): a background copy runs alongside, and `wait` follows it
            // once the rollback is over.
            try await Self.prepare(daemon, autorestore: "off", copyRate: 100)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0xBB, length: Self.imageBytes)

            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            #expect(!faulted.stdout.contains("rollback"))
            // Give a (wrong) automatic rollback more than the brief's 1 s to show up.
            try await Task.sleep(for: .milliseconds(1200))
            let source = try await daemon.volume("src")
            #expect(source.status == "faulted")
            #expect(source.fault_reason == "ransomware")
            #expect(try await daemon.map("m0").restoring == "no")
            #expect(try await daemon.events().of("RollbackStarted").isEmpty)

            // Offline to hosts: reads and writes fail.
            let read = try await daemon.qemuIO("src", readOnly: true, ["read 0 64k"])
            #expect(read.exitCode != 0, "a read of the faulted source: \(read)")
            #expect((read.stdout + read.stderr).contains("Input/output error"))
            let write = try await daemon.qemuIO("src", ["write -P 0xDD 0 64k"])
            #expect(write.exitCode != 0, "a write to the faulted source: \(write)")
            // The image stays readable on the target.
            #expect(try await daemon.holds("tgt", byte: 0xAA, length: Self.imageBytes))

            // The operator rolls back.
            try await daemon.ok("startlcmap", "-restore", "m0")
            let waited = try await daemon.snapback("wait", "m0")
            #expect(waited.exitCode == 0, "wait: \(waited)")
            #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", byte: 0xAA, length: Self.imageBytes))
            #expect(try await daemon.holds("src", byte: 0, offset: Self.imageBytes, length: 4 * mebibyte))

            let events = try await daemon.events()
            let fault = try #require(events.of("VolumeFaulted").first)
            let started = try #require(events.of("RollbackStarted").first)
            #expect(started["trigger"] == "operator")
            #expect(started["faultID"] == fault["faultID"])
            #expect(events.of("RollbackCompleted").count == 1)
        }
    }

    @Test("recovervolume accepts a faulted volume's data as it is")
    func recoverVolume() async throws {
        try await withDaemon { daemon in
            try await Self.prepare(daemon, autorestore: "off")
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0xBB, length: Self.imageBytes)
            try await daemon.ok("fault", "-volume", "src", "-reason", "false alarm")
            #expect(try await daemon.volume("src").status == "faulted")

            // An online volume cannot be recovered.
            try await daemon.ok("mkvolume", "-name", "other", "-size", "1m")
            let refused = try await daemon.snapback("recovervolume", "other")
            #expect(refused.exitCode == 1 && refused.stderr.contains("volume_not_faulted"), "\(refused)")

            try await daemon.ok("recovervolume", "src")
            let source = try await daemon.volume("src")
            #expect(source.status == "online")
            #expect(source.fault_id.isEmpty)
            // The data as it was at the fault: pattern B, not the image.
            #expect(try await daemon.holds("src", byte: 0xBB, length: Self.imageBytes))
            #expect(try await daemon.holds("tgt", byte: 0xAA, length: Self.imageBytes))
            // Writable again.
            try await daemon.write("src", byte: 0xEE, offset: Self.imageBytes, length: 64 * kibibyte)

            let events = try await daemon.events()
            let recovered = try #require(events.of("VolumeRecovered").first)
            #expect(recovered["volumeID"] == String(source.id))
            #expect(events.of("RollbackStarted").isEmpty)
            let human = try await daemon.log("show", "-type", "VolumeRecovered")
            #expect(human.stdout.contains("volume src recovered: data accepted as it is"))
        }
    }
}
