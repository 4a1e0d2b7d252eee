#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `snapback`'s start: a control command the fast path parses (``FastCommandLine``) is sent as
/// its requests with no more than the Swift standard library loaded; any other command line is
/// handed, by `exec` (same process, same pid, same exit code), to snapback-full, the complete
/// CLI installed beside `snapback`.
///
/// Why: a CLI process that loads Foundation, ArgumentParser, LMDB and swift-crypto spends about
/// 5 ms of CPU starting, more than the daemon spends on the command; on a machine with few cores
/// that start-up bounded how many commands concurrent clients could run.
public enum FastPath {
    /// The complete CLI's executable name: beside `snapback` in every installation.
    public static let fullExecutableName = "snapback-full"

    /// Runs `arguments` (with the program name first) and exits.
    public static func main(arguments: [String]) -> Never {
        guard let invocation = FastCommandLine.parse(Array(arguments.dropFirst())) else { execFull(arguments) }
        do {
            guard try run(invocation, client: FastClient.resolve(invocation.text("socket"))) else { execFull(arguments) }
            exit(0)
        } catch {
            writeError("snapback: error \(error.code): \(error.message)")
            exit(1)
        }
    }

    /// The path of snapback-full: beside this executable (`/proc/self/exe`, symlinks resolved),
    /// else beside `argv[0]` when it names a path, else found in `PATH`.
    static func fullExecutablePath(_ programPath: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let own = count > 0 ? String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : programPath
        guard let slash = own.lastIndex(of: "/") else { return fullExecutableName }
        return String(own[...slash]) + fullExecutableName
    }

    /// Replaces this process with snapback-full, given the same arguments.
    static func execFull(_ arguments: [String]) -> Never {
        let path = fullExecutablePath(arguments.first ?? "snapback")
        let argv = ([path] + arguments.dropFirst()).map { strdup($0) } + [nil]
        if path.contains("/") { execv(path, argv) } else { execvp(path, argv) }
        writeError("snapback: error internal: cannot run \(path) (\(String(cString: strerror(errno)))): install it beside snapback")
        exit(1)
    }

    static func writeError(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }

    static func printResult(_ line: String) { print(line) }

    /// One request to the control API.
    public struct Request: Equatable, Sendable {
        public var method: String
        public var path: String
        /// JSON text; `nil` sends no body.
        public var body: String?
    }

    /// The request that carries out `invocation`: the same method, path and body as its
    /// ArgumentParser twin in SnapbackCLI sends (ControlCommands.swift, GroupCommands.swift).
    /// A relative `-path` is taken from `currentDirectory`.
    public static func request(_ invocation: FastInvocation, currentDirectory: String) -> Request {
        let operand = segment(invocation.operand ?? "")
        switch invocation.command {
        case "mkvolume":
            var path = invocation.text("path")
            if let relative = path, !relative.hasPrefix("/") { path = currentDirectory + "/" + relative }
            return Request(
                method: "POST", path: "/v1/volumes",
                body: object([
                    ("name", .string(invocation.text("name")!)), ("size", .number(String(invocation.size("size")!))),
                    ("path", path.map { .string($0) }), ("adopt", invocation.flag("adopt") ? .bool(true) : nil),
                    ("detect", invocation.text("detect").map { .string($0) }), ("sensitivity", invocation.text("sensitivity").map { .string($0) }),
                ]))
        case "chvolume":
            return Request(method: "PATCH", path: "/v1/volumes/\(operand)", body: object(texts(invocation, "name", "detect", "sensitivity")))
        case "rmvolume":
            return Request(method: "DELETE", path: "/v1/volumes/\(operand)")
        case "mklcmap":
            return Request(
                method: "POST", path: "/v1/lcmaps",
                body: object(
                    texts(invocation, "source", "target", "name", "autorestore") + integers(invocation, "copyrate", "grainsize", "autorestoredelay")
                        + texts(invocation, "lcgrp")))
        case "chlcmap":
            return Request(
                method: "PATCH", path: "/v1/lcmaps/\(operand)",
                body: object(
                    texts(invocation, "autorestore") + integers(invocation, "copyrate") + texts(invocation, "name")
                        + integers(invocation, "autorestoredelay") + texts(invocation, "lcgrp")
                        + [("nolcgrp", invocation.flag("nolcgrp") ? .bool(true) : nil)]))
        case "startlcmap":
            return Request(method: "POST", path: "/v1/lcmaps/\(operand)/start", body: object(flags(invocation, "prep", "restore")))
        case "stoplcmap":
            return Request(method: "POST", path: "/v1/lcmaps/\(operand)/stop", body: object(flags(invocation, "force")))
        case "rmlcmap":
            return Request(method: "DELETE", path: "/v1/lcmaps/\(operand)?force=\(invocation.flag("force"))")
        case "fault":
            return Request(method: "POST", path: "/v1/volumes/\(segment(invocation.text("volume")!))/fault", body: object(texts(invocation, "reason")))
        case "recovervolume":
            return Request(method: "POST", path: "/v1/volumes/\(operand)/recover")
        case "mklcgrp":
            return Request(method: "POST", path: "/v1/lcgroups", body: object(texts(invocation, "name", "autorestore") + integers(invocation, "autorestoredelay")))
        case "chlcgrp":
            return Request(
                method: "PATCH", path: "/v1/lcgroups/\(operand)",
                body: object(texts(invocation, "name", "autorestore") + integers(invocation, "autorestoredelay")))
        case "startlcgrp":
            return Request(method: "POST", path: "/v1/lcgroups/\(operand)/start", body: object(flags(invocation, "prep", "restore")))
        case "stoplcgrp":
            return Request(method: "POST", path: "/v1/lcgroups/\(operand)/stop", body: object(flags(invocation, "force")))
        case "rmlcgrp":
            return Request(method: "DELETE", path: "/v1/lcgroups/\(operand)?force=\(invocation.flag("force"))")
        case "lssystem":
            return Request(method: "GET", path: "/v1/system")
        case "lsvolume", "lslcmap", "lslcgrp":
            let collection = ["lsvolume": "/v1/volumes", "lslcmap": "/v1/lcmaps", "lslcgrp": "/v1/lcgroups"][invocation.command]!
            return Request(method: "GET", path: invocation.operand == nil ? collection : "\(collection)/\(operand)")
        default:
            preconditionFailure("\(invocation.command) is in FastCommandLine.commands but has no request")
        }
    }

    /// The columns of a listing command's output; `nil` for the other commands.
    static func listingColumns(_ invocation: FastInvocation) -> [String]? {
        switch invocation.command {
        case "lssystem": FastListing.systemColumns
        case "lsvolume": FastListing.volumeColumns
        case "lslcmap": FastListing.mapColumns
        // The detail view and JSON add each group's lcmaps.
        case "lslcgrp": FastListing.groupColumns + (invocation.operand != nil || invocation.flag("json") ? ["lcmaps"] : [])
        default: nil
        }
    }

    /// Runs one parsed control command: its request, then what its ArgumentParser twin prints.
    /// Returns false, having changed nothing, when snapback-full must run it (a listing the fast
    /// path cannot render exactly).
    static func run(_ invocation: FastInvocation, client: FastClient) throws(FastPathError) -> Bool {
        let request = request(invocation, currentDirectory: currentDirectory())
        if let columns = listingColumns(invocation) {
            let answer = try client.call(request.method, request.path)
            let one = invocation.operand != nil || invocation.command == "lssystem"
            guard let rows = one ? [answer] : answer.array,
                let text = FastListing.render(
                    rows, columns: columns, json: invocation.flag("json"), delimiter: invocation.text("delim"), detail: one)
            else { return false }
            printResult(text)
            return true
        }
        let events = try client.command(request.method, request.path, body: request.body)
        switch invocation.command {
        case "mkvolume":
            let row = try client.call("GET", "/v1/volumes/\(segment(invocation.text("name")!))")
            guard let id = row["id"]?.int else { throw unexpected(row) }
            printResult("Volume, id [\(id)], successfully created")
        case "mklcmap":
            let (source, target, name) = (invocation.text("source"), invocation.text("target"), invocation.text("name"))
            guard let rows = try client.call("GET", "/v1/lcmaps").array else { throw FastPathError.unexpected("no array of lcmaps") }
            let created = rows.last { $0["role"]?.string == "forward" && $0["source"]?.string == source && $0["target"]?.string == target }
                ?? rows.first { $0["name"]?.string == name }
            printResult("LC Mapping, id [\(created?["id"]?.int.map { String($0) } ?? "?")], successfully created")
        case "mklcgrp":
            let name = invocation.text("name")
            guard let rows = try client.call("GET", "/v1/lcgroups").array else { throw FastPathError.unexpected("no array of lcgroups") }
            let created = name.flatMap { name in rows.first { $0["name"]?.string == name } }
                ?? rows.max { ($0["id"]?.int ?? -1) < ($1["id"]?.int ?? -1) }
            printResult("LC Consistency Group, id [\(created?["id"]?.int.map { String($0) } ?? "?")], successfully created")
        case "fault":
            if events.contains("GroupRollbackStarted") {
                printResult("automatic group rollback started")
            } else if events.contains("RollbackStarted") {
                printResult("automatic rollback started")
            }
            if events.contains("GroupRollbackScheduled") { printResult("automatic group rollback scheduled (hold window); recovervolume cancels it") }
            if events.contains("RollbackScheduled") { printResult("automatic rollback scheduled (hold window); recovervolume cancels it") }
        default:
            break
        }
        return true
    }

    static func unexpected(_ answer: JSONValue) -> FastPathError { .unexpected("\(answer)") }

    /// A JSON object of the members that have a value, in the order given (the request types'
    /// declaration order, as JSONEncoder writes them).
    static func object(_ members: [(String, JSONValue?)]) -> String {
        let present = members.compactMap { key, value in value.map { (key, $0) } }
        return "{" + present.map { JSONValue.quoted($0.0) + ":" + encode($0.1) }.joined(separator: ",") + "}"
    }

    static func encode(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case let .bool(value): value ? "true" : "false"
        case let .number(text): text
        case let .string(text): JSONValue.quoted(text)
        case let .array(values): "[" + values.map(encode).joined(separator: ",") + "]"
        case let .object(members): object(members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
    }

    static func texts(_ invocation: FastInvocation, _ names: String...) -> [(String, JSONValue?)] {
        names.map { ($0, invocation.text($0).map { .string($0) }) }
    }

    static func integers(_ invocation: FastInvocation, _ names: String...) -> [(String, JSONValue?)] {
        names.map { ($0, invocation.integer($0).map { .number(String($0)) }) }
    }

    /// Flags sent as `true` or `false` (never omitted), as `StartMapRequest` and `ForceRequest` are.
    static func flags(_ invocation: FastInvocation, _ names: String...) -> [(String, JSONValue?)] {
        names.map { ($0, .bool(invocation.flag($0))) }
    }

    static func currentDirectory() -> String {
        guard let path = getcwd(nil, 0) else { return "." }
        defer { free(path) }
        return String(cString: path)
    }
}

extension FastPathError {
    static func unexpected(_ what: String) -> FastPathError {
        FastPathError(code: "daemon_error", message: "snapbackd sent an unexpected answer: \(what)")
    }
}
