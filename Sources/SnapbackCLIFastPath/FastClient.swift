#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error the fast path reports exactly as the complete CLI does: `snapback: error CODE:
/// MESSAGE` on standard error, exit 1 (`CLIError` in SnapbackCLI).
public struct FastPathError: Error, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// The control socket's blocking HTTP/1.1 client, one request per connection, the same requests
/// and the same errors as SnapbackCLI's `ControlClient` (which reads its answers with Foundation).
public struct FastClient {
    public let socketPath: String
    /// A bound on responses.
    static let responseBytesMax = 16 << 20
    static let timeoutSeconds = 120
    /// The control socket of `tools/install`'s systemd unit (`snapbackd.service`).
    public static let serviceSocketPath = "/run/snapback/control.sock"
    /// The control socket of `tools/run` (`snapbackd --data-dir ./var`).
    public static let localSocketPath = "./var/control.sock"

    public init(socketPath: String) { self.socketPath = socketPath }

    /// Where the CLI finds the daemon: `-socket`, else `SNAPBACK_SOCKET`, else
    /// `./var/control.sock` when it exists, else the installed service's socket when that
    /// exists, else `./var/control.sock` (whose absence the error then names).
    public static func resolve(_ option: String?) -> FastClient {
        if let path = option ?? getenv("SNAPBACK_SOCKET").map({ String(cString: $0) }) { return FastClient(socketPath: path) }
        if !exists(localSocketPath), exists(serviceSocketPath) { return FastClient(socketPath: serviceSocketPath) }
        return FastClient(socketPath: localSocketPath)
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0
    }

    static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Sends a request and returns the status and body. A missing daemon is a
    /// `daemon_not_running` error.
    public func send(_ method: String, _ path: String, body: String? = nil) throws(FastPathError) -> (status: Int, body: [UInt8]) {
        #if canImport(Glibc)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw FastPathError(code: "socket_error", message: "socket: \(Self.errorText(errno))") }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: Self.timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw FastPathError(code: "socket_error", message: "socket path \(socketPath) is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if connected != 0 {
            let code = errno
            let reason = code == ENOENT || code == ECONNREFUSED
                ? "snapbackd is not running (nothing answers on \(socketPath)); start it, or give -socket PATH or SNAPBACK_SOCKET"
                : "cannot connect to \(socketPath): \(Self.errorText(code))"
            throw FastPathError(code: "daemon_not_running", message: reason)
        }
        let bodyBytes = body.map { Array($0.utf8) }
        var request = "\(method) \(path) HTTP/1.1\r\nHost: snapbackd\r\nConnection: close\r\n"
        if let bodyBytes {
            request += "Content-Type: application/json\r\nContent-Length: \(bodyBytes.count)\r\n"
        } else {
            request += "Content-Length: 0\r\n"
        }
        request += "\r\n"
        let bytes = Array(request.utf8) + (bodyBytes ?? [])
        var sent = 0
        while sent < bytes.count {
            #if canImport(Glibc)
            let flags = Int32(MSG_NOSIGNAL)
            #else
            let flags: Int32 = 0
            #endif
            let count = bytes[sent...].withUnsafeBytes { sendBytes(descriptor, $0.baseAddress, $0.count, flags) }
            guard count > 0 else {
                throw FastPathError(code: "daemon_error", message: "sending to snapbackd failed: \(Self.errorText(errno))")
            }
            sent += count
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FastPathError(code: "daemon_error", message: "reading from snapbackd failed: \(Self.errorText(errno))")
            }
            if count == 0 { break }
            response += chunk[0..<count]
            guard response.count <= Self.responseBytesMax else { throw FastPathError(code: "daemon_error", message: "response too large") }
        }
        return try Self.parse(response)
    }

    /// Splits an HTTP/1.1 response into status and body (Content-Length or chunked).
    static func parse(_ response: [UInt8]) throws(FastPathError) -> (status: Int, body: [UInt8]) {
        guard let headerEnd = firstRange(of: [13, 10, 13, 10], in: response, from: 0) else {
            throw FastPathError(code: "daemon_error", message: "snapbackd sent a malformed response")
        }
        let head = String(decoding: response[..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw FastPathError(code: "daemon_error", message: "snapbackd sent a malformed status line")
        }
        var body = Array(response[headerEnd.upperBound...])
        let chunked = lines.contains { $0.lowercased().hasPrefix("transfer-encoding:") && $0.lowercased().contains("chunked") }
        if chunked {
            var decoded: [UInt8] = []
            var index = 0
            while let lineEnd = firstRange(of: [13, 10], in: body, from: index) {
                let sizeText = String(decoding: body[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingSpaces, radix: 16) else { break }
                if size == 0 { break }
                let start = lineEnd.upperBound
                guard start + size <= body.count else { break }
                decoded += body[start..<start + size]
                index = start + size + 2
                if index >= body.count { break }
            }
            body = decoded
        }
        return (status, body)
    }

    static func firstRange(of pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Range<Int>? {
        guard bytes.count >= pattern.count, start <= bytes.count - pattern.count else { return nil }
        for offset in start...(bytes.count - pattern.count) where bytes[offset..<offset + pattern.count].elementsEqual(pattern) {
            return offset..<offset + pattern.count
        }
        return nil
    }

    /// Sends a request and returns its success body as JSON; an error body becomes a
    /// `FastPathError` with its stable code.
    public func call(_ method: String, _ path: String, body: String? = nil) throws(FastPathError) -> JSONValue {
        let (status, responseBody) = try send(method, path, body: body)
        guard (200..<300).contains(status) else {
            if let error = try? JSONValue.parse(responseBody), let code = error["code"]?.string, let message = error["message"]?.string {
                throw FastPathError(code: code, message: message)
            }
            throw FastPathError(code: "daemon_error", message: "snapbackd answered HTTP \(status)")
        }
        do {
            return try JSONValue.parse(responseBody)
        } catch {
            throw FastPathError(code: "daemon_error", message: "snapbackd sent an unexpected answer: \(error)")
        }
    }

    /// A mutating command: its answer must be a command result (`{"events": [...], ...}`).
    /// Returns the names of the events it recorded.
    @discardableResult
    public func command(_ method: String, _ path: String, body: String? = nil) throws(FastPathError) -> [String] {
        let answer = try call(method, path, body: body)
        guard let events = answer["events"]?.array, case let names = events.compactMap(\.string), names.count == events.count else {
            throw FastPathError(code: "daemon_error", message: "snapbackd sent an unexpected answer: no events in \(answer)")
        }
        return names
    }
}

/// `send(2)` (the name is taken by ``FastClient/send(_:_:body:)`` inside the type).
private func sendBytes(_ descriptor: Int32, _ bytes: UnsafeRawPointer?, _ count: Int, _ flags: Int32) -> Int {
    send(descriptor, bytes, count, flags)
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}

/// A path segment with everything but unreserved characters percent-encoded (uppercase hex),
/// as Foundation's `addingPercentEncoding` does it for SnapbackCLI.
func segment(_ text: String) -> String {
    var result = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            result.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = String(byte, radix: 16, uppercase: true)
            result += "%" + (hex.count == 1 ? "0" : "") + hex
        }
    }
    return result
}
