import Foundation

/// Why a call to etcd failed.
public enum EtcdError: Error, Sendable, CustomStringConvertible {
    /// No endpoint answered (refused, reset, timed out): the cluster may have lost its quorum,
    /// or the network is down. For a transaction the outcome is unknown: it may have been
    /// applied.
    case unavailable(String)
    /// etcd answered with an error (gRPC code and message), e.g. a lease not found.
    case server(code: Int, message: String)
    /// The answer was not the JSON expected.
    case malformed(String)

    public var description: String {
        switch self {
        case let .unavailable(detail): "etcd unavailable: \(detail)"
        case let .server(code, message): "etcd refused the request (code \(code)): \(message)"
        case let .malformed(detail): "etcd's answer is malformed: \(detail)"
        }
    }
}

/// A JSON object as etcd's gateway speaks it (int64 fields are strings; keys and values base64).
public typealias JSONObject = [String: Any]

/// How the cluster store talks to etcd's v3 JSON gateway: `POST path` with a JSON body, one
/// answer. snapbackd uses ``EtcdClient`` (async-http-client, in `SnapbackCluster`); the CLI
/// uses ``SocketEtcdTransport`` (blocking sockets, no event loop to start).
public protocol EtcdTransport: AnyObject, Sendable {
    /// The members' client URLs, in the order they are tried.
    var endpoints: [String] { get }
    /// `POST path` with `body`, blocking the calling thread.
    /// - Throws: ``EtcdError``.
    func call(_ path: String, _ body: JSONObject) throws(EtcdError) -> JSONObject
}

/// etcd's JSON conventions: keys and values in base64, int64 fields as strings.
public enum Etcd {
    /// Parses `etcd=URL[,URL...]` (or a bare comma-separated URL list).
    public static func endpoints(parsing text: String) -> [String]? {
        let list = text.hasPrefix("etcd=") ? String(text.dropFirst(5)) : text
        let urls = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !urls.isEmpty, urls.allSatisfy({ ($0.hasPrefix("http://") || $0.hasPrefix("https://")) && $0.count > 8 }) else { return nil }
        return urls
    }

    public static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    public static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The bytes of a base64 field; empty for a missing one (proto3 JSON omits empty values).
    public static func bytes(_ value: Any?) throws(EtcdError) -> [UInt8] {
        guard let text = value as? String else { return [] }
        guard let data = Data(base64Encoded: text) else { throw .malformed("a base64 field that does not decode") }
        return Array(data)
    }

    /// An int64 field (a string in proto3 JSON; a number accepted too); `nil` when absent.
    public static func int(_ value: Any?) -> Int64? {
        if let text = value as? String { return Int64(text) }
        if let number = value as? NSNumber { return number.int64Value }
        return nil
    }

    /// The range end that selects every key starting with `prefix` (the prefix with its last
    /// byte incremented, dropping trailing 0xff bytes).
    public static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]  // every key
    }
}
