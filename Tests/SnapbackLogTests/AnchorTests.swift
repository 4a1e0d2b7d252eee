import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog

/// Rewrites the log from `sequence` on as a forger would: the record there gets another time,
/// every later record is re-linked and resealed, and the head follows, so the chain is intact
/// again and only an anchor published before can tell.
func forgeHistory(_ log: EventLog, from sequence: UInt64) throws {
    let (events, meta) = (log.events, log.meta)
    let last = log.lastSequence
    try log.write { transaction in
        var previousHash = LogRecord.zeroHash
        if sequence > 1 {
            previousHash = try LogRecord.key(sequence - 1).withUnsafeBytes { key in
                LogRecord.hash(sequence: sequence - 1, value: try transaction.get(events, key: key)!)
            }
        }
        for current in sequence...last {
            try LogRecord.key(current).withUnsafeBytes { key in
                var value = Array(try transaction.get(events, key: key)!)
                if current == sequence { value[4] &+= 1 }  // a millisecond later
                value.replaceSubrange(16..<48, with: previousHash)
                value = resealed(value)
                try value.withUnsafeBytes { try transaction.put(events, key: key, value: $0) }
                previousHash = value.withUnsafeBytes { LogRecord.hash(sequence: current, value: $0) }
            }
        }
        let head = LogRecord.key(last) + previousHash
        try EventLog.headKey.withUnsafeBytes { key in
            try head.withUnsafeBytes { try transaction.put(meta, key: key, value: $0) }
        }
    }
}

@Suite("log head and verify -anchor")
struct AnchorTests {
    @Test func anchorsParseAndPrintAsSequenceColonHash() throws {
        let hash = (0..<32).map { UInt8($0 * 7 % 256) }
        let anchor = LogAnchor(sequence: 42, hash: hash)
        #expect(anchor.description == "42:" + hash.map { String(format: "%02x", $0) }.joined())
        #expect(LogAnchor(anchor.description) == anchor)
        #expect(LogAnchor(anchor.description.uppercased()) == anchor)
        let hex = anchor.hashHex
        for bad in [
            "", "42", "42:", ":" + hex, "0:" + hex, "-1:" + hex, "x:" + hex, "42:" + hex.dropLast(), "42:" + hex + "0",
            "42:" + hex.dropLast() + "g", "42:" + hex + ":1", " 42:" + hex,
        ] {
            #expect(LogAnchor(String(bad)) == nil, "\(bad)")
        }
    }

    @Test func theHeadIsTheLastRecordAndItsChainHash() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        #expect(try log.chainHead() == nil)
        var states: [ControllerState] = []
        try appendRandomHistory(log, commands: 80, seed: 51, states: &states)
        let (anchor, timestamp) = try #require(try log.chainHead())
        let recorded = try log.readHead()
        #expect(anchor.sequence == log.lastSequence && anchor.sequence == recorded.sequence)
        #expect(anchor.hash == recorded.hash)
        #expect(timestamp == (try log.tail(1).first?.timestampMilliseconds))
        // A reader beside the writer sees the same.
        let reader = try EventLog(directory: directory.path, readOnly: true)
        #expect(try reader.chainHead()?.anchor == anchor)
        let report = reader.verify(anchors: [anchor])
        #expect(report.isSound && report.anchorsChecked == 1)
    }

    @Test func theChainMustPassThroughEveryAnchor() throws {
        let (directory, log) = try makeLog(commands: 120, seed: 52)
        defer { directory.remove() }
        let last = log.lastSequence
        try #require(last >= 10)
        var anchors: [LogAnchor] = []
        try log.scan { record in
            if [1, last / 2, last].contains(record.sequence) { anchors.append(LogAnchor(sequence: record.sequence, hash: record.hash)) }
            return true
        }
        let sound = log.verify(anchors: anchors + [anchors[1]])
        #expect(sound.isSound && sound.anchorsChecked == 4)

        var wrong = anchors[1]
        wrong.hash[0] ^= 1
        let mismatch = log.verify(anchors: [anchors[0], wrong])
        #expect(mismatch.problem?.kind == .anchor && mismatch.problem?.sequence == wrong.sequence)
        #expect(mismatch.problem?.kind.exitCode == 4)
        #expect(mismatch.problem?.detail.contains("rewritten at or before seq \(wrong.sequence)") == true)

        let beyond = LogAnchor(sequence: last + 5, hash: anchors[2].hash)
        let missing = log.verify(anchors: [anchors[2], beyond])
        #expect(missing.problem?.kind == .anchor && missing.problem?.sequence == last + 5)
        #expect(missing.problem?.detail.contains("past the end of the log (seq \(last))") == true)
    }

    @Test func aRewrittenLogWithAnIntactChainFailsOnlyOnTheAnchor() throws {
        let (directory, log) = try makeLog(commands: 120, seed: 53)
        defer { directory.remove() }
        let last = log.lastSequence
        let published = try #require(try log.chainHead()).anchor
        var early: LogAnchor?
        try log.scan(from: 3, through: 3) { record in
            early = LogAnchor(sequence: record.sequence, hash: record.hash)
            return false
        }
        try forgeHistory(log, from: last / 2)
        let reader = try EventLog(directory: directory.path, readOnly: true)
        #expect(reader.verify().isSound, "the forged chain is intact by itself")
        #expect(try reader.chainHead()?.anchor != published)
        let report = reader.verify(anchors: [published])
        #expect(report.problem?.kind == .anchor && report.problem?.sequence == last)
        // An anchor published before the rewritten part still holds.
        #expect(reader.verify(anchors: [try #require(early)]).isSound)
    }

    @Test func aDamagedRecordIsReportedBeforeALaterAnchor() throws {
        let (directory, log) = try makeLog(commands: 60, seed: 54)
        defer { directory.remove() }
        let published = try #require(try log.chainHead()).anchor
        try rewrite(log, sequence: 2) { value in
            var value = value
            value[LogRecord.headerBytes - 1] ^= 0xFF
            return value
        }
        let report = log.verify(anchors: [published])
        #expect(report.problem?.kind == .checksum && report.problem?.sequence == 2)
    }
}
