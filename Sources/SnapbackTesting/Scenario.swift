import Foundation
import SnapbackCore
import SnapbackData

/// A crash scenario read from a `.scenario` file (format: `Specs/scenarios/README.md`): a script
/// of commands, host I/O, crashes at chosen I/O points, recoveries and expectations.
public struct Scenario: Sendable {
    /// The file name, for messages.
    public var name: String
    /// The lines that do something, in order.
    public var steps: [Step]
    /// Set by a `known-issue` line: the scenario shows a defect that is not fixed yet and is
    /// expected to fail.
    public var knownIssue: String?

    /// One line of the script.
    public struct Step: Sendable {
        /// The line number in the file (from 1).
        public var line: Int
        /// The line without its comment.
        public var text: String
        /// What the line asks for.
        public var action: Action
    }

    /// What a line asks for.
    public indirect enum Action: Sendable {
        case operation(SimulationOperation)
        /// Writes `value` over the whole volume with FUA.
        case fill(volume: String, value: UInt8)
        /// Crashes now; only `recover` may follow.
        case crash
        /// Runs `action` with a crash at its `ioPoint`-th I/O point (which does not happen).
        case crashDuring(ioPoint: Int, Action)
        /// Starts a new controller on what the crash left.
        case recover
        case expect(Expectation)
        /// The action must be refused (a command the state machine rejects, a refused host I/O).
        case expectRefused(Action)
    }

    /// What an `expect` line checks.
    public enum Expectation: Sendable {
        /// A host read of the range returns only the given bytes.
        case read(volume: String, offset: UInt64, length: UInt64, ExpectedBytes)
        /// The simulated disk's bytes (what reads of the store itself see).
        case raw(volume: String, offset: UInt64, length: UInt64, ExpectedBytes)
        /// A host read of the whole target equals the image recorded when the map started.
        case image(map: String)
        case status(volume: String, VolumeStatus)
        case mapState(map: String, MapState)
        case rollback(map: String, running: Bool)
        case bit(map: String, kind: BitmapKind, grain: UInt64, set: Bool)
        case log(EventType, present: Bool)
    }

    /// What bytes an expectation allows.
    public enum ExpectedBytes: Sendable {
        /// Each byte is one of these values.
        case anyOf([UInt8])
        /// The bytes of the image map M recorded when it started.
        case snapshot(map: String)
    }

    /// Reads and parses a scenario file.
    /// - Throws: ``ScenarioError`` with the file and line, or the file system's error.
    public static func load(path: String) throws -> Scenario {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try parse(text, name: (path as NSString).lastPathComponent)
    }

    /// Parses a scenario. Strict: an unknown directive, a missing or extra argument, a malformed
    /// number is an error naming its line.
    /// - Throws: ``ScenarioError``.
    public static func parse(_ text: String, name: String) throws(ScenarioError) -> Scenario {
        var scenario = Scenario(name: name, steps: [])
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = index + 1
            let content = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard !words.isEmpty else { continue }
            if words[0] == "known-issue" {
                guard words.count > 1 else { throw ScenarioError(name, line, "known-issue needs a description") }
                guard scenario.knownIssue == nil else { throw ScenarioError(name, line, "a second known-issue line") }
                scenario.knownIssue = words.dropFirst().joined(separator: " ")
                continue
            }
            var parser = LineParser(file: name, line: line, words: words)
            let action = try parser.action()
            scenario.steps.append(Step(line: line, text: content.trimmingCharacters(in: .whitespaces), action: action))
        }
        return scenario
    }
}

/// A malformed scenario file, or a failed expectation, at a line.
public struct ScenarioError: Error, Sendable, CustomStringConvertible {
    /// The scenario's file name.
    public var file: String
    /// The line (from 1).
    public var line: Int
    /// What is wrong.
    public var message: String

    /// An error at `file`:`line`.
    public init(_ file: String, _ line: Int, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `FILE:LINE: MESSAGE`.
    public var description: String { "\(file):\(line): \(message)" }
}

/// Parses the words of one line.
private struct LineParser {
    let file: String
    let line: Int
    var words: [String]

    func error(_ message: String) -> ScenarioError { ScenarioError(file, line, message) }

    mutating func take(_ what: String) throws(ScenarioError) -> String {
        guard !words.isEmpty else { throw error("missing \(what)") }
        return words.removeFirst()
    }

    func end() throws(ScenarioError) {
        guard words.isEmpty else { throw error("unexpected \"\(words.joined(separator: " "))\"") }
    }

    /// `123`, `64k`, `1m`, `2g` (binary units).
    mutating func size(_ what: String) throws(ScenarioError) -> UInt64 {
        let word = try take(what)
        let lower = word.lowercased()
        var digits = lower
        var multiplier: UInt64 = 1
        if let last = lower.last, let unit = ["k": UInt64(1) << 10, "m": 1 << 20, "g": 1 << 30][String(last)] {
            digits = String(lower.dropLast())
            multiplier = unit
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else {
            throw error("\(what) \"\(word)\" is not a size (like 4096, 64k, 1m)")
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw error("\(what) \"\(word)\" is too large") }
        return product
    }

    mutating func count(_ what: String) throws(ScenarioError) -> Int {
        let word = try take(what)
        guard let value = Int(word), value >= 0 else { throw error("\(what) \"\(word)\" is not a count") }
        return value
    }

    /// `0xa5`.
    mutating func byte(_ what: String) throws(ScenarioError) -> UInt8 {
        let word = try take(what)
        guard word.hasPrefix("0x"), (3...4).contains(word.count), let value = UInt8(word.dropFirst(2), radix: 16) else {
            throw error("\(what) \"\(word)\" is not a byte (like 0xa5)")
        }
        return value
    }

    /// `key=value` options, each at most once, from `allowed`.
    mutating func options(_ allowed: Set<String>) throws(ScenarioError) -> [String: String] {
        var result: [String: String] = [:]
        while let word = words.first {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, allowed.contains(parts[0]) else {
                throw error("unexpected \"\(word)\" (options: \(allowed.sorted().map { $0 + "=" }.joined(separator: ", ")))")
            }
            guard result[parts[0]] == nil else { throw error("\(parts[0]) given twice") }
            result[parts[0]] = parts[1]
            words.removeFirst()
        }
        return result
    }

    func onOff(_ value: String?, _ what: String) throws(ScenarioError) -> Bool? {
        switch value {
        case nil: nil
        case "on": true
        case "off": false
        case let other?: throw error("\(what)=\(other): expected on or off")
        }
    }

    func copyRate(_ value: String?) throws(ScenarioError) -> Int? {
        guard let value else { return nil }
        guard let rate = Int(value) else { throw error("copyrate=\(value) is not a number") }
        return rate
    }

    mutating func flag(_ name: String) -> Bool {
        guard words.first == name else { return false }
        words.removeFirst()
        return true
    }

    mutating func action() throws(ScenarioError) -> Scenario.Action {
        let directive = try take("directive")
        switch directive {
        case "volume":
            let name = try take("volume name")
            let size = try size("size")
            try end()
            return .operation(.command(.createVolume(name: name, sizeBytes: size, path: nil)))
        case "fill":
            let name = try take("volume")
            let value = try byte("fill byte")
            try end()
            return .fill(volume: name, value: value)
        case "write":
            let name = try take("volume")
            let offset = try size("offset")
            let length = try size("length")
            let value = try byte("byte")
            let fua = flag("fua")
            try end()
            guard length > 0 else { throw error("length must be positive") }
            return .operation(.write(volume: name, offset: offset, bytes: .fill(value, length: Int(length)), fua: fua))
        case "flush":
            let name = try take("volume")
            try end()
            return .operation(.flush(volume: name))
        case "map":
            let name = try take("map name")
            let source = try take("source volume")
            let target = try take("target volume")
            let options = try options(["autorestore", "copyrate", "grain"])
            var grain = Limits.grainSizeBytesDefault
            if let text = options["grain"] {
                guard let value = ["64k": UInt32(64 << 10), "256k": 256 << 10][text] else { throw error("grain=\(text): expected 64k or 256k") }
                grain = value
            }
            return .operation(.command(.createMap(CreateMap(
                source: source, target: target, name: name, autorestore: try onOff(options["autorestore"], "autorestore") ?? false,
                copyRate: try copyRate(options["copyrate"]) ?? Limits.copyRateDefault, grainSizeBytes: grain))))
        case "chmap":
            let name = try take("map")
            let options = try options(["autorestore", "copyrate"])
            guard !options.isEmpty else { throw error("chmap needs autorestore= or copyrate=") }
            return .operation(.command(.changeMap(map: name, autorestore: try onOff(options["autorestore"], "autorestore"), copyRate: try copyRate(options["copyrate"]), newName: nil)))
        case "start", "prepare", "restore":
            let name = try take("map")
            try end()
            switch directive {
            case "start": return .operation(.command(.startMap(map: name)))
            case "prepare": return .operation(.command(.prepareMap(map: name)))
            default: return .operation(.command(.startRestore(map: name)))
            }
        case "stop", "rmmap":
            let name = try take("map")
            let force = flag("force")
            try end()
            return .operation(.command(directive == "stop" ? .stopMap(map: name, force: force) : .removeMap(map: name, force: force)))
        case "group":
            let name = try take("group name")
            let options = try options(["autorestore", "delay"])
            var delay: UInt32 = 0
            if let text = options["delay"] {
                guard let value = UInt32(text) else { throw error("delay=\(text) is not a number of seconds") }
                delay = value
            }
            return .operation(.command(.createGroup(name: name, autorestore: try onOff(options["autorestore"], "autorestore") ?? false, autorestoreDelaySeconds: delay)))
        case "join":
            let map = try take("map")
            let group = try take("group")
            try end()
            return .operation(.command(.changeMap(map: map, autorestore: nil, copyRate: nil, newName: nil, group: .join(group))))
        case "leave":
            let map = try take("map")
            try end()
            return .operation(.command(.changeMap(map: map, autorestore: nil, copyRate: nil, newName: nil, group: .leave)))
        case "startgroup", "restoregroup":
            let name = try take("group")
            try end()
            return .operation(.command(directive == "startgroup" ? .startGroup(group: name) : .startGroupRestore(group: name)))
        case "stopgroup":
            let name = try take("group")
            let force = flag("force")
            try end()
            return .operation(.command(.stopGroup(group: name, force: force)))
        case "rmvolume", "recovervolume":
            let name = try take("volume")
            try end()
            return .operation(.command(directive == "rmvolume" ? .removeVolume(volume: name) : .recoverVolume(volume: name)))
        case "fault":
            let name = try take("volume")
            let reason = words.isEmpty ? "scenario fault" : words.joined(separator: " ")
            words.removeAll()
            return .operation(.command(.reportFault(volume: name, cause: .operator, reason: reason)))
        case "inject-errors":
            let name = try take("volume")
            let operations = try count("operations")
            try end()
            guard operations >= 1 else { throw error("inject-errors needs at least 1 operation") }
            return .operation(.injectErrors(volume: name, operations: operations))
        case "inject-no-space":
            let name = try take("volume")
            let operations = try count("operations")
            try end()
            guard operations >= 1 else { throw error("inject-no-space needs at least 1 operation") }
            return .operation(.injectNoSpace(volume: name, operations: operations))
        case "step":
            let budget = words.isEmpty ? UInt64(64 << 10) : try size("budget")
            try end()
            return .operation(.step(budgetBytes: budget, copies: true))
        case "drain":
            try end()
            return .operation(.drain)
        case "crash":
            if words.isEmpty { return .crash }
            guard try take("at-io") == "at-io" else { throw error("expected \"crash\" or \"crash at-io N during ...\"") }
            let point = try count("I/O point")
            guard point >= 1 else { throw error("I/O points count from 1") }
            guard try take("during") == "during" else { throw error("expected \"during\" after the I/O point") }
            let inner = try action()
            switch inner {
            case .operation, .fill: return .crashDuring(ioPoint: point, inner)
            default: throw error("only a command, a host I/O, a step or a drain can crash")
            }
        case "recover":
            try end()
            return .recover
        case "expect":
            if words.first == "refused" {
                words.removeFirst()
                let inner = try action()
                guard case .operation = inner else { throw error("expect refused needs a command or a host I/O") }
                return .expectRefused(inner)
            }
            return .expect(try expectation())
        default:
            throw error("unknown directive \"\(directive)\"")
        }
    }

    mutating func expectation() throws(ScenarioError) -> Scenario.Expectation {
        let what = try take("expectation")
        switch what {
        case "read", "raw":
            let name = try take("volume")
            let offset = try size("offset")
            let length = try size("length")
            guard try take("==") == "==" else { throw error("expected ==") }
            let bytes = try expectedBytes()
            try end()
            return what == "read" ? .read(volume: name, offset: offset, length: length, bytes) : .raw(volume: name, offset: offset, length: length, bytes)
        case "image":
            let name = try take("map")
            guard try take("==") == "==", try take("snapshot") == "snapshot" else { throw error("expected \"expect image MAP == snapshot\"") }
            try end()
            return .image(map: name)
        case "status":
            let name = try take("volume")
            let word = try take("status")
            guard let status = VolumeStatus.allCases.first(where: { $0.description == word }) else {
                throw error("status \"\(word)\": expected online, faulted, restoring or out_of_space")
            }
            try end()
            return .status(volume: name, status)
        case "state":
            let name = try take("map")
            let word = try take("state")
            guard let state = MapState.allCases.first(where: { $0.description == word }) else {
                throw error("map state \"\(word)\": expected \(MapState.allCases.map(\.description).joined(separator: ", "))")
            }
            try end()
            return .mapState(map: name, state)
        case "rollback":
            let name = try take("map")
            let word = try take("running or none")
            guard word == "running" || word == "none" else { throw error("expected running or none, not \"\(word)\"") }
            try end()
            return .rollback(map: name, running: word == "running")
        case "split", "dirty", "restored":
            let name = try take("map")
            let grain = try count("grain")
            let word = try take("on or off")
            guard word == "on" || word == "off" else { throw error("expected on or off, not \"\(word)\"") }
            try end()
            let kind: BitmapKind = what == "split" ? .split : what == "dirty" ? .dirty : .restored
            return .bit(map: name, kind: kind, grain: UInt64(grain), set: word == "on")
        case "log":
            let word = try take("has or lacks")
            guard word == "has" || word == "lacks" else { throw error("expected has or lacks, not \"\(word)\"") }
            let typeName = try take("event type")
            guard let type = EventType(name: typeName) else { throw error("unknown event type \"\(typeName)\"") }
            try end()
            return .log(type, present: word == "has")
        default:
            throw error("unknown expectation \"\(what)\" (read, raw, image, status, state, rollback, split, dirty, restored, log, refused)")
        }
    }

    /// `0xa5 [or 0x5a]...` or `snapshot MAP`.
    mutating func expectedBytes() throws(ScenarioError) -> Scenario.ExpectedBytes {
        if words.first == "snapshot" {
            words.removeFirst()
            return .snapshot(map: try take("map"))
        }
        var values = [try byte("byte")]
        while words.first == "or" {
            words.removeFirst()
            values.append(try byte("byte"))
        }
        return .anyOf(values)
    }
}
