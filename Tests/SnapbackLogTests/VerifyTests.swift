import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog
import SnapbackRandom

/// Damages a stored record in place, as a disk or an attacker would.
func rewrite(_ log: EventLog, sequence: UInt64, _ transform: @escaping ([UInt8]) -> [UInt8]?) throws {
    let events = log.events
    try log.write { transaction in
        try LogRecord.key(sequence).withUnsafeBytes { key in
            let value = Array(try transaction.get(events, key: key)!)
            if let changed = transform(value) {
                try changed.withUnsafeBytes { try transaction.put(events, key: key, value: $0) }
            } else {
                try transaction.delete(events, key: key)
            }
        }
    }
}

/// A log of `count` commands' events in a new directory.
func makeLog(commands count: Int, seed: UInt64) throws -> (TemporaryDirectory, EventLog) {
    let directory = TemporaryDirectory()
    let log = try EventLog(directory: directory.path)
    var states: [ControllerState] = []
    try appendRandomHistory(log, commands: count, seed: seed, states: &states)
    return (directory, log)
}

/// Re-encodes a record value with a new CRC over its (possibly changed) header and payload.
func resealed(_ value: [UInt8]) -> [UInt8] {
    var value = value
    var crc = CRC32C.checksum(Array(value[0..<48]))
    crc = CRC32C.checksum(Array(value[52...]), continuing: crc)
    withUnsafeBytes(of: crc.littleEndian) { value.replaceSubrange(48..<52, with: $0) }
    return value
}

@Suite("log verify on damaged logs")
struct VerifyTests {
    @Test func aSoundLogVerifies() throws {
        let (directory, log) = try makeLog(commands: 200, seed: 21)
        defer { directory.remove() }
        let report = log.verify()
        #expect(report.isSound)
        #expect(report.recordsChecked == log.lastSequence)
    }

    @Test func oneFlippedByteAnywhereInAStoredRecordIsCaught() throws {
        let (directory, log) = try makeLog(commands: 60, seed: 22)
        defer { directory.remove() }
        let last = log.lastSequence
        var random = SeededRandom(seed: 22)
        for sequence in [1, last / 2, last] {
            let length = try log.storedEvents(from: sequence, through: sequence).count == 1
                ? try log.environment.read { transaction in
                    try LogRecord.key(sequence).withUnsafeBytes { try transaction.get(log.events, key: $0)!.count }
                } : 0
            #expect(length >= LogRecord.headerBytes)
            for offset in 0..<length {
                let bit = UInt8(1) << UInt8.random(in: 0..<8, using: &random)
                try rewrite(log, sequence: sequence) { value in
                    var damaged = value
                    damaged[offset] ^= bit
                    return damaged
                }
                let report = log.verify()
                #expect(!report.isSound, "flip at seq \(sequence) offset \(offset) went unnoticed")
                #expect(report.problem?.sequence == sequence, "flip at seq \(sequence) offset \(offset): \(String(describing: report.problem))")
                try rewrite(log, sequence: sequence) { value in
                    var repaired = value
                    repaired[offset] ^= bit
                    return repaired
                }
            }
        }
        #expect(log.verify().isSound)
    }

    @Test func aFlippedPayloadByteIsAChecksumError() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 23)
        defer { directory.remove() }
        try rewrite(log, sequence: 5) { value in
            var damaged = value
            damaged[value.count - 1] ^= 0x40
            return damaged
        }
        let report = log.verify()
        #expect(report.problem?.kind == .checksum)
        #expect(report.problem?.sequence == 5)
        #expect(report.problem?.kind.exitCode == 3)
    }

    @Test func aResealedForgeryBreaksTheChain() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 24)
        defer { directory.remove() }
        // Change the timestamp and fix the CRC: only the chain can tell.
        try rewrite(log, sequence: 7) { value in
            var forged = value
            forged[4] ^= 0xFF
            return resealed(forged)
        }
        let report = log.verify()
        #expect(report.problem?.kind == .chain)
        #expect(report.problem?.sequence == 8, "the next record's link exposes the forgery")
    }

    @Test func aRemovedRecordIsAGap() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 25)
        defer { directory.remove() }
        try rewrite(log, sequence: 10) { _ in nil }
        let report = log.verify()
        #expect(report.problem?.kind == .gap)
        #expect(report.problem?.sequence == 10)
        #expect(report.problem?.detail.contains("expected seq 10") == true)
    }

    @Test func aRemovedLastRecordContradictsTheHead() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 26)
        defer { directory.remove() }
        let last = log.lastSequence
        try rewrite(log, sequence: last) { _ in nil }
        let report = log.verify()
        #expect(report.problem?.kind == .head)
        #expect(report.problem?.sequence == last)
        log.close()
        #expect(throws: LogError.self) { _ = try EventLog(directory: directory.path) }
    }

    @Test func aRecordOfANewerVersionIsRefusedNotGuessed() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 27)
        defer { directory.remove() }
        try rewrite(log, sequence: 3) { value in
            var newer = value
            newer[0] = 2
            return resealed(newer)
        }
        let report = log.verify()
        #expect(report.problem?.kind == .version)
        #expect(report.problem?.sequence == 3)
        #expect(report.problem?.kind.exitCode == 6)
        #expect(throws: LogError.self) { _ = try log.replay() }
    }

    @Test func anUnknownEventTypeIsUndecodable() throws {
        let (directory, log) = try makeLog(commands: 40, seed: 28)
        defer { directory.remove() }
        try rewrite(log, sequence: 2) { value in
            var unknown = value
            unknown[2] = 0xE7
            unknown[3] = 0x03
            return resealed(unknown)
        }
        let report = log.verify()
        #expect(report.problem?.kind == .undecodable)
        #expect(report.problem?.detail.contains("unknown event type 999") == true)
    }

    @Test func aTruncatedDataFileIsRefusedWithoutReadingPastItsEnd() throws {
        let (directory, log) = try makeLog(commands: 300, seed: 29)
        defer { directory.remove() }
        log.close()
        let dataFile = directory.path + "/data.mdb"
        let size = try FileManager.default.attributesOfItem(atPath: dataFile)[.size] as! Int
        #expect(truncate(dataFile, off_t(size / 2)) == 0)
        #expect {
            _ = try EventLog(directory: directory.path, readOnly: true)
        } throws: { error in
            guard case LogError.truncatedDataFile(let bytes, let needed) = error else { return false }
            return bytes == size / 2 && needed > bytes
        }
    }
}
