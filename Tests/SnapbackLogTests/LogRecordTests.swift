import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog

/// The record format's caller block (`Specs/events.md`, "Record format"): flag bit 0, 12 bytes
/// after the payload, covered by the checksum and the chain; records without it as before.
@Suite("log records with and without a caller")
struct LogRecordTests {
    let event = Event.volumeCreated(id: 3, name: "src", sizeBytes: 1 << 20, path: nil)
    let caller = Caller(uid: 1000, gid: 100, pid: 4242)

    func view<T>(_ value: [UInt8], _ body: (RecordView) throws -> T) throws -> T {
        try value.withUnsafeBytes { bytes in try body(try RecordView(sequence: 7, value: bytes)) }
    }

    @Test func aRecordWithoutACallerIsTheFormerFormat() throws {
        let value = LogRecord.encode(event: event, timestampMilliseconds: 1_700_000_000_123, previousHash: LogRecord.zeroHash)
        #expect(value[1] == 0)
        #expect(value.count == LogRecord.headerBytes + event.encodedPayload().count)
        try view(value) { record in
            #expect(record.caller == nil)
            #expect(try record.decodeEvent() == event)
            #expect(record.timestampMilliseconds == 1_700_000_000_123)
            try record.checkChecksum()
            let stored = try EventLog.storedEvent(record)
            #expect(stored == StoredEvent(sequence: 7, timestampMilliseconds: 1_700_000_000_123, event: event))
        }
    }

    @Test func aRecordWithACallerRoundTrips() throws {
        let value = LogRecord.encode(event: event, caller: caller, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
        let payload = event.encodedPayload()
        #expect(value[1] == LogRecord.callerFlag)
        #expect(value.count == LogRecord.headerBytes + payload.count + LogRecord.callerBytes)
        // uid, gid, pid little-endian after the payload.
        #expect(Array(value[(LogRecord.headerBytes + payload.count)...]) == [0xE8, 0x03, 0, 0, 100, 0, 0, 0, 0x92, 0x10, 0, 0])
        try view(value) { record in
            #expect(record.caller == caller)
            #expect(record.payloadBytes == UInt32(payload.count))
            #expect(Array(record.payload) == payload)
            #expect(try record.decodeEvent() == event)
            try record.checkChecksum()
            #expect(try EventLog.storedEvent(record).caller == caller)
        }
        // The chain hashes the whole value: the caller changes the hash.
        let without = LogRecord.encode(event: event, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
        #expect(value.withUnsafeBytes { LogRecord.hash(sequence: 7, value: $0) } != without.withUnsafeBytes { LogRecord.hash(sequence: 7, value: $0) })
    }

    @Test func theChecksumCoversTheCallerBlock() throws {
        let value = LogRecord.encode(event: event, caller: caller, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
        for offset in (value.count - LogRecord.callerBytes)..<value.count {
            var forged = value
            forged[offset] ^= 0x01
            try view(forged) { record in
                #expect(throws: RecordProblem.self) { try record.checkChecksum() }
            }
            // Resealed, the forgery passes the checksum but names another caller.
            try view(resealed(forged)) { record in
                try record.checkChecksum()
                #expect(record.caller != caller)
            }
        }
    }

    @Test func anUnknownFlagBitIsRefused() throws {
        for flag in [UInt8(0x02), 0x04, 0x80, 0x03] {
            var value = LogRecord.encode(event: event, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
            if flag & LogRecord.callerFlag != 0 { value += [UInt8](repeating: 0, count: LogRecord.callerBytes) }
            value[1] = flag
            value = resealed(value)
            #expect(throws: RecordProblem.self) { try view(value) { _ in () } }
        }
    }

    @Test func aCallerFlagWithoutItsBlockOrABlockWithoutTheFlagIsMalformed() throws {
        var flagged = LogRecord.encode(event: event, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
        flagged[1] = LogRecord.callerFlag
        #expect(throws: RecordProblem.self) { try view(resealed(flagged)) { _ in () } }
        var unflagged = LogRecord.encode(event: event, caller: caller, timestampMilliseconds: 5, previousHash: LogRecord.zeroHash)
        unflagged[1] = 0
        #expect(throws: RecordProblem.self) { try view(resealed(unflagged)) { _ in () } }
    }

    @Test func appendedCallersAreReadBackPerEventAndVerify() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        let other = Caller(uid: 0, gid: 0, pid: 1)
        let events: [Event] = [
            .volumeCreated(id: 0, name: "a", sizeBytes: 1 << 20, path: nil),
            .volumeCreated(id: 1, name: "b", sizeBytes: 1 << 20, path: nil),
            .controllerStarted(version: "test"),
        ]
        _ = try log.append(events, callers: [caller, other, nil], timestampMilliseconds: 10)
        _ = try log.append([.volumeRemoved(id: 1)], timestampMilliseconds: 11)
        let stored = try log.storedEvents()
        #expect(stored.map(\.caller) == [caller, other, nil, nil])
        #expect(stored.map(\.event) == events + [.volumeRemoved(id: 1)])
        #expect(log.verify().isSound)
        log.close()
    }
}

extension LogRecordTests {
    /// `Specs/events.md` 1.8: the example record with a caller block, byte for byte.
    @Test func theSpecificationsExampleWithACaller() throws {
        let value = LogRecord.encode(
            event: .volumeCreated(id: 0, name: "v0", sizeBytes: 67_108_864, path: nil), caller: Caller(uid: 1000, gid: 1000, pid: 4242),
            timestampMilliseconds: 1_700_000_000_000, previousHash: LogRecord.zeroHash)
        #expect(value.count == 81)
        #expect(value[1] == 0x01)
        #expect(Array(value[48..<52]) == [0xE6, 0xEA, 0xEB, 0x1F])
        let hash = value.withUnsafeBytes { LogRecord.hash(sequence: 1, value: $0) }
        #expect(hash.map { String(format: "%02x", $0) }.joined() == "47beea69c10ed0f214934cce1faf1e956da4d2851ce27b24886e563fea36950f")
    }
}
