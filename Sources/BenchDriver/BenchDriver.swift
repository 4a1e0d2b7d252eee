import Foundation
import SnapbackController
import SnapbackCore
import SnapbackAdapters
import SnapbackData
import SnapbackLog

// snapback-bench-driver: measurements through the controller on real files and a real LMDB log.
//
//   rollback --dir DIR --size-mib N --dirty-percent P [--grain-kib 64|256]
//       Fills a source, starts a map, rewrites P% of the grains, faults the source and times
//       the rollback. Prints JSON: seconds, bytesRestored, bytesPerSecond. Leaves DIR/volumes/0.img
//       (source) and 1.img (target) for a dd comparison.
//   recovery-setup --dir DIR --size-mib N --events E
//       Leaves a data directory whose log holds about E events and a rollback in progress (a
//       faulted source with dirty grains), with a checkpoint 5,000 events before the end, as
//       snapbackd's periodic checkpoints would leave it.
//   replay --dir DIR
//       Times reducing the whole log from the first record (no checkpoint). Prints events/s.
//   append --dir DIR --events E
//       Appends E filler events (ControllerStarted, in commits of 1,000) to the existing log of
//       DIR, as a busy controller's progress would grow it. Prints events/s and data.mdb's size.
//   cow --dir DIR --size-mib N --writes W [--snapshot none|active]
//       Times W random 4 KiB writes; with an active snapshot, first writes to each grain (copy-on-
//       write) and steady-state writes (grains already split) are timed separately.

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("snapback-bench-driver: \(message)\n".utf8))
    exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let mode = arguments.first else { fail("usage: rollback|cow --dir DIR ...") }
arguments.removeFirst()
var options: [String: String] = [:]
while arguments.count >= 2 {
    options[arguments[0]] = arguments[1]
    arguments.removeFirst(2)
}
guard arguments.isEmpty, let directory = options["--dir"] else { fail("options come in pairs and --dir is required") }
let sizeBytes = UInt64(Int(options["--size-mib"] ?? "1024") ?? 1024) << 20
let grainBytes = UInt32(Int(options["--grain-kib"] ?? "256") ?? 256) << 10

func now() -> Double { Date().timeIntervalSince1970 }

if mode == "replay" {
    let log = try EventLog(directory: directory + "/log", readOnly: true)
    let start = now()
    let replay = try log.replay(useCheckpoints: false)
    let seconds = now() - start
    let events = replay.state.eventsApplied
    print("{\"events\": \(events), \"seconds\": \(seconds), \"eventsPerSecond\": \(Double(events) / seconds)}")
    exit(0)
}
if mode == "append" {
    let events = Int(options["--events"] ?? "100000") ?? 100_000
    let log = try EventLog(directory: directory + "/log", archiveDirectory: directory + "/archive")
    let start = now()
    var left = events
    while left > 0 {
        let batch = min(left, 1000)
        _ = try log.append([Event](repeating: .controllerStarted(version: "filler"), count: batch), timestampMilliseconds: Int64(now() * 1000))
        left -= batch
    }
    let seconds = now() - start
    log.close()
    let bytes = try FileManager.default.attributesOfItem(atPath: directory + "/log/data.mdb")[.size] as? Int ?? 0
    print("{\"events\": \(events), \"seconds\": \(seconds), \"eventsPerSecond\": \(Double(events) / seconds), \"dataBytes\": \(bytes)}")
    exit(0)
}
try? FileManager.default.removeItem(atPath: directory)
let log = try EventLog(directory: directory + "/log")
let controller = try Controller(
    durable: try LogDurableStore(log: log), volumes: try FileVolumeProvider(dataDirectory: directory),
    clock: { Int64(Date().timeIntervalSince1970 * 1000) }, version: "bench")
try controller.execute(.createVolume(name: "s", sizeBytes: sizeBytes, path: nil))
try controller.execute(.createVolume(name: "t", sizeBytes: sizeBytes, path: nil))

/// Writes the whole volume with a non-zero pattern, 4 MiB at a time.
func fill(_ volume: VolumeID, byte: UInt8) throws {
    let chunk = [UInt8](repeating: byte, count: 4 << 20)
    var offset: UInt64 = 0
    while offset < sizeBytes {
        let count = Int(min(UInt64(chunk.count), sizeBytes - offset))
        try controller.write(volume: volume, offset: offset, bytes: Array(chunk[0..<count]), fua: false)
        offset += UInt64(count)
    }
    try controller.flush(volume: volume)
}

func json(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

switch mode {
case "rollback":
    let dirtyPercent = Double(options["--dirty-percent"] ?? "100") ?? 100
    try fill(0, byte: 0xA5)
    try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: grainBytes)))
    try controller.execute(.startMap(map: "m"))
    let grains = Int(sizeBytes / UInt64(grainBytes))
    let dirtyGrains = max(1, Int((Double(grains) * dirtyPercent / 100).rounded()))
    // Spread the dirty grains evenly; write whole grains so the rollback copies real data.
    let stride = Double(grains) / Double(dirtyGrains)
    let update = [UInt8](repeating: 0x5A, count: Int(grainBytes))
    for index in 0..<dirtyGrains {
        let grain = UInt64(Double(index) * stride)
        try controller.write(volume: 0, offset: grain * UInt64(grainBytes), bytes: update, fua: false)
    }
    try controller.flush(volume: 0)
    // Start from a cold cache, as dd will.
    sync()
    if let dropCaches = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") {
        dropCaches.write(Data("3\n".utf8))
        try? dropCaches.close()
    }
    // The fault records the rollback decision; the rollback's time runs from there.
    try controller.execute(.reportFault(volume: "s", cause: .operator, reason: "benchmark"))
    let start = now()
    while controller.hasBackgroundWork { controller.step(rollbackBudgetBytes: UInt64(options["--step-mib"].flatMap(Int.init) ?? 64) << 20, copyBudgetsBytes: [:]) }
    let seconds = now() - start
    let bytes = UInt64(dirtyGrains) * UInt64(grainBytes)
    json(["seconds": seconds, "bytesRestored": bytes, "bytesPerSecond": Double(bytes) / seconds, "dirtyGrains": dirtyGrains])
case "cow":
    let writes = Int(options["--writes"] ?? "2000") ?? 2000
    let snapshot = options["--snapshot"] ?? "active"
    try fill(0, byte: 0xA5)
    if snapshot == "active" {
        try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: grainBytes)))
        try controller.execute(.startMap(map: "m"))
    }
    var random = SystemRandomNumberGenerator()
    let block = [UInt8](repeating: 0x3C, count: 4096)
    let blocks = sizeBytes / 4096
    // First writes: each to a different grain, in random order.
    var grainOrder = Array(0..<(sizeBytes / UInt64(grainBytes)))
    grainOrder.shuffle(using: &random)
    let firstCount = min(writes, grainOrder.count)
    var start = now()
    for grain in grainOrder.prefix(firstCount) {
        try controller.write(volume: 0, offset: grain * UInt64(grainBytes), bytes: block, fua: false)
    }
    let firstSeconds = now() - start
    // Steady state: random 4 KiB writes to grains already written once (split and dirty).
    for grain in grainOrder.dropFirst(firstCount) {
        try controller.write(volume: 0, offset: grain * UInt64(grainBytes), bytes: block, fua: false)
    }
    start = now()
    for _ in 0..<writes {
        let offset = UInt64.random(in: 0..<blocks, using: &random) * 4096
        try controller.write(volume: 0, offset: offset, bytes: block, fua: false)
    }
    try controller.flush(volume: 0)
    let steadySeconds = now() - start
    json([
        "snapshot": snapshot, "firstWrites": firstCount, "firstWritesPerSecond": Double(firstCount) / firstSeconds,
        "steadyWrites": writes, "steadyWritesPerSecond": Double(writes) / steadySeconds,
    ])
case "recovery-setup":
    let events = Int(options["--events"] ?? "10000") ?? 10000
    try fill(0, byte: 0xA5)
    try controller.execute(.createMap(CreateMap(source: "s", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: grainBytes)))
    try controller.execute(.startMap(map: "m"))
    try controller.write(volume: 0, offset: 0, bytes: [UInt8](repeating: 0x5A, count: Int(min(sizeBytes, 16 << 20))), fua: true)
    try controller.execute(.reportFault(volume: "s", cause: .operator, reason: "recovery benchmark"))
    // Filler: controller restarts are harmless events that every replay must still fold.
    let suffix = min(5000, events / 2)
    var appended = Int(controller.state.eventsApplied)
    var state = controller.state
    func appendFiller(_ count: Int) throws {
        var left = count
        while left > 0 {
            let batch = min(left, 1000)
            let filler = [Event](repeating: .controllerStarted(version: "filler"), count: batch)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try log.append(filler, timestampMilliseconds: now)
            filler.forEach { state.apply($0, at: now) }
            left -= batch
        }
    }
    try appendFiller(max(0, events - suffix - appended))
    try log.saveCheckpoint(state)
    try appendFiller(suffix)
    appended = Int(log.lastSequence)
    json(["events": appended, "checkpoint": state.eventsApplied - UInt64(suffix)])
default:
    fail("unknown mode \(mode)")
}
log.close()
