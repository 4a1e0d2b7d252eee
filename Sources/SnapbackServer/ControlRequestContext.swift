import Foundation
import Hummingbird
import Logging
import NIOCore
import SnapbackCore

/// The request context of the control API: Hummingbird's core context and the connection's
/// channel, from which a command reads who sent it (`SO_PEERCRED` of the Unix socket).
struct ControlRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The connection the request came on.
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The uid, gid and pid of the process at the other end of the socket, as the kernel
    /// recorded them when it connected; `nil`, with a warning logged, when they cannot be read
    /// (the request is still served: its events then record no caller).
    func caller(logger: Logger) async -> Caller? {
        guard let provider = channel as? SocketOptionProvider else {
            logger.warning("the caller's credentials cannot be read: the channel gives no socket options")
            return nil
        }
        do {
            let credentials: PeerCredentials = try await provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED)
            ).get()
            guard credentials.pid > 0 else {
                logger.warning("the caller's credentials cannot be read: the socket has no peer process")
                return nil
            }
            return Caller(uid: credentials.uid, gid: credentials.gid, pid: UInt32(credentials.pid))
        } catch {
            logger.warning("the caller's credentials cannot be read: \(error)")
            return nil
        }
    }
}

/// Linux's `struct ucred` (`SO_PEERCRED`), which Glibc's Swift module does not import (it
/// needs `_GNU_SOURCE`): the same three 32-bit fields in the same order.
struct PeerCredentials: Sendable {
    var pid: Int32
    var uid: UInt32
    var gid: UInt32
}
