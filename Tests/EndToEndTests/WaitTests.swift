import Foundation
import SnapbackAPI
import Testing

/// Issue 12: `snapback wait` tells how a rollback ended. Completed: exit 0. Abandoned: exit 1
/// with the reason (the source is left faulted). Timed out: exit 4. After a rollback that already
/// ended, it names that rollback and its outcome. Following a copy whose source is faulted, it
/// ends with exit 1 and says why.
@Suite("wait's outcomes")
struct WaitTests {
    @Test("completed 0, abandoned 1 with the reason, timed out 4, and the last rollback named when none runs")
    func rollbackOutcomes() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "256m")
            try await daemon.ok("startlcmap", "m0")
            let idle = try await daemon.snapback("wait", "m0")
            #expect(idle.exitCode == 0 && idle.stdout.contains("nothing to wait for"), "\(idle)")

            // An automatic rollback: followed to the end, exit 0.
            try await daemon.write("src", byte: 0x11, length: 8 * mebibyte)
            try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            let followed = try await daemon.snapback("wait", "m0")
            #expect(followed.exitCode == 0 && followed.stdout.contains("completed"), "\(followed)")
            // Ended already: wait names it and its outcome.
            let named = try await daemon.snapback("wait", "m0")
            #expect(named.exitCode == 0 && named.stdout.contains("rollback of m0 (auto, fault 1") && named.stdout.contains("completed"), "\(named)")

            // A manual rollback of 256 MiB of dirty grains, abandoned by stoplcmap -force; wait
            // -timeout 0 meanwhile gives up with exit 4. (If a rollback ever ends before the stop
            // arrives, it is tried again.)
            var timed: ProcessOutput?
            var stopped = false
            for _ in 0..<5 where !stopped {
                try await daemon.write("src", byte: 0x22, length: 256 * mebibyte)
                try await daemon.ok("startlcmap", "-restore", "m0")
                timed = try await daemon.snapback("wait", "-timeout", "0", "m0")
                stopped = try await daemon.snapback("stoplcmap", "-force", "m0").exitCode == 0
                if !stopped { try await daemon.ok("recovervolume", "src") }
            }
            try #require(stopped, "the rollback always ended before stoplcmap -force")
            #expect(timed?.exitCode == 4 && timed?.stderr.contains("timeout") == true, "\(String(describing: timed))")
            let abandoned = try await daemon.snapback("wait", "m0")
            #expect(abandoned.exitCode == 1, "\(abandoned)")
            #expect(abandoned.stderr.contains("rollback_abandoned") && abandoned.stderr.contains("stopped by operator"), "\(abandoned)")
            let source = try await daemon.volume("src")
            #expect(source.status == "faulted", "\(source)")
            // The source was online: the abandonment records a fault of its own cause.
            let fault = try #require(try await daemon.events().of("VolumeFaulted").last)
            #expect(fault["cause"] == "rollback_abandoned", "\(fault)")
        }
    }

    @Test("following a copy whose source is faulted ends with exit 1 and says why")
    func copyOfFaultedSource() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "64m", autorestore: "off", copyRate: 1)
            try await daemon.write("src", byte: 0x33, length: 64 * mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.ok("fault", "-volume", "src", "-reason", "disk trouble")
            let waited = try await daemon.snapback("wait", "-timeout", "30", "m0")
            #expect(waited.exitCode == 1 && waited.stderr.contains("source_faulted") && waited.stderr.contains("disk trouble"), "\(waited)")
        }
    }
}
