import SnapbackController
import SnapbackCore
import SnapbackData

/// Runs a ``Scenario`` on a ``SimulationDriver``: the same simulated machine, controller,
/// reference model and invariant checks as the seeded simulator, so every line is also checked
/// against every ``Invariant``.
public enum ScenarioRunner {
    /// Runs `scenario`, with crash outcomes (lost, kept or torn unsynced writes) drawn from
    /// `seed`. Returns the first failure — a failed expectation, a broken invariant, a refused
    /// command, a crash that did not strike — or `nil`.
    /// `brokenOrdering` sets ``Controller/brokenOrderingForTesting`` for the run (mutation
    /// testing; runs with different settings must not overlap).
    public static func run(_ scenario: Scenario, seed: UInt64 = 1, brokenOrdering: Bool = false, log: ((String) -> Void)? = nil) -> ScenarioError? {
        withBrokenOrdering(brokenOrdering) { runWithKnobSet(scenario, seed: seed, log: log) }
    }

    private static func runWithKnobSet(_ scenario: Scenario, seed: UInt64, log: ((String) -> Void)?) -> ScenarioError? {
        let driver: SimulationDriver
        do {
            // Scenarios count I/O points of steps that commit their own marks.
            driver = try SimulationDriver(
                seed: seed, replayCommand: "tools/simulate --scenario Specs/scenarios/\(scenario.name) --seeds \(seed)", marksCoalescing: .everyStep)
        } catch {
            return ScenarioError(scenario.name, 0, "the controller did not start: \(error)")
        }
        driver.log = log
        driver.fullCheckInterval = 1
        var crashed = false
        for step in scenario.steps {
            let fail = { (message: String) in ScenarioError(scenario.name, step.line, "\(step.text): \(message) (crash outcomes of seed \(seed))") }
            log?("line \(step.line): \(step.text)")
            if crashed {
                guard case .recover = step.action else { return fail("the machine has crashed: only recover may follow") }
            }
            switch step.action {
            case .crash:
                crashed = true
            case .recover:
                guard crashed else { return fail("recover needs a crash first") }
                driver.restart()
                crashed = false
            case let .crashDuring(point, inner):
                let before = driver.world.ioPoints
                driver.world.crashAtIOPoint = before + point
                if let message = perform(inner, driver, mustSucceed: false) { return fail(message) }
                guard driver.world.crashed else {
                    driver.world.crashAtIOPoint = nil
                    return fail("the crash did not strike: the operation passed only \(driver.world.ioPoints - before) I/O points")
                }
                crashed = true
            case let .operation(operation):
                if let message = perform(.operation(operation), driver, mustSucceed: true) { return fail(message) }
            case let .fill(volume, value):
                if let message = perform(.fill(volume: volume, value: value), driver, mustSucceed: true) { return fail(message) }
            case let .expectRefused(inner):
                guard case let .operation(operation) = inner else { return fail("expect refused needs an operation") }
                let outcome = driver.perform(operation)
                // Refused by the controller, or failed with an error: either way, nothing is acknowledged.
                guard outcome.kind != .done else { return fail("expected a refusal, got \(outcome.kind): \(outcome)") }
            case let .expect(expectation):
                if let message = check(expectation, driver) { return fail(message) }
            }
            if let violation = driver.violation { return fail("invariant \(violation.invariant): \(violation.detail)") }
        }
        if crashed { return ScenarioError(scenario.name, scenario.steps.last?.line ?? 0, "the scenario ends crashed: add recover") }
        driver.quiesce()
        driver.finalCheck()
        if let violation = driver.violation {
            return ScenarioError(scenario.name, scenario.steps.last?.line ?? 0, "at the end: invariant \(violation.invariant): \(violation.detail)")
        }
        return nil
    }

    /// Performs an operation; with `mustSucceed`, a refusal or failure is an error message.
    private static func perform(_ action: Scenario.Action, _ driver: SimulationDriver, mustSucceed: Bool) -> String? {
        let operation: SimulationOperation
        switch action {
        case let .operation(inner):
            operation = inner
        case let .fill(name, value):
            guard let volume = driver.controller.state.volume(name) else { return "no volume \(name)" }
            operation = .write(volume: name, offset: 0, bytes: .fill(value, length: Int(volume.sizeBytes)), fua: true)
        default:
            return "not an operation"
        }
        let outcome = driver.perform(operation)
        if mustSucceed, outcome.kind != .done { return "\(outcome.kind == .refused ? "refused" : "failed"): \(outcome)" }
        return nil
    }

    /// Checks an expectation; returns what differs, or `nil`.
    private static func check(_ expectation: Scenario.Expectation, _ driver: SimulationDriver) -> String? {
        let state = driver.controller.state
        switch expectation {
        case let .read(name, offset, length, expected), let .raw(name, offset, length, expected):
            guard let volume = state.volume(name) else { return "no volume \(name)" }
            guard offset + length <= volume.sizeBytes else { return "the range lies outside \(name)'s \(volume.sizeBytes) bytes" }
            let bytes: [UInt8]
            if case .raw = expectation {
                guard let store = driver.volumes.stores[volume.id] else { return "volume \(name) has no disk" }
                bytes = Array(store.current[Int(offset)..<Int(offset + length)])
            } else {
                do throws(HostIOError) {
                    bytes = try driver.controller.read(volume: volume.id, offset: offset, length: Int(length))
                } catch {
                    return "the read failed: \(error)"
                }
            }
            return compare(bytes, at: Int(offset), with: expected, driver)
        case let .image(name):
            guard let map = state.map(name), let target = state.volumes[map.targetID] else { return "no lcmap \(name)" }
            guard map.imageValid else { return "lcmap \(name) holds no valid image (\(map.state))" }
            let bytes: [UInt8]
            do throws(HostIOError) {
                bytes = try driver.controller.read(volume: target.id, offset: 0, length: Int(target.sizeBytes))
            } catch {
                return "the read of target \(target.name) failed: \(error)"
            }
            return compare(bytes, at: 0, with: .snapshot(map: name), driver)
        case let .status(name, status):
            guard let volume = state.volume(name) else { return "no volume \(name)" }
            return volume.status == status ? nil : "volume \(name) is \(volume.status)"
        case let .mapState(name, expected):
            guard let map = state.map(name) else { return "no lcmap \(name)" }
            return map.state == expected ? nil : "lcmap \(name) is \(map.state)"
        case let .rollback(name, running):
            guard let map = state.map(name) else { return "no lcmap \(name)" }
            return (map.rollback != nil) == running ? nil : "lcmap \(name) \(map.rollback != nil ? "is rolling back" : "is not rolling back")"
        case let .bit(name, kind, grain, set):
            guard let map = state.map(name), let bitmaps = driver.controller.bitmaps(of: map.id) else { return "no bitmaps for lcmap \(name)" }
            guard grain < map.grainsTotal else { return "lcmap \(name) has \(map.grainsTotal) grains" }
            let bitmap = kind == .split ? bitmaps.split : kind == .dirty ? bitmaps.dirty : bitmaps.restored
            return bitmap[grain] == set ? nil : "grain \(grain) of lcmap \(name) is \(set ? "not " : "")\(kind)"
        case let .log(type, present):
            let found = driver.durable.events.contains { $0.event.type == type }
            return found == present ? nil : "the durable log \(found ? "has" : "lacks") \(type)"
        }
    }

    private static func compare(_ bytes: [UInt8], at offset: Int, with expected: Scenario.ExpectedBytes, _ driver: SimulationDriver) -> String? {
        switch expected {
        case let .anyOf(values):
            var allowed = [Bool](repeating: false, count: 256)
            for value in values { allowed[Int(value)] = true }
            if let index = bytes.firstIndex(where: { !allowed[Int($0)] }) {
                return "byte \(offset + index) is 0x\(String(bytes[index], radix: 16)), expected \(values.map { "0x" + String($0, radix: 16) }.joined(separator: " or "))"
            }
            return nil
        case let .snapshot(name):
            guard let map = driver.controller.state.map(name), let snapshot = driver.model.snapshots[map.id] else {
                return "lcmap \(name) has no recorded image (it is not active)"
            }
            if let bad = snapshot.firstDisallowed(bytes, at: offset, .either) {
                return "byte \(bad.offset) is 0x\(String(bad.observed, radix: 16)), the image holds \(bad.allowed.map { "0x" + String($0, radix: 16) }.joined(separator: " or "))"
            }
            return nil
        }
    }
}
