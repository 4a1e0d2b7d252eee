import Foundation
import SnapbackAPI
import Testing

/// Many writes at once through the real daemon: nbdcopy opens four connections (snapbackd
/// advertises multi-conn) with many requests in flight each, so the first writes to grains of a
/// source with an active snapshot share copy-on-write batches, and later writes take the plain
/// path (the event loop, or the thread pool, outside the controller's lock).
@Suite("concurrent hosts")
struct ConcurrentHostsTests {
    @Test("nbdcopy over a snapshotted source: the image keeps its bytes, a rollback brings them back")
    func concurrentFirstWritesKeepTheImage() async throws {
        try await withDaemon { daemon in
            let size = 32 * mebibyte
            try await daemon.makeSourceTargetMap(size: "32m", grainSize: "64")
            try await daemon.write("src", byte: 0x5A, length: size)
            try await daemon.ok("startlcmap", "m0")

            // Twice over the whole source: first writes (copy-on-write), then plain writes.
            let file = scratchPath("snapback-e2e-concurrent")
            defer { unlink(file) }
            for (round, byte) in [UInt8(0xC3), 0x3C].enumerated() {
                FileManager.default.createFile(atPath: file, contents: Data(repeating: byte, count: Int(size)))
                let copied = try await runProcess(Binaries.nbdcopy, ["--flush", "--connections=4", "--requests=32", "--request-size=65536", file, daemon.uri("src")], timeoutSeconds: 120)
                #expect(copied.exitCode == 0, "nbdcopy round \(round): \(copied)")
                #expect(try await daemon.holds("src", byte: byte, length: size), "round \(round): the source holds every write")
                #expect(try await daemon.holds("tgt", byte: 0x5A, length: size), "round \(round): the image keeps its bytes")
            }
            let map = try await daemon.map("m0")
            #expect(map.status == "copying")

            // The source faults: the automatic rollback brings the image back.
            try await daemon.ok("fault", "-volume", "src", "-reason", "concurrent hosts")
            try await daemon.ok("wait", "-timeout", "60", "m0")
            #expect(try await daemon.volume("src").status == "online")
            #expect(try await daemon.holds("src", byte: 0x5A, length: size), "the rollback restored the image")
            let verify = try await daemon.log("verify")
            #expect(verify.exitCode == 0, "\(verify)")
        }
    }
}
