import Foundation
import SnapbackTesting
import Testing

extension SimulationTests {
    /// Every `Specs/scenarios/*.scenario` file, replayed with the crash outcomes (unsynced writes
    /// lost, kept or torn) of seeds 1 to 8. A failed expectation is reported at its file and
    /// line.
    @Suite("Crash scenarios")
    struct Scenarios {
        /// `Specs/scenarios`, found by walking up from this file.
        static let directory: String = {
            var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            while directory.path != "/" {
                let candidate = directory.appendingPathComponent("Specs/scenarios")
                if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
                directory.deleteLastPathComponent()
            }
            preconditionFailure("Specs/scenarios not found above \(#filePath)")
        }()

        static let files: [String] = {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.filter { $0.hasSuffix(".scenario") }.sorted()
        }()

        static let outcomeSeeds: ClosedRange<UInt64> = 1...8

        @Test("there is a scenario for every crash point of the durability rules")
        func coverage() {
            #expect(Self.files.count >= 15)
            for prefix in ["cow-", "rollback-crash-", "rollback-write-", "background-copy-"] {
                #expect(Self.files.contains { $0.hasPrefix(prefix) }, "no \(prefix)* scenario")
            }
        }

        @Test("scenario", arguments: files)
        func scenario(_ file: String) throws {
            let path = Self.directory + "/" + file
            let scenario = try Scenario.load(path: path)
            #expect(!scenario.steps.isEmpty)
            if let issue = scenario.knownIssue {
                // BUG: a scenario with a `known-issue` line shows a defect that is not fixed yet
                // (see KnownDefect in Sources/SnapbackTesting/Simulation.swift).
                withKnownIssue(Comment(rawValue: issue)) { Self.replay(scenario, path: path) }
            } else {
                Self.replay(scenario, path: path)
            }
        }

        static func replay(_ scenario: Scenario, path: String) {
            for seed in outcomeSeeds {
                if let failure = ScenarioRunner.run(scenario, seed: seed) {
                    Issue.record(
                        Comment(rawValue: failure.description),
                        sourceLocation: SourceLocation(fileID: "Specs/\(scenario.name)", filePath: path, line: max(1, failure.line), column: 1))
                    return
                }
            }
        }

        @Test("the scenarios catch the classic ordering bug")
        func scenariosCatchBrokenOrdering() async {
            await #expect(processExitsWith: .success) {
                let caught = Scenarios.files.filter { file in
                    guard let scenario = try? Scenario.load(path: Scenarios.directory + "/" + file), scenario.knownIssue == nil else { return false }
                    return ScenarioRunner.run(scenario, seed: 1, brokenOrdering: true) != nil
                }
                precondition(!caught.isEmpty, "no scenario noticed the broken ordering")
            }
        }

        @Test("the parser is strict: every error names its line")
        func strictParser() {
            let cases: [(text: String, line: Int, message: String)] = [
                ("volume s 1m\nfrobnicate s\n", 2, "unknown directive \"frobnicate\""),
                ("volume s\n", 1, "missing size"),
                ("volume s 1m extra\n", 1, "unexpected \"extra\""),
                ("volume s 12q\n", 1, "is not a size"),
                ("# comment\n\nwrite s 0 4k 0xzz\n", 3, "is not a byte"),
                ("map m s t autorestore=maybe\n", 1, "expected on or off"),
                ("map m s t speed=9\n", 1, "unexpected \"speed=9\""),
                ("crash at-io 0 during step\n", 1, "I/O points count from 1"),
                ("crash at-io 2 during recover\n", 1, "only a command"),
                ("expect read s 0 4k = 0xa5\n", 1, "expected =="),
                ("expect wibble\n", 1, "unknown expectation"),
                ("expect log has NoSuchEvent\n", 1, "unknown event type"),
                ("known-issue\n", 1, "known-issue needs a description"),
            ]
            for (text, line, message) in cases {
                do {
                    _ = try Scenario.parse(text, name: "case.scenario")
                    Issue.record("accepted: \(text.debugDescription)")
                } catch {
                    #expect(error.line == line, "\(error)")
                    #expect(error.description.contains(message), "\(error)")
                    #expect(error.description.hasPrefix("case.scenario:\(line): "))
                }
            }
        }

        @Test("a failed expectation names its line")
        func failureNamesLine() throws {
            let scenario = try Scenario.parse(
                """
                volume s 256k
                volume t 256k
                fill s 0xa5
                map m s t grain=64k
                start m
                expect read s 0 4k == 0x5a
                """, name: "wrong.scenario")
            let failure = try #require(ScenarioRunner.run(scenario))
            #expect(failure.line == 6)
            #expect(failure.description.hasPrefix("wrong.scenario:6: expect read s 0 4k == 0x5a: byte 0 is 0xa5"))
        }
    }
}
