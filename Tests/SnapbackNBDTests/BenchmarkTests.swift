import Foundation
import SnapbackNBD
import Testing

#if canImport(Glibc)
import Glibc
import SnapbackRandom
#endif

/// A file-backed export (pread/pwrite/fdatasync), for throughput comparisons with `nbdkit file`.
final class FileExport: NBDExport, @unchecked Sendable {
    let sizeBytes: UInt64
    let readOnly = false
    private let descriptor: Int32

    init(path: String, sizeBytes: UInt64) throws {
        descriptor = open(path, O_RDWR | O_CREAT, 0o600)
        guard descriptor >= 0 else { throw NBDIOError.io }
        guard ftruncate(descriptor, off_t(sizeBytes)) == 0 else { throw NBDIOError.io }
        self.sizeBytes = sizeBytes
    }

    deinit { _ = close(descriptor) }

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {
        guard pread(descriptor, buffer.baseAddress, buffer.count, off_t(offset)) == buffer.count else { throw .io }
    }

    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) {
        guard pwrite(descriptor, buffer.baseAddress, buffer.count, off_t(offset)) == buffer.count else { throw .io }
        if fua { try flush() }
    }

    /// Like nbdkit's worker threads: a plain write is made where it was received.
    func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        pwrite(descriptor, buffer.baseAddress, buffer.count, off_t(offset)) == buffer.count
    }

    func flush() throws(NBDIOError) {
        guard fdatasync(descriptor) == 0 else { throw .io }
    }

    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {}

    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        let zeroes = [UInt8](repeating: 0, count: Int(length))
        guard zeroes.withUnsafeBytes({ pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }) == zeroes.count else { throw .io }
        if fua { try flush() }
    }
}

private struct FileProvider: NBDExportProvider {
    let export: FileExport
    func exportNames() -> [(name: String, description: String)] { [("file", "")] }
    func export(named name: String) -> (any NBDExport)? { name == "file" ? export : nil }
}

/// Throughput of nbdcopy into this server and into `nbdkit file` on the same kind of file.
/// Off by default (it takes a while and measures the machine): run with NBD_BENCH=1.
@Suite("NBD throughput (NBD_BENCH=1)", .enabled(if: ProcessInfo.processInfo.environment["NBD_BENCH"] == "1"))
struct BenchmarkTests {
    @Test func nbdcopyThroughputAgainstNbdkit() async throws {
        let sizeBytes: UInt64 = 512 << 20
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbd-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("source.img").path
        var generator = SeededRandom(seed: 7)
        let chunk = Data((0 ..< (1 << 20)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        _ = FileManager.default.createFile(atPath: source, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: source))
        for _ in 0 ..< Int(sizeBytes >> 20) { handle.write(chunk) }
        try handle.close()

        func copy(to uri: String) async throws -> Double {
            try await nbdcopy(["--flush", source, uri])
        }
        func copy(from uri: String) async throws -> Double {
            try await nbdcopy([uri, "null:"])
        }
        func nbdcopy(_ arguments: [String]) async throws -> Double {
            let start = Date()
            let result = try await runTool("/usr/bin/nbdcopy", arguments, timeoutSeconds: 300)
            #expect(result.status == 0, "\(result.output)")
            return Double(sizeBytes) / Date().timeIntervalSince(start) / 1e6
        }

        let ours = directory.appendingPathComponent("ours.img").path
        let server = NBDServer(provider: FileProvider(export: try FileExport(path: ours, sizeBytes: sizeBytes)), port: 0)
        let port = try await server.start()
        let oursMBps = try await copy(to: "nbd://127.0.0.1:\(port)/file")
        let oursSecondMBps = try await copy(to: "nbd://127.0.0.1:\(port)/file")
        let oursReadMBps = try await copy(from: "nbd://127.0.0.1:\(port)/file")
        try await server.stop()

        let theirs = directory.appendingPathComponent("theirs.img").path
        _ = FileManager.default.createFile(atPath: theirs, contents: nil)
        try FileHandle(forWritingTo: URL(fileURLWithPath: theirs)).truncate(atOffset: sizeBytes)
        let nbdkitPort = port + 1
        let nbdkit = Process()
        nbdkit.executableURL = URL(fileURLWithPath: "/usr/bin/nbdkit")
        nbdkit.arguments = ["-f", "-i", "127.0.0.1", "-p", "\(nbdkitPort)", "file", "file=\(theirs)"]
        nbdkit.standardInput = FileHandle.nullDevice
        nbdkit.standardOutput = FileHandle.nullDevice
        nbdkit.standardError = FileHandle.nullDevice
        try nbdkit.run()
        defer {
            kill(nbdkit.processIdentifier, SIGKILL)
            nbdkit.waitUntilExit()
        }
        try await Task.sleep(for: .milliseconds(500))
        let theirsMBps = try await copy(to: "nbd://127.0.0.1:\(nbdkitPort)/")
        let theirsSecondMBps = try await copy(to: "nbd://127.0.0.1:\(nbdkitPort)/")
        let theirsReadMBps = try await copy(from: "nbd://127.0.0.1:\(nbdkitPort)/")
        print("nbdcopy write MB/s: snapback \(Int(oursMBps)) / \(Int(oursSecondMBps)), nbdkit file \(Int(theirsMBps)) / \(Int(theirsSecondMBps))")
        print("nbdcopy read MB/s: snapback \(Int(oursReadMBps)), nbdkit file \(Int(theirsReadMBps))")
    }
}
