import Foundation
import SnapbackNBD
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Export test doubles

/// An in-memory export: `[UInt8]` storage behind a lock, with call counters so tests can see
/// which requests reached it. `readOnly` makes the read-only variant; `failure` makes every call
/// throw (the faulted variant); `immediate` makes it take writes without FUA on the event loop
/// (`writeImmediately`), as snapbackd's volumes do.
final class MemoryExport: NBDExport, @unchecked Sendable {
    let sizeBytes: UInt64
    let readOnly: Bool

    struct Counters: Equatable {
        var reads = 0
        var writes = 0
        var fuaCalls = 0
        var flushes = 0
        var trims = 0
        var writeZeroes = 0
        var immediateWrites = 0
    }

    private let lock = NSLock()
    private var storage: [UInt8]
    private var failureValue: NBDIOError?
    private var countersValue = Counters()

    let immediate: Bool

    init(sizeBytes: Int, readOnly: Bool = false, failure: NBDIOError? = nil, immediate: Bool = false, fill: ((Int) -> UInt8)? = nil) {
        self.sizeBytes = UInt64(sizeBytes)
        self.readOnly = readOnly
        self.immediate = immediate
        var storage = [UInt8](repeating: 0, count: sizeBytes)
        if let fill {
            storage.withUnsafeMutableBufferPointer { buffer in
                for index in buffer.indices { buffer[index] = fill(index) }
            }
        }
        self.storage = storage
        self.failureValue = failure
    }

    /// A copy of the whole storage.
    var bytes: [UInt8] { lock.withLock { storage } }
    var counters: Counters { lock.withLock { countersValue } }
    var failure: NBDIOError? {
        get { lock.withLock { failureValue } }
        set { lock.withLock { failureValue = newValue } }
    }

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {
        try locked { () throws(NBDIOError) in
            countersValue.reads += 1
            if let failureValue { throw failureValue }
            let range = try range(offset, UInt64(buffer.count))
            storage.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[range]))
            }
        }
    }

    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) {
        try locked { () throws(NBDIOError) in
            countersValue.writes += 1
            if fua { countersValue.fuaCalls += 1 }
            if let failureValue { throw failureValue }
            if readOnly { throw .permission }
            let range = try range(offset, UInt64(buffer.count))
            storage.withUnsafeMutableBytes { target in
                UnsafeMutableRawBufferPointer(rebasing: target[range]).copyMemory(from: buffer)
            }
        }
    }

    func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard immediate else { return false }
        return lock.withLock {
            guard failureValue == nil, !readOnly, offset <= sizeBytes, UInt64(buffer.count) <= sizeBytes - offset else { return false }
            countersValue.immediateWrites += 1
            storage.withUnsafeMutableBytes { target in
                UnsafeMutableRawBufferPointer(rebasing: target[Int(offset)..<Int(offset) + buffer.count]).copyMemory(from: buffer)
            }
            return true
        }
    }

    func flush() throws(NBDIOError) {
        try locked { () throws(NBDIOError) in
            countersValue.flushes += 1
            if let failureValue { throw failureValue }
        }
    }

    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        try zero(offset: offset, length: length, fua: fua, counting: \.trims)
    }

    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        try zero(offset: offset, length: length, fua: fua, counting: \.writeZeroes)
    }

    private func zero(offset: UInt64, length: UInt32, fua: Bool, counting counter: WritableKeyPath<Counters, Int>) throws(NBDIOError) {
        try locked { () throws(NBDIOError) in
            countersValue[keyPath: counter] += 1
            if fua { countersValue.fuaCalls += 1 }
            if let failureValue { throw failureValue }
            if readOnly { throw .permission }
            let range = try range(offset, UInt64(length))
            storage.withUnsafeMutableBytes { target in
                _ = memset(target.baseAddress!.advanced(by: range.lowerBound), 0, range.count)
            }
        }
    }

    private func locked<T>(_ body: () throws(NBDIOError) -> T) throws(NBDIOError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// The server must never ask for a range outside the export: trap loudly if it does.
    private func range(_ offset: UInt64, _ length: UInt64) throws(NBDIOError) -> Range<Int> {
        guard offset <= sizeBytes, length <= sizeBytes - offset else {
            Issue.record("export called with an out-of-range request: offset \(offset) length \(length)")
            throw .invalid
        }
        return Int(offset) ..< Int(offset + length)
    }
}

/// A fixed set of named exports.
struct TestProvider: NBDExportProvider {
    let entries: [(name: String, export: MemoryExport, description: String)]

    func exportNames() -> [(name: String, description: String)] {
        entries.map { ($0.name, $0.description) }
    }

    func export(named name: String) -> (any NBDExport)? {
        entries.first { $0.name == name }?.export
    }
}

/// A deterministic byte pattern (so a shifted or stale read cannot pass).
func pattern(_ index: Int, seed: UInt8 = 0) -> UInt8 {
    UInt8(truncatingIfNeeded: index &* 31 &+ index >> 8 &+ Int(seed))
}

// MARK: - Running a server

/// Starts a server on 127.0.0.1, port 0, runs `body` with the bound port, then stops it.
func withServer<T>(
    _ entries: [(name: String, export: MemoryExport, description: String)],
    _ body: (Int) async throws -> T
) async throws -> T {
    let server = NBDServer(provider: TestProvider(entries: entries), host: "127.0.0.1", port: 0, logger: nil, ioThreadCount: 4)
    let port = try await server.start()
    do {
        let result = try await body(port)
        try await server.stop()
        return result
    } catch {
        try? await server.stop()
        throw error
    }
}

// MARK: - Client-side encoding (what a client sends)

extension Array where Element == UInt8 {
    mutating func appendBE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

func bigEndian<T: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, as type: T.Type = T.self) -> T {
    precondition(bytes.count == MemoryLayout<T>.size)
    return bytes.reduce(T(0)) { $0 << 8 | T($1) }
}

func optionBytes(_ option: UInt32, data: [UInt8] = [], magic: UInt64 = NBDMagic.option, lengthBytes: UInt32? = nil) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendBE(magic)
    bytes.appendBE(option)
    bytes.appendBE(lengthBytes ?? UInt32(data.count))
    bytes += data
    return bytes
}

func infoRequestData(name: String, infoTypes: [UInt16] = []) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendBE(UInt32(name.utf8.count))
    bytes += Array(name.utf8)
    bytes.appendBE(UInt16(infoTypes.count))
    for type in infoTypes { bytes.appendBE(type) }
    return bytes
}

func requestBytes(
    _ command: NBDCommand,
    flags: NBDCommandFlags = [],
    cookie: UInt64,
    offset: UInt64,
    lengthBytes: UInt32,
    magic: UInt32 = NBDMagic.request
) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendBE(magic)
    bytes.appendBE(flags.rawValue)
    bytes.appendBE(command.rawValue)
    bytes.appendBE(cookie)
    bytes.appendBE(offset)
    bytes.appendBE(lengthBytes)
    return bytes
}

// MARK: - A raw blocking socket client

enum RawClientError: Error, Equatable {
    case connectFailed(Int32)
    case closedByPeer
    case timedOut
    case failed(Int32)
    case protocolError(String)
}

/// A minimal blocking NBD client on a plain TCP socket, for sending exactly the bytes a test wants
/// (malformed ones included). Every receive times out after a few seconds.
final class RawNBDClient: @unchecked Sendable {
    private let descriptor: Int32

    init(port: Int, timeoutSeconds: Int = 5) throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw RawClientError.failed(errno) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            _ = close(fd)
            throw RawClientError.connectFailed(code)
        }
        descriptor = fd
    }

    deinit { _ = close(descriptor) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw errno == EPIPE || errno == ECONNRESET ? RawClientError.closedByPeer : RawClientError.failed(errno)
            }
            sent += count
        }
    }

    func receive(exactly count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let result = bytes[received...].withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if result == 0 { throw RawClientError.closedByPeer }
            if result < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw RawClientError.timedOut }
                if errno == ECONNRESET { throw RawClientError.closedByPeer }
                throw RawClientError.failed(errno)
            }
            received += result
        }
        return bytes
    }

    /// True when the server closes the connection (EOF or reset) before sending anything more.
    func waitForClose() -> Bool {
        var byte: UInt8 = 0
        while true {
            let result = recv(descriptor, &byte, 1, 0)
            if result == 0 { return true }
            if result < 0 {
                if errno == EINTR { continue }
                return errno == ECONNRESET
            }
            return false  // unexpected data
        }
    }

    // MARK: Protocol helpers

    /// Reads the greeting, checks it, and answers with `clientFlags`.
    func handshake(clientFlags: UInt32 = 0b11) throws {
        let greeting = try receive(exactly: 18)
        guard bigEndian(greeting[0 ..< 8], as: UInt64.self) == NBDMagic.greeting,
              bigEndian(greeting[8 ..< 16], as: UInt64.self) == NBDMagic.option
        else { throw RawClientError.protocolError("bad greeting") }
        var flags: [UInt8] = []
        flags.appendBE(clientFlags)
        try send(flags)
    }

    struct OptionReply: Equatable {
        var option: UInt32
        var type: UInt32
        var data: [UInt8]
    }

    func readOptionReply() throws -> OptionReply {
        let header = try receive(exactly: 20)
        guard bigEndian(header[0 ..< 8], as: UInt64.self) == NBDMagic.optionReply else {
            throw RawClientError.protocolError("bad option reply magic")
        }
        let length = Int(bigEndian(header[16 ..< 20], as: UInt32.self))
        return OptionReply(
            option: bigEndian(header[8 ..< 12]),
            type: bigEndian(header[12 ..< 16]),
            data: try receive(exactly: length)
        )
    }

    /// Sends an option and collects replies up to and including the first non-INFO/SERVER one.
    func option(_ option: UInt32, data: [UInt8] = []) throws -> [OptionReply] {
        try send(optionBytes(option, data: data))
        var replies: [OptionReply] = []
        while true {
            let reply = try readOptionReply()
            replies.append(reply)
            if reply.type != NBDOptionReplyType.info.rawValue, reply.type != NBDOptionReplyType.server.rawValue {
                return replies
            }
        }
    }

    /// Handshake plus NBD_OPT_GO on `name`: returns the export size and transmission flags.
    @discardableResult
    func connect(to name: String) throws -> (sizeBytes: UInt64, flags: UInt16) {
        try handshake()
        let replies = try option(NBDOption.go.rawValue, data: infoRequestData(name: name))
        guard let last = replies.last, last.type == NBDOptionReplyType.ack.rawValue,
              let export = replies.first(where: { $0.type == NBDOptionReplyType.info.rawValue && $0.data.prefix(2) == [0, 0] })
        else { throw RawClientError.protocolError("NBD_OPT_GO failed: \(replies)") }
        return (bigEndian(export.data[2 ..< 10]), bigEndian(export.data[10 ..< 12]))
    }

    struct SimpleReply: Equatable {
        var error: UInt32
        var cookie: UInt64
        var data: [UInt8]
    }

    /// Reads a simple reply; `dataLengthBytes` bytes follow it when it reports success.
    func readSimpleReply(dataLengthBytes: Int = 0) throws -> SimpleReply {
        let header = try receive(exactly: 16)
        guard bigEndian(header[0 ..< 4], as: UInt32.self) == NBDMagic.simpleReply else {
            throw RawClientError.protocolError("bad simple reply magic")
        }
        let error: UInt32 = bigEndian(header[4 ..< 8])
        let data = error == 0 && dataLengthBytes > 0 ? try receive(exactly: dataLengthBytes) : []
        return SimpleReply(error: error, cookie: bigEndian(header[8 ..< 16]), data: data)
    }

    /// Sends one request (with `payload` after it) and reads its simple reply.
    func request(
        _ command: NBDCommand,
        flags: NBDCommandFlags = [],
        cookie: UInt64,
        offset: UInt64,
        lengthBytes: UInt32,
        payload: [UInt8] = [],
        replyDataBytes: Int = 0
    ) throws -> SimpleReply {
        try send(requestBytes(command, flags: flags, cookie: cookie, offset: offset, lengthBytes: lengthBytes) + payload)
        return try readSimpleReply(dataLengthBytes: replyDataBytes)
    }
}

/// Runs a blocking call (a socket receive, a semaphore wait) on a dispatch thread, so that it
/// cannot starve the cooperative pool that the code under test may need meanwhile.
func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result(catching: body)) }
    }
}

/// `offCooperativePool` for a call that cannot throw.
func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

// MARK: - Running external tools

struct ToolResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout + stderr }
}

/// Runs a program to completion without blocking a cooperative thread; kills it after
/// `timeoutSeconds`.
func runTool(_ path: String, _ arguments: [String], timeoutSeconds: Double = 30) async throws -> ToolResult {
    let directory = FileManager.default.temporaryDirectory
    let stdoutURL = directory.appendingPathComponent("nbd-tool-\(UUID().uuidString).out")
    let stderrURL = directory.appendingPathComponent("nbd-tool-\(UUID().uuidString).err")
    _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    let stdoutHandle = try FileHandle(forWritingTo: stdoutURL)
    let stderrHandle = try FileHandle(forWritingTo: stderrURL)
    process.standardOutput = stdoutHandle
    process.standardError = stderrHandle

    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { finished in
            continuation.resume(returning: finished.terminationStatus)
        }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
            return
        }
        let deadline = DispatchTime.now() + timeoutSeconds
        DispatchQueue.global().asyncAfter(deadline: deadline) { [process] in
            if process.isRunning { process.terminate() }
        }
    }
    try? stdoutHandle.close()
    try? stderrHandle.close()
    return ToolResult(
        status: status,
        stdout: (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? ""
    )
}

// MARK: - Typed-throws buffer access

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws `NBDIOError` (the standard one rethrows `any Error`).
    func withBytes(_ body: (UnsafeRawBufferPointer) throws(NBDIOError) -> Void) throws(NBDIOError) {
        var failure: NBDIOError?
        withUnsafeBytes { bytes in
            do throws(NBDIOError) { try body(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// `withUnsafeMutableBytes` for a body that throws `NBDIOError`.
    mutating func withMutableBytes(_ body: (UnsafeMutableRawBufferPointer) throws(NBDIOError) -> Void) throws(NBDIOError) {
        var failure: NBDIOError?
        withUnsafeMutableBytes { bytes in
            do throws(NBDIOError) { try body(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

/// The option reply types in a negotiation step's bytes, checking that they hold whole replies;
/// `[]` for a close without reply.
func optionReplyTypes(_ step: NBDNegotiationStep) -> [UInt32] {
        let bytes: [UInt8]
        switch step {
        case .reply(let b), .replyAndClose(let b), .replyAndEnterTransmission(let b, _), .replyAndStartTLS(let b): bytes = b
        case .close: return []
        }
        var types: [UInt32] = []
        var index = 0
        while index + 20 <= bytes.count {
            types.append(bigEndian(bytes[index + 12 ..< index + 16]))
            index += 20 + Int(bigEndian(bytes[index + 16 ..< index + 20], as: UInt32.self))
        }
        #expect(index == bytes.count)
        return types
}
