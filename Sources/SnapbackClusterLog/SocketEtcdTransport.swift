import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blocking client of etcd's JSON gateway over plain TCP sockets (HTTP/1.0, one request per
/// connection): for the CLI, which reads a cluster's log once and exits, and must not start an
/// event loop to do it. `http://HOST:PORT` endpoints only (no TLS). Failover as ``EtcdTransport``
/// says: each endpoint in turn until one answers.
public final class SocketEtcdTransport: EtcdTransport, @unchecked Sendable {
    public let endpoints: [String]
    /// Per endpoint: connect, send and each receive.
    public let timeoutMilliseconds: Int
    /// A bound on an answer's size (a page of records, a checkpoint).
    public static let answerBytesMax = 64 << 20

    public init(endpoints: [String], timeoutMilliseconds: Int = 3000) {
        precondition(!endpoints.isEmpty)
        self.endpoints = endpoints
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public func call(_ path: String, _ body: JSONObject) throws(EtcdError) -> JSONObject {
        let data: [UInt8]
        do { data = Array(try JSONSerialization.data(withJSONObject: body)) } catch { preconditionFailure("an etcd request that is not JSON") }
        var failures: [String] = []
        for endpoint in endpoints {
            guard let (host, port) = Self.hostAndPort(endpoint) else {
                failures.append("\(endpoint): not an http://HOST:PORT URL")
                continue
            }
            let answer: (status: Int, body: [UInt8])
            do {
                answer = try exchange(host: host, port: port, path: path, body: data)
            } catch {
                failures.append("\(endpoint): \(error)")
                continue
            }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? JSONObject else {
                throw .malformed("\(endpoint)\(path) answered \(answer.status) with \(answer.body.count) bytes that are not a JSON object")
            }
            if answer.status != 200 {
                let code = Etcd.int(object["code"]) ?? -1
                let message = object["message"] as? String ?? object["error"] as? String ?? "status \(answer.status)"
                if code == 14 || code == 4 {
                    failures.append("\(endpoint): \(message)")
                    continue
                }
                throw .server(code: Int(code), message: message)
            }
            return object
        }
        throw .unavailable(failures.joined(separator: "; "))
    }

    static func hostAndPort(_ url: String) -> (String, UInt16)? {
        guard url.hasPrefix("http://") else { return nil }
        var rest = url.dropFirst(7)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
        let host = String(rest[..<colon])
        return host.isEmpty ? nil : (host == "localhost" ? "127.0.0.1" : host, port)
    }

    struct SocketFailure: Error, CustomStringConvertible {
        var description: String
        /// The connection was refused: nothing listens at the address.
        var refused = false
    }

    /// Asks the member at `endpoint` alone (no failover) which raft leader it follows, for the
    /// quorum hold (`Specs/cluster.md`, 3.3): `maintenance/status` is answered by a member
    /// without a leader too, with the error "etcdserver: no leader".
    public func sighting(of endpoint: String) -> MemberSighting {
        guard let (host, port) = Self.hostAndPort(endpoint) else { return .unknown("not an http://HOST:PORT URL") }
        let answer: (status: Int, body: [UInt8])
        do {
            answer = try exchange(host: host, port: port, path: "/v3/maintenance/status", body: Array("{}".utf8))
        } catch let failure as SocketFailure {
            return failure.refused ? .down : .unknown(failure.description)
        } catch {
            return .unknown("\(error)")
        }
        guard answer.status == 200, let object = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? JSONObject else {
            return .unknown("status \(answer.status) with \(answer.body.count) bytes that are not a status")
        }
        // Member IDs are unsigned 64-bit numbers, written as decimal strings.
        if let leader = object["leader"] as? String, let id = UInt64(leader), id != 0 { return .led(leader) }
        let errors = object["errors"] as? [String] ?? []
        return errors.contains { $0.contains("no leader") } ? .leaderless : .unknown("a status without a leader: \(errors)")
    }

    private func exchange(host: String, port: UInt16, path: String, body: [UInt8]) throws -> (status: Int, body: [UInt8]) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { throw SocketFailure(description: "cannot resolve \(host)") }
        defer { freeaddrinfo(list) }
        let descriptor = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard descriptor >= 0 else { throw SocketFailure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: Int((timeoutMilliseconds % 1000) * 1000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard connect(descriptor, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            let code = errno
            throw SocketFailure(description: "connect: \(String(cString: strerror(code)))", refused: code == ECONNREFUSED)
        }
        let request = Array("POST \(path) HTTP/1.0\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        var sent = 0
        while sent < request.count {
            let written = request[sent...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { throw SocketFailure(description: "send: \(String(cString: strerror(errno)))") }
            sent += written
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if received == 0 { break }
            guard received > 0 else { throw SocketFailure(description: "recv: \(String(cString: strerror(errno)))") }
            response += buffer[0..<received]
            guard response.count <= Self.answerBytesMax else { throw SocketFailure(description: "an answer over \(Self.answerBytesMax) bytes") }
        }
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = (0...max(0, response.count - 4)).first(where: { response.count >= 4 && Array(response[$0..<$0 + 4]) == separator }) else {
            throw SocketFailure(description: "an answer without a header (\(response.count) bytes)")
        }
        let head = String(decoding: response[0..<end], as: UTF8.self)
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let fields = statusLine.split(separator: " ")
        guard fields.count >= 2, let status = Int(fields[1]) else { throw SocketFailure(description: "a malformed status line: \(statusLine)") }
        var payload = Array(response[(end + 4)...])
        if head.lowercased().contains("transfer-encoding: chunked") { payload = try Self.dechunk(payload) }
        return (status, payload)
    }

    /// The body of a chunked transfer encoding.
    static func dechunk(_ bytes: [UInt8]) throws -> [UInt8] {
        var result: [UInt8] = []
        var index = 0
        while index < bytes.count {
            guard let lineEnd = (index..<bytes.count - 1).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else { break }
            let sizeText = String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw SocketFailure(description: "a malformed chunk size") }
            if size == 0 { break }
            let start = lineEnd + 2
            guard start + size <= bytes.count else { throw SocketFailure(description: "a truncated chunk") }
            result += bytes[start..<start + size]
            index = start + size + 2
        }
        return result
    }
}
