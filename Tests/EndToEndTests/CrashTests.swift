import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 6: crash recovery with a real process. SIGKILL snapbackd in the middle of a 256 MiB
/// rollback, start it again, and the rollback finishes with the right bytes and a sound log.
@Suite("crash recovery")
struct CrashTests {
    @Test("SIGKILL mid-rollback, restart: the rollback completes, the bytes match, the log verifies")
    func killMidRollback() async throws {
        try await withDaemon { daemon in
            let sourcePath = try await FaultTests.prepareAllDirty(daemon, byte: 0x6C)

            // Watch the source's backing file: the rollback restores grains in ascending order,
            // so when the grain at 128 MiB holds the image again about half of the work is done.
            // Kill at that moment, from a plain thread, microseconds after seeing it.
            let pid = try #require(daemon.pid)
            let watcher = ByteWatcher(path: sourcePath, offset: 128 * mebibyte, byte: 0x6C) { kill(pid, SIGKILL) }
            watcher.start()
            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            #expect(faulted.stdout.contains("automatic rollback started"))
            let killed = await watcher.result(timeoutSeconds: 20)
            #expect(killed, "the rollback never reached 128 MiB")
            await daemon.kill()
            #expect(!daemon.isRunning)
            // At the kill the last grain was not restored yet: the crash really is mid-rollback.
            #expect(try readByte(sourcePath, at: FaultTests.bigBytes - 1) == 0)

            try await daemon.restart()
            #expect(daemon.stderrTail(40).contains("rollbacksToResume=1"), "the restarted daemon found the rollback: \(daemon.stderrTail())")
            let waited = try await daemon.snapback("wait", "-timeout", "60", "m0")
            #expect(waited.exitCode == 0, "wait: \(waited)")
            let row = try await daemon.waitForRollbackEnd("m0")
            #expect(row.restoring == "no")
            #expect(try await daemon.volume("src").status == "online")
            try await FaultTests.expectSource(daemon, sourcePath, byte: 0x6C)

            // The log: sound, two starts, one rollback that completed after the restart.
            let verify = try await daemon.log("verify")
            #expect(verify.exitCode == 0, "log verify: \(verify)")
            #expect(verify.stdout.hasPrefix("ok: "))
            let events = try await daemon.events()
            let starts = events.of("ControllerStarted")
            #expect(starts.count == 2)
            #expect(events.of("RollbackStarted").count == 1)
            let completed = try #require(events.of("RollbackCompleted").first)
            #expect(events.of("RollbackCompleted").count == 1)
            if let restart = starts.last {
                #expect(restart.sequence < completed.sequence, "the kill must land mid-rollback for this test to mean anything: \(events)")
                // Progress never goes backwards across the crash.
                let restored = events.of("RollbackProgressed").compactMap { Int($0["grainsRestored"] ?? "") }
                #expect(restored == restored.sorted())
            }
            let stats = try await daemon.log("stats", "-json")
            #expect(stats.stdout.contains("\"ControllerStarted\":2"))
        }
    }

    @Test("SIGKILL, then host writes after the restart: the image and the new data both survive")
    func killThenWrite() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "16m", grainSize: "64")
            try await daemon.write("src", byte: 0x21, length: 4 * mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x42, length: 2 * mebibyte)
            await daemon.kill()
            try await daemon.restart()

            // Acknowledged writes and the image both survived the crash.
            #expect(try await daemon.holds("src", [(0x42, 0, 2 * mebibyte), (0x21, 2 * mebibyte, 2 * mebibyte)]).exitCode == 0)
            #expect(try await daemon.holds("tgt", byte: 0x21, length: 4 * mebibyte))
            #expect(try await daemon.map("m0").status == "copying")

            // Copy-on-write keeps working after the restart, and a rollback uses the grains
            // marked before and after it.
            try await daemon.write("src", byte: 0x63, offset: 2 * mebibyte, length: 2 * mebibyte)
            #expect(try await daemon.holds("tgt", byte: 0x21, length: 4 * mebibyte))
            try await daemon.ok("fault", "-volume", "src", "-reason", "after restart")
            #expect(try await daemon.snapback("wait", "m0").exitCode == 0)
            #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
            #expect(try await daemon.holds("src", byte: 0x21, length: 4 * mebibyte))
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }
}
