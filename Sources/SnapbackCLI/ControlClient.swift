import Foundation
import SnapbackAPI

/// A minimal blocking HTTP/1.1 client for the control socket: one request per connection
/// (`Connection: close`), which is all a CLI invocation needs, and it starts in microseconds.
struct ControlClient {
    let socketPath: String
    /// A bound on responses.
    static let responseBytesMax = 16 << 20
    static let timeoutSeconds = 120

    /// The control socket of `tools/install`'s systemd unit (`snapbackd.service`).
    static let serviceSocketPath = "/run/snapback/control.sock"
    /// The control socket of `tools/run` (`snapbackd --data-dir ./var`).
    static let localSocketPath = "./var/control.sock"

    /// Where the CLI finds the daemon: `-socket`, else `SNAPBACK_SOCKET`, else
    /// `./var/control.sock` when it exists, else the installed service's socket when that
    /// exists, else `./var/control.sock` (whose absence the error then names).
    static func resolve(_ option: String?) -> ControlClient {
        if let path = option ?? ProcessInfo.processInfo.environment["SNAPBACK_SOCKET"] { return ControlClient(socketPath: path) }
        if !FileManager.default.fileExists(atPath: localSocketPath), FileManager.default.fileExists(atPath: serviceSocketPath) {
            return ControlClient(socketPath: serviceSocketPath)
        }
        return ControlClient(socketPath: localSocketPath)
    }

    /// Sends a request and returns the status and body. A refused command comes back as its
    /// error body; a missing daemon is a `daemon_not_running` error.
    func send(_ method: String, _ path: String, body: Data? = nil) throws -> (status: Int, body: Data) {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CLIError(code: "socket_error", message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: Self.timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        switch UnixSocket.connect(descriptor, to: socketPath) {
        case .connected:
            break
        case .pathTooLong:
            throw CLIError(code: "socket_error", message: "socket path \(socketPath) is too long")
        case .failed(let code):
            let reason = code == ENOENT || code == ECONNREFUSED
                ? "snapbackd is not running (nothing answers on \(socketPath)); start it, or give -socket PATH or SNAPBACK_SOCKET"
                : "cannot connect to \(socketPath): \(String(cString: strerror(code)))"
            throw CLIError(code: "daemon_not_running", message: reason)
        }
        var request = "\(method) \(path) HTTP/1.1\r\nHost: snapbackd\r\nConnection: close\r\n"
        if let body { request += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" } else { request += "Content-Length: 0\r\n" }
        request += "\r\n"
        var bytes = Array(request.utf8)
        if let body { bytes += body }
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Foundation.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw CLIError(code: "daemon_error", message: "sending to snapbackd failed: \(String(cString: strerror(errno)))") }
            sent += count
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw CLIError(code: "daemon_error", message: "reading from snapbackd failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            response += chunk[0..<count]
            guard response.count <= Self.responseBytesMax else { throw CLIError(code: "daemon_error", message: "response too large") }
        }
        return try Self.parse(response)
    }

    /// Splits an HTTP/1.1 response into status and body (Content-Length or chunked).
    static func parse(_ response: [UInt8]) throws -> (status: Int, body: Data) {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headerEnd = response.firstRange(of: separator) else {
            throw CLIError(code: "daemon_error", message: "snapbackd sent a malformed response")
        }
        let head = String(decoding: response[..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw CLIError(code: "daemon_error", message: "snapbackd sent a malformed status line")
        }
        var body = Array(response[headerEnd.upperBound...])
        let chunked = lines.contains { $0.lowercased().hasPrefix("transfer-encoding:") && $0.lowercased().contains("chunked") }
        if chunked {
            var decoded: [UInt8] = []
            var index = 0
            while let lineEnd = body[index...].firstRange(of: [13, 10]) {
                let sizeText = String(decoding: body[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { break }
                if size == 0 { break }
                let start = lineEnd.upperBound
                guard start + size <= body.count else { break }
                decoded += body[start..<start + size]
                index = start + size + 2
                if index >= body.count { break }
            }
            body = decoded
        }
        return (status, Data(body))
    }

    /// The rows of `collection` (such as `/v1/volumes`): every one, or only `one` (a name or
    /// an id) when given.
    func rows<Row: Decodable>(_ collection: String, _ one: String?, as type: Row.Type) throws -> [Row] {
        guard let one else { return try call("GET", collection, as: [Row].self) }
        return [try call("GET", "\(collection)/\(pathSegment(one))", as: Row.self)]
    }

    /// Sends a request and decodes a success body as `T`; an error body becomes a `CLIError` with
    /// its stable code (exit 1).
    func call<T: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = nil as String?, as type: T.Type) throws -> T {
        let data = try body.map { try JSONEncoder().encode($0) }
        let (status, responseBody) = try send(method, path, body: data)
        guard (200..<300).contains(status) else {
            if let error = try? JSONDecoder().decode(ErrorBody.self, from: responseBody) {
                throw CLIError(code: error.code, message: error.message)
            }
            throw CLIError(code: "daemon_error", message: "snapbackd answered HTTP \(status)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: responseBody)
        } catch {
            throw CLIError(code: "daemon_error", message: "snapbackd sent an unexpected answer: \(error)")
        }
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
func pathSegment(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")) ?? text
}
