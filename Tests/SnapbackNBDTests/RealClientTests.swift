import Foundation
import SnapbackNBD
import Testing
import SnapbackRandom

/// The server against the real NBD clients installed on the machine: qemu-io, qemu-img (QEMU's
/// client) and nbdinfo, nbdcopy (libnbd's).
@Suite("NBD server with real clients")
struct RealClientTests {
    private static let qemuIO = "/usr/bin/qemu-io"
    private static let qemuImg = "/usr/bin/qemu-img"
    private static let nbdinfo = "/usr/bin/nbdinfo"
    private static let nbdcopy = "/usr/bin/nbdcopy"
    private static let sizeBytes = 4 << 20

    private func uri(_ port: Int, _ name: String) -> String { "nbd://127.0.0.1:\(port)/\(name)" }

    private func standardExports() -> (writable: MemoryExport, readOnly: MemoryExport, entries: [(name: String, export: MemoryExport, description: String)]) {
        let writable = MemoryExport(sizeBytes: Self.sizeBytes)
        let readOnly = MemoryExport(sizeBytes: Self.sizeBytes, readOnly: true, fill: { _ in 0x5A })
        return (writable, readOnly, [("disk", writable, "a writable disk"), ("snap", readOnly, "a read-only image")])
    }

    @Test func qemuIOWritesAndReadsBack() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            let result = try await runTool(Self.qemuIO, [
                "-f", "raw", uri(port, "disk"),
                "-c", "write -P 0xab 0 64k",
                "-c", "read -P 0xab 0 64k",
                "-c", "write -P 0xcd 1m 3m",
                "-c", "read -P 0xcd 1m 3m",
            ])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.stdout.contains("wrote 65536/65536 bytes at offset 0"), "\(result.output)")
            #expect(result.stdout.contains("read 65536/65536 bytes at offset 0"), "\(result.output)")
            #expect(result.stdout.contains("read 3145728/3145728 bytes at offset 1048576"), "\(result.output)")
            #expect(!result.output.contains("fail"), "\(result.output)")
        }
        let bytes = exports.writable.bytes
        #expect(bytes[0 ..< 65536].allSatisfy { $0 == 0xAB })
        #expect(bytes[65536 ..< (1 << 20)].allSatisfy { $0 == 0 })
        #expect(bytes[(1 << 20)...].allSatisfy { $0 == 0xCD })
    }

    @Test func qemuIOFlushAndFUAReachTheExport() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            let result = try await runTool(Self.qemuIO, [
                "-f", "raw", uri(port, "disk"),
                "-c", "write -f -P 0x11 0 4k",
                "-c", "flush",
                "-c", "write -z 8k 8k",
                "-c", "discard 64k 64k",
            ])
            #expect(result.status == 0, "\(result.output)")
            #expect(!result.output.contains("fail"), "\(result.output)")
        }
        let counters = exports.writable.counters
        #expect(counters.fuaCalls >= 1, "FUA write did not reach the export: \(counters)")
        #expect(counters.flushes >= 1, "flush did not reach the export: \(counters)")
        #expect(counters.writeZeroes >= 1, "write-zeroes did not reach the export: \(counters)")
        #expect(counters.trims >= 1, "discard did not reach the export: \(counters)")
        #expect(exports.writable.bytes[0 ..< 4096].allSatisfy { $0 == 0x11 })
    }

    @Test func qemuIOReadOnlyExport() async throws {
        let exports = standardExports()
        let before = exports.readOnly.bytes
        try await withServer(exports.entries) { port in
            let read = try await runTool(Self.qemuIO, ["-r", "-f", "raw", uri(port, "snap"), "-c", "read -P 0x5a 0 64k"])
            #expect(read.status == 0 && read.stdout.contains("read 65536/65536 bytes"), "\(read.output)")
            #expect(!read.output.contains("fail"), "\(read.output)")

            let write = try await runTool(Self.qemuIO, ["-r", "-f", "raw", uri(port, "snap"), "-c", "write -P 0xff 0 64k"])
            #expect(!write.stdout.contains("wrote"), "\(write.output)")
            #expect(write.output.lowercased().contains("permi") || write.output.contains("read-only") || write.status != 0, "\(write.output)")

            // Opening the read-only export for writing is refused by the client, which sees READ_ONLY.
            let writable = try await runTool(Self.qemuIO, ["-f", "raw", uri(port, "snap"), "-c", "write -P 0xff 0 64k"])
            #expect(!writable.stdout.contains("wrote"), "\(writable.output)")
        }
        #expect(exports.readOnly.bytes == before)
        #expect(exports.readOnly.counters.writes == 0)
    }

    @Test func nbdinfoReportsSizeAndReadOnly() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            let writable = try await runTool(Self.nbdinfo, ["--json", uri(port, "disk")])
            #expect(writable.status == 0, "\(writable.output)")
            let writableInfo = try firstExport(writable.stdout)
            #expect(writableInfo["export-size"] as? Int == Self.sizeBytes, "\(writable.stdout)")
            #expect(writableInfo["is_read_only"] as? Bool == false, "\(writable.stdout)")
            #expect(writableInfo["can_flush"] as? Bool == true, "\(writable.stdout)")
            #expect(writableInfo["can_fua"] as? Bool == true, "\(writable.stdout)")
            #expect(writableInfo["can_multi_conn"] as? Bool == true, "\(writable.stdout)")
            #expect(writableInfo["block_size_maximum"] as? Int == 32 << 20, "\(writable.stdout)")
            #expect(writableInfo["description"] as? String == "a writable disk", "\(writable.stdout)")

            let readOnly = try await runTool(Self.nbdinfo, ["--json", uri(port, "snap")])
            #expect(readOnly.status == 0, "\(readOnly.output)")
            let readOnlyInfo = try firstExport(readOnly.stdout)
            #expect(readOnlyInfo["export-size"] as? Int == Self.sizeBytes, "\(readOnly.stdout)")
            #expect(readOnlyInfo["is_read_only"] as? Bool == true, "\(readOnly.stdout)")

            let plain = try await runTool(Self.nbdinfo, [uri(port, "disk")])
            #expect(plain.status == 0 && plain.stdout.contains("\(Self.sizeBytes)"), "\(plain.output)")

            let missing = try await runTool(Self.nbdinfo, [uri(port, "missing")])
            #expect(missing.status != 0, "\(missing.output)")
        }
    }

    @Test func nbdinfoListsExports() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            let result = try await runTool(Self.nbdinfo, ["--list", "nbd://127.0.0.1:\(port)"])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.stdout.contains("disk") && result.stdout.contains("snap"), "\(result.output)")
            #expect(result.stdout.contains("a read-only image"), "\(result.output)")
            let json = try await runTool(Self.nbdinfo, ["--list", "--json", "nbd://127.0.0.1:\(port)"])
            let list = try jsonObject(json.stdout)["exports"] as? [[String: Any]] ?? []
            #expect(list.compactMap { $0["export-name"] as? String } == ["disk", "snap"], "\(json.output)")
        }
    }

    @Test func qemuImgInfo() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            let result = try await runTool(Self.qemuImg, ["info", "--output=json", "-f", "raw", uri(port, "disk")])
            #expect(result.status == 0, "\(result.output)")
            #expect(try jsonObject(result.stdout)["virtual-size"] as? Int == Self.sizeBytes, "\(result.output)")
        }
    }

    @Test func nbdcopyRoundTrip() async throws {
        let exports = standardExports()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbd-copy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("source.img")
        let target = directory.appendingPathComponent("target.img")
        var generator = SeededRandom(seed: 42)
        var data = (0 ..< Self.sizeBytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        // Some zero runs, so nbdcopy may use write-zeroes too.
        data.replaceSubrange((1 << 20) ..< (2 << 20), with: repeatElement(0, count: 1 << 20))
        try Data(data).write(to: source)

        try await withServer(exports.entries) { port in
            let upload = try await runTool(Self.nbdcopy, ["--flush", source.path, uri(port, "disk")])
            #expect(upload.status == 0, "\(upload.output)")
            #expect(exports.writable.bytes == data)
            #expect(exports.writable.counters.flushes >= 1)

            let download = try await runTool(Self.nbdcopy, [uri(port, "disk"), target.path])
            #expect(download.status == 0, "\(download.output)")
        }
        #expect(try Data(contentsOf: target) == Data(data))
    }

    @Test func severalQemuClientsAtOnce() async throws {
        let exports = standardExports()
        try await withServer(exports.entries) { port in
            try await withThrowingTaskGroup(of: ToolResult.self) { group in
                for index in 0 ..< 4 {
                    group.addTask {
                        let value = String(format: "0x%02x", 0x21 + index)
                        return try await runTool(Self.qemuIO, [
                            "-f", "raw", uri(port, "disk"),
                            "-c", "write -P \(value) \(index)m 1m",
                            "-c", "read -P \(value) \(index)m 1m",
                        ])
                    }
                }
                for try await result in group {
                    #expect(result.status == 0 && !result.output.contains("fail"), "\(result.output)")
                }
            }
        }
        let bytes = exports.writable.bytes
        for index in 0 ..< 4 {
            #expect(bytes[(index << 20) ..< ((index + 1) << 20)].allSatisfy { $0 == UInt8(0x21 + index) })
        }
    }
}

/// nbdinfo --json describes the export under "exports": [ { ... } ].
private func firstExport(_ text: String) throws -> [String: Any] {
    (try jsonObject(text)["exports"] as? [[String: Any]])?.first ?? [:]
}

private func jsonObject(_ text: String) throws -> [String: Any] {
    let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
    return value as? [String: Any] ?? [:]
}
