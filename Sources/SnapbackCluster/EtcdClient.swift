import AsyncHTTPClient
@_exported import SnapbackClusterLog
import Foundation
import NIOCore
import NIOPosix

/// A client of etcd's v3 JSON gateway (`POST /v3/...`) over async-http-client, with failover
/// across the endpoints: a call goes to the endpoint that answered last, then to the others in
/// turn. Unary calls have a blocking form (the durable-store port is synchronous; its callers are
/// the controller's threads, never an event loop: the client runs on its own event loop group).
public final class EtcdClient: EtcdTransport, @unchecked Sendable {
    public let endpoints: [String]
    /// How long one request to one endpoint may take before the next endpoint is tried.
    public let requestTimeout: TimeAmount
    private let group: MultiThreadedEventLoopGroup
    private let http: HTTPClient
    /// Watches only: a stream may stay silent for as long as nothing changes, so no read timeout.
    private let watchHTTP: HTTPClient
    private let lock = NSLock()
    /// The endpoint that answered last (guarded by `lock`).
    private var preferred = 0
    private var shutDown = false

    /// - Parameters:
    ///   - endpoints: `http://HOST:PORT` of each member (at least one).
    ///   - requestTimeout: per request and endpoint; the default suits a 2 s lease.
    public init(endpoints: [String], requestTimeout: TimeAmount = .milliseconds(1500)) {
        precondition(!endpoints.isEmpty, "at least one etcd endpoint")
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.requestTimeout = requestTimeout
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = HTTPClient.Configuration(
            timeout: .init(connect: .milliseconds(min(500, requestTimeout.nanoseconds / 1_000_000)), read: requestTimeout))
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
        http = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
        var watchConfiguration = HTTPClient.Configuration(timeout: .init(connect: .milliseconds(500), read: nil))
        watchConfiguration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 8)
        watchHTTP = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: watchConfiguration)
    }

    /// Closes the connections and the event loop group. Idempotent.
    public func shutdown() {
        let first = lock.withLock { () -> Bool in
            defer { shutDown = true }
            return !shutDown
        }
        guard first else { return }
        try? http.syncShutdown()
        try? watchHTTP.syncShutdown()
        try? group.syncShutdownGracefully()
    }

    deinit { shutdown() }

    // MARK: - Calls

    /// `POST path` with `body`, blocking the calling thread (never an event loop's).
    /// - Throws: ``EtcdError``.
    public func call(_ path: String, _ body: JSONObject) throws(EtcdError) -> JSONObject {
        let data: Data
        do { data = try JSONSerialization.data(withJSONObject: body) } catch { preconditionFailure("an etcd request that is not JSON: \(body)") }
        let start = lock.withLock { preferred }
        var failures: [String] = []
        for offset in 0..<endpoints.count {
            let index = (start + offset) % endpoints.count
            let url = endpoints[index] + path
            let response: HTTPClient.Response
            do {
                let request = try HTTPClient.Request(url: url, method: .POST, headers: ["Content-Type": "application/json"], body: .data(data))
                response = try http.execute(request: request, deadline: .now() + requestTimeout).wait()
            } catch {
                failures.append("\(endpoints[index]): \(error)")
                continue
            }
            let bytes = response.body.map { Data($0.readableBytesView) } ?? Data()
            guard let object = (try? JSONSerialization.jsonObject(with: bytes)) as? JSONObject else {
                throw .malformed("\(url) answered \(response.status.code) with \(bytes.count) bytes that are not a JSON object")
            }
            if response.status.code != 200 {
                let code = Etcd.int(object["code"]) ?? -1
                let message = object["message"] as? String ?? object["error"] as? String ?? "status \(response.status.code)"
                // 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED: this member cannot serve (no leader, no quorum).
                if code == 14 || code == 4 {
                    failures.append("\(endpoints[index]): \(message)")
                    continue
                }
                throw .server(code: Int(code), message: message)
            }
            lock.withLock { preferred = index }
            return object
        }
        throw .unavailable(failures.joined(separator: "; "))
    }

    /// A watch stream on `key` .. `rangeEnd` from `startRevision`: `onResponse` is called with
    /// each response object (the `result` of the gateway's stream) until it returns false, the
    /// task is cancelled, or the stream fails.
    /// - Throws: ``EtcdError/unavailable(_:)`` when no endpoint accepts the watch, or the stream breaks.
    public func watch(key: [UInt8], rangeEnd: [UInt8], startRevision: Int64, onResponse: (JSONObject) async throws -> Bool) async throws {
        let body: JSONObject = [
            "create_request": ["key": Etcd.base64(key), "range_end": Etcd.base64(rangeEnd), "start_revision": String(startRevision)]
        ]
        let data = try JSONSerialization.data(withJSONObject: body)
        let index = lock.withLock { preferred }
        var request = HTTPClientRequest(url: endpoints[index] + "/v3/watch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: data))
        let response: HTTPClientResponse
        do {
            response = try await watchHTTP.execute(request, timeout: .hours(24 * 365))
        } catch {
            lock.withLock { preferred = (index + 1) % endpoints.count }
            throw EtcdError.unavailable("watch on \(endpoints[index]): \(error)")
        }
        guard response.status.code == 200 else { throw EtcdError.unavailable("watch on \(endpoints[index]): status \(response.status.code)") }
        var pending = Data()
        do {
            for try await chunk in response.body {
                pending.append(contentsOf: chunk.readableBytesView)
                // The gateway writes one JSON object per line.
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[pending.index(after: newline)...])
                    guard !line.isEmpty else { continue }
                    guard let object = (try? JSONSerialization.jsonObject(with: line)) as? JSONObject else {
                        throw EtcdError.malformed("a watch line of \(line.count) bytes that is not a JSON object")
                    }
                    if let error = object["error"] as? JSONObject {
                        throw EtcdError.server(code: Int(Etcd.int(error["grpc_code"]) ?? -1), message: error["message"] as? String ?? "watch failed")
                    }
                    let result = object["result"] as? JSONObject ?? [:]
                    // etcd cancels a watch whose start revision was compacted (and keeps the
                    // stream open, silent): the caller must catch up from a newer revision.
                    if result["canceled"] as? Bool == true {
                        let compacted = Etcd.int(result["compact_revision"]).map { " (history compacted through revision \($0))" } ?? ""
                        throw EtcdError.server(code: 11, message: "watch canceled by etcd\(compacted): \(result["cancel_reason"] as? String ?? "")")
                    }
                    guard try await onResponse(result) else { return }
                }
            }
        } catch let error as EtcdError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw EtcdError.unavailable("watch on \(endpoints[index]) broke: \(error)")
        }
        throw EtcdError.unavailable("watch on \(endpoints[index]) ended")
    }
}
