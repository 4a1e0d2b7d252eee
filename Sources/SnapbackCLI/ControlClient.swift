import Foundation
import SnapbackAPI
import SnapbackCLIFastPath

/// A minimal blocking HTTP/1.1 client for the control socket: one request per connection
/// (`Connection: close`), which is all a CLI invocation needs, and it starts in microseconds.
struct ControlClient {
    let socketPath: String

    /// The control socket of `tools/install`'s systemd unit (`snapbackd.service`).
    static let serviceSocketPath = FastClient.serviceSocketPath

    /// Where the CLI finds the daemon: `-socket`, else `SNAPBACK_SOCKET`, else
    /// `./var/control.sock` when it exists, else the installed service's socket when that
    /// exists, else `./var/control.sock` (whose absence the error then names).
    static func resolve(_ option: String?) -> ControlClient { ControlClient(socketPath: FastClient.resolve(option).socketPath) }

    /// Sends a request and returns the status and body. A refused command comes back as its
    /// error body; a missing daemon is a `daemon_not_running` error. The transport is the fast
    /// path's (``FastClient``): one blocking HTTP/1.1 request per connection.
    func send(_ method: String, _ path: String, body: Data? = nil) throws -> (status: Int, body: Data) {
        do throws(FastPathError) {
            let (status, answer) = try FastClient(socketPath: socketPath).send(method, path, body: body.map { String(decoding: $0, as: UTF8.self) })
            return (status, Data(answer))
        } catch {
            throw CLIError(code: error.code, message: error.message)
        }
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
