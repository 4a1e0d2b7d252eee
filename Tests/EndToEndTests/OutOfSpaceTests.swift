import Foundation
import SnapbackAPI
import Testing

/// Issue 12: a full file system under a source is not damage. The write that meets ENOSPC fails
/// with ENOSPC, the volume becomes `out_of_space`, nothing is faulted or rolled back (autorestore
/// is on), every acknowledged byte is kept, reads work, and the volume is online again once a
/// write succeeds after space is freed.
@Suite("a full file system under a source")
struct OutOfSpaceTests {
    /// Mounts a 24 MiB tmpfs on `DIR/vols` for the source's backing file.
    static func mountSmallVolumeFileSystem(_ directory: String) throws {
        try mountTmpfs(directory + "/vols", size: "24m")
    }

    @Test("ENOSPC under a source: out_of_space, no fault, no rollback, bytes kept, online again after space is freed")
    func sourceOutOfSpace() async throws {
        try await withDaemon(prepare: Self.mountSmallVolumeFileSystem) { daemon in
            // A sparse 64 MiB source on a 24 MiB file system; the target on the ordinary disk.
            try await daemon.makeSourceTargetMap(size: "64m", sourcePath: daemon.directory + "/vols/src.img")
            try await daemon.write("src", byte: 0x5A, offset: 0, length: 8 * mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x11, offset: 0, length: 4 * mebibyte)

            // 30 MiB more cannot fit: the write fails with ENOSPC.
            let full = try await daemon.qemuIO("src", ["write -P 0x22 16M 30M"])
            #expect(full.stdout.contains("No space left on device") || full.stderr.contains("No space left on device"), "\(full)")
            let row = try await daemon.volume("src")
            #expect(row.status == "out_of_space" && row.fault_id.isEmpty, "\(row)")
            let events = try await daemon.events()
            #expect(events.of("VolumeOutOfSpace").count == 1, "\(events.map(\.type))")
            #expect(events.of("VolumeFaulted").isEmpty && events.of("RollbackStarted").isEmpty, "no fault, no rollback: \(events.map(\.type))")
            #expect(try await daemon.map("m0").restoring == "no")
            // Reads work, and every acknowledged byte is there; the image is intact.
            let kept = try await daemon.holds("src", [(0x11, 0, 4 * mebibyte), (0x5A, 4 * mebibyte, 4 * mebibyte)])
            #expect(kept.exitCode == 0 && !kept.stdout.contains("verification failed"), "\(kept)")
            let image = try await daemon.holds("tgt", [(0x5A, 0, 8 * mebibyte)])
            #expect(image.exitCode == 0 && !image.stdout.contains("verification failed"), "\(image)")

            // Space returns: the next write succeeds and the volume is online by itself.
            #expect(try runProcessSync("/bin/mount", ["-o", "remount,size=128m", daemon.directory + "/vols"]) == 0)
            try await daemon.write("src", byte: 0x33, offset: 16 * mebibyte, length: 30 * mebibyte)
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.events().of("VolumeSpaceRestored").count == 1)
            let after = try await daemon.holds("src", [(0x11, 0, 4 * mebibyte), (0x33, 16 * mebibyte, 30 * mebibyte)])
            #expect(after.exitCode == 0 && !after.stdout.contains("verification failed"), "\(after)")
        }
    }
}
