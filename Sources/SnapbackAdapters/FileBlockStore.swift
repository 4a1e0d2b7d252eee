import Foundation
import SnapbackData

/// A block store on a file (sparse, in the data directory, or a given path) or a block device,
/// read and written with `pread`/`pwrite` and made durable with `fdatasync`.
public final class FileBlockStore: BlockStore, @unchecked Sendable {
    public let path: String
    public let sizeBytes: UInt64
    private let descriptor: Int32

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

    public func prefetch(at offset: UInt64, length: Int) {
        _ = posix_fadvise(descriptor, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    public func sync() throws(BlockStoreError) {
        guard fdatasync(descriptor) == 0 else { throw .io(operation: "fdatasync \(path)", errno: errno) }
    }
}
