import Foundation
import Testing
import Yams

// Issue 15, part 7: `Specs/openapi.yaml` is an exact description of what the server accepts. The
// constraints are read from the YAML itself (Yams), so that the test fails when the schema and
// the server disagree. Requests are generated with a seeded generator: those valid by the
// schema are never answered 400 by a real snapbackd (and get a status the operation lists);
// those that break one constraint are answered 400 with an `ErrorBody` and record nothing.
// `SNAPBACK_SEED` replays a run.

// MARK: - The schema

/// `Specs/openapi.yaml`, parsed.
struct OpenAPIDocument {
    let root: [String: Any]

    static func load() throws -> OpenAPIDocument {
        let specs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Specs/openapi.yaml")
        let text = try String(contentsOf: specs, encoding: .utf8)
        guard let root = try Yams.load(yaml: text) as? [String: Any] else { throw RigError("openapi.yaml is not a mapping") }
        return OpenAPIDocument(root: root)
    }

    /// `components.schemas.NAME`.
    func schema(_ name: String) -> [String: Any] {
        let components = root["components"] as? [String: Any] ?? [:]
        let schemas = components["schemas"] as? [String: Any] ?? [:]
        return schemas[name] as? [String: Any] ?? [:]
    }

    /// One property's schema in `components.schemas.NAME`.
    func property(_ schema: String, _ name: String) -> [String: Any] {
        (self.schema(schema)["properties"] as? [String: Any])?[name] as? [String: Any] ?? [:]
    }

    /// The statuses an operation lists (`paths.PATH.METHOD.responses`).
    func statuses(_ path: String, _ method: String) -> Set<Int> {
        let paths = root["paths"] as? [String: Any] ?? [:]
        let item = paths[path] as? [String: Any] ?? [:]
        let operation = item[method.lowercased()] as? [String: Any] ?? [:]
        let responses = operation["responses"] as? [String: Any] ?? [:]
        return Set(responses.keys.compactMap { Int($0) })
    }

    /// The request schema of an operation (its `requestBody`'s `$ref`).
    func requestSchemaName(_ path: String, _ method: String) -> String? {
        let paths = root["paths"] as? [String: Any] ?? [:]
        let operation = (paths[path] as? [String: Any])?[method.lowercased()] as? [String: Any]
        let body = operation?["requestBody"] as? [String: Any]
        let content = (body?["content"] as? [String: Any])?["application/json"] as? [String: Any]
        let reference = (content?["schema"] as? [String: Any])?["$ref"] as? String
        return reference?.components(separatedBy: "/").last
    }

    /// Why `value` is not valid by `schema` (empty when it is): the subset of OpenAPI 3.0's
    /// schema objects that the request schemas use (`type`, `nullable`, `enum`, `minimum`,
    /// `maximum`, `multipleOf`, `minLength`, `maxLength`, `x-maxBytes`, `pattern` with ECMA
    /// whole-string anchors, `required`, `properties`, `anyOf`, `not`, `$ref`).
    func violations(_ value: Any?, _ schema: [String: Any], at path: String = "$") -> [String] {
        if let reference = schema["$ref"] as? String, let name = reference.components(separatedBy: "/").last {
            return violations(value, self.schema(name), at: path)
        }
        guard let value else { return [] }
        var found: [String] = []
        if let choices = schema["enum"] as? [Any], !choices.contains(where: { jsonKey($0) == jsonKey(value) }) {
            found.append("\(path): \(jsonKey(value)) not in enum")
        }
        if value is NSNull {
            if schema["type"] != nil && schema["nullable"] as? Bool != true { found.append("\(path): null") }
            return found
        }
        if let type = schema["type"] as? String, !hasType(value, type) {
            return found + ["\(path): not \(type)"]
        }
        if let number = value as? Int, !(value is Bool) {
            if let minimum = schema["minimum"] as? Int, number < minimum { found.append("\(path): \(number) < \(minimum)") }
            if let maximum = schema["maximum"] as? Int, number > maximum { found.append("\(path): \(number) > \(maximum)") }
            if let multiple = schema["multipleOf"] as? Int, number % multiple != 0 { found.append("\(path): \(number) not a multiple of \(multiple)") }
        }
        if let text = value as? String {
            let characters = text.unicodeScalars.count
            if let minimum = schema["minLength"] as? Int, characters < minimum { found.append("\(path): shorter than \(minimum)") }
            if let maximum = schema["maxLength"] as? Int, characters > maximum { found.append("\(path): longer than \(maximum)") }
            if let bytes = schema["x-maxBytes"] as? Int, text.utf8.count > bytes { found.append("\(path): over \(bytes) bytes") }
            if let pattern = schema["pattern"] as? String, !matchesWhole(pattern, text) { found.append("\(path): does not match \(pattern)") }
        }
        if let object = value as? [String: Any] {
            for key in schema["required"] as? [String] ?? [] where object[key] == nil { found.append("\(path): \(key) missing") }
            for (key, property) in schema["properties"] as? [String: Any] ?? [:] {
                if let property = property as? [String: Any], let member = object[key] {
                    found += violations(member, property, at: path + "." + key)
                }
            }
        }
        if let choices = schema["anyOf"] as? [[String: Any]], !choices.contains(where: { violations(value, $0, at: path).isEmpty }) {
            found.append("\(path): none of anyOf")
        }
        if let excluded = schema["not"] as? [String: Any], violations(value, excluded, at: path).isEmpty {
            found.append("\(path): matches not (\(excluded["description"] as? String ?? ""))")
        }
        return found
    }

    private func hasType(_ value: Any, _ type: String) -> Bool {
        switch type {
        case "string": value is String
        case "integer": value is Int && !(value is Bool)
        case "boolean": value is Bool
        case "object": value is [String: Any]
        default: true
        }
    }

    /// ECMA-262 semantics of an anchored pattern: the match must cover the whole string (ICU's
    /// `$` would also match before a final newline).
    private func matchesWhole(_ pattern: String, _ text: String) -> Bool {
        guard let expression = try? NSRegularExpression(pattern: pattern) else { return false }
        let range = NSRange(text.startIndex..., in: text)
        guard let match = expression.firstMatch(in: text, range: range) else { return false }
        return match.range == range
    }
}

/// A JSON value as comparable text (`true` is not `1`).
func jsonKey(_ value: Any?) -> String {
    switch value {
    case nil, is NSNull: "null"
    case let flag as Bool: "b:\(flag)"
    case let number as Int: "i:\(number)"
    case let text as String: "s:\(text.debugDescription)"
    default: "?:\(String(describing: value))"
    }
}

/// A JSON body as text (`NSNull` for null).
func jsonText(_ object: [String: Any]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
}

// MARK: - The generator

/// SplitMix64: one seed, one sequence.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One operation of the control API, with a generator of bodies valid by its schema.
struct Operation: Sendable {
    /// The path as the document spells it, and a path with the parameter filled in.
    var template: String
    var method: String
    /// Where a request that breaks the schema goes: an object of the fixture that exists (a
    /// path naming no object may be answered 404 before the body is checked).
    var fixturePath: String
    var concretePath: @Sendable (inout SeededGenerator) -> String
}

/// Values valid by a property's schema, drawn with edges favoured; built from the constraints
/// the schema states (so a schema that says more than the server makes the server answer 400).
struct ValueGenerator {
    let document: OpenAPIDocument
    /// Where generated backing files go (fresh names: never an existing file).
    let scratchDirectory: String

    func value(_ schemaName: String, _ field: String, _ random: inout SeededGenerator) -> Any {
        let property = document.property(schemaName, field)
        if let choices = property["enum"] as? [Any] {
            let concrete = choices.filter { !($0 is NSNull) }
            if !concrete.isEmpty { return concrete.randomElement(using: &random)! }
        }
        switch property["type"] as? String {
        case "integer":
            let minimum = property["minimum"] as? Int ?? 0
            let maximum = property["maximum"] as? Int ?? 1_000_000
            let multiple = property["multipleOf"] as? Int ?? 1
            let low = (minimum + multiple - 1) / multiple
            let high = maximum / multiple
            let small = min(high, low + 4096)
            switch Int.random(in: 0..<6, using: &random) {
            case 0: return low * multiple
            case 1: return high * multiple
            case 2: return Int.random(in: low...high, using: &random) * multiple
            default: return Int.random(in: low...small, using: &random) * multiple
            }
        case "boolean":
            return Bool.random(using: &random)
        default:
            return string(schemaName, field, property, &random)
        }
    }

    private func string(_ schemaName: String, _ field: String, _ property: [String: Any], _ random: inout SeededGenerator) -> String {
        let minimum = property["minLength"] as? Int ?? 1
        let maximum = min(property["maxLength"] as? Int ?? 64, property["x-maxBytes"] as? Int ?? Int.max)
        switch field {
        case "name":
            let first = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
            let rest = first + Array("0123456789-.")
            let length = [minimum, maximum, Int.random(in: minimum...maximum, using: &random), Int.random(in: minimum...min(maximum, 8), using: &random)]
                .randomElement(using: &random)!
            return String(first.randomElement(using: &random)!) + String((1..<max(length, 1)).map { _ in rest.randomElement(using: &random)! })
        case "detect", "autorestore":
            return ["on", "off", "yes", "no", "true", "false", "ON", "Off", "tRuE", "NO"].randomElement(using: &random)!
        case "sensitivity":
            return ["low", "medium", "high", "LOW", "Medium", "hIgH"].randomElement(using: &random)!
        case "path":
            return scratchDirectory + "/gen-" + String(random.next() % 1_000_000_000, radix: 36) + ["", ".img", " é"].randomElement(using: &random)!
        case "reason":
            let alphabet = Array("abcdefghijklmnopqrstuvwxyz ABC0123456789.,:;!-_/'\"éü日")
            var text = String(alphabet.filter { $0 != " " }.randomElement(using: &random)!)
            let length = Int.random(in: 0...(Bool.random(using: &random) ? 40 : 300), using: &random)
            for _ in 0..<length {
                let next = alphabet.randomElement(using: &random)!
                if text.utf8.count + String(next).utf8.count > maximum { break }
                text.append(next)
            }
            return text
        case "onset":
            let seconds = Int.random(in: 0...4_000_000_000, using: &random)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = Bool.random(using: &random) ? [.withInternetDateTime] : [.withInternetDateTime, .withFractionalSeconds]
            return formatter.string(from: Date(timeIntervalSince1970: Double(seconds)))
        case "source", "target", "lcgrp":
            return ["v0", "v1", "v2", "v3", "0", "1", "g0", "nope", "7"].randomElement(using: &random)!
        default:
            return "x"
        }
    }

    /// A body: each property absent, null (when nullable) or a valid value; required ones given.
    func body(_ schemaName: String, _ random: inout SeededGenerator) -> [String: Any] {
        let schema = document.schema(schemaName)
        let required = Set(schema["required"] as? [String] ?? [])
        var body: [String: Any] = [:]
        for (field, property) in (schema["properties"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            let nullable = (property as? [String: Any])?["nullable"] as? Bool == true
            let roll = Int.random(in: 0..<10, using: &random)
            if !required.contains(field) && roll < 4 { continue }
            if nullable && roll == 4 { body[field] = NSNull(); continue }
            body[field] = value(schemaName, field, &random)
        }
        return body
    }

    /// Values that break the property's schema, each one constraint: the wrong JSON type, one
    /// past each bound, a step off the multiple, an enum's neighbours, strings off the pattern.
    func violating(_ schemaName: String, _ field: String) -> [Any] {
        let property = document.property(schemaName, field)
        var candidates: [Any] = []
        switch property["type"] as? String {
        case "integer":
            candidates.append("12")
            candidates.append(1.5)
            if let minimum = property["minimum"] as? Int { candidates.append(minimum - 1) }
            if let maximum = property["maximum"] as? Int { candidates.append(maximum + 1) }
            if let multiple = property["multipleOf"] as? Int, let minimum = property["minimum"] as? Int {
                candidates += [minimum + multiple / 2, minimum + 1, 3 * multiple - 1]
            }
            if let choices = property["enum"] as? [Any] {
                for case let number as Int in choices { candidates += [number - 1, number + 1, number * 2] }
            }
        case "boolean":
            candidates += ["yes", 1]
        default:
            candidates.append(7)
            if let minimum = property["minLength"] as? Int, minimum > 0 { candidates.append("") }
            if let maximum = property["maxLength"] as? Int {
                candidates += [String(repeating: "a", count: maximum + 1), "/" + String(repeating: "a", count: maximum)]
            }
            if let bytes = property["x-maxBytes"] as? Int {
                candidates += [String(repeating: "é", count: bytes / 2 + 1), "/" + String(repeating: "é", count: bytes / 2)]
            }
            candidates += [
                "", "9a", "0", "-a", ".a", "a b", "a/b", "ä", "a\u{1}", "a\u{7F}", "a\u{85}b", "relative/x.img", "/x\ny", "/x\u{9B}",
                "   ", "\t", "a\nb", "line\r", "maybe", "onn", "o n", "1", "lo", "highest", "2026-12-02", "yesterday",
                "2026-12-02 09:30:00Z", "1969-12-31T23:59:59Z", "2026-12-02T09:30:00", "-5",
            ]
        }
        // Keep those the schema refuses for this field alone.
        return candidates.filter { !document.violations($0, property).isEmpty }
    }
}

// MARK: - The tests

@Suite("the OpenAPI document is exact", .serialized)
struct SchemaConformanceTests {
    static let seed: UInt64 = ProcessInfo.processInfo.environment["SNAPBACK_SEED"].flatMap { UInt64($0) } ?? 0x5EED_0015_0007

    /// The mutating operations and the path each is sent to (objects that exist, and some that
    /// do not: a 404 is not a 400).
    static let operations: [Operation] = [
        Operation(template: "/v1/volumes", method: "POST", fixturePath: "/v1/volumes") { _ in "/v1/volumes" },
        Operation(template: "/v1/volumes/{volume}", method: "PATCH", fixturePath: "/v1/volumes/v2") {
            "/v1/volumes/" + ["v0", "v2", "1", "nope"].randomElement(using: &$0)!
        },
        Operation(template: "/v1/volumes/{volume}/fault", method: "POST", fixturePath: "/v1/volumes/v2/fault") {
            "/v1/volumes/" + ["v2", "v3", "2", "nope"].randomElement(using: &$0)! + "/fault"
        },
        Operation(template: "/v1/lcmaps", method: "POST", fixturePath: "/v1/lcmaps") { _ in "/v1/lcmaps" },
        Operation(template: "/v1/lcmaps/{map}", method: "PATCH", fixturePath: "/v1/lcmaps/m0") {
            "/v1/lcmaps/" + ["m0", "m0_rev", "0", "nope"].randomElement(using: &$0)!
        },
        Operation(template: "/v1/lcmaps/{map}/start", method: "POST", fixturePath: "/v1/lcmaps/m0/start") {
            "/v1/lcmaps/" + ["m0", "nope"].randomElement(using: &$0)! + "/start"
        },
        Operation(template: "/v1/lcmaps/{map}/stop", method: "POST", fixturePath: "/v1/lcmaps/m0/stop") {
            "/v1/lcmaps/" + ["m0", "nope"].randomElement(using: &$0)! + "/stop"
        },
        Operation(template: "/v1/lcgroups", method: "POST", fixturePath: "/v1/lcgroups") { _ in "/v1/lcgroups" },
        Operation(template: "/v1/lcgroups/{group}", method: "PATCH", fixturePath: "/v1/lcgroups/g0") {
            "/v1/lcgroups/" + ["g0", "0", "nope"].randomElement(using: &$0)!
        },
        Operation(template: "/v1/lcgroups/{group}/start", method: "POST", fixturePath: "/v1/lcgroups/g0/start") {
            "/v1/lcgroups/" + ["g0", "nope"].randomElement(using: &$0)! + "/start"
        },
        Operation(template: "/v1/lcgroups/{group}/stop", method: "POST", fixturePath: "/v1/lcgroups/g0/stop") {
            "/v1/lcgroups/" + ["g0", "nope"].randomElement(using: &$0)! + "/stop"
        },
    ]

    /// The objects the generated requests name: volumes v0–v3 (v2 of another size), map m0
    /// (v0 → v1), group g0.
    static func prepare(_ daemon: Daemon) async throws {
        for (name, size) in [("v0", "1m"), ("v1", "1m"), ("v2", "2m"), ("v3", "1m")] {
            try await daemon.ok("mkvolume", "-name", name, "-size", size)
        }
        try await daemon.ok("mklcmap", "-source", "v0", "-target", "v1", "-name", "m0", "-copyrate", "0")
        try await daemon.ok("mklcgrp", "-name", "g0")
    }

    /// The controller's last sequence (`GET /v1/system`).
    static func lastSequence(_ daemon: Daemon) throws -> Int {
        let (status, body) = try controlRequest(daemon.socketPath, "GET", "/v1/system", json: "")
        guard status.contains(" 200 "), let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let sequence = object["last_sequence"] as? Int
        else { throw RigError("GET /v1/system: \(status) \(body)") }
        return sequence
    }

    static func statusCode(_ line: String) -> Int { Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0 }

    /// An error body is an `ErrorBody`: `code` and `message`, both strings.
    static func isErrorBody(_ body: String, _ document: OpenAPIDocument) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return false }
        return object["code"] is String && object["message"] is String && document.violations(object, document.schema("ErrorBody")).isEmpty
    }

    @Test("the schema states the server's constraints (read from the YAML)")
    func constraintsAsTheServerChecks() throws {
        let document = try OpenAPIDocument.load()
        let volume = document.property("CreateVolumeRequest", "size")
        #expect(volume["minimum"] as? Int == 512 && volume["maximum"] as? Int == 256 << 40 && volume["multipleOf"] as? Int == 512)
        #expect(document.property("CreateVolumeRequest", "name")["maxLength"] as? Int == 63)
        #expect(document.property("CreateMapRequest", "name")["maxLength"] as? Int == 59)
        #expect(document.property("ChangeMapRequest", "name")["maxLength"] as? Int == 59)
        #expect(document.property("CreateGroupRequest", "name")["maxLength"] as? Int == 63)
        #expect(document.property("CreateMapRequest", "copyrate")["maximum"] as? Int == 150)
        #expect((document.property("CreateMapRequest", "grainsize")["enum"] as? [Any]).map { $0.map(jsonKey) } == ["i:64", "i:256", "null"])
        #expect(document.property("CreateGroupRequest", "autorestoredelay")["maximum"] as? Int == 86_400)
        #expect(document.property("FaultRequest", "reason")["x-maxBytes"] as? Int == 256)
        #expect(document.property("CreateVolumeRequest", "path")["x-maxBytes"] as? Int == 4096)
        // Every request schema is used by an operation, and every operation's errors are ErrorBodies.
        for operation in Self.operations {
            #expect(document.requestSchemaName(operation.template, operation.method) != nil, "\(operation.method) \(operation.template)")
            #expect(document.statuses(operation.template, operation.method).contains(400), "\(operation.method) \(operation.template)")
        }
    }

    @Test("requests valid by the schema are never answered 400; requests breaking one constraint are, and change nothing")
    func bothDirections() async throws {
        let document = try OpenAPIDocument.load()
        var random = SeededGenerator(state: Self.seed)
        let replay = "SNAPBACK_SEED=\(Self.seed)"
        try await withDaemon { daemon in
            try await Self.prepare(daemon)
            let scratch = daemon.directory + "/generated"
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            let values = ValueGenerator(document: document, scratchDirectory: scratch)

            // Direction 2, on the fixture (before anything else changes it): one field made to
            // break its schema (or a rule between fields) → 400, an ErrorBody, nothing recorded.
            // The other fields are valid and name objects that exist, so that only the broken
            // constraint can be refused.
            let eventsBefore = try await daemon.events().count
            var invalidSent = 0
            var cases: [(Operation, [String: Any])] = []
            for operation in Self.operations {
                let schemaName = document.requestSchemaName(operation.template, operation.method)!
                let fields = (document.schema(schemaName)["properties"] as? [String: Any] ?? [:]).keys.sorted()
                for field in fields {
                    for bad in values.violating(schemaName, field) {
                        // A valid body, then the one field replaced.
                        var body = values.body(schemaName, &random)
                        for _ in 0..<50 where !document.violations(body, document.schema(schemaName)).isEmpty { body = values.body(schemaName, &random) }
                        if body["source"] != nil { body["source"] = "v0" }
                        if body["target"] != nil { body["target"] = "v3" }
                        body["lcgrp"] = nil
                        body[field] = bad
                        if Int.random(in: 0..<3, using: &random) == 0 || cases.count < 40 || field == "name" || field == "size" {
                            cases.append((operation, body))
                        }
                    }
                }
            }
            // Rules between fields, each on its own.
            let volumePatch = Self.operations[1], mapCreate = Self.operations[3], mapPatch = Self.operations[4]
            let groupCreate = Self.operations[7], groupPatch = Self.operations[8], volumeCreate = Self.operations[0]
            cases += [
                (volumePatch, [:]), (volumePatch, ["name": NSNull(), "detect": NSNull()]),
                (mapPatch, [:]), (mapPatch, ["nolcgrp": false]), (mapPatch, ["lcgrp": "g0", "nolcgrp": true]),
                (groupPatch, [:]), (groupPatch, ["autorestoredelay": NSNull()]),
                (volumeCreate, ["name": "vs", "size": 1 << 20, "sensitivity": "high"]),
                (volumeCreate, ["name": "vs", "size": 1 << 20, "detect": "off", "sensitivity": "low"]),
                (volumeCreate, ["name": "vs", "size": 1 << 20, "detect": NSNull(), "sensitivity": "medium"]),
                (volumeCreate, ["size": 1 << 20]), (mapCreate, ["source": "v0"]), (groupCreate, ["name": ["g"]]),
            ]
            for (operation, body) in cases {
                let schemaName = document.requestSchemaName(operation.template, operation.method)!
                let json = try jsonText(body)
                let broken = document.violations(body, document.schema(schemaName))
                #expect(!broken.isEmpty, "\(replay): \(json) was meant to break \(schemaName)")
                guard !broken.isEmpty else { continue }
                let path = operation.fixturePath
                let before = try Self.lastSequence(daemon)
                let (status, answer) = try controlRequest(daemon.socketPath, operation.method, path, json: json)
                invalidSent += 1
                #expect(
                    Self.statusCode(status) == 400,
                    "\(replay): \(operation.method) \(path) \(json) breaks the schema (\(broken.joined(separator: "; "))) but was answered \(status) \(answer)")
                #expect(Self.isErrorBody(answer, document), "\(replay): \(status) body \(answer) is not an ErrorBody")
                #expect(try Self.lastSequence(daemon) == before, "\(replay): \(operation.method) \(path) \(json) recorded events")
            }
            #expect(invalidSent >= 100, "only \(invalidSent) invalid requests")
            #expect(try await daemon.events().count == eventsBefore, "\(replay): the refused requests recorded events")
            // Direction 1: valid by the schema, never 400, and a status the operation lists.
            var validSent: [String: Int] = [:]
            for _ in 0..<220 {
                let operation = Self.operations.randomElement(using: &random)!
                let schemaName = try #require(document.requestSchemaName(operation.template, operation.method))
                let body = values.body(schemaName, &random)
                guard document.violations(body, document.schema(schemaName)).isEmpty else { continue }
                let path = operation.concretePath(&random)
                let json = try jsonText(body)
                let (status, answer) = try controlRequest(daemon.socketPath, operation.method, path, json: json)
                let code = Self.statusCode(status)
                validSent[schemaName, default: 0] += 1
                #expect(code != 400, "\(replay): \(operation.method) \(path) \(json) is valid by the schema but answered \(status) \(answer)")
                #expect(
                    document.statuses(operation.template, operation.method).contains(code),
                    "\(replay): \(operation.method) \(path) answered \(code), which the schema does not list: \(answer)")
                if code >= 400 { #expect(Self.isErrorBody(answer, document), "\(replay): \(status) body \(answer) is not an ErrorBody") }
            }
            for operation in Self.operations {
                let name = document.requestSchemaName(operation.template, operation.method) ?? ""
                #expect(validSent[name, default: 0] >= 5, "\(replay): too few valid \(name) generated (\(validSent[name, default: 0])): the schema and the generator disagree")
            }

        }
    }
}
