import Foundation
import SnapbackAPI
import Testing

/// A backing store resized (or missing) while the daemon was down is a fault at start-up
/// (brief §1); with autorestore on, that fault starts an automatic rollback.
@Suite("backing store problems at start-up")
struct BackingStoreTests {
    // Was a bug, fixed since (kept as a regression test): a source whose backing file was resized (or removed) while snapbackd was down is
    // faulted at start-up (cause backing_resized / backing_missing) and, with autorestore on, an
    // automatic rollback is started (Controller.init → reportFault → automaticRollbackChoice), but
    // the source's store was never opened, so every rollback step fails
    // (Controller+HostIO.swift restoreGrainsLocked: `stores[source.id] == nil` → .faulted) and
    // returns without a word. The volume stays `restoring` at 0 % for ever: `wait` never ends, and
    // every way out is refused — recovervolume (volume_restoring), stoplcmap -force / rmlcmap -force
    // / startlcmap -restore (map_restoring). Only fixing the file and restarting the daemon helps.
    // (Restoring only the dirty grains onto a store that lost data would not give the image anyway:
    // the policy should not pick a dirty-grains rollback for these causes.)
    @Test("a source resized while the daemon was down: the automatic rollback must not hang")
    func resizedSource() async throws {
        try await withDaemon { daemon in
            let sourcePath = daemon.directory + "/src.img"
            try writeFilledFile(sourcePath, sizeBytes: Int(16 * mebibyte), byte: 0)
            try await daemon.makeSourceTargetMap(size: "16m", sourcePath: sourcePath)
            try await daemon.write("src", byte: 0xAA, length: mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0xBB, length: mebibyte)
            await daemon.stop()

            // The backing file shrinks while the daemon is down.
            #expect(truncate(sourcePath, off_t(8 * mebibyte)) == 0)
            try await daemon.restart()

            // The start-up fault is recorded with its cause, and the automatic rollback started.
            let events = try await daemon.events()
            let fault = try #require(events.of("VolumeFaulted").first)
            #expect(fault["cause"] == "backing_resized")
            #expect(events.of("RollbackStarted").first?["trigger"] == "auto")
            #expect(daemon.stderrTail(40).contains("backing store problem"))

            // What must hold: within a few seconds the rollback is over (or was never started),
            // and the volume is not left `restoring` with no way out.
            let row = try await daemon.waitForRollbackEnd("m0", timeoutSeconds: 5)
            let status = try await daemon.volume("src").status
            // The controller gives the rollback up (it cannot write a source it could not open),
            // records why, and leaves the source faulted; the operator can then act.
            #expect(row.restoring == "no", "the rollback is stuck at \(row.restore_progress) %")
            #expect(status == "faulted")
            #expect(try await daemon.events().of("RollbackStopped").count == 1)
            let recover = try await daemon.snapback("recovervolume", "src")
            #expect(recover.exitCode == 0, "\(recover.stderr)")

            // With the file's size restored, an operator rolls back by hand.
            await daemon.stop()
            #expect(truncate(sourcePath, off_t(16 * mebibyte)) == 0)
            try await daemon.restart()
            try await daemon.ok("startlcmap", "-restore", "m0")
            #expect(try await daemon.snapback("wait", "-timeout", "20", "m0").exitCode == 0)
            #expect(try await daemon.waitForRollbackEnd("m0").restoring == "no")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", byte: 0xAA, length: mebibyte))
        }
    }
}
