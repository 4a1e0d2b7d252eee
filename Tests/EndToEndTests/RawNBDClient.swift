import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A deliberately small, blocking NBD client over a POSIX TCP socket, written from the protocol
/// specification (NetworkBlockDevice/nbd doc/proto.md) and independent of the product's NBD code,
/// so it can send what a well-behaved client never would. Every receive has a timeout.
final class RawNBDClient: @unchecked Sendable {
    static let greetingMagic: UInt64 = 0x4E42_444D_4147_4943  // "NBDMAGIC"
    static let optionMagic: UInt64 = 0x4948_4156_454F_5054  // "IHAVEOPT"
    static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9
    static let requestMagic: UInt32 = 0x2560_9513
    static let simpleReplyMagic: UInt32 = 0x6744_6698
    static let optionGo: UInt32 = 7
    static let replyAck: UInt32 = 1
    static let replyInfo: UInt32 = 3
    static let commandRead: UInt16 = 0
    static let commandWrite: UInt16 = 1
    static let commandDisconnect: UInt16 = 2

    private let descriptor: Int32
    private var closed = false
    /// The export's size once negotiated.
    private(set) var exportSizeBytes: UInt64 = 0
    /// The export's transmission flags once negotiated.
    private(set) var transmissionFlags: UInt16 = 0

    /// Connects to 127.0.0.1:`port`; receives time out after `timeoutSeconds`.
    init(port: Int, timeoutSeconds: Int = 5) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RigError("socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = loopbackAddress(port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(descriptor)
            throw RigError("connect to port \(port): \(String(cString: strerror(errno)))")
        }
    }

    deinit { if !closed { close(descriptor) } }

    // MARK: Bytes

    /// Sends every byte; returns false when the peer has gone (EPIPE, ECONNRESET).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }

    /// Receives exactly `count` bytes, or throws (timeout, or the peer closed).
    func receive(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let n = bytes[received...].withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            if n == 0 { throw RigError("the server closed the connection after \(received) of \(count) bytes") }
            if n < 0 { throw RigError("recv: \(String(cString: strerror(errno)))") }
            received += n
        }
        return bytes
    }

    /// Waits until the server closes the connection: true when it did (EOF or reset) within the
    /// receive timeout, discarding whatever it sent first; false on a timeout.
    func serverCloses() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if n > 0 { continue }
            if n == 0 { return true }
            if errno == EINTR { continue }
            return errno == ECONNRESET || errno == EPIPE
        }
    }

    // MARK: Handshake

    /// Reads the greeting and answers with client flags (FIXED_NEWSTYLE | NO_ZEROES).
    func greet() throws {
        let greeting = try receive(18)
        guard Self.decode64(greeting, 0) == Self.greetingMagic, Self.decode64(greeting, 8) == Self.optionMagic else {
            throw RigError("unexpected greeting \(greeting)")
        }
        send(Self.encode32(0b11))
    }

    /// An option request with any magic.
    static func optionRequest(magic: UInt64 = optionMagic, option: UInt32, data: [UInt8]) -> [UInt8] {
        encode64(magic) + encode32(option) + encode32(UInt32(data.count)) + data
    }

    /// Negotiates `export` with NBD_OPT_GO and enters transmission.
    func go(_ export: String) throws {
        try greet()
        let name = Array(export.utf8)
        let data = Self.encode32(UInt32(name.count)) + name + Self.encode16(0)
        send(Self.optionRequest(option: Self.optionGo, data: data))
        while true {
            let header = try receive(20)
            guard Self.decode64(header, 0) == Self.optionReplyMagic else { throw RigError("bad option reply magic") }
            let type = Self.decode32(header, 12)
            let payload = try receive(Int(Self.decode32(header, 16)))
            if type == Self.replyAck { return }
            if type & 0x8000_0000 != 0 {
                throw RigError("NBD_OPT_GO for \(export) refused: type \(type), \(String(decoding: payload, as: UTF8.self))")
            }
            if type == Self.replyInfo, payload.count >= 12, Self.decode16(payload, 0) == 0 {
                exportSizeBytes = Self.decode64(payload, 2)
                transmissionFlags = Self.decode16(payload, 10)
            }
        }
    }

    // MARK: Transmission

    /// A transmission request header with any magic.
    static func request(magic: UInt32 = requestMagic, flags: UInt16 = 0, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt32) -> [UInt8] {
        encode32(magic) + encode16(flags) + encode16(type) + encode64(cookie) + encode64(offset) + encode32(length)
    }

    /// Reads a simple reply: its error value and cookie.
    func simpleReply() throws -> (error: UInt32, cookie: UInt64) {
        let reply = try receive(16)
        guard Self.decode32(reply, 0) == Self.simpleReplyMagic else { throw RigError("bad simple reply magic \(reply)") }
        return (Self.decode32(reply, 4), Self.decode64(reply, 8))
    }

    /// NBD_CMD_READ: the error value and the bytes (empty on error).
    func read(offset: UInt64, length: UInt32, cookie: UInt64 = 1) throws -> (error: UInt32, bytes: [UInt8]) {
        send(Self.request(type: Self.commandRead, cookie: cookie, offset: offset, length: length))
        let reply = try simpleReply()
        guard reply.cookie == cookie else { throw RigError("reply cookie \(reply.cookie), expected \(cookie)") }
        if reply.error != 0 { return (reply.error, []) }
        return (0, try receive(Int(length)))
    }

    /// NBD_CMD_WRITE: the error value.
    func write(offset: UInt64, bytes: [UInt8], cookie: UInt64 = 2) throws -> UInt32 {
        send(Self.request(type: Self.commandWrite, cookie: cookie, offset: offset, length: UInt32(bytes.count)) + bytes)
        let reply = try simpleReply()
        guard reply.cookie == cookie else { throw RigError("reply cookie \(reply.cookie), expected \(cookie)") }
        return reply.error
    }

    /// Sends a READ request without waiting for its reply.
    func sendRead(offset: UInt64, length: UInt32, cookie: UInt64) {
        send(Self.request(type: Self.commandRead, cookie: cookie, offset: offset, length: length))
    }

    /// Sends a WRITE request and its payload without waiting for the reply.
    func sendWrite(offset: UInt64, bytes: [UInt8], cookie: UInt64) {
        send(Self.request(type: Self.commandWrite, cookie: cookie, offset: offset, length: UInt32(bytes.count)) + bytes)
    }

    /// Receives replies to requests sent with `sendRead` / `sendWrite`, in whatever order the
    /// server sends them: `readLengths` gives the payload length of each READ by cookie. Returns
    /// each cookie's error value and data.
    func receiveReplies(readLengths: [UInt64: Int], writes: Set<UInt64>) throws -> [UInt64: (error: UInt32, bytes: [UInt8])] {
        var replies: [UInt64: (error: UInt32, bytes: [UInt8])] = [:]
        while replies.count < readLengths.count + writes.count {
            let reply = try simpleReply()
            if let length = readLengths[reply.cookie] {
                replies[reply.cookie] = (reply.error, reply.error == 0 ? try receive(length) : [])
            } else if writes.contains(reply.cookie) {
                replies[reply.cookie] = (reply.error, [])
            } else {
                throw RigError("a reply with unexpected cookie \(reply.cookie)")
            }
        }
        return replies
    }

    /// NBD_CMD_DISC, then close.
    func disconnect() {
        send(Self.request(type: Self.commandDisconnect, cookie: 99, offset: 0, length: 0))
        close(descriptor)
        closed = true
    }

    // MARK: Big-endian

    static func encode16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func encode32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8((value >> (24 - 8 * UInt32($0))) & 0xFF) } }
    static func encode64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8((value >> (56 - 8 * UInt64($0))) & 0xFF) } }
    static func decode16(_ bytes: [UInt8], _ at: Int) -> UInt16 { bytes[at..<at + 2].reduce(0) { $0 << 8 | UInt16($1) } }
    static func decode32(_ bytes: [UInt8], _ at: Int) -> UInt32 { bytes[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
    static func decode64(_ bytes: [UInt8], _ at: Int) -> UInt64 { bytes[at..<at + 8].reduce(0) { $0 << 8 | UInt64($1) } }
}
