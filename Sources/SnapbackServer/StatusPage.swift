import Foundation
import Hummingbird
import Logging
import Mustache
import NIOCore
import ServiceLifecycle
import SnapbackController
import SnapbackCore
import SnapbackLog

/// The live status page (`snapbackd --http HOST:PORT`): one read-only HTML page of the
/// volumes, lcmaps and lcgrps with their copy and rollback progress, reloading itself every
/// second, and the last faults and rollbacks of the log, each linking to the story of its
/// objects (`/explain/KIND/NAME`: what `snapback log explain NAME` prints).
///
/// It changes nothing: GET is the only method, every other one is answered 405. There is no
/// authentication either, which is why it listens on loopback unless told otherwise.
/// Server-rendered with swift-mustache, which escapes every value; no script at all.
struct StatusPage: Sendable {
    let controller: Controller
    let log: EventLog
    let timeline: StatusTimeline
    let version: String
    let templates: MustacheLibrary
    let logger: Logger
    /// Answer only requests addressed to a loopback name (the `Host` header): on loopback, a web
    /// page elsewhere could otherwise read this one through a browser on this machine by
    /// pointing a name of its own at 127.0.0.1 (DNS rebinding). Set by ``StatusListener``.
    var loopbackHostsOnly = false

    /// How often the page reloads itself (`<meta http-equiv="refresh">`).
    static let refreshSeconds = 1
    /// The media type of every answer.
    static let contentType = "text/html; charset=utf-8"

    init(controller: Controller, log: EventLog, version: String, logger: Logger) throws {
        self.controller = controller
        self.log = log
        timeline = StatusTimeline(log: log)
        self.version = version
        templates = try StatusTemplates.library()
        self.logger = logger
    }

    /// Answers one request: `/` (the status page), `/explain/volume|lcmap|lcgrp/NAME` (a story),
    /// 404 for any other path, 405 for any method but GET.
    func respond(to request: Request) async -> Response {
        guard request.method == .get else {
            var response = page(
                "problem", ProblemView(status: 405, title: "Method not allowed", message: "This page is read-only: only GET is served."),
                status: .methodNotAllowed)
            response.headers[.allow] = "GET"
            return response
        }
        if loopbackHostsOnly, !Self.addressedToLoopback(request.head.authority) {
            return page(
                "problem",
                ProblemView(
                    status: 403, title: "Forbidden",
                    message: "This page answers only requests addressed to localhost or a loopback address (a guard against DNS rebinding)."),
                status: .forbidden)
        }
        let segments = request.uri.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        switch segments.count {
        case 0:
            return await statusPage()
        case 3 where segments[0] == "explain":
            guard let kind = StoryObject.Kind(rawValue: segments[1]), let name = segments[2].removingPercentEncoding, !name.isEmpty else { break }
            return await storyPage(StoryObject(kind: kind, name: name))
        default:
            break
        }
        return page("problem", ProblemView(status: 404, title: "Not found", message: "No page at \(request.uri.path)."), status: .notFound)
    }

    /// True when `authority` (a request's `Host`, with or without a port) names this machine's
    /// loopback: `localhost`, 127.0.0.0/8 or `[::1]`. A request without one is refused.
    static func addressedToLoopback(_ authority: String?) -> Bool {
        guard var host = authority?.lowercased(), !host.isEmpty else { return false }
        if host.hasPrefix("[") {
            guard let end = host.firstIndex(of: "]") else { return false }
            host = String(host[host.index(after: host.startIndex)..<end])
        } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        return StatusListener.isLoopback(host)
    }

    /// The status page as of now: the published state, and the timeline read off the log.
    func statusPage() async -> Response {
        let timeline = timeline
        let entries: [StatusTimeline.Entry]
        do {
            // The first request folds the whole log: off the event loop.
            entries = try await blocking { try timeline.newest() }
        } catch {
            logger.error("status page: cannot read the log", metadata: ["error": "\(error)"])
            return page(
                "problem", ProblemView(status: 500, title: "Cannot read the log", message: "\(error)"), status: .internalServerError)
        }
        let controller = controller
        let view = StatusView(
            state: controller.state, health: controller.health, anomalyScore: { controller.anomalyScore(of: $0) }, timeline: entries,
            version: version, nowMilliseconds: Int64(Date().timeIntervalSince1970 * 1000), refreshSeconds: Self.refreshSeconds)
        return page("status", view, status: .ok)
    }

    /// The story of one object, as `snapback log explain` tells it (the same code, `Story`).
    func storyPage(_ object: StoryObject) async -> Response {
        let log = log
        let lines: [Story.Line]
        do {
            lines = try await blocking { try log.story(of: object.name) }
        } catch {
            logger.error("status page: cannot read the log", metadata: ["error": "\(error)"])
            return page(
                "problem", ProblemView(status: 500, title: "Cannot read the log", message: "\(error)"), status: .internalServerError)
        }
        guard !lines.isEmpty else {
            return page(
                "problem",
                ProblemView(
                    status: 404, title: "Unknown \(object.kind.rawValue)",
                    message: "The log never mentions an lcmap, lcgrp or volume called \(object.name)."),
                status: .notFound)
        }
        return page("story", StoryView(object: object, lines: lines), status: .ok)
    }

    /// Renders `template` with `view`. Scripts, frames and plug-ins are refused by policy as
    /// well: the page has none, and an injected one would not run.
    func page(_ template: String, _ view: Any, status: HTTPResponse.Status) -> Response {
        guard let html = templates.render(view, withTemplate: template) else {
            preconditionFailure("the status page's template \(template) is not registered")
        }
        return Response(
            status: status,
            headers: [
                .contentType: Self.contentType, .cacheControl: "no-store",
                .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                .xContentTypeOptions: "nosniff", .init("Referrer-Policy")!: "no-referrer",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }
}

/// The status page's TCP listener (`snapbackd --http HOST:PORT`).
enum StatusListener {
    static func application(page: StatusPage, host: String, port: Int, serverName: String, logger: Logger) -> some Service {
        if !isLoopback(host) {
            logger.warning(
                "status page listening beyond loopback: it has no authentication, anyone who reaches it sees every volume, lcmap and fault",
                metadata: ["host": "\(host)", "port": "\(port)"])
        }
        var page = page
        page.loopbackHostsOnly = isLoopback(host)
        return Application(
            responder: CallbackResponder<BasicRequestContext> { [page] request, _ in await page.respond(to: request) },
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in
                logger.info("status page listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "\(host):\(port)")"])
            },
            logger: logger)
    }

    /// True for an address on this machine only: `localhost`, 127.0.0.0/8 and `::1`.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}
