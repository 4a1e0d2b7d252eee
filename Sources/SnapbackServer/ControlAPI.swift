import Foundation
import Hummingbird
import Logging
import NIOCore
import SnapbackAPI
import SnapbackController
import SnapbackCore
import SnapbackLog

/// The control API (`Specs/openapi.yaml`): HTTP/JSON on a Unix socket. Every mutating request is
/// answered only after its events are durable.
struct ControlAPI {
    let controller: Controller
    /// The log, read for a map's rollback history (`GET /v1/lcmaps/{map}/rollback`).
    let log: EventLog
    /// The LMDB data file of the log (for its size).
    let logDataFile: String
    let version: String
    let logger: Logger
    /// `GET /metrics`.
    let metrics: MetricsEndpoint
    /// `POST /v1/log/archive`.
    let archiver: LogArchiver
    /// A bound on request bodies.
    static let requestBytesMax = 64 * 1024

    func router() -> Router<ControlRequestContext> {
        let router = Router(context: ControlRequestContext.self)
        router.get("metrics") { _, _ in metrics.response() }
        router.get("v1/system") { _, _ in
            let health = controller.health
            var status = stat()
            let logBytes = stat(logDataFile, &status) == 0 ? UInt64(status.st_size) : 0
            let since = health.sinceMilliseconds.map {
                ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0) / 1000))
            }
            return json(
                SystemRow(
                    status: health.status.rawValue, reason: health.reason ?? "", degraded_since: since ?? "",
                    failed_commits: health.failedCommits, log_size: logBytes, last_sequence: controller.state.eventsApplied,
                    version: version))
        }
        router.post("v1/log/archive") { request, _ in
            let body: ArchiveRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            do {
                return json(try await archiver.archive(body))
            } catch let failure as ErrorBody {
                return error(400, failure)
            } catch let failure as LogError {
                return error(500, ErrorBody(code: failure.code, message: failure.description))
            } catch let failure as ControllerError {
                return error(503, ErrorBody(code: "storage_error", message: "saving a checkpoint before archiving failed: \(failure)"))
            } catch {
                return self.error(500, ErrorBody(code: "internal", message: "\(error)"))
            }
        }
        router.get("v1/volumes") { _, _ in
            let state = controller.state
            return json(state.volumesByID.map { VolumeRow($0, in: state, anomalyScore: controller.anomalyScore(of: $0.id)) })
        }
        router.get("v1/volumes/:volume") { _, context in
            let reference = try context.parameters.require("volume")
            let state = controller.state
            guard let volume = state.volume(reference) else {
                return error(404, ErrorBody(code: "unknown_volume", message: "volume \(reference) does not exist"))
            }
            return json(VolumeRow(volume, in: state, anomalyScore: controller.anomalyScore(of: volume.id)))
        }
        router.post("v1/volumes") { request, context in
            let body: CreateVolumeRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let command: Command
            do throws(ErrorBody) { command = try body.command() } catch { return self.error(400, error) }
            return await execute(context, command, created: true)
        }
        router.patch("v1/volumes/:volume") { request, context in
            let body: ChangeVolumeRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let volume = try context.parameters.require("volume")
            let command: Command
            do throws(ErrorBody) { command = try body.command(volume: volume) } catch { return self.error(400, error) }
            return await execute(context, command)
        }
        router.delete("v1/volumes/:volume") { _, context in
            await execute(context, .removeVolume(volume: try context.parameters.require("volume")))
        }
        router.post("v1/volumes/:volume/fault") { request, context in
            let body: FaultRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let volume = try context.parameters.require("volume")
            let command: Command
            do throws(ErrorBody) { command = try body.command(volume: volume) } catch { return self.error(400, error) }
            return await execute(context, command)
        }
        router.post("v1/volumes/:volume/recover") { _, context in
            await execute(context, .recoverVolume(volume: try context.parameters.require("volume")))
        }
        router.get("v1/lcgroups") { _, _ in
            let state = controller.state
            return json(state.groupsByID.map { GroupRow($0, in: state) })
        }
        router.get("v1/lcgroups/:group") { _, context in
            let reference = try context.parameters.require("group")
            let state = controller.state
            guard let group = state.group(reference) else {
                return error(404, ErrorBody(code: "unknown_group", message: "lcgrp \(reference) does not exist"))
            }
            return json(GroupRow(group, in: state))
        }
        router.post("v1/lcgroups") { request, context in
            let body: CreateGroupRequest
            do { body = try await decode(request, emptyAllowed: true) ?? CreateGroupRequest(name: nil, autorestore: nil, autorestoredelay: nil) } catch let failure as ErrorBody {
                return error(400, failure)
            }
            let command: Command
            do throws(ErrorBody) { command = try body.command() } catch { return self.error(400, error) }
            return await execute(context, command, created: true)
        }
        router.patch("v1/lcgroups/:group") { request, context in
            let body: ChangeGroupRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let group = try context.parameters.require("group")
            let command: Command
            do throws(ErrorBody) { command = try body.command(group: group) } catch { return self.error(400, error) }
            return await execute(context, command)
        }
        router.post("v1/lcgroups/:group/start") { request, context in
            let body: StartMapRequest
            do { body = try await decode(request, emptyAllowed: true) ?? StartMapRequest(prep: nil, restore: nil) } catch let failure as ErrorBody {
                return error(400, failure)
            }
            return await execute(context, body.command(group: try context.parameters.require("group")))
        }
        router.post("v1/lcgroups/:group/stop") { request, context in
            let body: ForceRequest
            do { body = try await decode(request, emptyAllowed: true) ?? ForceRequest(force: nil) } catch let failure as ErrorBody {
                return error(400, failure)
            }
            return await execute(context, body.stopCommand(group: try context.parameters.require("group")))
        }
        router.delete("v1/lcgroups/:group") { request, context in
            let force = request.uri.queryParameters.get("force").map { String($0) }
            return await execute(context, ForceRequest.removeCommand(group: try context.parameters.require("group"), forceQuery: force))
        }
        router.get("v1/lcmaps") { _, _ in
            let state = controller.state
            return json(state.mapsByID.map { MapRow($0, in: state) })
        }
        router.get("v1/lcmaps/:map") { _, context in
            let reference = try context.parameters.require("map")
            let state = controller.state
            guard let map = state.map(reference) else {
                return error(404, ErrorBody(code: "unknown_map", message: "lcmap \(reference) does not exist"))
            }
            return json(MapRow(map, in: state))
        }
        router.get("v1/lcmaps/:map/rollback") { _, context in
            let reference = try context.parameters.require("map")
            let state = controller.state
            guard let named = state.map(reference) else {
                return error(404, ErrorBody(code: "unknown_map", message: "lcmap \(reference) does not exist"))
            }
            let forward = named.role == .forward ? named : state.maps[named.partnerID] ?? named
            let row = try await blocking { try lastRollback(of: forward) }
            return json(row)
        }
        router.post("v1/lcmaps") { request, context in
            let body: CreateMapRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let command: Command
            do throws(ErrorBody) { command = try body.command() } catch { return self.error(400, error) }
            return await execute(context, command, created: true)
        }
        router.patch("v1/lcmaps/:map") { request, context in
            let body: ChangeMapRequest
            do { body = try await decode(request) } catch let failure as ErrorBody { return error(400, failure) }
            let map = try context.parameters.require("map")
            let command: Command
            do throws(ErrorBody) { command = try body.command(map: map) } catch { return self.error(400, error) }
            return await execute(context, command)
        }
        router.post("v1/lcmaps/:map/start") { request, context in
            let body: StartMapRequest
            do { body = try await decode(request, emptyAllowed: true) ?? StartMapRequest(prep: nil, restore: nil) } catch let failure as ErrorBody {
                return error(400, failure)
            }
            return await execute(context, body.command(map: try context.parameters.require("map")))
        }
        router.post("v1/lcmaps/:map/stop") { request, context in
            let body: ForceRequest
            do { body = try await decode(request, emptyAllowed: true) ?? ForceRequest(force: nil) } catch let failure as ErrorBody {
                return error(400, failure)
            }
            return await execute(context, body.stopCommand(map: try context.parameters.require("map")))
        }
        router.delete("v1/lcmaps/:map") { request, context in
            let force = request.uri.queryParameters.get("force").map { String($0) }
            return await execute(context, ForceRequest.removeCommand(map: try context.parameters.require("map"), forceQuery: force))
        }
        return router
    }

    /// Runs a command off the event loops and answers with its outcome; its events record the
    /// caller at the other end of the socket (served without one, with a warning, when the
    /// credentials cannot be read).
    func execute(_ context: ControlRequestContext, _ command: Command, created: Bool = false) async -> Response {
        let controller = controller
        let caller = await context.caller(logger: logger)
        do {
            let (events, lastSequence, held) = try await blocking { try controller.executeTimed(command, caller: caller) }
            let heldMilliseconds = (Double(held) / 1e4).rounded() / 100
            if case let .startGroup(group) = command {
                logger.info(
                    "lcgrp started: every member's image at one instant",
                    metadata: ["lcgrp": "\(group)", "lcmaps": "\(events.count { $0.type == .mapStarted })", "hostWritesHeldMs": "\(heldMilliseconds)"])
            }
            let result = CommandResult(
                events: events.map(\.type.description),
                firstSequence: events.isEmpty ? nil : lastSequence - UInt64(events.count) + 1,
                lastSequence: events.isEmpty ? nil : lastSequence, heldMilliseconds: heldMilliseconds)
            return json(result, status: created ? .created : .ok)
        } catch let failure as ControllerError {
            switch failure {
            case let .rejected(commandError):
                return error(httpStatus(for: commandError.code), ErrorBody(code: commandError.code.rawValue, message: commandError.message))
            case let .storage(detail):
                return error(503, ErrorBody(code: "storage_error", message: detail))
            case let .storageFull(detail):
                return error(507, ErrorBody(code: "storage_full", message: detail))
            case let .unavailable(code, detail):
                // A cluster node that does not lead (`not_leader`) or cannot reach its cluster.
                return error(503, ErrorBody(code: code, message: detail))
            }
        } catch {
            return self.error(500, ErrorBody(code: "internal", message: "\(error)"))
        }
    }

    /// Decodes a JSON body; a missing body gives `nil` when `emptyAllowed`.
    func decode<T: Decodable>(_ request: Request, emptyAllowed: Bool = false) async throws -> T? {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: Self.requestBytesMax)
        } catch {
            throw ErrorBody(code: "bad_request", message: "request body over \(Self.requestBytesMax) bytes")
        }
        if buffer.readableBytes == 0 {
            if emptyAllowed { return nil }
            throw ErrorBody(code: "bad_request", message: "a JSON body is required")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            throw ErrorBody(code: "bad_request", message: "malformed JSON body: \(String(describing: error).prefix(200))")
        }
    }

    func decode<T: Decodable>(_ request: Request) async throws -> T {
        guard let value: T = try await decode(request, emptyAllowed: false) else {
            throw ErrorBody(code: "bad_request", message: "a JSON body is required")
        }
        return value
    }

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    func error(_ status: Int, _ body: ErrorBody) -> Response {
        json(body, status: HTTPResponse.Status(code: status))
    }

    /// The last rollback of the forward map `map`, from the log: its `RollbackStarted`, and the
    /// `RollbackCompleted` or `RollbackStopped` that ended it. One pass over the log, decoding only
    /// the rollback events.
    func lastRollback(of map: LCMap) throws -> RollbackRow {
        let types: Set<UInt16> = [EventType.rollbackStarted.rawValue, EventType.rollbackCompleted.rawValue, EventType.rollbackStopped.rawValue]
        var row = RollbackRow(map: map.name, outcome: "none")
        func time(_ milliseconds: Int64) -> String { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000)) }
        try log.scan { record in
            guard types.contains(record.typeCode) else { return true }
            let stored = try EventLog.storedEvent(record)
            switch stored.event {
            case let .rollbackStarted(id, trigger, faultID) where id == map.id:
                row = RollbackRow(
                    map: map.name, outcome: "running", trigger: trigger.description, fault_id: faultID.map { String($0) } ?? "",
                    started_seq: stored.sequence, started_time: time(stored.timestampMilliseconds))
            case let .rollbackCompleted(id) where id == map.id:
                row.outcome = "completed"
                row.ended_seq = stored.sequence
                row.ended_time = time(stored.timestampMilliseconds)
            case let .rollbackStopped(id, reason) where id == map.id:
                row.outcome = "abandoned"
                row.reason = reason
                row.ended_seq = stored.sequence
                row.ended_time = time(stored.timestampMilliseconds)
            default:
                break
            }
            return true
        }
        return row
    }
}
