import ArgumentParser
import Foundation
import SnapbackAPI
@testable import SnapbackCLI
@testable import SnapbackCLIFastPath
import SnapbackRandom
import Testing

/// The fast path never disagrees with the complete CLI: its table has the ArgumentParser
/// definitions' options, and a command line it accepts is one ArgumentParser accepts and turns
/// into the same request.
@Suite("snapback's fast path")
struct FastPathTests {
    /// The ArgumentParser command named `name`.
    static func definition(_ name: String) -> ParsableCommand.Type? {
        SnapbackCommand.configuration.subcommands.first { $0.configuration.commandName == name }
    }

    @Test("each fast command has its ArgumentParser twin's options, kinds, required options and operand")
    func tableMatchesArgumentParser() throws {
        for command in FastCommandLine.commands {
            let type = try #require(Self.definition(command.name), "\(command.name) is not an ArgumentParser subcommand")
            let dump = try #require(JSONSerialization.jsonObject(with: Data(type._dumpHelp().utf8)) as? [String: Any])
            let arguments = try #require((dump["command"] as? [String: Any])?["arguments"] as? [[String: Any]])
            var options: [String: (flag: Bool, required: Bool)] = [:]
            var positionals: [Bool] = []  // isOptional of each
            for argument in arguments {
                let names = (argument["names"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
                // ArgumentParser's own -h/--help: the fast path leaves it to snapback-full.
                if names.contains("help") { continue }
                let optional = argument["isOptional"] as? Bool ?? true
                switch argument["kind"] as? String {
                case "positional": positionals.append(optional)
                case "flag": if let name = names.first { options[name] = (true, !optional) }
                case "option": if let name = names.first { options[name] = (false, !optional) }
                default: Issue.record("\(command.name): unknown argument kind in \(argument)")
                }
                // IBM's single dash and the double dash, as the fast path reads them.
                if let name = names.first {
                    let kinds = Set((argument["names"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String })
                    #expect(kinds == ["longWithSingleDash", "long"], "\(command.name) -\(name): \(kinds)")
                }
            }
            var fast: [String: (flag: Bool, required: Bool)] = ["socket": (false, false)]
            for option in command.options { fast[option.name] = (option.kind == .flag, option.required) }
            for name in command.deferred { fast[name] = options[name] }
            #expect(Set(fast.keys) == Set(options.keys), "\(command.name)")
            for (name, expected) in options {
                #expect(fast[name]?.flag == expected.flag && fast[name]?.required == expected.required, "\(command.name) -\(name)")
            }
            switch command.operand {
            case .none: #expect(positionals.isEmpty, "\(command.name)")
            case .optional: #expect(positionals == [true], "\(command.name)")
            case .required: #expect(positionals == [false], "\(command.name)")
            }
        }
    }

    /// The request the ArgumentParser command would send (its `run()`'s first request).
    static func expectedRequest(_ command: ParsableCommand, directory: String) throws -> FastPath.Request {
        func json(_ value: some Encodable) throws -> String { String(decoding: try JSONEncoder().encode(value), as: UTF8.self) }
        switch command {
        case let c as MakeVolume:
            let path = c.path.map { $0.hasPrefix("/") ? $0 : directory + "/" + $0 }
            return .init(
                method: "POST", path: "/v1/volumes",
                body: try json(
                    CreateVolumeRequest(name: c.name, size: c.size.bytes, path: path, adopt: c.adopt ? true : nil, detect: c.detect, sensitivity: c.sensitivity)))
        case let c as ChangeVolume:
            return .init(
                method: "PATCH", path: "/v1/volumes/\(pathSegment(c.volume))",
                body: try json(ChangeVolumeRequest(name: c.name, detect: c.detect, sensitivity: c.sensitivity)))
        case let c as RemoveVolume:
            return .init(method: "DELETE", path: "/v1/volumes/\(pathSegment(c.volume))")
        case let c as MakeMap:
            return .init(
                method: "POST", path: "/v1/lcmaps",
                body: try json(
                    CreateMapRequest(
                        source: c.source, target: c.target, name: c.name, autorestore: c.autorestore, copyrate: c.copyRate, grainsize: c.grainSize,
                        autorestoredelay: c.autorestoreDelay, lcgrp: c.group)))
        case let c as ChangeMap:
            return .init(
                method: "PATCH", path: "/v1/lcmaps/\(pathSegment(c.map))",
                body: try json(
                    ChangeMapRequest(
                        autorestore: c.autorestore, copyrate: c.copyRate, name: c.name, autorestoredelay: c.autorestoreDelay, lcgrp: c.group,
                        nolcgrp: c.noGroup ? true : nil)))
        case let c as StartMap:
            return .init(method: "POST", path: "/v1/lcmaps/\(pathSegment(c.map))/start", body: try json(StartMapRequest(prep: c.prepare, restore: c.restore)))
        case let c as StopMap:
            return .init(method: "POST", path: "/v1/lcmaps/\(pathSegment(c.map))/stop", body: try json(ForceRequest(force: c.force)))
        case let c as RemoveMap:
            return .init(method: "DELETE", path: "/v1/lcmaps/\(pathSegment(c.map))?force=\(c.force)")
        case let c as ReportFault:
            #expect(c.onset == nil, "-onset is left to snapback-full")
            return .init(method: "POST", path: "/v1/volumes/\(pathSegment(c.volume))/fault", body: try json(FaultRequest(reason: c.reason, onset: nil)))
        case let c as RecoverVolume:
            return .init(method: "POST", path: "/v1/volumes/\(pathSegment(c.volume))/recover")
        case let c as MakeGroup:
            return .init(
                method: "POST", path: "/v1/lcgroups",
                body: try json(CreateGroupRequest(name: c.name, autorestore: c.autorestore, autorestoredelay: c.autorestoreDelay)))
        case let c as ChangeGroup:
            return .init(
                method: "PATCH", path: "/v1/lcgroups/\(pathSegment(c.group))",
                body: try json(ChangeGroupRequest(name: c.name, autorestore: c.autorestore, autorestoredelay: c.autorestoreDelay)))
        case let c as StartGroup:
            return .init(method: "POST", path: "/v1/lcgroups/\(pathSegment(c.group))/start", body: try json(StartMapRequest(prep: c.prepare, restore: c.restore)))
        case let c as StopGroup:
            return .init(method: "POST", path: "/v1/lcgroups/\(pathSegment(c.group))/stop", body: try json(ForceRequest(force: c.force)))
        case let c as RemoveGroup:
            return .init(method: "DELETE", path: "/v1/lcgroups/\(pathSegment(c.group))?force=\(c.force)")
        case is ListSystem:
            return .init(method: "GET", path: "/v1/system")
        case let c as ListVolumes:
            return .init(method: "GET", path: c.volume.map { "/v1/volumes/\(pathSegment($0))" } ?? "/v1/volumes")
        case let c as ListMaps:
            return .init(method: "GET", path: c.map.map { "/v1/lcmaps/\(pathSegment($0))" } ?? "/v1/lcmaps")
        case let c as ListGroups:
            return .init(method: "GET", path: c.group.map { "/v1/lcgroups/\(pathSegment($0))" } ?? "/v1/lcgroups")
        default:
            throw CLIError(code: "test", message: "no expected request for \(type(of: command))")
        }
    }

    /// Bodies compared as JSON values (key order and `\/` escapes aside).
    static func sameRequest(_ fast: FastPath.Request, _ expected: FastPath.Request) throws -> Bool {
        guard fast.method == expected.method, fast.path == expected.path else { return false }
        switch (fast.body, expected.body) {
        case (nil, nil): return true
        case let (a?, b?):
            let left = try JSONSerialization.jsonObject(with: Data(a.utf8)) as? NSDictionary
            let right = try JSONSerialization.jsonObject(with: Data(b.utf8)) as? NSDictionary
            return left != nil && left == right
        default: return false
        }
    }

    /// Checks one command line: accepted by the fast path only if ArgumentParser accepts it, with the same request.
    static func check(_ arguments: [String]) throws -> Bool {
        guard let invocation = FastCommandLine.parse(arguments) else { return false }
        let command: ParsableCommand
        do {
            command = try SnapbackCommand.parseAsRoot(arguments)
        } catch {
            Issue.record("the fast path accepts \(arguments), ArgumentParser refuses it: \(error)")
            return true
        }
        let fast = FastPath.request(invocation, currentDirectory: "/work")
        let expected = try expectedRequest(command, directory: "/work")
        #expect(try sameRequest(fast, expected), "\(arguments): \(fast) against \(expected)")
        return true
    }

    @Test("typical command lines: the same requests")
    func typical() throws {
        let lines: [[String]] = [
            ["chlcmap", "-socket", "/tmp/s.sock", "-copyrate", "10", "m0"],
            ["chlcmap", "m0", "--copyrate", "20", "-autorestore", "on", "-name", "m1", "-autorestoredelay", "30", "-lcgrp", "g"],
            ["chlcmap", "-nolcgrp", "m0"],
            ["mkvolume", "-name", "v", "-size", "64m"],
            ["mkvolume", "-name", "v", "-size", "1g", "-path", "relative/file", "-adopt", "-detect", "on", "-sensitivity", "high"],
            ["mkvolume", "-name", "v", "-size", "512", "-path", "/abs/file"],
            ["chvolume", "-name", "w", "v"], ["rmvolume", "v"], ["rmvolume", "name with spaces/and?query#é"],
            ["mklcmap", "-source", "s", "-target", "t"],
            ["mklcmap", "-source", "s", "-target", "t", "-name", "m", "-autorestore", "on", "-copyrate", "0", "-grainsize", "64",
             "-autorestoredelay", "5", "-lcgrp", "g"],
            ["startlcmap", "m"], ["startlcmap", "-prep", "-restore", "m"], ["stoplcmap", "-force", "m"], ["stoplcmap", "m"],
            ["rmlcmap", "m"], ["rmlcmap", "-force", "m"],
            ["fault", "-volume", "v", "-reason", "ransomware \"detected\"\tnow"], ["recovervolume", "v"],
            ["mklcgrp"], ["mklcgrp", "-name", "g", "-autorestore", "on", "-autorestoredelay", "60"],
            ["chlcgrp", "-autorestore", "off", "g"], ["startlcgrp", "-restore", "g"], ["stoplcgrp", "-force", "g"], ["rmlcgrp", "g"],
            ["lssystem"], ["lssystem", "-json"], ["lsvolume"], ["lsvolume", "-delim", ":", "v"], ["lslcmap", "-json"], ["lslcmap", "m0"],
            ["lslcgrp"], ["lslcgrp", "-json", "g", "-delim", ","],
        ]
        for line in lines { #expect(try Self.check(line), "the fast path should run \(line)") }
    }

    @Test("help, unusual and malformed command lines go to snapback-full")
    func deferred() throws {
        let lines: [[String]] = [
            [], ["--help"], ["-h"], ["help"], ["help", "chlcmap"], ["chlcmap", "--help"], ["chlcmap", "-h"], ["chlcmap", "-help", "m"],
            ["chlcmap", "help"], ["chlcmap", "-copyrate", "x", "m0"], ["chlcmap", "-copyrate", "10"], ["chlcmap", "-copyrate", "-5", "m0"],
            ["chlcmap", "-copyrate", "10", "-copyrate", "20", "m0"], ["chlcmap", "-copyrate=10", "m0"], ["chlcmap", "--", "m0"],
            ["chlcmap", "-lcgrp", "g", "-nolcgrp", "m0"], ["chlcmap", "-copyrate"], ["chlcmap", "m0", "m1"], ["chlcmap", ""],
            ["chlcmap", "-name", "", "m0"], ["chlcmap", "-bogus", "m0"], ["rmvolume"], ["rmvolume", "-socket"],
            ["fault", "-volume", "v", "-reason", "r", "-onset", "-30"], ["fault", "-volume", "v"],
            ["mkvolume", "-name", "v", "-size", "12q"], ["mkvolume", "-name", "v"], ["mkvolume", "-name", "v", "-size", "1m", "extra"],
            ["lssystem", "s"], ["lsvolume", "-json", "-json"], ["lslcmap", "-delim"], ["wait", "m0"], ["log", "show"], ["log", "verify"], ["--version"],
            ["lscluster"], ["CHLCMAP", "-copyrate", "10", "m0"],
        ]
        for line in lines { #expect(FastCommandLine.parse(line) == nil, "\(line) should go to snapback-full") }
    }

    @Test("random command lines: whatever the fast path accepts, ArgumentParser accepts with the same request")
    func randomLines() throws {
        var random = SeededRandom(seed: 0x5EED_C11)
        let values = ["10", "0", "150", "-3", "x", "", "64m", "1g", "12q", "on", "off", "m0", "a b", "é/?", "help", "--", "-", "+7", "0x10", "99999999999999999999"]
        var accepted = 0
        for _ in 0..<3000 {
            let command = FastCommandLine.commands[Int(random.next() % UInt64(FastCommandLine.commands.count))]
            let names = command.options.map(\.name) + ["socket", "bogus"] + command.deferred
            var line = [command.name]
            for _ in 0..<Int(random.next() % 6) {
                switch random.next() % 4 {
                case 0: line.append(values[Int(random.next() % UInt64(values.count))])
                default:
                    let name = names[Int(random.next() % UInt64(names.count))]
                    line.append((random.next() % 2 == 0 ? "-" : "--") + name)
                    if random.next() % 5 != 0 { line.append(values[Int(random.next() % UInt64(values.count))]) }
                }
            }
            if try Self.check(line) { accepted += 1 }
        }
        #expect(accepted > 100, "the generator should give the fast path some lines it runs (\(accepted))")
    }

    @Test("JSON: the API's answers read back, strings written escaped")
    func json() throws {
        let text = #"{"events":["A","B\u00e9\n"],"first_seq":18446744073709551615,"held_ms":1.5e-3,"x":[true,false,null,{}],"s":"\ud83d\ude00\/"}"#
        let value = try JSONValue.parse(Array(text.utf8))
        #expect(value["events"] == .array([.string("A"), .string("Bé\n")]))
        #expect(value["first_seq"] == .number("18446744073709551615"))
        #expect(value["s"]?.string == "😀/")
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "\"\u{01}\"", "01x", "nul", "[1] 2"] {
            #expect(throws: JSONValue.ParseError.self, "\(bad)") { try JSONValue.parse(Array(bad.utf8)) }
        }
        let nested = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(Array(nested.utf8)) }
        let awkward = "q\"b\\s\n\u{01}é/"
        let quoted = JSONValue.quoted(awkward)
        #expect(try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: .fragmentsAllowed) as? String == awkward)
        #expect(try JSONValue.parse(Array(quoted.utf8)) == .string(awkward))
    }

    @Test("path segments percent-encoded as Foundation does")
    func segments() {
        for text in ["m0", "a b", "é/?#%", "A-Z_a.z~0", "\u{1F600}"] {
            #expect(SnapbackCLIFastPath.segment(text) == SnapbackCLI.pathSegment(text), "\(text)")
        }
    }

    @Test("the listings' columns are the API rows'")
    func columns() {
        #expect(FastListing.volumeColumns == VolumeRow.columns)
        #expect(FastListing.mapColumns == MapRow.columns)
        #expect(FastListing.groupColumns == GroupRow.columns)
        #expect(FastListing.systemColumns == SystemRow.columns)
    }

    /// A random row of `type` from random field values, through JSON (as the CLI receives it).
    static func randomRow<Row: Codable>(_ type: Row.Type, columns: [String], numbers: Set<String>, lists: Set<String>, random: inout SeededRandom) throws -> Row {
        let texts = ["", "a", "online", "faulted", "m0_rev", "bad \"x\"/y é", "/var/lib/snapback/v.img", "back\\slash", "ü", "日本", "😀", "tab\there", "a,b"]
        var object: [String: Any] = [:]
        for column in columns {
            if numbers.contains(column) {
                object[column] = [0, 1, 7, 150, 1_048_576, 4_294_967_296][Int(random.next() % 6)]
            } else if lists.contains(column) {
                object[column] = (0..<Int(random.next() % 3)).map { _ in texts[Int(random.next() % 5)] }
            } else {
                object[column] = texts[Int(random.next() % UInt64(texts.count))]
            }
        }
        return try JSONDecoder().decode(Row.self, from: JSONSerialization.data(withJSONObject: object))
    }

    @Test("random listings: the fast path prints what Listing prints, or leaves them to snapback-full")
    func listings() throws {
        var random = SeededRandom(seed: 0x1157)
        var rendered = 0
        for round in 0..<400 {
            let rowCount = Int(random.next() % 4) + (round % 2)
            let json = random.next() % 3 == 0
            let delimiter = [nil, nil, ":", ",", "--"][Int(random.next() % 5)]
            let detail = random.next() % 3 == 0
            let listing: Listing
            let columns: [String]
            var encoded: [Data] = []
            switch round % 4 {
            case 0:
                let rows = try (0..<rowCount).map { _ in
                    try Self.randomRow(VolumeRow.self, columns: VolumeRow.columns, numbers: ["id", "size", "anomaly_score"], lists: [], random: &random)
                }
                encoded = try rows.map { try JSONEncoder().encode($0) }
                (listing, columns) = (Listing.volumes(rows), FastListing.volumeColumns)
            case 1:
                let numbers: Set = ["id", "progress", "copyrate", "grainsize", "restore_progress", "autorestoredelay"]
                let rows = try (0..<rowCount).map { _ in try Self.randomRow(MapRow.self, columns: MapRow.columns, numbers: numbers, lists: [], random: &random) }
                encoded = try rows.map { try JSONEncoder().encode($0) }
                (listing, columns) = (Listing.maps(rows), FastListing.mapColumns)
            case 2:
                let numbers: Set = ["id", "maps", "restore_progress", "autorestoredelay"]
                let rows = try (0..<rowCount).map { _ in
                    try Self.randomRow(GroupRow.self, columns: GroupRow.columns + ["lcmaps"], numbers: numbers, lists: ["lcmaps"], random: &random)
                }
                encoded = try rows.map { try JSONEncoder().encode($0) }
                let withMaps = detail || json
                (listing, columns) = (Listing.groups(rows, withMaps: withMaps), FastListing.groupColumns + (withMaps ? ["lcmaps"] : []))
            default:
                let numbers: Set = ["failed_commits", "log_size", "last_sequence"]
                let row = try Self.randomRow(SystemRow.self, columns: SystemRow.columns, numbers: numbers, lists: [], random: &random)
                encoded = [try JSONEncoder().encode(row)]
                (listing, columns) = (Listing.system(row), FastListing.systemColumns)
            }
            let values = try encoded.map { try JSONValue.parse(Array($0)) }
            let expected = listing.render(json: json, delimiter: delimiter, detail: detail)
            if let fast = FastListing.render(values, columns: columns, json: json, delimiter: delimiter, detail: detail) {
                #expect(fast == expected, "round \(round)")
                rendered += 1
            }
        }
        #expect(rendered > 200, "most listings should be rendered on the fast path (\(rendered))")
    }
}
