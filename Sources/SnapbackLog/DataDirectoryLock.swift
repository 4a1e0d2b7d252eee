import Foundation

/// An exclusive `flock` on `DIR/snapbackd.lock`, held by the one process that writes a data
/// directory's log: snapbackd, or `snapback log archive` while no snapbackd runs. The kernel
/// drops the lock when the process dies, so a crash leaves nothing stale.
public final class DataDirectoryLock {
    private let descriptor: Int32

    /// The lock file of data directory `directory`.
    public static func path(_ directory: String) -> String { directory + "/snapbackd.lock" }

    /// Takes the lock and writes this process's pid into the lock file; `nil` when another
    /// process holds it.
    /// - Throws: ``DataDirectoryLockError`` when the lock file cannot be opened.
    public init?(directory: String) throws(DataDirectoryLockError) {
        let path = Self.path(directory)
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw DataDirectoryLockError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            return nil
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = pid.withCString { write(descriptor, $0, strlen($0)) }
    }

    deinit { close(descriptor) }
}

/// The lock file of a data directory could not be opened.
public struct DataDirectoryLockError: Error, CustomStringConvertible {
    public var description: String
}
