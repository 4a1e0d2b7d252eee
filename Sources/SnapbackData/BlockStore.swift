#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SnapbackCore

/// Why a block store could not do what was asked.
public enum BlockStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The operating system reported an error (errno) during `operation`.
    case io(operation: String, errno: Int32)
    /// The range lies outside the store.
    case outOfRange(offset: UInt64, length: Int, sizeBytes: UInt64)

    public var description: String {
        switch self {
        case let .io(operation, errno): "\(operation) failed: errno \(errno)"
        case let .outOfRange(offset, length, sizeBytes): "range \(offset)+\(length) is outside \(sizeBytes) bytes"
        }
    }
}

/// What a backing store's failure means (`Specs/errors.md`, "Backing-store errors"). Every errno
/// is classified here and nowhere else.
public enum StorageFailureClass: Sendable, Equatable {
    /// The store is out of room (ENOSPC, EDQUOT, EFBIG): the data is intact, the volume becomes
    /// `out_of_space`, and nothing is rolled back.
    case capacity
    /// Anything else (EIO, EILSEQ, EBADMSG, ENXIO, ENODEV, EROFS, ...): the data cannot be
    /// trusted; the volume is faulted, which may start an automatic rollback.
    case damage

    /// The class of `errno`.
    public static func of(errno: Int32) -> StorageFailureClass {
        switch errno {
        case ENOSPC, EDQUOT, EFBIG: .capacity
        default: .damage
        }
    }
}

extension BlockStoreError {
    /// The class of this failure: only an errno of the capacity class is not damage.
    public var failureClass: StorageFailureClass {
        switch self {
        case let .io(_, errno): StorageFailureClass.of(errno: errno)
        case .outOfRange: .damage
        }
    }
}

/// The port through which the data plane reaches a volume's bytes: a fixed-size store read and
/// written at any byte offset and length. Writes are durable only after `sync()`.
///
/// The real implementation is ``FileBlockStore``; the simulated one (in `SnapbackTesting`) loses
/// or tears unsynced writes on a simulated crash and can inject I/O errors.
public protocol BlockStore: AnyObject, Sendable {
    /// The size in bytes.
    var sizeBytes: UInt64 { get }
    /// Reads `buffer.count` bytes at `offset`.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockStoreError)
    /// Writes `buffer` at `offset`; not durable until ``sync()``.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockStoreError)
    /// Makes every completed write durable (fdatasync).
    func sync() throws(BlockStoreError)
    /// The holes and data of `offset..<offset+length`, in order, covering the range (a file's
    /// SEEK_HOLE/SEEK_DATA; a store that cannot tell answers one data extent). A snapshot: a
    /// concurrent write may allocate a hole just reported.
    func allocation(at offset: UInt64, length: UInt64) throws(BlockStoreError) -> [BlockExtent]
    /// Deallocates `offset..<offset+length` so that it reads as zeroes, if the store can
    /// (FALLOC_FL_PUNCH_HOLE); returns false, having changed nothing, if it cannot. Not durable
    /// until ``sync()``.
    func punchHole(at offset: UInt64, length: Int) throws(BlockStoreError) -> Bool
    /// A hint that `offset..<offset+length` will be read soon (lets a disk queue many reads at
    /// once). Changes nothing else; may do nothing.
    func prefetch(at offset: UInt64, length: Int)
}

extension BlockStore {
    public func prefetch(at offset: UInt64, length: Int) {}

    /// By default the whole range is allocated data.
    public func allocation(at offset: UInt64, length: UInt64) throws(BlockStoreError) -> [BlockExtent] {
        try checkRange(offset, 0)
        return length == 0 ? [] : [BlockExtent(lengthBytes: length, isHole: false)]
    }

    /// By default nothing is deallocated.
    public func punchHole(at offset: UInt64, length: Int) throws(BlockStoreError) -> Bool { false }
}

/// A run of a store's bytes that is either allocated data or a hole (which reads as zeroes).
public struct BlockExtent: Sendable, Hashable {
    /// The length in bytes.
    public var lengthBytes: UInt64
    /// True for a hole: unallocated, reads as zeroes.
    public var isHole: Bool

    /// An extent of `lengthBytes` bytes.
    public init(lengthBytes: UInt64, isHole: Bool) {
        self.lengthBytes = lengthBytes
        self.isHole = isHole
    }
}

extension BlockStore {
    /// Throws unless `offset..<offset+length` lies inside the store.
    public func checkRange(_ offset: UInt64, _ length: Int) throws(BlockStoreError) {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        guard length >= 0, !overflow, end <= sizeBytes else {
            throw .outOfRange(offset: offset, length: length, sizeBytes: sizeBytes)
        }
    }

    /// Reads `length` bytes at `offset` into a new array.
    public func read(at offset: UInt64, length: Int) throws(BlockStoreError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        try read(at: offset, into: &bytes, range: 0..<length)
        return bytes
    }

    /// Reads `range.count` bytes at `offset` into `bytes[range]`.
    public func read(at offset: UInt64, into bytes: inout [UInt8], range: Range<Int>) throws(BlockStoreError) {
        var failure: BlockStoreError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(BlockStoreError) {
                try read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[range]))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Writes `bytes` at `offset`.
    public func write(at offset: UInt64, bytes: [UInt8]) throws(BlockStoreError) {
        try write(at: offset, from: bytes, range: 0..<bytes.count)
    }

    /// Writes `bytes[range]` at `offset`.
    public func write(at offset: UInt64, from bytes: [UInt8], range: Range<Int>) throws(BlockStoreError) {
        var failure: BlockStoreError?
        bytes.withUnsafeBytes { buffer in
            do throws(BlockStoreError) {
                try write(at: offset, from: UnsafeRawBufferPointer(rebasing: buffer[range]))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }
}

/// Why a volume's backing store could not be opened as recorded. Each becomes a fault event.
public enum BackingProblem: Error, Sendable, Equatable, CustomStringConvertible {
    case missing(path: String)
    case sizeMismatch(path: String, recordedBytes: UInt64, actualBytes: UInt64)
    case unusable(path: String, errno: Int32)

    /// The fault cause recorded for this problem.
    public var faultCause: FaultCause {
        switch self {
        case .missing: .backingMissing
        case .sizeMismatch: .backingResized
        case .unusable: .ioError
        }
    }

    public var description: String {
        switch self {
        case let .missing(path): "backing store \(path) is missing"
        case let .sizeMismatch(path, recorded, actual): "backing store \(path) has \(actual) bytes, \(recorded) recorded"
        case let .unusable(path, errno): "backing store \(path) cannot be opened: errno \(errno)"
        }
    }
}
