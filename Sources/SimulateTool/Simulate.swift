// snapback-simulate: the deterministic simulator's command line (tools/simulate).
//
//   snapback-simulate --seed S [--operations N] [--broken-ordering] [--writes-to-active-targets] [--with-known-defects | --with-known-defect NAME...] [--quiet]
//       replays one seed, printing every operation; exit 1 on a violation
//   snapback-simulate --seeds N [--start S] [--jobs J] [--operations N] [--broken-ordering] [...]
//       runs seeds S..<S+N (default start 1), prints every failing seed with the command that
//       reproduces it; exit 1 when any fails
//   snapback-simulate --scenario FILE... [--seeds N] [--broken-ordering]
//       runs scenario files (Specs/scenarios/*.scenario) with crash outcomes from seeds 1...N
//   snapback-simulate --detect attack|database|compressed|copy|all [--seeds N] [--start S] [--seconds T]
//       runs the anomaly detector's workloads with seeds (Specs/detection.md); exit 1 when the
//       attack is missed or late, or a control workload raises a false alarm
import Foundation
import SnapbackTesting

let usage = """
    usage: snapback-simulate --seed S [--operations N] [--broken-ordering] [--writes-to-active-targets] [--with-known-defects | --with-known-defect NAME...] [--quiet]
           snapback-simulate --seeds N [--start S] [--jobs J] [--operations N] [--broken-ordering] [--writes-to-active-targets] [--with-known-defects | --with-known-defect NAME...]
           snapback-simulate --scenario FILE... [--seeds N] [--broken-ordering]
           snapback-simulate --detect attack|database|compressed|copy|all [--seeds N] [--start S] [--seconds T]
    """

func fail(_ message: String, code: Int32 = 2) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(code)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var seed: UInt64?
var seedsCount: UInt64?
var start: UInt64 = 1
var jobs = ProcessInfo.processInfo.activeProcessorCount
var operations = Simulation.operationsCountDefault
var brokenOrdering = false
var writesToActiveTargets = false
var knownDefectsAvoided: Set<KnownDefect> = []
var quiet = false
var scenarioFiles: [String] = []
var detectWorkloads: [DetectionWorkload] = []
var detectSeconds = 120

@MainActor func number<T: FixedWidthInteger>(_ option: String, _ type: T.Type) -> T {
    guard !arguments.isEmpty else { fail("\(option) needs a value\n\(usage)") }
    let text = arguments.removeFirst()
    guard let value = T(text) else { fail("\(option): \(text) is not a number\n\(usage)") }
    return value
}

while !arguments.isEmpty {
    let option = arguments.removeFirst()
    switch option {
    case "--seed": seed = number(option, UInt64.self)
    case "--seeds": seedsCount = number(option, UInt64.self)
    case "--start": start = number(option, UInt64.self)
    case "--jobs": jobs = max(1, number(option, Int.self))
    case "--operations": operations = max(0, number(option, Int.self))
    case "--broken-ordering": brokenOrdering = true
    case "--writes-to-active-targets": writesToActiveTargets = true
    case "--with-known-defects": knownDefectsAvoided.removeAll()
    case "--avoid-known-defect":
        guard !arguments.isEmpty else { fail("--avoid-known-defect needs a name\n\(usage)") }
        let name = arguments.removeFirst()
        guard let defect = KnownDefect(rawValue: name) else {
            fail("unknown defect \(name); known: \(KnownDefect.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        knownDefectsAvoided.insert(defect)
    case "--quiet": quiet = true
    case "--scenario":
        while let next = arguments.first, !next.hasPrefix("--") { scenarioFiles.append(arguments.removeFirst()) }
        if scenarioFiles.isEmpty { fail("--scenario needs files\n\(usage)") }
    case "--detect":
        guard !arguments.isEmpty else { fail("--detect needs a workload\n\(usage)") }
        let name = arguments.removeFirst()
        if name == "all" {
            detectWorkloads = DetectionWorkload.allCases
        } else if let workload = DetectionWorkload(rawValue: name) {
            detectWorkloads = [workload]
        } else {
            fail("unknown workload \(name); known: \(DetectionWorkload.allCases.map(\.rawValue).joined(separator: ", ")), all")
        }
    case "--seconds": detectSeconds = max(1, number(option, Int.self))
    case "-h", "--help": print(usage); exit(0)
    default: fail("unknown option \(option)\n\(usage)")
    }
}

func configuration(operations: Int, brokenOrdering: Bool, writesToActiveTargets: Bool, knownDefectsAvoided: Set<KnownDefect>) -> @Sendable (inout Simulation) -> Void {
    { simulation in
        simulation.operationsCount = operations
        simulation.brokenOrdering = brokenOrdering
        simulation.writesToActiveTargets = writesToActiveTargets
        simulation.knownDefectsAvoided = knownDefectsAvoided
    }
}
let configure = configuration(
    operations: operations, brokenOrdering: brokenOrdering, writesToActiveTargets: writesToActiveTargets, knownDefectsAvoided: knownDefectsAvoided)

if !detectWorkloads.isEmpty {
    var failed = 0
    for workload in detectWorkloads {
        for runSeed in start..<(start + (seedsCount ?? 1)) {
            do {
                let run = try runDetection(workload, seed: runSeed, seconds: detectSeconds)
                if !run.passed { failed += 1 }
                if !quiet || !run.passed { print(run) }
            } catch {
                print("\(workload) seed \(runSeed): FAILED: \(error)")
                failed += 1
            }
        }
    }
    exit(failed == 0 ? 0 : 1)
}

if !scenarioFiles.isEmpty {
    var failures = 0
    for path in scenarioFiles {
        var failure: ScenarioError?
        do {
            let scenario = try Scenario.load(path: path)
            for outcomeSeed in 1...max(1, seedsCount ?? 8) where failure == nil {
                failure = ScenarioRunner.run(scenario, seed: outcomeSeed, brokenOrdering: brokenOrdering)
            }
            if let issue = scenario.knownIssue {
                print("\(path): known issue (\(failure == nil ? "passes now: remove the known-issue line" : "fails as expected")): \(issue)")
                if let failure { print("  \(failure)") }
                continue
            }
        } catch {
            print("\(error)")
            failures += 1
            continue
        }
        if let failure {
            print("\(failure)")
            failures += 1
        }
        if !quiet || failure != nil { print("\(path): \(failure == nil ? "ok" : "FAILED")") }
    }
    exit(failures == 0 ? 0 : 1)
}

if let seed {
    var simulation = Simulation(seed: seed)
    configure(&simulation)
    let result = simulation.run(log: quiet ? nil : { print($0) })
    if let violation = result.violation {
        print("FAILED: \(violation)")
        exit(1)
    }
    print("seed \(seed): ok (\(result.statistics.operations) operations, \(result.statistics.crashes) crashes, \(result.statistics.rollbacksCompleted) rollbacks, \(result.duration))")
    exit(0)
}

guard let seedsCount else { fail(usage) }
let (end, overflow) = start.addingReportingOverflow(seedsCount)
guard !overflow else { fail("--start plus --seeds overflows") }
let sweep = Simulation.sweep(seeds: start..<end, parallelism: jobs, configure: configure)
for failure in sweep.failures {
    if let violation = failure.violation { print("FAILED: \(violation)") }
}
let statistics = sweep.statistics
print(
    "\(sweep.runs) seeds (\(start)..<\(end)) in \(sweep.duration): \(sweep.failures.count) failed; "
        + "\(statistics.operations) operations, \(statistics.writesAcknowledged) acknowledged writes, \(statistics.crashes) crashes, "
        + "\(statistics.rollbacksStarted) rollbacks started, \(statistics.rollbacksCompleted) completed, \(statistics.errorInjections) error injections, \(statistics.noSpaceInjections) disk-full injections, \(statistics.commitFailureInjections) commit failure injections")
exit(sweep.failures.isEmpty ? 0 : 1)
