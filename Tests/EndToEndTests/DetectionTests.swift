import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 14: the controller notices ransomware itself. A volume of plain data (text lines and
/// database-like pages) with detection on, under a started snapshot with autorestore: an
/// encryptor overwriting it in place with random bytes is detected within 5 s of its first write,
/// with an onset within 2 s before that write, and the automatic rollback leaves the image's bytes;
/// database-like overwrites of plain pages raise no alarm. The writers are the test's own NBD
/// clients (`RawNBDClient`), each on its own thread, so that the first encrypted write's time is
/// known to the millisecond on the client side and compared with the log's record timestamps.
@Suite("anomaly detection")
struct DetectionTests {
    @Test("an encryptor over plain data: fault within 5 s, onset within 2 s before it, rollback to the image")
    func encryptorIsRolledBack() async throws {
        let sizeBytes = 128 * Int(mebibyte)
        var generator = SplitMix64(seed: 14)
        let image = PlainData.image(sizeBytes: sizeBytes, &generator)
        let sourcePath = scratchPath("snapback-e2e-detect-src")
        defer { unlink(sourcePath) }
        try PlainData.writeFile(sourcePath, image)
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "128m", sourcePath: sourcePath, grainSize: "64")
            try await daemon.ok("chvolume", "-detect", "on", "-sensitivity", "medium", "src")
            let row = try await daemon.volume("src")
            #expect(row.detect == "on" && row.sensitivity == "medium" && row.anomaly_score == 0, "\(row)")
            try await daemon.ok("startlcmap", "m0")

            // Ordinary work first, and all along: database-like page writes at random offsets.
            let ordinary = HostWriter(port: daemon.port, export: "src") { client, control in
                try PlainData.overwritePages(client, sizeBytes: sizeBytes, bytesPerSecond: 2 * Int(mebibyte), seed: 1, control: control)
            }
            ordinary.start()
            try await Task.sleep(for: .seconds(2.5))
            #expect(try await daemon.events().of("AnomalyDetected").isEmpty, "ordinary writes alone raised an alarm")

            // The encryptor: 1 MiB of random bytes at a time over the data, in place, 24 MiB/s.
            let encryptor = HostWriter(port: daemon.port, export: "src") { client, control in
                try Encryptor.overwrite(client, sizeBytes: sizeBytes, bytesPerSecond: 24 * Int(mebibyte), control: control)
            }
            encryptor.start()
            let encrypted = await encryptor.finish(timeoutSeconds: 15)
            ordinary.requestStop()
            _ = await ordinary.finish(timeoutSeconds: 10)
            let firstWriteMilliseconds = try #require(encryptor.firstWriteMilliseconds, "the encryptor never wrote: \(encrypted)")

            let waited = try await daemon.snapback("wait", "-timeout", "30", "m0")
            #expect(waited.exitCode == 0, "snapback wait m0: \(waited)")
            let events = try await daemon.events()
            let anomaly = try #require(events.of("AnomalyDetected").first, "no AnomalyDetected; events: \(events.suffix(8))")
            let fault = try #require(events.of("VolumeFaulted").first, "no VolumeFaulted; events: \(events.suffix(8))")
            let onset = try #require(events.of("FaultOnset").first, "no FaultOnset; events: \(events.suffix(8))")
            #expect(events.of("AnomalyDetected").count == 1 && events.of("VolumeFaulted").count == 1, "\(events.suffix(12))")
            #expect(fault["cause"] == "detector" && fault["volumeID"] == String(row.id), "\(fault)")
            #expect(anomaly["volumeID"] == String(row.id) && anomaly.sequence < fault.sequence, "\(anomaly) \(fault)")
            #expect(onset["faultID"] == fault["faultID"] && onset["onsetMilliseconds"] == anomaly["onsetMilliseconds"], "\(onset) \(anomaly)")
            let score = try #require(anomaly["score"].flatMap { Int($0) })
            #expect((50...100).contains(score), "\(anomaly)")

            // Timing, the client's clock against the log's (one machine, one wall clock).
            let faultedMilliseconds = try #require(fault["timestampMilliseconds"].flatMap { Int64($0) })
            let onsetMilliseconds = try #require(onset["onsetMilliseconds"].flatMap { Int64($0) })
            let delay = faultedMilliseconds - firstWriteMilliseconds
            let lead = firstWriteMilliseconds - onsetMilliseconds
            #expect(delay >= 0 && delay <= 5000, "fault \(delay) ms after the first encrypted write (at most 5000)")
            #expect(lead >= 0 && lead <= 2000, "onset \(lead) ms before the first encrypted write (0 to 2000)")
            let started = try #require(events.of("RollbackStarted").first, "no automatic rollback")
            #expect(started["trigger"] == "auto" && started["faultID"] == fault["faultID"], "\(started)")
            #expect(!events.of("RollbackCompleted").isEmpty)

            // No encrypted grain remains: the source holds the image's bytes again.
            #expect(try await daemon.volume("src").status == "online")
            #expect(try PlainData.firstDifference(sourcePath, image) == nil, "the source differs from the image after the rollback")
            let explained = try await daemon.log("explain", "src")
            let story = "anomaly detector fired on volume src: score \(score) of 100"
            #expect(explained.exitCode == 0 && explained.stdout.contains(story), "\(explained)")
            print(
                "detection: fault \(delay) ms after the first encrypted write, onset \(lead) ms before it, score \(score);"
                    + " encryptor \(encrypted), ordinary writer \(ordinary.bytesWritten) bytes")
        }
    }

    @Test("database-like random overwrites of plain pages for 20 s: no alarm at medium, a low score")
    func databaseOverwritesRaiseNoAlarm() async throws {
        let sizeBytes = 128 * Int(mebibyte)
        var generator = SplitMix64(seed: 41)
        let image = PlainData.image(sizeBytes: sizeBytes, &generator)
        let sourcePath = scratchPath("snapback-e2e-detect-db")
        defer { unlink(sourcePath) }
        try PlainData.writeFile(sourcePath, image)
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "src", "-size", "128m", "-path", sourcePath, "-adopt", "-detect", "on")
            try await daemon.ok("mkvolume", "-name", "tgt", "-size", "128m")
            try await daemon.ok(
                "mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0", "-grainsize", "64")
            #expect(try await daemon.volume("src").sensitivity == "medium", "medium is the default")
            try await daemon.ok("startlcmap", "m0")

            let seconds = 20.0
            let writer = HostWriter(port: daemon.port, export: "src") { client, control in
                try PlainData.overwritePages(client, sizeBytes: sizeBytes, bytesPerSecond: 4 * Int(mebibyte), seed: 2, control: control)
            }
            writer.start()
            var scores: [Int] = []
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline, writer.isRunning {
                try await Task.sleep(for: .milliseconds(500))
                scores.append(try await daemon.volume("src").anomaly_score)
            }
            writer.requestStop()
            let outcome = await writer.finish(timeoutSeconds: 10)
            #expect(outcome.hasPrefix("stopped"), "the writer did not run the whole time: \(outcome)")
            // Enough to be judged every second: at least 16 sampled blocks (one per 64 KiB).
            let bytesPerSecond = Double(writer.bytesWritten) / seconds
            #expect(bytesPerSecond >= 1.5 * Double(mebibyte), "the workload wrote only \(Int(bytesPerSecond)) bytes/s")

            let events = try await daemon.events()
            #expect(events.of("AnomalyDetected").isEmpty && events.of("VolumeFaulted").isEmpty, "a false alarm: \(events.suffix(6))")
            let row = try await daemon.volume("src")
            #expect(row.status == "online" && row.detect == "on", "\(row)")
            let maxScore = scores.max() ?? 0
            #expect(maxScore <= 10 && row.anomaly_score <= 10, "anomaly_score up to \(maxScore), now \(row.anomaly_score)")
            print("control: \(writer.bytesWritten) bytes in \(Int(seconds)) s, max anomaly_score \(maxScore)")
        }
    }
}

// MARK: - Writers on their own threads

/// One NBD connection writing on its own thread (the blocking `RawNBDClient`), so that the
/// concurrency pool is never held while it writes. `body` writes until `stopRequested` or until it is
/// done; an error (such as the server closing the connection when a rollback starts) ends it.
final class HostWriter: @unchecked Sendable {
    /// What the writer tells its body: whether to stop, and records of its writes.
    final class Control: @unchecked Sendable {
        fileprivate let owner: HostWriter
        fileprivate init(_ owner: HostWriter) { self.owner = owner }
        /// True once the test asked the writer to stop.
        var stopRequested: Bool { owner.lock.withLock { owner.stopFlag } }
        /// Records a write about to be sent: its time (the first one is kept) and its bytes.
        func willWrite(_ count: Int) {
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            owner.lock.withLock {
                if owner.firstWrite == nil { owner.firstWrite = now }
                owner.written += count
            }
        }
    }

    let port: Int
    let export: String
    private let body: @Sendable (RawNBDClient, Control) throws -> String
    fileprivate let lock = NSLock()
    fileprivate var stopFlag = false
    fileprivate var firstWrite: Int64?
    fileprivate var written = 0
    private var outcome: String?

    /// A writer to `export` on 127.0.0.1:`port`; `body` returns how it ended.
    init(port: Int, export: String, _ body: @escaping @Sendable (RawNBDClient, Control) throws -> String) {
        self.port = port
        self.export = export
        self.body = body
    }

    /// When the first write was sent, in milliseconds since the Unix epoch (the client's clock).
    var firstWriteMilliseconds: Int64? { lock.withLock { firstWrite } }
    /// Bytes sent in write requests.
    var bytesWritten: Int { lock.withLock { written } }
    /// True until the body has returned or failed.
    var isRunning: Bool { lock.withLock { outcome == nil } }

    /// Connects (NBD_OPT_GO on the export) and runs the body on a thread of its own.
    func start() {
        let thread = Thread { [self] in
            var result: String
            do {
                let client = try RawNBDClient(port: port, timeoutSeconds: 10)
                try client.go(export)
                result = try body(client, Control(self))
                client.disconnect()
            } catch {
                result = "ended: \(error)"
            }
            lock.withLock { outcome = result }
        }
        thread.start()
    }

    /// Asks the body to stop after its current writes.
    func requestStop() { lock.withLock { stopFlag = true } }

    /// Waits (without blocking a thread) until the body has ended and returns how it ended; asks
    /// it to stop after `timeoutSeconds`, then waits for it (a receive times out after 10 s).
    func finish(timeoutSeconds: Double) async -> String {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            if let outcome = lock.withLock({ outcome }) { return outcome }
            if Date() >= deadline { requestStop() }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// SplitMix64: a small seeded generator, so that a failing run's data can be made again.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Plain data

/// Low-entropy content as volumes hold it: 8 KiB pages of text lines (about 4.5–5 bits per byte)
/// and database-like pages (a header, a cell pointer array, free space of zeros, rows of ASCII
/// fields packed at the end).
enum PlainData {
    static let pageBytes = 8192
    static let words = [
        "order", "customer", "invoice", "total", "amount", "status", "shipped", "pending", "account", "balance", "the", "quick",
        "brown", "fox", "jumps", "over", "lazy", "dog", "returned", "warehouse", "Berlin", "Lisbon", "Osaka", "quarterly", "report",
        "payment", "received", "delivery", "address", "street", "note", "priority", "normal", "urgent",
    ]

    /// A page of text lines: a line number, a date and a few words each.
    static func textPage(_ generator: inout SplitMix64) -> [UInt8] {
        var text = ""
        while text.utf8.count < pageBytes {
            let number = String(generator.next() % 100_000_000)
            let day = 1 + generator.next() % 28
            let count = 4 + Int(generator.next() % 9)
            let line = (0..<count).map { _ in words[Int(generator.next() % UInt64(words.count))] }.joined(separator: " ")
            text += String(repeating: "0", count: 8 - number.count) + number + " 2026-11-\(day < 10 ? "0" : "")\(day) " + line + "\n"
        }
        return Array(text.utf8.prefix(pageBytes))
    }

    /// A database-like page: 40-50 % to 90 % of it rows, the rest a header, pointers and zeros.
    static func databasePage(_ generator: inout SplitMix64) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: pageBytes)
        let header: [UInt8] = Array("DBPG".utf8) + [0x0D, 0x00, 0x00, 0x01]
        page.replaceSubrange(0..<header.count, with: header)
        let filled = pageBytes * (45 + Int(generator.next() % 46)) / 100
        var end = pageBytes
        var cells = 0
        while pageBytes - end < filled {
            let word = words[Int(generator.next() % UInt64(words.count))]
            let amount = "\(generator.next() % 10_000).\(generator.next() % 100)"
            let row = Array("|\(generator.next() % 1_000_000)|\(word)|\(amount)|2026-11-\(10 + generator.next() % 18)|".utf8)
            guard end - row.count > 64 + 2 * (cells + 1) else { break }
            end -= row.count
            page.replaceSubrange(end..<end + row.count, with: row)
            page[32 + 2 * cells] = UInt8(end & 0xFF)
            page[33 + 2 * cells] = UInt8(end >> 8)
            cells += 1
        }
        page[8] = UInt8(cells & 0xFF)
        return page
    }

    /// `count` page templates, text and database pages alternating.
    static func templates(_ count: Int, _ generator: inout SplitMix64) -> [[UInt8]] {
        (0..<count).map { $0 % 2 == 0 ? textPage(&generator) : databasePage(&generator) }
    }

    /// An image of `sizeBytes`: runs of text pages and of database pages (as files lie), each page
    /// one of 64 templates stamped with its page number.
    static func image(sizeBytes: Int, _ generator: inout SplitMix64) -> [UInt8] {
        precondition(sizeBytes % pageBytes == 0)
        let pages = templates(64, &generator)
        var image = [UInt8](repeating: 0, count: sizeBytes)
        image.withUnsafeMutableBytes { buffer in
            for index in 0..<sizeBytes / pageBytes {
                // 16 pages of one kind, then 16 of the other.
                let template = pages[(index / 16 % 2) + 2 * Int(generator.next() % 32)]
                let base = buffer.baseAddress! + index * pageBytes
                template.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: pageBytes) }
                stamp(base, page: index)
            }
        }
        return image
    }

    /// Writes the page number into the page (the line number of a text page, the page number of
    /// a database page's header), so that no two pages are equal.
    static func stamp(_ page: UnsafeMutableRawPointer, page index: Int) {
        if page.load(as: UInt8.self) == UInt8(ascii: "D") {
            page.storeBytes(of: UInt32(truncatingIfNeeded: index).littleEndian, toByteOffset: 4, as: UInt32.self)
        } else {
            var number = index
            for position in stride(from: 7, through: 0, by: -1) {
                page.storeBytes(of: UInt8(ascii: "0") + UInt8(number % 10), toByteOffset: position, as: UInt8.self)
                number /= 10
            }
        }
    }

    /// Writes `bytes` to a new file at `path` (a volume's backing file, adopted by `mkvolume`).
    static func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw RigError("cannot create \(path)")
        }
        defer { try? handle.close() }
        let chunk = 8 << 20
        for start in stride(from: 0, to: bytes.count, by: chunk) {
            try handle.write(contentsOf: bytes[start..<min(bytes.count, start + chunk)])
        }
    }

    /// The offset of the first byte where the file differs from `bytes` (or where it ends early),
    /// `nil` when it holds exactly them.
    static func firstDifference(_ path: String, _ bytes: [UInt8]) throws -> Int? {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw RigError("cannot open \(path)") }
        defer { try? handle.close() }
        let chunkBytes = 4 << 20
        var offset = 0
        while offset < bytes.count {
            guard let chunk = try handle.read(upToCount: min(chunkBytes, bytes.count - offset)), !chunk.isEmpty else { return offset }
            let equal = chunk.withUnsafeBytes { read in
                bytes.withUnsafeBytes { memcmp(read.baseAddress!, $0.baseAddress! + offset, read.count) == 0 }
            }
            if !equal {
                let index = zip(chunk, bytes[offset..<offset + chunk.count]).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
                return offset + index
            }
            offset += chunk.count
        }
        return nil
    }

    /// Database-like work until stopped: writes of 4, 8 or 16 KiB at random 4 KiB-aligned offsets,
    /// each new plain page content, four requests in flight, paced to `bytesPerSecond`.
    static func overwritePages(
        _ client: RawNBDClient, sizeBytes: Int, bytesPerSecond: Int, seed: UInt64, control: HostWriter.Control
    ) throws -> String {
        var generator = SplitMix64(seed: seed)
        let pages = templates(32, &generator)
        let started = Date()
        var sent = 0
        var cookie: UInt64 = 100
        while !control.stopRequested {
            var batch = Set<UInt64>()
            for _ in 0..<4 {
                let length = 4096 << Int(generator.next() % 3)
                let offset = UInt64(Int(generator.next() % UInt64((sizeBytes - length) / 4096)) * 4096)
                var bytes: [UInt8] = []
                while bytes.count < length {
                    var page = pages[Int(generator.next() % UInt64(pages.count))]
                    page.withUnsafeMutableBytes { stamp($0.baseAddress!, page: Int(generator.next() % 100_000_000)) }
                    // A fresh row or line somewhere in the page.
                    let at = 256 + Int(generator.next() % UInt64(pageBytes - 512))
                    let field = Array("\(generator.next() % 1_000_000) \(words[Int(generator.next() % UInt64(words.count))])".utf8)
                    page.replaceSubrange(at..<at + field.count, with: field)
                    bytes += page
                }
                bytes.removeLast(bytes.count - length)
                cookie += 1
                control.willWrite(length)
                client.sendWrite(offset: offset, bytes: bytes, cookie: cookie)
                batch.insert(cookie)
                sent += length
            }
            let replies = try client.receiveReplies(readLengths: [:], writes: batch)
            if let failed = replies.first(where: { $0.value.error != 0 }) { return "ended: write error \(failed.value.error) after \(sent) bytes" }
            let ahead = Double(sent) / Double(bytesPerSecond) - Date().timeIntervalSince(started)
            if ahead > 0 { usleep(useconds_t(ahead * 1_000_000)) }
        }
        return "stopped after \(sent) bytes"
    }
}

/// Ransomware at the block level: reads nothing, overwrites the volume from its start with
/// random bytes (ciphertext), 1 MiB per write, paced to `bytesPerSecond`, until the server refuses
/// or closes the connection (the rollback starts), it is stopped, or it reaches the end.
enum Encryptor {
    /// Overwrites `client`'s export from offset 0; returns how it ended.
    static func overwrite(_ client: RawNBDClient, sizeBytes: Int, bytesPerSecond: Int, control: HostWriter.Control) throws -> String {
        let chunk = Int(mebibyte)
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw RigError("cannot open /dev/urandom") }
        defer { try? random.close() }
        let started = Date()
        var offset = 0
        while offset + chunk <= sizeBytes, !control.stopRequested {
            let bytes = [UInt8](try random.read(upToCount: chunk) ?? Data())
            guard bytes.count == chunk else { throw RigError("short read from /dev/urandom") }
            control.willWrite(chunk)
            let error: UInt32
            do {
                error = try client.write(offset: UInt64(offset), bytes: bytes, cookie: UInt64(offset / chunk + 1))
            } catch {
                return "cut off after \(offset) bytes (\(error))"
            }
            if error != 0 { return "refused after \(offset) bytes (NBD error \(error))" }
            offset += chunk
            let ahead = Double(offset) / Double(bytesPerSecond) - Date().timeIntervalSince(started)
            if ahead > 0 { usleep(useconds_t(ahead * 1_000_000)) }
        }
        return "wrote \(offset) bytes without being stopped"
    }
}
