import Foundation
import SnapbackAPI
import Testing

/// Issue 11: the log's file system fills up. Nothing hangs silently or spins: commands answer
/// `storage_full`, host writes that need marks answer ENOSPC, `lssystem` says `degraded` and
/// why, the daemon logs the failure at error level at most once a second and uses almost no
/// CPU, and everything (a rollback included) resumes by itself when space returns.
@Suite("a full log file system")
struct StorageFullTests {
    /// Mounts a small tmpfs on `DIR/log` (the LMDB environment), so that filling it fills only
    /// the log; volumes and the daemon's own output stay on the ordinary disk.
    static func mountSmallLogFileSystem(_ directory: String) throws {
        try mountTmpfs(directory + "/log", size: "16m")
    }

    /// Fills the file system of `directory` with a file; returns its path.
    static func fill(_ directory: String) throws -> String {
        let path = directory + "/filler"
        let handle = try appendingHandle(path)
        defer { try? handle.close() }
        let block = Data(repeating: 0xEE, count: 1 << 20)
        while true {
            do { try handle.write(contentsOf: block) } catch { break }
        }
        // Whatever is left (less than a block) too.
        for _ in 0..<256 {
            do { try handle.write(contentsOf: Data(repeating: 0xEE, count: 4096)) } catch { break }
        }
        return path
    }

    /// CPU seconds (user + system) the process has used.
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
        // Fields after the command name: state is 3rd overall, utime 14th, stime 15th.
        let ticks = Double(fields[11])! + Double(fields[12])!
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    @Test("full log: clear errors, degraded, no spinning, logged, and a rollback resumes when space returns")
    func fullLogFileSystem() async throws {
        try await withDaemon(prepare: Self.mountSmallLogFileSystem) { daemon in
            let sourcePath = daemon.directory + "/src.img"
            try writeFilledFile(sourcePath, sizeBytes: 64 * Int(mebibyte), byte: 0x5A)
            try await daemon.makeSourceTargetMap(size: "64m", sourcePath: sourcePath)
            try await daemon.ok("startlcmap", "m0")
            let online = try await daemon.ok("lssystem", "-json")
            #expect(online.stdout.contains(#""status" : "online""#), "\(online)")
            // Every grain dirty: the rollback has work to do.
            #expect(try await daemon.qemuIO("src", ["write -P 0x11 0 64M"]).exitCode == 0)

            let filler = try Self.fill(daemon.directory + "/log")
            // A command that must record an event: refused with a stable code, exit 1.
            let refused = try await daemon.snapback("chlcmap", "-copyrate", "7", "m0")
            #expect(refused.exitCode == 1 && refused.stderr.contains("storage_full"), "\(refused)")
            #expect(try await daemon.map("m0").copyrate == 0, "a refused command changed nothing")
            // The fault itself may or may not find room (LMDB reuses freed pages); retry until
            // it is recorded, with space freed in between if it never is.
            var fault = try await daemon.snapback("fault", "-volume", "src", "-reason", "ransomware")
            if fault.exitCode != 0 {
                #expect(fault.stderr.contains("storage_full"), "\(fault)")
                try FileManager.default.removeItem(atPath: filler)
                fault = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
                _ = try Self.fill(daemon.directory + "/log")
            }
            // A host write to the restoring source needs marks (restore before write). LMDB may
            // still fit a small commit into pages it freed; when it cannot, the write fails with
            // ENOSPC and nothing is written.
            let write = try await daemon.qemuIO("src", ["write -P 0x77 1M 4k"])
            let written = write.stdout.contains("wrote 4096/4096")
            #expect(written || write.stdout.contains("No space left on device") || write.stderr.contains("No space left on device"), "\(write)")

            // Degraded, and why. A small commit may still find a page LMDB freed (the fault or
            // the write above may have), which makes the controller online again until the
            // rollback's next commit fails: that happens within its backoff (at most 1 s).
            var system = try await daemon.ok("lssystem", "-json")
            var rows = try JSONDecoder().decode([SystemRow].self, from: Data(system.stdout.utf8))
            let deadline = Date().addingTimeInterval(5)
            while rows.first?.status != "degraded", Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                system = try await daemon.ok("lssystem", "-json")
                rows = try JSONDecoder().decode([SystemRow].self, from: Data(system.stdout.utf8))
            }
            #expect(rows.first?.status == "degraded" && rows.first?.reason.contains("storage_full") == true, "\(system)")
            // No spinning while stuck: under 5 % of a core over 3 s.
            let pid = try #require(daemon.pid)
            let before = try Self.cpuSeconds(pid)
            try await Task.sleep(for: .seconds(3))
            let used = try Self.cpuSeconds(pid) - before
            #expect(used < 0.15, "snapbackd used \(used) s of CPU in 3 s while the log's file system was full")
            #expect(try await daemon.map("m0").restoring == "yes", "the rollback waits for space")
            // Logged at error level, at most about once a second.
            let errors = daemon.stderrTail(200).split(separator: "\n").filter { $0.contains("error") && $0.contains("durable commits are failing") }
            #expect(!errors.isEmpty && errors.count <= 8, "error lines: \(errors.count)\n\(daemon.stderrTail())")

            // Space returns: everything resumes by itself.
            try FileManager.default.removeItem(atPath: filler)
            let row = try await daemon.waitForRollbackEnd("m0", timeoutSeconds: 30)
            #expect(row.restoring == "no", "\(row)")
            #expect(try await daemon.volume("src").status == "online")
            let recovered = try await daemon.ok("lssystem", "-json")
            #expect(recovered.stdout.contains(#""status" : "online""#), "\(recovered)")
            #expect(daemon.stderrTail(50).contains("durable commits succeed again"))
            // The source holds the image again, and the host write if it was acknowledged.
            #expect(try firstMismatch(sourcePath, byte: 0x5A, offset: 0, length: mebibyte) == nil)
            #expect(try firstMismatch(sourcePath, byte: written ? 0x77 : 0x5A, offset: mebibyte, length: 4096) == nil)
            #expect(try firstMismatch(sourcePath, byte: 0x5A, offset: mebibyte + 4096, length: 63 * mebibyte - 4096) == nil)
            #expect(try await daemon.ok("chlcmap", "-copyrate", "7", "m0").exitCode == 0)
        }
    }
}
