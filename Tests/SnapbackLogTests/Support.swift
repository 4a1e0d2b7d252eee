import Foundation
import SnapbackCore
import SnapbackLog
import SnapbackRandom

/// A fresh directory under /tmp, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init(_ label: String = "log") {
        path = NSTemporaryDirectory() + "snapback-\(label)-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The directory holding the built executables (beside the test bundle).
var productsDirectory: String {
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    while url.pathComponents.count > 1 && !FileManager.default.fileExists(atPath: url.appendingPathComponent("snapback-log-driver").path) {
        url.deleteLastPathComponent()
    }
    return url.path
}

/// Random commands that exercise the whole domain, mostly valid; decide rejects the rest.
func randomCommand(_ state: ControllerState, _ random: inout SeededRandom) -> Command {
    let volumes = state.volumesByID
    let maps = state.mapsByID.filter { $0.role == .forward }
    func volumeName() -> String { volumes.randomElement(using: &random)?.name ?? "v0" }
    func mapName() -> String { maps.randomElement(using: &random)?.name ?? "m0" }
    switch Int.random(in: 0..<14, using: &random) {
    case 0, 1:
        return .createVolume(name: "v\(state.nextVolumeID)", sizeBytes: 1 << 20, path: nil)
    case 2, 3:
        return .createMap(CreateMap(source: volumeName(), target: volumeName(), autorestore: Bool.random(using: &random), copyRate: Int.random(in: 0...150, using: &random)))
    case 4:
        return .changeMap(map: mapName(), autorestore: Bool.random(using: &random), copyRate: nil, newName: nil)
    case 5, 6:
        return .startMap(map: mapName())
    case 7:
        return .reportFault(volume: volumeName(), cause: .operator, reason: "test fault")
    case 8:
        return .startRestore(map: mapName())
    case 9:
        if let map = maps.first(where: { $0.rollback != nil }) { return .completeRollback(map: map.id) }
        return .recoverVolume(volume: volumeName())
    case 10:
        if let map = maps.first(where: { $0.state == .copying }) {
            return .recordCopyProgress(map: map.id, grainsCopied: min(map.grainsTotal, map.grainsCopied + 1))
        }
        return .stopMap(map: mapName(), force: false)
    case 11:
        return .stopMap(map: mapName(), force: Bool.random(using: &random))
    case 12:
        return .removeMap(map: mapName(), force: false)
    default:
        return .recordControllerStart(version: "test")
    }
}

/// Appends `count` accepted commands' events to `log`, returning every state along the way
/// (index k holds the reduction of the first k records).
@discardableResult
func appendRandomHistory(_ log: EventLog, commands count: Int, seed: UInt64, from initial: ControllerState = ControllerState(), states: inout [ControllerState]) throws -> ControllerState {
    var random = SeededRandom(seed: seed)
    var state = initial
    if states.isEmpty { states.append(state) }
    for index in 0..<count {
        let command = randomCommand(state, &random)
        guard let events = try? decide(command, state), !events.isEmpty else { continue }
        let timestamp = 1_790_000_000_000 + Int64(index)
        _ = try log.append(events, timestampMilliseconds: timestamp)
        for event in events {
            state.apply(event, at: timestamp)
            states.append(state)
        }
    }
    return state
}
