import Crypto
import SnapbackCore

/// The on-disk record of one event (see `Specs/events.md`, "Record format").
///
/// Key: the sequence number as 8 big-endian bytes (1, 2, 3, ...). Value:
///
///     offset  size  field
///     0       1     formatVersion        1
///     1       1     flags                bit 0: a caller block follows the payload; other bits 0
///     2       2     eventType            EventType raw value, little-endian
///     4       8     timestampMilliseconds  Int64 little-endian, since 1970-01-01 UTC, caller-supplied
///     12      4     payloadBytes         UInt32 little-endian
///     16      32    previousHash         SHA-256 of the previous record's key and value; zeros for seq 1
///     48      4     crc32c               CRC-32C of bytes 0..<48 followed by every byte after the header
///     52      n     payload              the event's fields (Event+Encoding)
///     52+n    12    caller               only with flag bit 0: uid, gid, pid, UInt32 little-endian each
///
/// A record without flag bit 0 is exactly a record of the logs written before callers were.
public enum LogRecord {
    /// The only record format this build reads and writes.
    public static let formatVersion: UInt8 = 1
    public static let headerBytes = 52
    /// A bound on one event's payload; events are small, so anything larger is damage.
    public static let payloadBytesMax = 64 * 1024
    public static let zeroHash = [UInt8](repeating: 0, count: 32)
    /// Flag bit 0: a ``callerBytes``-byte caller block follows the payload.
    public static let callerFlag: UInt8 = 1
    /// The flag bits this build knows; a record with any other bit set is refused.
    public static let knownFlags: UInt8 = callerFlag
    public static let callerBytes = 12

    /// The 8-byte big-endian key of `sequence`.
    public static func key(_ sequence: UInt64) -> [UInt8] {
        withUnsafeBytes(of: sequence.bigEndian) { Array($0) }
    }

    /// The sequence number of an 8-byte key, or `nil` for a key of another size.
    public static func sequence(ofKey key: UnsafeRawBufferPointer) -> UInt64? {
        guard key.count == 8 else { return nil }
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: key) }
        return UInt64(bigEndian: value)
    }

    /// Encodes the record value of `event`.
    public static func encode(event: Event, caller: Caller? = nil, timestampMilliseconds: Int64, previousHash: [UInt8]) -> [UInt8] {
        var writer = ByteWriter(capacity: headerBytes + 64)
        previousHash.withUnsafeBytes {
            encode(event: event, caller: caller, timestampMilliseconds: timestampMilliseconds, previousHash: $0, into: &writer)
        }
        return writer.bytes
    }

    /// Encodes the record value of `event` into `writer`, replacing what it held (the writer's
    /// storage is reused across records on the append path). A `caller` goes in a caller block
    /// after the payload, with flag bit 0 set.
    public static func encode(
        event: Event, caller: Caller? = nil, timestampMilliseconds: Int64, previousHash: UnsafeRawBufferPointer, into writer: inout ByteWriter
    ) {
        precondition(previousHash.count == 32)
        writer.removeAll()
        writer.write(formatVersion)
        writer.write(caller == nil ? UInt8(0) : callerFlag)
        writer.write(event.type.rawValue)
        writer.write(timestampMilliseconds)
        writer.write(UInt32(0))  // payloadBytes, patched below
        writer.write(bytes: previousHash)
        writer.write(UInt32(0))  // crc32c, patched below
        event.encodePayload(into: &writer)
        let payloadBytes = writer.count - headerBytes
        precondition(payloadBytes <= payloadBytesMax, "event payload of \(payloadBytes) bytes is over the bound")
        writer.patch(UInt32(payloadBytes), at: 12)
        if let caller {
            writer.write(caller.uid)
            writer.write(caller.gid)
            writer.write(caller.pid)
        }
        let crc = writer.bytes.withUnsafeBytes { value in
            CRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: value[headerBytes...]),
                continuing: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: value[0..<48])))
        }
        writer.patch(crc, at: 48)
    }

    /// SHA-256 of a record's key and value, written into `hash` (32 bytes).
    public static func hash(sequence: UInt64, value: UnsafeRawBufferPointer, into hash: inout [UInt8]) {
        var hasher = SHA256()
        withUnsafeBytes(of: sequence.bigEndian) { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: value)
        let digest = hasher.finalize()
        hash.withUnsafeMutableBytes { target in digest.withUnsafeBytes { target.copyMemory(from: $0) } }
    }

    /// SHA-256 of a record's key and value: what the next record stores as `previousHash`.
    public static func hash(sequence: UInt64, value: UnsafeRawBufferPointer) -> [UInt8] {
        var hasher = SHA256()
        withUnsafeBytes(of: sequence.bigEndian) { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: value)
        return Array(hasher.finalize())
    }
}

/// What can be wrong with one stored record. Each kind has its own `snapback log verify` exit code.
public enum RecordProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The value is shorter than its header or its declared payload, or longer.
    case malformed(String)
    /// A format version this build does not know (a newer writer, or damage).
    case unsupportedVersion(UInt8)
    /// The stored CRC-32C differs from the computed one.
    case checksumMismatch(stored: UInt32, computed: UInt32)
    /// `previousHash` differs from the hash of the record before it.
    case chainBroken
    /// The sequence number is not the one after the previous record.
    case gap(expected: UInt64, found: UInt64)
    /// The payload does not decode as its event type.
    case undecodable(DecodeError)

    public var description: String {
        switch self {
        case let .malformed(detail): "malformed record: \(detail)"
        case let .unsupportedVersion(version):
            "record format version \(version) is not supported (this build reads version \(LogRecord.formatVersion))"
        case let .checksumMismatch(stored, computed):
            "checksum mismatch: stored crc32c \(hex32(stored)), computed \(hex32(computed))"
        case .chainBroken: "hash chain broken: previousHash does not match the hash of the record before"
        case let .gap(expected, found): "sequence gap: expected seq \(expected), found seq \(found)"
        case let .undecodable(error): "payload does not decode: \(error)"
        }
    }
}

func hex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// A stored record, read in place from the map (valid only inside the read transaction).
public struct RecordView {
    public let sequence: UInt64
    public let value: UnsafeRawBufferPointer

    /// Parses the header, checking its shape but not the checksum, chain or payload.
    public init(sequence: UInt64, value: UnsafeRawBufferPointer) throws(RecordProblem) {
        self.sequence = sequence
        self.value = value
        guard value.count >= LogRecord.headerBytes else {
            throw .malformed("\(value.count) bytes, shorter than the \(LogRecord.headerBytes)-byte header")
        }
        guard value[0] == LogRecord.formatVersion else { throw .unsupportedVersion(value[0]) }
        guard value[1] & ~LogRecord.knownFlags == 0 else { throw .malformed("unknown flag bits in flags byte \(value[1])") }
        let declared = Int(payloadBytes)
        let trailer = value[1] & LogRecord.callerFlag != 0 ? LogRecord.callerBytes : 0
        guard declared <= LogRecord.payloadBytesMax, value.count == LogRecord.headerBytes + declared + trailer else {
            let what = trailer == 0 ? "" : " and a \(trailer)-byte caller block"
            throw .malformed("declares \(declared) payload bytes\(what) but holds \(value.count - LogRecord.headerBytes) bytes after the header")
        }
    }

    public var formatVersion: UInt8 { value[0] }
    public var typeCode: UInt16 { value.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian }
    public var timestampMilliseconds: Int64 { value.loadUnaligned(fromByteOffset: 4, as: Int64.self).littleEndian }
    public var payloadBytes: UInt32 { value.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian }
    public var previousHash: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: value[16..<48]) }
    public var storedChecksum: UInt32 { value.loadUnaligned(fromByteOffset: 48, as: UInt32.self).littleEndian }
    public var flags: UInt8 { value[1] }
    public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: value[LogRecord.headerBytes..<(LogRecord.headerBytes + Int(payloadBytes))])
    }
    /// Who asked for the event, when the record has a caller block (flag bit 0).
    public var caller: Caller? {
        guard flags & LogRecord.callerFlag != 0 else { return nil }
        let offset = LogRecord.headerBytes + Int(payloadBytes)
        func field(_ index: Int) -> UInt32 { value.loadUnaligned(fromByteOffset: offset + 4 * index, as: UInt32.self).littleEndian }
        return Caller(uid: field(0), gid: field(1), pid: field(2))
    }

    /// CRC-32C of the header's first 48 bytes and every byte after the header (the payload and
    /// the caller block).
    public var computedChecksum: UInt32 {
        let header = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: value[0..<48]))
        return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: value[LogRecord.headerBytes...]), continuing: header)
    }

    /// Throws unless the stored checksum matches.
    public func checkChecksum() throws(RecordProblem) {
        let computed = computedChecksum
        guard computed == storedChecksum else { throw .checksumMismatch(stored: storedChecksum, computed: computed) }
    }

    /// Throws unless `previousHash` equals `expected`.
    public func checkChain(previous expected: [UInt8]) throws(RecordProblem) {
        guard previousHash.elementsEqual(expected) else { throw .chainBroken }
    }

    public func decodeEvent() throws(RecordProblem) -> Event {
        do {
            return try Event.decode(typeCode: typeCode, payload: payload)
        } catch {
            throw .undecodable(error)
        }
    }

    /// The hash the next record must carry.
    public var hash: [UInt8] { LogRecord.hash(sequence: sequence, value: value) }
}
