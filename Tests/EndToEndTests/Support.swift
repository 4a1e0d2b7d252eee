import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The end-to-end rig: the real `snapbackd` and `snapback` binaries built next to the test bundle,
// each test with its own daemon, data directory and NBD port, and the real NBD clients
// (qemu-io, qemu-img, nbdinfo, nbdcopy). Every wait is asynchronous, so that parallel tests never
// hold the (two-thread) concurrency pool while a child process runs.

// MARK: - Failures of the rig itself

/// The rig could not do what a test asked (a binary missing, a daemon that never answered).
struct RigError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Executables

/// Where the built executables are.
enum Binaries {
    /// The build products directory: walks up from the test bundle (resolving symlinks) until a
    /// directory holds both `snapbackd` and `snapback`. `SNAPBACK_BIN_DIR` overrides the search.
    static let directory: String? = {
        let fileManager = FileManager.default
        func holdsBoth(_ directory: String) -> Bool {
            fileManager.isExecutableFile(atPath: directory + "/snapbackd") && fileManager.isExecutableFile(atPath: directory + "/snapback")
        }
        if let override = ProcessInfo.processInfo.environment["SNAPBACK_BIN_DIR"], holdsBoth(override) { return override }
        var candidates: [String] = []
        if let first = CommandLine.arguments.first { candidates.append(first) }
        if let executable = Bundle.main.executablePath { candidates.append(executable) }
        for candidate in candidates {
            var url = URL(fileURLWithPath: candidate, relativeTo: URL(fileURLWithPath: fileManager.currentDirectoryPath))
                .standardizedFileURL.resolvingSymlinksInPath()
            for _ in 0..<8 {
                if holdsBoth(url.path) { return url.path }
                let parent = url.deletingLastPathComponent().resolvingSymlinksInPath()
                if parent.path == url.path { break }
                url = parent
            }
        }
        return nil
    }()

    static func path(_ name: String) throws -> String {
        guard let directory else {
            throw RigError("cannot find snapbackd and snapback next to \(CommandLine.arguments.first ?? "the test bundle"); set SNAPBACK_BIN_DIR")
        }
        return directory + "/" + name
    }

    static let qemuIO = "/usr/bin/qemu-io"
    static let qemuImg = "/usr/bin/qemu-img"
    static let nbdinfo = "/usr/bin/nbdinfo"
    static let nbdcopy = "/usr/bin/nbdcopy"
}

// MARK: - Child processes

/// What a finished child process left: its exit code (128 + signal when killed) and its output.
struct ProcessOutput: Sendable, CustomStringConvertible {
    var exitCode: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(exitCode)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A unique scratch file name under the temporary directory.
func scratchPath(_ prefix: String) -> String {
    NSTemporaryDirectory() + "/" + prefix + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
}

/// A file handle open for appending, creating the file when needed.
func appendingHandle(_ path: String) throws -> FileHandle {
    if !FileManager.default.fileExists(atPath: path) {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw RigError("cannot create \(path)") }
    }
    guard let handle = FileHandle(forWritingAtPath: path) else { throw RigError("cannot open \(path)") }
    handle.seekToEndOfFile()
    return handle
}

/// Runs `executable` with `arguments` to completion (killed after `timeoutSeconds`) and returns
/// its exit code and output. Output goes through files, so a chatty child never blocks on a pipe.
func runProcess(
    _ executable: String, _ arguments: [String], environment extra: [String: String] = [:], timeoutSeconds: Double = 60
) async throws -> ProcessOutput {
    let outputPath = scratchPath("snapback-e2e-stdout")
    let errorPath = scratchPath("snapback-e2e-stderr")
    defer {
        unlink(outputPath)
        unlink(errorPath)
    }
    let outputHandle = try appendingHandle(outputPath)
    let errorHandle = try appendingHandle(errorPath)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment.merge(extra) { _, new in new }
    process.environment = environment
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = outputHandle
    process.standardError = errorHandle
    let box = ProcessBox(process)
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        process.terminationHandler = { _ in continuation.resume() }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: RigError("cannot run \(executable): \(error)"))
            return
        }
        // A watchdog: a hung child is killed, so a test fails instead of hanging the suite.
        DispatchQueue.global().asyncAfter(deadline: .now() + timeoutSeconds) {
            if box.process.isRunning { kill(box.process.processIdentifier, SIGKILL) }
        }
    } as Void
    try? outputHandle.close()
    try? errorHandle.close()
    let stdout = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    let stderr = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
    let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    return ProcessOutput(exitCode: status, stdout: stdout, stderr: stderr)
}

/// Lets a `Process` cross into a watchdog closure (it is only asked whether it runs, and its pid).
final class ProcessBox: @unchecked Sendable {
    let process: Process
    init(_ process: Process) { self.process = process }
}

// MARK: - Ports

/// A TCP port on 127.0.0.1 that nothing listens on now, chosen at random below the kernel's
/// ephemeral range (so client connections of parallel tests never take it).
func freePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000..<32000)
        if portIsBindable(port) { return port }
    }
    throw RigError("no free TCP port found")
}

func portIsBindable(_ port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = loopbackAddress(port)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return bound == 0
}

func loopbackAddress(_ port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr = in_addr(s_addr: UInt32(0x7F00_0001).bigEndian)
    return address
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
func portAccepts(_ port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = loopbackAddress(port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return connected == 0
}

// MARK: - The daemon

/// One `snapbackd` on its own temporary data directory and NBD port, and the clients that talk
/// to it. `cleanup()` (also run by `deinit`) kills the daemon and removes the directory.
final class Daemon: @unchecked Sendable {
    /// The data directory (LMDB log, volumes, control socket).
    let directory: String
    /// The NBD port on 127.0.0.1.
    private(set) var port: Int
    /// The control socket.
    var socketPath: String { directory + "/control.sock" }
    /// NBD's Unix socket (every test daemon serves NBD on it too, `--nbd-socket`).
    var nbdSocketPath: String { directory + "/nbd.sock" }
    /// Where the daemon's standard error goes (appended across restarts).
    var stderrPath: String { directory + "/snapbackd.stderr" }
    /// The loopback port of each extra TCP listener asked for (`--metrics`, `--http`: a bare port).
    private(set) var listenerPorts: [String: Int] = [:]
    /// More snapbackd options, given at every start.
    private var extraArguments: [String] = []

    private let lock = NSLock()
    private var process: Process?
    private var cleanedUp = false

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    /// Creates a data directory, picks free ports and starts a daemon that answers: NBD, and each
    /// of `listeners` (such as `--metrics`, `--http`) on a port of its own; `arguments` are more
    /// options. `prepare` runs on the new data directory before the daemon first starts.
    static func start(
        listeners: [String] = [], arguments: [String] = [], prepare: (String) throws -> Void = { _ in }
    ) async throws -> Daemon {
        let directory = NSTemporaryDirectory() + "/sbe2e-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let daemon = Daemon(directory: directory, port: try freePort())
        daemon.extraArguments = arguments
        func pickListenerPorts() throws {
            var taken: Set<Int> = [daemon.port]
            daemon.listenerPorts = [:]
            for flag in listeners {
                var port = try freePort()
                while taken.contains(port) { port = try freePort() }
                taken.insert(port)
                daemon.listenerPorts[flag] = port
            }
        }
        try pickListenerPorts()
        do {
            try prepare(directory)
        } catch {
            daemon.cleanup()
            throw error
        }
        var lastError: (any Error)?
        for _ in 0..<3 {
            do {
                try await daemon.launch()
                return daemon
            } catch {
                // Most likely another test took the port between the check and the bind.
                lastError = error
                await daemon.kill()
                daemon.port = try freePort()
                try pickListenerPorts()
            }
        }
        daemon.cleanup()
        throw lastError ?? RigError("snapbackd did not start")
    }

    /// Starts `snapbackd` on the directory and waits until its control socket and NBD port answer.
    private func launch() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Binaries.path("snapbackd"))
        process.arguments = ["--data-dir", directory, "--nbd", "127.0.0.1:\(port)", "--nbd-socket", nbdSocketPath]
            + listenerPorts.sorted { $0.key < $1.key }.flatMap { [$0.key, String($0.value)] } + extraArguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try appendingHandle(directory + "/snapbackd.stdout")
        process.standardError = try appendingHandle(stderrPath)
        try process.run()
        lock.withLock { self.process = process }
        try await waitUntilServing(process)
    }

    private func waitUntilServing(_ process: Process) async throws {
        // Generous: a loaded 2-core CI machine can take many seconds to start a process.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            guard process.isRunning else {
                throw RigError("snapbackd exited with \(process.terminationStatus) at start-up: \(stderrTail())")
            }
            if FileManager.default.fileExists(atPath: socketPath), portAccepts(port), listenerPorts.values.allSatisfy(portAccepts),
                let answer = try? await snapback("lsvolume"), answer.exitCode == 0
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RigError("snapbackd did not answer on \(socketPath) and port \(port) within 60 s: \(stderrTail())")
    }

    /// The daemon's process id, while it runs.
    var pid: Int32? { lock.withLock { process.flatMap { $0.isRunning ? $0.processIdentifier : nil } } }

    /// True while the daemon process runs.
    var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// Sends `signal` and waits (without blocking a thread) until the process is gone.
    private func signalAndWait(_ signal: Int32, timeoutSeconds: Double) async -> Int32? {
        guard let process = lock.withLock({ self.process }) else { return nil }
        if process.isRunning { Glibc.kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning, Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        lock.withLock { self.process = nil }
        return process.terminationStatus
    }

    /// Graceful stop: SIGTERM, then wait (SIGKILL after 15 s). Returns the exit status.
    @discardableResult
    func stop() async -> Int32? { await signalAndWait(SIGTERM, timeoutSeconds: 15) }

    /// A crash: SIGKILL, then wait.
    func kill() async { _ = await signalAndWait(SIGKILL, timeoutSeconds: 10) }

    /// Starts the daemon again on the same directory and port (after `stop()` or `kill()`).
    func restart() async throws {
        if isRunning { await stop() }
        try await launch()
    }

    /// Kills the daemon if it runs and removes the data directory (kept when
    /// `SNAPBACK_E2E_KEEP` is set, for a post-mortem).
    func cleanup() {
        let process: Process? = lock.withLock {
            defer { cleanedUp = true }
            return cleanedUp ? nil : self.process
        }
        if let process, process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // File systems a test mounted on the log's directory (`StorageFullTests`) or for
        // volumes (`OutOfSpaceTests`).
        for mounted in ["log", "vols"] where Glibc.umount(directory + "/" + mounted) != 0 && errno != EINVAL && errno != ENOENT {
            FileHandle.standardError.write(Data("cannot unmount \(directory)/\(mounted): \(String(cString: strerror(errno)))\n".utf8))
        }
        if ProcessInfo.processInfo.environment["SNAPBACK_E2E_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    deinit { cleanup() }

    /// The last lines the daemon wrote to standard error.
    func stderrTail(_ lines: Int = 15) -> String {
        let text = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    // MARK: Clients

    /// Runs `snapback ARGUMENTS` against this daemon (found through `SNAPBACK_SOCKET`).
    func snapback(_ arguments: [String]) async throws -> ProcessOutput {
        try await runProcess(try Binaries.path("snapback"), arguments, environment: ["SNAPBACK_SOCKET": socketPath])
    }

    func snapback(_ arguments: String...) async throws -> ProcessOutput { try await snapback(arguments) }

    /// `run` as the brief names it.
    func run(_ arguments: [String]) async throws -> (exitCode: Int32, stdout: String, stderr: String) {
        let output = try await snapback(arguments)
        return (output.exitCode, output.stdout, output.stderr)
    }

    /// Runs `snapback ARGUMENTS`, expecting exit 0; records an issue with the output otherwise.
    @discardableResult
    func ok(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessOutput {
        try await snapbackOK(arguments, sourceLocation)
    }

    /// ``ok(_:sourceLocation:)`` with the arguments as an array.
    @discardableResult
    func snapbackOK(_ arguments: [String], _ sourceLocation: SourceLocation) async throws -> ProcessOutput {
        let output = try await snapback(arguments)
        #expect(output.exitCode == 0, "snapback \(arguments.joined(separator: " ")): \(output)", sourceLocation: sourceLocation)
        return output
    }

    /// Volumes `src` and `tgt` of `size` (such as `4m`) and map `m0` between them (not started),
    /// autorestore on and copy rate 0 unless told otherwise. `sourcePath` backs `src` with a
    /// file of the test's (`mkvolume -path`, with `-adopt` when the file exists).
    func makeSourceTargetMap(
        size: String, sourcePath: String? = nil, autorestore: String = "on", copyRate: Int = 0, grainSize: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        // A file the test made is adopted (`-adopt`); a path that does not exist is created.
        let adopt = sourcePath.map { FileManager.default.fileExists(atPath: $0) } ?? false
        try await snapbackOK(
            ["mkvolume", "-name", "src", "-size", size] + (sourcePath.map { ["-path", $0] } ?? []) + (adopt ? ["-adopt"] : []), sourceLocation)
        try await snapbackOK(["mkvolume", "-name", "tgt", "-size", size], sourceLocation)
        try await snapbackOK(
            ["mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", autorestore, "-copyrate", String(copyRate)]
                + (grainSize.map { ["-grainsize", $0] } ?? []), sourceLocation)
    }

    /// Runs `snapback log SUBCOMMAND -data-dir DIR ARGUMENTS` (the audit CLI, read-only).
    func log(_ subcommand: String, _ arguments: String...) async throws -> ProcessOutput {
        try await snapback(["log", subcommand, "-data-dir", directory] + arguments)
    }

    /// The `nbd://` URI of an export.
    func uri(_ export: String) -> String { "nbd://127.0.0.1:\(port)/\(export)" }

    /// Runs qemu-io on an export with the given commands (`-c` each).
    func qemuIO(_ export: String, readOnly: Bool = false, _ commands: [String]) async throws -> ProcessOutput {
        var arguments = ["-f", "raw"]
        if readOnly { arguments.append("-r") }
        arguments.append(uri(export))
        for command in commands { arguments += ["-c", command] }
        return try await runProcess(Binaries.qemuIO, arguments)
    }

    /// Writes `byte` over `length` bytes at `offset` of an export with qemu-io (`write -P`).
    @discardableResult
    func write(_ export: String, byte: UInt8, offset: UInt64 = 0, length: UInt64, sourceLocation: SourceLocation = #_sourceLocation)
        async throws -> ProcessOutput
    {
        let output = try await qemuIO(export, ["write -P \(byte) \(offset) \(length)"])
        #expect(output.exitCode == 0 && output.stdout.contains("wrote \(length)/\(length)"), "qemu-io write on \(export): \(output)", sourceLocation: sourceLocation)
        return output
    }

    /// True when every byte of `length` at `offset` of the export, read with qemu-io `read -P`,
    /// equals `byte`.
    func holds(_ export: String, byte: UInt8, offset: UInt64 = 0, length: UInt64) async throws -> Bool {
        let output = try await qemuIO(export, readOnly: true, ["read -P \(byte) \(offset) \(length)"])
        return output.exitCode == 0 && !output.stdout.contains("verification failed") && output.stdout.contains("read \(length)/\(length)")
    }

    /// Several `holds` checks in one qemu-io run: each `(byte, offset, length)` must match.
    func holds(_ export: String, _ ranges: [(byte: UInt8, offset: UInt64, length: UInt64)]) async throws -> ProcessOutput {
        try await qemuIO(export, readOnly: true, ranges.map { "read -P \($0.byte) \($0.offset) \($0.length)" })
    }

    // MARK: Typed views

    /// `lsvolume -json VOLUME`.
    func volume(_ name: String) async throws -> VolumeRow {
        let output = try await snapback("lsvolume", "-json", name)
        guard output.exitCode == 0 else { throw RigError("lsvolume \(name): \(output)") }
        let rows = try JSONDecoder().decode([VolumeRow].self, from: Data(output.stdout.utf8))
        guard let row = rows.first else { throw RigError("lsvolume \(name) printed no row") }
        return row
    }

    /// `lslcmap -json MAP`.
    func map(_ name: String) async throws -> MapRow {
        let output = try await snapback("lslcmap", "-json", name)
        guard output.exitCode == 0 else { throw RigError("lslcmap \(name): \(output)") }
        let rows = try JSONDecoder().decode([MapRow].self, from: Data(output.stdout.utf8))
        guard let row = rows.first else { throw RigError("lslcmap \(name) printed no row") }
        return row
    }

    /// `lslcmap -json` (every map).
    func maps() async throws -> [MapRow] {
        let output = try await snapback("lslcmap", "-json")
        guard output.exitCode == 0 else { throw RigError("lslcmap: \(output)") }
        return try JSONDecoder().decode([MapRow].self, from: Data(output.stdout.utf8))
    }

    /// The events of `log show -json`, one dictionary per event (values as JSON gives them).
    /// Polls `lslcmap MAP` until no rollback runs (at most `timeoutSeconds`).
    func waitUntilNoRollback(_ map: String, timeoutSeconds: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            let output = try await snapback(["lslcmap", "-json", map])
            if output.exitCode == 0, let rows = try? JSONDecoder().decode([MapRow].self, from: Data(output.stdout.utf8)), rows.first?.restoring == "no" {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RigError("the rollback of \(map) did not end within \(timeoutSeconds) s")
    }

    func events() async throws -> [LoggedEvent] {
        let output = try await log("show", "-json")
        guard output.exitCode == 0 else { throw RigError("log show: \(output)") }
        return try output.stdout.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw RigError("log show printed a line that is not a JSON object: \(line)")
            }
            return LoggedEvent(object)
        }
    }

    /// `log stats -json`'s record count.
    func recordCount() async throws -> Int {
        let output = try await log("stats", "-json")
        guard output.exitCode == 0,
            let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any],
            let records = object["records"] as? Int
        else { throw RigError("log stats: \(output)") }
        return records
    }

    /// Polls `lslcmap MAP` until no rollback runs (at most `timeoutSeconds`).
    func waitForRollbackEnd(_ map: String, timeoutSeconds: Double = 30) async throws -> MapRow {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            let row = try await self.map(map)
            if row.restoring == "no" || Date() >= deadline { return row }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Runs `body` with a fresh daemon and always cleans it up.
func withDaemon<T>(prepare: (String) throws -> Void = { _ in }, _ body: (Daemon) async throws -> T) async throws -> T {
    let daemon = try await Daemon.start(prepare: prepare)
    defer { daemon.cleanup() }
    return try await body(daemon)
}

// MARK: - Log events

/// One event of `snapback log show -json`: its type, sequence number and fields.
struct LoggedEvent: Sendable, CustomStringConvertible {
    var type: String
    var sequence: Int
    /// Every field as text (numbers in decimal).
    var fields: [String: String]

    init(_ object: [String: Any]) {
        type = object["type"] as? String ?? ""
        sequence = object["seq"] as? Int ?? -1
        var fields: [String: String] = [:]
        for (key, value) in object { fields[key] = "\(value)" }
        self.fields = fields
    }

    subscript(_ field: String) -> String? { fields[field] }

    var description: String { "\(sequence) \(type) \(fields.filter { !["seq", "type", "time", "timestampMilliseconds"].contains($0.key) })" }
}

extension Array where Element == LoggedEvent {
    func of(_ type: String) -> [LoggedEvent] { filter { $0.type == type } }
}

// MARK: - Bytes on disk

/// Writes a file of `sizeBytes` bytes filled with `byte` (a pre-filled backing store).
func writeFilledFile(_ path: String, sizeBytes: Int, byte: UInt8) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
        throw RigError("cannot create \(path)")
    }
    defer { try? handle.close() }
    let chunk = Data(repeating: byte, count: 1 << 20)
    var written = 0
    while written < sizeBytes {
        let count = Swift.min(chunk.count, sizeBytes - written)
        try handle.write(contentsOf: chunk.prefix(count))
        written += count
    }
}

/// The offset of the first byte of the file in `offset..<offset+length` (to the end when
/// `length` is nil) that is not `byte`, or `nil` when all are.
func firstMismatch(_ path: String, byte: UInt8, offset start: UInt64 = 0, length: UInt64? = nil) throws -> UInt64? {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw RigError("cannot open \(path)") }
    defer { try? handle.close() }
    try handle.seek(toOffset: start)
    // memcmp against a reference chunk: a byte-by-byte Swift loop is far too slow in a debug build.
    let chunkBytes = 1 << 20
    let reference = [UInt8](repeating: byte, count: chunkBytes)
    var offset = start
    let end = length.map { start + $0 } ?? .max
    while offset < end {
        let wanted = Int(Swift.min(UInt64(chunkBytes), end - offset))
        guard let chunk = try handle.read(upToCount: wanted), !chunk.isEmpty else { break }
        let equal = chunk.withUnsafeBytes { bytes in reference.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 } }
        if !equal, let index = chunk.firstIndex(where: { $0 != byte }) { return offset + UInt64(index - chunk.startIndex) }
        offset += UInt64(chunk.count)
    }
    if let length, offset < start + length { throw RigError("\(path) ends at \(offset), before \(start + length)") }
    return nil
}

/// One byte of a file, read with pread.
func readByte(_ path: String, at offset: UInt64) throws -> UInt8 {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw RigError("cannot open \(path)") }
    defer { close(descriptor) }
    var value: UInt8 = 0
    guard pread(descriptor, &value, 1, off_t(offset)) == 1 else { throw RigError("cannot read \(path) at \(offset)") }
    return value
}

/// Polls one byte of a file on its own thread (every 200 µs) and runs `action` on that thread
/// the moment the byte equals `byte`: a way to act at a precise point of a rollback (which
/// restores grains in ascending order) without the latency of spawning a process.
final class ByteWatcher: @unchecked Sendable {
    let path: String
    let offset: UInt64
    let byte: UInt8
    let action: @Sendable () -> Void
    private let lock = NSLock()
    private var fired: Bool?
    private var stopRequested = false

    init(path: String, offset: UInt64, byte: UInt8, action: @escaping @Sendable () -> Void) {
        self.path = path
        self.offset = offset
        self.byte = byte
        self.action = action
    }

    func start() {
        let thread = Thread { [self] in
            let deadline = Date().addingTimeInterval(30)
            var outcome = false
            while Date() < deadline, !lock.withLock({ stopRequested }) {
                if (try? readByte(path, at: offset)) == byte {
                    action()
                    outcome = true
                    break
                }
                usleep(200)
            }
            lock.withLock { fired = outcome }
        }
        thread.start()
    }

    /// Waits until the watcher fired (true) or gave up (false).
    func result(timeoutSeconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if let fired = lock.withLock({ fired }) { return fired }
            try? await Task.sleep(for: .milliseconds(5))
        }
        lock.withLock { stopRequested = true }
        return false
    }
}

/// A response read by ``rawHTTPRequest``: the status line, the headers (lowercased names) and the
/// body.
struct RawHTTPResponse {
    var status: String
    var headers: [String: String]
    var body: String
}

/// Where ``rawHTTPRequest`` connects: 127.0.0.1 on a TCP port, or a Unix socket.
enum RawHTTPPeer {
    case loopback(port: Int)
    case unixSocket(String)
}

/// One blocking HTTP/1.1 request (`Connection: close`), straight from the test process, without
/// the CLI: for a step that must happen within a millisecond, or for a peer the CLI does not
/// speak to (the metrics and status listeners). A `body`, or any method but GET, is sent as JSON.
func rawHTTPRequest(_ peer: RawHTTPPeer, _ method: String, _ path: String, host: String, body: String = "") throws -> RawHTTPResponse {
    let descriptor: Int32
    let connected: Int32
    switch peer {
    case .loopback(let port):
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RigError("socket: \(String(cString: strerror(errno)))") }
        var address = loopbackAddress(port)
        connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    case .unixSocket(let socketPath):
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RigError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(descriptor)
            throw RigError("socket path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
    defer { close(descriptor) }
    guard connected == 0 else { throw RigError("connect to \(peer): \(String(cString: strerror(errno)))") }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
    if !body.isEmpty || method != "GET" { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
    let request = Array((head + "\r\n" + body).utf8)
    var sent = 0
    while sent < request.count {
        let count = request[sent...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard count > 0 else { throw RigError("send: \(String(cString: strerror(errno)))") }
        sent += count
    }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if count < 0, errno == EINTR { continue }
        if count <= 0 { break }
        response += chunk[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    let lines = parts.first?.components(separatedBy: "\r\n") ?? []
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return RawHTTPResponse(status: lines.first ?? "", headers: headers, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// One blocking HTTP/1.1 request on the control socket (``rawHTTPRequest``): the status line
/// and the body.
func controlRequest(_ socketPath: String, _ method: String, _ path: String, json: String) throws -> (status: String, body: String) {
    let response = try rawHTTPRequest(.unixSocket(socketPath), method, path, host: "snapbackd", body: json)
    return (response.status, response.body)
}

/// Sizes.
let mebibyte: UInt64 = 1 << 20
let kibibyte: UInt64 = 1 << 10

/// Runs `executable` with `arguments`, waits, and returns its exit status (for set-up steps
/// such as `mount`, before any daemon runs).
func runProcessSync(_ executable: String, _ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// Mounts a tmpfs of `size` (such as `16m`) on `path`, made if missing; unmounted by the
/// daemon's cleanup (`DIR/log` and `DIR/vols`). Needs root.
func mountTmpfs(_ path: String, size: String) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    let mounted = try runProcessSync("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path])
    guard mounted == 0 else { throw RigError("mount -t tmpfs on \(path) failed (exit \(mounted)); this test needs root") }
}
