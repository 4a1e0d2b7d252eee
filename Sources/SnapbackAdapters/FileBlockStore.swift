import Foundation
import SnapbackData

/// A block store on a file (sparse, in the data directory, or a given path) or a block device,
/// read and written with `pread`/`pwrite` and made durable with `fdatasync`.
public final class FileBlockStore: BlockStore, @unchecked Sendable {
    public let path: String
    public let sizeBytes: UInt64
    private let descriptor: Int32
    /// A block device: no holes to report or punch.
    private let isBlockDevice: Bool

    /// Creates a new sparse file of `sizeBytes` at `path`; fails if the file exists.
    public static func create(path: String, sizeBytes: UInt64) throws(BlockStoreError) -> FileBlockStore {
        let descriptor = Foundation.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .io(operation: "create \(path)", errno: errno) }
        guard ftruncate(descriptor, off_t(sizeBytes)) == 0, fsync(descriptor) == 0 else {
            let code = errno
            close(descriptor)
            throw .io(operation: "size \(path)", errno: code)
        }
        return FileBlockStore(path: path, descriptor: descriptor, sizeBytes: sizeBytes)
    }

    /// Opens `path` and checks that it holds exactly `sizeBytes` (a file's length, or a block
    /// device's size). A missing, shorter or longer store is reported, never fixed.
    public static func open(path: String, sizeBytes: UInt64) throws(BackingProblem) -> FileBlockStore {
        let descriptor = Foundation.open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { throw .missing(path: path) }
            throw .unusable(path: path, errno: errno)
        }
        let end = lseek(descriptor, 0, SEEK_END)
        guard end >= 0 else {
            let code = errno
            close(descriptor)
            throw .unusable(path: path, errno: code)
        }
        guard UInt64(end) == sizeBytes else {
            close(descriptor)
            throw .sizeMismatch(path: path, recordedBytes: sizeBytes, actualBytes: UInt64(end))
        }
        return FileBlockStore(path: path, descriptor: descriptor, sizeBytes: sizeBytes)
    }

    private init(path: String, descriptor: Int32, sizeBytes: UInt64) {
        self.path = path
        self.descriptor = descriptor
        self.sizeBytes = sizeBytes
        var status = stat()
        self.isBlockDevice = fstat(descriptor, &status) == 0 && (status.st_mode & S_IFMT) == S_IFBLK
    }

    deinit { close(descriptor) }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockStoreError) {
        try checkRange(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let count = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pread \(path)", errno: errno)
            }
            if count == 0 { throw .io(operation: "pread \(path) (unexpected end of file)", errno: EIO) }
            done += count
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockStoreError) {
        try checkRange(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let count = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwrite \(path)", errno: errno)
            }
            done += count
        }
    }

    /// SEEK_DATA/SEEK_HOLE over the range; a block device (no holes to report) is all data, and
    /// so is a file system without SEEK_HOLE (EINVAL).
    public func allocation(at offset: UInt64, length: UInt64) throws(BlockStoreError) -> [BlockExtent] {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= sizeBytes else { throw .outOfRange(offset: offset, length: Int(clamping: length), sizeBytes: sizeBytes) }
        guard length > 0 else { return [] }
        guard !isBlockDevice else { return [BlockExtent(lengthBytes: length, isHole: false)] }
        var extents: [BlockExtent] = []
        var position = offset
        while position < end {
            // The next data at or after `position`; ENXIO: none before the end of the file.
            var data = lseek(descriptor, off_t(position), Self.seekData)
            if data < 0 {
                guard errno == ENXIO || errno == EINVAL else { throw .io(operation: "lseek SEEK_DATA \(path)", errno: errno) }
                if errno == EINVAL { return [BlockExtent(lengthBytes: length, isHole: false)] }
                data = off_t(end)
            }
            let dataStart = min(UInt64(data), end)
            if dataStart > position {
                extents.append(BlockExtent(lengthBytes: dataStart - position, isHole: true))
                position = dataStart
            }
            guard position < end else { break }
            let hole = lseek(descriptor, off_t(position), Self.seekHole)
            guard hole >= 0 else { throw .io(operation: "lseek SEEK_HOLE \(path)", errno: errno) }
            let dataEnd = min(UInt64(hole), end)
            precondition(dataEnd > position, "SEEK_HOLE went back")
            extents.append(BlockExtent(lengthBytes: dataEnd - position, isHole: false))
            position = dataEnd
        }
        return extents
    }

    /// FALLOC_FL_PUNCH_HOLE on a file (the size is kept); false on a block device and where the
    /// file system cannot punch (EOPNOTSUPP).
    public func punchHole(at offset: UInt64, length: Int) throws(BlockStoreError) -> Bool {
        try checkRange(offset, length)
        guard !isBlockDevice, length > 0 else { return length == 0 }
        #if os(Linux)
        guard let fallocate = Self.fallocate else { return false }
        let mode = Self.fallocatePunchHole | Self.fallocateKeepSize
        while fallocate(descriptor, mode, off_t(offset), off_t(length)) != 0 {
            if errno == EINTR { continue }
            if errno == EOPNOTSUPP { return false }
            throw .io(operation: "fallocate punch \(path)", errno: errno)
        }
        return true
        #else
        return false
        #endif
    }

    // Linux's values, which Glibc's module map does not export (they need _GNU_SOURCE).
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4
    private static let fallocateKeepSize: Int32 = 0x01
    private static let fallocatePunchHole: Int32 = 0x02
    private typealias Fallocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    /// glibc's `fallocate`, looked up once (also hidden behind _GNU_SOURCE).
    private static let fallocate: Fallocate? = dlsym(nil, "fallocate").map { unsafeBitCast($0, to: Fallocate.self) }

    public func prefetch(at offset: UInt64, length: Int) {
        _ = posix_fadvise(descriptor, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    public func sync() throws(BlockStoreError) {
        guard fdatasync(descriptor) == 0 else { throw .io(operation: "fdatasync \(path)", errno: errno) }
    }
}
