import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackRandom
import SnapbackSimulated

/// The anomaly detector's workloads on the simulated machine, with seeds (`snapback-simulate
/// --detect WORKLOAD`): the real controller and detector, a simulated clock, and writes a seeded
/// generator makes. The attack must be found soon enough, with the right onset, and rolled back;
/// the control workloads must never fire (`Specs/detection.md`, issue 14's targets).
public enum DetectionWorkload: String, Sendable, CaseIterable {
    /// An encryptor overwrites the volume's plain data in place with random bytes at 20 MiB/s.
    case attack
    /// Database-like random overwrites of low-entropy pages.
    case database
    /// New compressed files (random-looking bytes) written into free space, after a baseline
    /// learned on mixed data.
    case compressed
    /// A sequential copy of text files.
    case copy
}

/// What one seeded run of a workload showed.
public struct DetectionRun: Sendable, CustomStringConvertible {
    public var workload: DetectionWorkload
    public var seed: UInt64
    /// The failures found; empty when the run met the targets.
    public var failures: [String] = []
    /// Attack: from the first encrypted write to the detector's fault, in simulated ms.
    public var detectionDelayMilliseconds: Int64?
    /// Attack: the onset reported, relative to the first encrypted write (negative: before).
    public var onsetOffsetMilliseconds: Int64?
    /// The highest anomaly score seen.
    public var maxScore = 0

    public var passed: Bool { failures.isEmpty }

    public var description: String {
        var text = "\(workload) seed \(seed): \(passed ? "ok" : "FAILED")"
        if let delay = detectionDelayMilliseconds { text += ", detected \(delay) ms after the first encrypted write" }
        if let onset = onsetOffsetMilliseconds { text += ", onset \(onset) ms from it" }
        text += ", max score \(maxScore)"
        return failures.isEmpty ? text : text + "\n  " + failures.joined(separator: "\n  ")
    }
}

/// Runs `workload` with `seed`: a 128 MiB volume of plain text with detection on (medium), a map
/// with autorestore started, 40 simulated seconds of ordinary writes (the baseline), then the
/// workload for `seconds` (the attack stops at the fault).
public func runDetection(_ workload: DetectionWorkload, seed: UInt64, seconds: Int = 120) throws -> DetectionRun {
    var run = DetectionRun(workload: workload, seed: seed)
    var random = SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 7)
    let world = SimulatedWorld(seed: seed)
    let durable = SimulatedDurableStore(world: world)
    let controller = try Controller(
        durable: durable, volumes: SimulatedVolumeProvider(world: world), clock: world.clock, version: "simulated",
        waitsForFamily: world.waitsForFamily)
    let sizeBytes: UInt64 = 128 << 20
    // The compressed workload needs free space: only the first half holds files.
    let usedBytes = workload == .compressed ? sizeBytes / 2 : sizeBytes
    try controller.execute(.createVolume(name: "v", sizeBytes: sizeBytes, path: nil, detection: .medium))
    try controller.execute(.createVolume(name: "t", sizeBytes: sizeBytes, path: nil))
    try controller.execute(.createMap(CreateMap(source: "v", target: "t", name: "m", autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)))
    let text = PlainText(seed: seed)
    var offset: UInt64 = 0
    while offset < usedBytes {
        try controller.write(volume: 0, offset: offset, bytes: text.bytes(at: offset, length: 1 << 20), fua: false)
        offset += 1 << 20
    }
    try controller.execute(.startMap(map: "m"))
    let image = try controller.read(volume: 0, offset: 0, length: Int(sizeBytes))

    /// Writes for `milliseconds` of simulated time, `bytesPerSecond` in writes of `writeBytes`,
    /// with a background step every 100 ms; stops early when `stop` says so.
    func writeFor(_ milliseconds: Int64, bytesPerSecond: UInt64, writeBytes: Int, _ next: (inout SeededRandom) -> (UInt64, [UInt8]), stop: () -> Bool = { false }) throws {
        let writes = max(1, Int(UInt64(milliseconds) * bytesPerSecond / 1000 / UInt64(writeBytes)))
        let gap = milliseconds / Int64(writes)
        var sinceStep: Int64 = 0
        for _ in 0..<writes {
            if stop() { return }
            let (at, bytes) = next(&random)
            try controller.write(volume: 0, offset: at, bytes: bytes, fua: false)
            world.nowMilliseconds += gap
            sinceStep += gap
            if sinceStep >= 100 {
                sinceStep = 0
                controller.step(budgetBytes: 4 << 20)
                run.maxScore = max(run.maxScore, controller.anomalyScore(of: 0) ?? 0)
            }
        }
    }
    /// A database page: a small header, rows of text, zero padding.
    func page(_ random: inout SeededRandom, _ length: Int) -> [UInt8] {
        var bytes = text.bytes(at: random.next() % (usedBytes - UInt64(length)), length: length)
        for index in stride(from: length / 2, to: length, by: 1) { bytes[index] = 0 }
        return bytes
    }
    func noise(_ random: inout SeededRandom, _ length: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        for index in stride(from: 0, to: length, by: 8) {
            withUnsafeBytes(of: random.next()) { word in
                for byte in 0..<min(8, length - index) { bytes[index + byte] = word[byte] }
            }
        }
        return bytes
    }

    // The baseline: database pages, and for the compressed workload also compressed files in the
    // free half (mixed data).
    var free = usedBytes
    try writeFor(35_000, bytesPerSecond: 1 << 20, writeBytes: 16 << 10) { random in
        if workload == .compressed, random.next() % 4 == 0 {
            defer { free = free + (64 << 10) < sizeBytes ? free + (64 << 10) : usedBytes }
            return (free, noise(&random, 64 << 10))
        }
        let length = 16 << 10
        return ((random.next() % (usedBytes / UInt64(length))) * UInt64(length), page(&random, length))
    }
    let baselineEvents = durable.events.count
    let faulted = { durable.events[baselineEvents...].contains { if case .volumeFaulted = $0.event { return true } else { return false } } }
    if faulted() { run.failures.append("the detector fired while it learned the baseline") }

    let startMilliseconds = world.nowMilliseconds
    switch workload {
    case .attack:
        var cursor: UInt64 = 0
        try writeFor(Int64(seconds) * 1000, bytesPerSecond: 20 << 20, writeBytes: 1 << 20, { random in
            defer { cursor = (cursor + (1 << 20)) % sizeBytes }
            return (cursor, noise(&random, 1 << 20))
        }, stop: faulted)
    case .database:
        try writeFor(Int64(seconds) * 1000, bytesPerSecond: 8 << 20, writeBytes: 16 << 10) { random in
            let length = 16 << 10
            return ((random.next() % (usedBytes / UInt64(length))) * UInt64(length), page(&random, length))
        }
    case .compressed:
        try writeFor(Int64(seconds) * 1000, bytesPerSecond: 4 << 20, writeBytes: 256 << 10) { random in
            defer { free = free + (256 << 10) < sizeBytes ? free + (256 << 10) : usedBytes }
            return (free, noise(&random, 256 << 10))
        }
    case .copy:
        var cursor: UInt64 = 0
        try writeFor(Int64(seconds) * 1000, bytesPerSecond: 10 << 20, writeBytes: 1 << 20) { _ in
            defer { cursor = (cursor + (1 << 20)) % sizeBytes }
            return (cursor, text.bytes(at: (cursor + (7 << 20)) % sizeBytes, length: 1 << 20))
        }
    }
    for _ in 0..<50 { controller.step(budgetBytes: 16 << 20) }

    let anomalies = durable.events[baselineEvents...].compactMap { stored -> (Int64, Int64)? in
        if case let .anomalyDetected(_, _, onset, _) = stored.event { return (stored.timestampMilliseconds, onset) }
        return nil
    }
    guard workload == .attack else {
        if let first = anomalies.first {
            run.failures.append("false alarm \(first.0 - startMilliseconds) ms into the \(workload) workload")
        }
        return run
    }
    guard let (detected, onset) = anomalies.first else {
        run.failures.append("no anomaly detected in \(seconds) s of encryption at 20 MiB/s")
        return run
    }
    run.detectionDelayMilliseconds = detected - startMilliseconds
    run.onsetOffsetMilliseconds = onset - startMilliseconds
    if detected - startMilliseconds > 5000 { run.failures.append("detected \(detected - startMilliseconds) ms after the first encrypted write (target ≤ 5000)") }
    if onset > startMilliseconds || onset < startMilliseconds - 2000 {
        run.failures.append("onset \(onset - startMilliseconds) ms from the first encrypted write (target within 2000 ms before)")
    }
    var rounds = 0
    while controller.hasBackgroundWork && rounds < 10_000 {
        controller.step(budgetBytes: 16 << 20)
        rounds += 1
    }
    let volume = controller.state.volumes[0]
    if volume?.status != .online { run.failures.append("after the rollback the volume is \(volume?.status.description ?? "gone")") }
    if try controller.read(volume: 0, offset: 0, length: Int(sizeBytes)) != image {
        run.failures.append("after the rollback the volume differs from the image: an encrypted grain remains")
    }
    return run
}

/// Seeded plain text: words of a small vocabulary in lines, about 4.5 bits per byte.
struct PlainText {
    private let pool: [UInt8]

    init(seed: UInt64) {
        let words = [
            "the", "account", "balance", "of", "customer", "order", "shipped", "invoice", "total", "paid", "date", "item", "quantity",
            "price", "and", "for", "with", "record", "updated", "SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "status", "open",
            "closed", "pending", "2026-12-02", "id", "name", "address", "city", "note",
        ]
        var random = SeededRandom(seed: seed &+ 0x5EED)
        var pool: [UInt8] = []
        pool.reserveCapacity(1 << 20)
        while pool.count < 1 << 20 {
            let count = 4 + Int(random.next() % 10)
            let line = (0..<count).map { _ in words[Int(random.next() % UInt64(words.count))] }.joined(separator: " ") + "\n"
            pool.append(contentsOf: line.utf8)
        }
        self.pool = Array(pool.prefix(1 << 20)) + Array(pool.prefix(1 << 20))
    }

    /// `length` (at most 1 MiB) bytes of text for `offset` (the text repeats every MiB).
    func bytes(at offset: UInt64, length: Int) -> [UInt8] {
        precondition(length <= 1 << 20)
        let start = Int(offset % (1 << 20))
        return Array(pool[start..<start + length])
    }
}
