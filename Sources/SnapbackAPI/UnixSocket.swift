#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The control socket's client side: connecting a stream socket to a Unix socket path (the CLI
/// sends its requests over it; snapbackd tells a live daemon's socket from a stale one with it).
public enum UnixSocket {
    /// How a connection attempt ended.
    public enum Outcome: Equatable, Sendable {
        case connected
        /// The path does not fit in `sockaddr_un` (about 107 bytes).
        case pathTooLong
        /// `connect` failed with this errno (ENOENT, ECONNREFUSED: nothing listens there).
        case failed(errno: Int32)
    }

    /// Connects `descriptor`, an `AF_UNIX` stream socket, to `path`.
    public static func connect(_ descriptor: Int32, to path: String) -> Outcome {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return .pathTooLong }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                #if canImport(Glibc)
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                #else
                Darwin.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                #endif
            }
        }
        return result == 0 ? .connected : .failed(errno: errno)
    }
}
