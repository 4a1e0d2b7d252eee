import CompressNIO
import Foundation
import NIOCore
import SnapbackCore

/// The header of an archive segment: records `first...last` moved out of LMDB into one
/// zlib-compressed, write-once file (`Specs/log-archive.md`).
///
/// File layout, integers little-endian: the header (``byteCount`` bytes):
/// `magic` (8 bytes, `SBARCH01`), `first`, `last` (UInt64), `previousHash` (32 bytes: the hash of
/// record `first - 1`, zeros for record 1), `lastHash` (32 bytes: the hash of record `last`),
/// `recordsBytes`, `stateBytes`, `compressedBytes` (UInt64), `payloadChecksum` (CRC-32C of the
/// compressed bytes, UInt32), `headerChecksum` (CRC-32C of the header's bytes before it, UInt32);
/// then the payload: zlib of the records section (each record as its value's length, UInt32,
/// and the value, exactly as LMDB held it) followed by the state section (the reduced state after
/// record `last`, ``ControllerState/encoded()``; empty when the segment carries none).
public struct ArchiveSegmentHeader: Sendable, Equatable {
    public static let magic = Array("SBARCH01".utf8)
    public static let byteCount = 120

    public var first: UInt64
    public var last: UInt64
    public var previousHash: [UInt8]
    public var lastHash: [UInt8]
    public var recordsBytes: UInt64
    public var stateBytes: UInt64
    public var compressedBytes: UInt64
    public var payloadChecksum: UInt32

    func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.byteCount)
        writer.write(bytes: Self.magic)
        writer.write(first)
        writer.write(last)
        writer.write(bytes: previousHash)
        writer.write(bytes: lastHash)
        writer.write(recordsBytes)
        writer.write(stateBytes)
        writer.write(compressedBytes)
        writer.write(payloadChecksum)
        writer.write(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// Decodes and checks a header; `name` is the file's name, for the error.
    static func decode(_ bytes: [UInt8], name: String) throws(LogError) -> ArchiveSegmentHeader {
        guard bytes.count >= byteCount, Array(bytes[0..<8]) == magic else {
            throw .archiveDamaged("segment \(name) does not start with an archive header")
        }
        func load<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) -> T {
            bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        let stored = load(byteCount - 4, as: UInt32.self)
        let computed = CRC32C.checksum(Array(bytes[0..<(byteCount - 4)]))
        guard stored == computed else { throw .archiveDamaged("segment \(name): header checksum \(hex32(stored)) stored, \(hex32(computed)) computed") }
        let header = ArchiveSegmentHeader(
            first: load(8, as: UInt64.self), last: load(16, as: UInt64.self), previousHash: Array(bytes[24..<56]),
            lastHash: Array(bytes[56..<88]), recordsBytes: load(88, as: UInt64.self), stateBytes: load(96, as: UInt64.self),
            compressedBytes: load(104, as: UInt64.self), payloadChecksum: load(112, as: UInt32.self))
        guard header.first >= 1, header.first <= header.last else {
            throw .archiveDamaged("segment \(name): its header holds records \(header.first)...\(header.last)")
        }
        return header
    }
}

/// A segment read into memory: its header, its records (checked for shape, in order, without
/// gaps) and the state it carries.
public struct ArchiveSegment: Sendable {
    public let name: String
    public let header: ArchiveSegmentHeader
    /// The records section, decompressed.
    private let records: [UInt8]
    /// The offset of each record's value in ``records``, by sequence number from `first`.
    private let offsets: [Int]
    /// The encoded reduced state after record `last`; empty when the segment carries none.
    public let stateBytes: [UInt8]

    init(name: String, header: ArchiveSegmentHeader, records: [UInt8], stateBytes: [UInt8]) throws(LogError) {
        self.name = name
        self.header = header
        self.records = records
        self.stateBytes = stateBytes
        var offsets: [Int] = []
        let count = Int(header.last - header.first + 1)
        offsets.reserveCapacity(count)
        var offset = 0
        while offset < records.count {
            guard records.count - offset >= 4 else { break }
            let length = records.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian) }
            guard length <= records.count - offset - 4 else { break }
            offsets.append(offset + 4)
            offset += 4 + length
        }
        guard offset == records.count, offsets.count == count else {
            throw .archiveDamaged("segment \(name): its records section does not hold \(count) records")
        }
        self.offsets = offsets
    }

    /// Calls `body` with each record from `from` through `through` (clamped to the segment), in
    /// order; `body` returns false to stop. Returns false when `body` stopped.
    @discardableResult
    public func forEach(from: UInt64, through: UInt64, _ body: (RecordView) throws -> Bool) throws -> Bool {
        let start = max(from, header.first)
        let end = min(through, header.last)
        guard start <= end else { return true }
        return try records.withUnsafeBytes { bytes in
            for sequence in start...end {
                let value = value(bytes, Int(sequence - header.first))
                let record: RecordView
                do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: value) } catch {
                    throw LogError.damagedRecord(sequence: sequence, problem: error)
                }
                if try !body(record) { return false }
            }
            return true
        }
    }

    /// Calls `body` with the stored value of record `sequence`, which the segment holds.
    func withValue<T>(_ sequence: UInt64, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        precondition(sequence >= header.first && sequence <= header.last, "record \(sequence) is not in segment \(name)")
        return try records.withUnsafeBytes { try body(value($0, Int(sequence - header.first))) }
    }

    private func value(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> UnsafeRawBufferPointer {
        let offset = offsets[index]
        let length = Int(bytes.loadUnaligned(fromByteOffset: offset - 4, as: UInt32.self).littleEndian)
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
    }
}

/// The archive directory of a log: segments named `FIRST-LAST.seg` (20-digit sequence numbers),
/// written once (to a temporary name, synced, renamed, the directory synced) and never changed.
public struct LogArchive: Sendable {
    public let directory: String
    static let suffix = ".seg"
    /// Records per segment written by ``EventLog/archive(through:)``.
    public static let recordsPerSegmentDefault = 65_536

    public init(directory: String) { self.directory = directory }

    /// A segment's file name.
    public static func name(first: UInt64, last: UInt64) -> String {
        func digits(_ value: UInt64) -> String {
            let text = String(value)
            return String(repeating: "0", count: 20 - text.count) + text
        }
        return digits(first) + "-" + digits(last) + suffix
    }

    /// The segments present, by their names, in order of their first record. Files that are not
    /// named like segments (a temporary file of an interrupted write among them) are ignored.
    public func listing() throws(LogError) -> [(first: UInt64, last: UInt64, name: String)] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            if !FileManager.default.fileExists(atPath: directory) { return [] }
            throw .archiveDamaged("cannot list \(directory): \(error.localizedDescription)")
        }
        var segments: [(first: UInt64, last: UInt64, name: String)] = []
        for name in names where name.hasSuffix(Self.suffix) && name.utf8.count == 41 + Self.suffix.utf8.count {
            let parts = name.dropLast(Self.suffix.count).split(separator: "-")
            guard parts.count == 2, let first = UInt64(parts[0]), let last = UInt64(parts[1]) else { continue }
            segments.append((first, last, name))
        }
        return segments.sorted { $0.first < $1.first }
    }

    /// The segments that hold records `1...archivedThrough`, in order, checked to tile that range
    /// exactly.
    /// - Throws: ``LogError/archiveDamaged(_:)`` naming the first missing or overlapping range.
    public func tiling(through archivedThrough: UInt64) throws(LogError) -> [(first: UInt64, last: UInt64, name: String)] {
        guard archivedThrough > 0 else { return [] }
        var expected: UInt64 = 1
        var result: [(first: UInt64, last: UInt64, name: String)] = []
        for segment in try listing() where segment.first <= archivedThrough {
            guard segment.first == expected else {
                if segment.first > expected {
                    throw .archiveDamaged("records \(expected)...\(segment.first - 1) are archived, but no segment in \(directory) holds them")
                }
                throw .archiveDamaged("segment \(segment.name) overlaps the records before it")
            }
            guard segment.last <= archivedThrough else {
                throw .archiveDamaged("segment \(segment.name) reaches past seq \(archivedThrough), where the archive ends")
            }
            result.append(segment)
            expected = segment.last + 1
        }
        guard expected == archivedThrough + 1 else {
            throw .archiveDamaged("records \(expected)...\(archivedThrough) are archived, but no segment in \(directory) holds them")
        }
        return result
    }

    /// Reads segment `name`, checks its header, its payload checksum and that it holds the
    /// records its name says, and decompresses it.
    public func load(_ name: String) throws(LogError) -> ArchiveSegment {
        let path = directory + "/" + name
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .archiveDamaged("cannot read segment \(path)")
        }
        let header = try ArchiveSegmentHeader.decode(Array(data.prefix(ArchiveSegmentHeader.byteCount)), name: name)
        guard Self.name(first: header.first, last: header.last) == name else {
            throw .archiveDamaged("segment \(name) holds records \(header.first)...\(header.last)")
        }
        guard UInt64(data.count) == UInt64(ArchiveSegmentHeader.byteCount) + header.compressedBytes else {
            throw .archiveDamaged("segment \(name) has \(data.count) bytes, its header says \(UInt64(ArchiveSegmentHeader.byteCount) + header.compressedBytes)")
        }
        let total = header.recordsBytes + header.stateBytes
        guard total <= UInt64(Int32.max) else { throw .archiveDamaged("segment \(name) claims \(total) bytes uncompressed") }
        let payload = data[data.startIndex.advanced(by: ArchiveSegmentHeader.byteCount)...]
        let computed = payload.withUnsafeBytes { CRC32C.checksum($0) }
        guard computed == header.payloadChecksum else {
            throw .archiveDamaged("segment \(name): payload checksum \(hex32(header.payloadChecksum)) stored, \(hex32(computed)) computed")
        }
        var compressed = ByteBuffer(bytes: payload)
        var plain = ByteBuffer()
        plain.reserveCapacity(Int(total))
        do {
            try compressed.decompress(to: &plain, with: .zlib())
        } catch {
            throw .archiveDamaged("segment \(name) does not decompress: \(error)")
        }
        guard plain.readableBytes == Int(total), let bytes = plain.readBytes(length: Int(total)) else {
            throw .archiveDamaged("segment \(name) decompresses to \(plain.readableBytes) bytes, its header says \(total)")
        }
        return try ArchiveSegment(
            name: name, header: header, records: Array(bytes[0..<Int(header.recordsBytes)]), stateBytes: Array(bytes[Int(header.recordsBytes)...]))
    }

    /// Writes a segment of `values` (records `first...`), whose predecessor hashes to
    /// `previousHash`, with `stateBytes` (the state after its last record), durably: a temporary
    /// file, fsync, rename, fsync of the directory. Replaces a segment of the same name left by an
    /// interrupted run. Returns the header written.
    func write(first: UInt64, values: [[UInt8]], previousHash: [UInt8], stateBytes: [UInt8]) throws(LogError) -> ArchiveSegmentHeader {
        precondition(!values.isEmpty && first >= 1)
        let last = first + UInt64(values.count) - 1
        var plain = ByteBuffer()
        plain.reserveCapacity(values.reduce(0) { $0 + 4 + $1.count } + stateBytes.count)
        for value in values {
            plain.writeInteger(UInt32(value.count), endianness: .little)
            plain.writeBytes(value)
        }
        let recordsBytes = plain.readableBytes
        plain.writeBytes(stateBytes)
        let compressed: [UInt8]
        do {
            var output = try plain.compress(with: .zlib())
            compressed = output.readBytes(length: output.readableBytes) ?? []
        } catch {
            throw .archiveWriteFailed("compressing records \(first)...\(last) failed: \(error)")
        }
        let header = ArchiveSegmentHeader(
            first: first, last: last, previousHash: previousHash,
            lastHash: values[values.count - 1].withUnsafeBytes { LogRecord.hash(sequence: last, value: $0) },
            recordsBytes: UInt64(recordsBytes), stateBytes: UInt64(stateBytes.count), compressedBytes: UInt64(compressed.count),
            payloadChecksum: CRC32C.checksum(compressed))
        let name = Self.name(first: first, last: last)
        try Self.writeDurably(directory: directory, name: name, parts: [header.encoded(), compressed])
        return header
    }

    /// Writes `parts` to `directory/name` through a temporary file: written, fsynced, renamed
    /// over `name`, and the directory fsynced, so that a crash leaves the old file or the new
    /// one, never a torn one.
    static func writeDurably(directory: String, name: String, parts: [[UInt8]]) throws(LogError) {
        func fail(_ what: String) -> LogError { .archiveWriteFailed("\(what) \(directory)/\(name): \(String(cString: strerror(errno)))") }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw fail("cannot create the archive directory for") }
        let temporary = directory + "/.tmp-" + name
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw fail("cannot create a temporary file for") }
        var failure: LogError?
        for part in parts where failure == nil {
            var written = 0
            while written < part.count {
                let result = part.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, part.count - written) }
                if result < 0 && errno == EINTR { continue }
                guard result > 0 else { failure = fail("cannot write"); break }
                written += result
            }
        }
        if failure == nil && fsync(descriptor) != 0 { failure = fail("cannot sync") }
        close(descriptor)
        if let failure {
            unlink(temporary)
            throw failure
        }
        guard rename(temporary, directory + "/" + name) == 0 else {
            let error = fail("cannot rename the temporary file to")
            unlink(temporary)
            throw error
        }
        let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryDescriptor >= 0 else { throw fail("cannot open the directory to sync") }
        defer { close(directoryDescriptor) }
        guard fsync(directoryDescriptor) == 0 else { throw fail("cannot sync the directory of") }
    }

    /// Removes segments that begin after `archivedThrough`: written by a run that was interrupted
    /// before LMDB recorded them (their records are still in LMDB). Readers never use them.
    func removeUnrecorded(after archivedThrough: UInt64) throws(LogError) {
        for segment in try listing() where segment.first > archivedThrough {
            guard unlink(directory + "/" + segment.name) == 0 || errno == ENOENT else {
                throw .archiveWriteFailed("cannot remove the unrecorded segment \(directory)/\(segment.name): \(String(cString: strerror(errno)))")
            }
        }
    }
}
