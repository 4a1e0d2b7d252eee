/// Appends fixed-width little-endian integers and length-prefixed strings to a byte array.
/// The format is documented in `Specs/events.md`.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func write(_ value: UInt16) { writeInteger(value) }
    public mutating func write(_ value: UInt32) { writeInteger(value) }
    public mutating func write(_ value: UInt64) { writeInteger(value) }
    public mutating func write(_ value: Int64) { writeInteger(value) }

    /// A string as a UInt16 byte count and its UTF-8 bytes.
    public mutating func write(_ value: String) {
        let utf8 = Array(value.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string of \(utf8.count) bytes is too long to encode")
        write(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// An optional as a presence byte (0 or 1) and, when present, the value.
    public mutating func write(_ value: String?) {
        write(value != nil)
        if let value { write(value) }
    }

    public mutating func write(_ value: UInt64?) {
        write(value != nil)
        if let value { write(value) }
    }

    public mutating func write(bytes other: some Sequence<UInt8>) { bytes.append(contentsOf: other) }

    /// The number of bytes written.
    public var count: Int { bytes.count }

    /// Empties the writer, keeping its capacity for reuse.
    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    /// Overwrites 4 bytes at `offset` (written earlier as a placeholder) with `value`.
    public mutating func patch(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= bytes.count)
        withUnsafeBytes(of: value.littleEndian) { source in
            for index in 0..<4 { bytes[offset + index] = source[index] }
        }
    }

    private mutating func writeInteger<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Why bytes could not be decoded. The decoder never guesses: any deviation is an error.
public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The bytes end before the field.
    case truncated(field: String)
    /// Bytes remain after the last field.
    case trailingBytes(count: Int)
    /// A field holds a value outside its domain.
    case invalidValue(field: String, value: UInt64)
    /// A string field is not valid UTF-8.
    case invalidUTF8(field: String)
    /// An event type code this version does not know.
    case unknownEventType(UInt16)

    public var description: String {
        switch self {
        case let .truncated(field): "truncated at field \(field)"
        case let .trailingBytes(count): "\(count) unexpected trailing bytes"
        case let .invalidValue(field, value): "field \(field) holds invalid value \(value)"
        case let .invalidUTF8(field): "field \(field) is not valid UTF-8"
        case let .unknownEventType(code): "unknown event type \(code)"
        }
    }
}

/// Reads what ``ByteWriter`` wrote, checking every bound.
public struct ByteReader {
    private let buffer: UnsafeRawBufferPointer
    public private(set) var offset: Int = 0

    /// Reads from `buffer`, which must outlive the reader.
    public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    public var remaining: Int { buffer.count - offset }

    public mutating func readUInt8(_ field: String) throws(DecodeError) -> UInt8 { try readInteger(field) }
    public mutating func readUInt16(_ field: String) throws(DecodeError) -> UInt16 { try readInteger(field) }
    public mutating func readUInt32(_ field: String) throws(DecodeError) -> UInt32 { try readInteger(field) }
    public mutating func readUInt64(_ field: String) throws(DecodeError) -> UInt64 { try readInteger(field) }
    public mutating func readInt64(_ field: String) throws(DecodeError) -> Int64 { try readInteger(field) }

    public mutating func readBool(_ field: String) throws(DecodeError) -> Bool {
        let byte = try readUInt8(field)
        guard byte <= 1 else { throw .invalidValue(field: field, value: UInt64(byte)) }
        return byte == 1
    }

    public mutating func readString(_ field: String) throws(DecodeError) -> String {
        let count = Int(try readUInt16(field))
        let bytes = try readBytes(count, field)
        guard let string = String(validating: bytes, as: UTF8.self) else { throw .invalidUTF8(field: field) }
        return string
    }

    public mutating func readOptionalString(_ field: String) throws(DecodeError) -> String? {
        try readBool(field) ? try readString(field) : nil
    }

    public mutating func readOptionalUInt64(_ field: String) throws(DecodeError) -> UInt64? {
        try readBool(field) ? try readUInt64(field) : nil
    }

    /// The next `count` bytes, valid as long as the underlying buffer is.
    public mutating func readBytes(_ count: Int, _ field: String) throws(DecodeError) -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw .truncated(field: field) }
        let slice = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
        offset += count
        return slice
    }

    /// Throws unless every byte was consumed.
    public func expectEnd() throws(DecodeError) {
        guard remaining == 0 else { throw .trailingBytes(count: remaining) }
    }

    private mutating func readInteger<T: FixedWidthInteger>(_ field: String) throws(DecodeError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(field: field) }
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + size)])) }
        offset += size
        return T(littleEndian: value)
    }
}
