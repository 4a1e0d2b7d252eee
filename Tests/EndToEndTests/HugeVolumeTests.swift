import Foundation
import SnapbackAPI
import Testing

/// Issue 11: costs that do not grow with the volume. A 256 TiB volume with 64 KiB grains (2^32
/// grains) is created, mapped, started, written and rolled back by the real daemon, quickly, with
/// bitmaps that cost the grains touched. The backing files are sparse files on tmpfs (ext4
/// stops at 16 TiB per file).
@Suite("a 256 TiB volume")
struct HugeVolumeTests {
    static let tebibyte: UInt64 = 1 << 40

    @Test("created, mapped, started, written far and wide, rolled back to the image")
    func hugeVolume() async throws {
        let shm = "/dev/shm/sbe2e-huge-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: shm) }
        try await withDaemon { daemon in
            let started = Date()
            try await daemon.ok("mkvolume", "-name", "src", "-size", "256t", "-path", shm + "/src.img")
            try await daemon.ok("mkvolume", "-name", "tgt", "-size", "256t", "-path", shm + "/tgt.img")
            try await daemon.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0", "-grainsize", "64")
            // The image: a few grains far apart hold a pattern before the start.
            let tebibyte = Self.tebibyte
            let offsets: [UInt64] = [0, 3 * tebibyte + 12_345 * 65_536, 128 * tebibyte, 256 * tebibyte - 65_536]
            let before = try await daemon.qemuIO("src", offsets.map { "write -P 0xa1 \($0) 64k" })
            #expect(before.exitCode == 0 && !before.stdout.contains("failed"), "\(before)")
            try await daemon.ok("startlcmap", "m0")
            // First writes after the start: copy-on-write of grains across the whole volume.
            let after = try await daemon.qemuIO("src", offsets.map { "write -P 0xb2 \($0 + 4096) 4k" })
            #expect(after.exitCode == 0 && !after.stdout.contains("failed"), "\(after)")
            #expect(try await daemon.holds("tgt", offsets.map { (0xa1, $0, 65_536) }).exitCode == 0, "the target shows the image")

            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "test")
            #expect(faulted.stdout.contains("automatic rollback started"))
            let row = try await daemon.waitForRollbackEnd("m0", timeoutSeconds: 60)
            #expect(row.restoring == "no" && row.restore_trigger == "")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", offsets.map { (0xa1, $0, 65_536) }).exitCode == 0, "the source holds the image again")
            let restored = try await daemon.events().of("RollbackProgressed").last
            #expect(restored?["grainsToRestore"] == "4" && restored?["grainsRestored"] == "4", "\(String(describing: restored))")
            // All of it in seconds, not in proportion to 2^32 grains.
            #expect(Date().timeIntervalSince(started) < 60)
        }
    }
}
