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
            // recovervolume opens the store again, or says why it cannot: still resized here.
            let recover = try await daemon.snapback("recovervolume", "src")
            #expect(recover.exitCode == 1 && recover.stderr.contains("backing_unavailable") && recover.stderr.contains("8388608 bytes"), "\(recover)")
            #expect(try await daemon.volume("src").status == "faulted", "a refused recovery changed nothing")

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

    @Test("recovervolume opens a store that was missing at start-up again, or fails with the reason")
    func recoverReopensMissingStore() async throws {
        try await withDaemon { daemon in
            let sourcePath = daemon.directory + "/src.img"
            try await daemon.makeSourceTargetMap(size: "4m", sourcePath: sourcePath, autorestore: "off")
            try await daemon.write("src", byte: 0xAA, length: mebibyte)
            await daemon.stop()
            let saved = sourcePath + ".saved"
            #expect(rename(sourcePath, saved) == 0)
            try await daemon.restart()
            let row = try await daemon.volume("src")
            #expect(row.status == "faulted" && row.fault_reason.contains("missing"), "\(row)")

            // Still missing: refused with the reason, nothing changed.
            let refused = try await daemon.snapback("recovervolume", "src")
            #expect(refused.exitCode == 1 && refused.stderr.contains("backing_unavailable") && refused.stderr.contains("missing"), "\(refused)")
            #expect(try await daemon.volume("src").status == "faulted")

            // Back in place: recovervolume opens it, and hosts read and write it at once.
            #expect(rename(saved, sourcePath) == 0)
            try await daemon.ok("recovervolume", "src")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", byte: 0xAA, length: mebibyte))
            try await daemon.write("src", byte: 0xBB, offset: mebibyte, length: mebibyte)
            #expect(try await daemon.holds("src", byte: 0xBB, offset: mebibyte, length: mebibyte))
        }
    }

    @Test("mkvolume -path refuses an existing file (path_exists) unless -adopt is given")
    func pathExistsUnlessAdopted() async throws {
        try await withDaemon { daemon in
            let path = daemon.directory + "/existing.img"
            try writeFilledFile(path, sizeBytes: Int(mebibyte), byte: 0x42)
            let refused = try await daemon.snapback("mkvolume", "-name", "v", "-size", "1m", "-path", path)
            #expect(refused.exitCode == 1 && refused.stderr.contains("path_exists"), "\(refused)")
            #expect(try await daemon.snapback("lsvolume", "v").exitCode != 0, "nothing was created")
            #expect(try firstMismatch(path, byte: 0x42) == nil, "the file was not touched")
            try await daemon.ok("mkvolume", "-name", "v", "-size", "1m", "-path", path, "-adopt")
            #expect(try await daemon.holds("v", byte: 0x42, length: mebibyte))
            // A path that does not exist is created without -adopt.
            try await daemon.ok("mkvolume", "-name", "w", "-size", "1m", "-path", daemon.directory + "/new.img")
        }
    }
}
