import Foundation

/// A loop on a thread of its own, for the lease's timing. The concurrency pool and the dispatch
/// threads may all be waiting, on etcd calls that time out or on the controller's lock behind
/// them, exactly when etcd is in trouble; a lease must not run out, and a quorum hold must not
/// lapse, because a keep-alive or a look at etcd's members could not get a thread.
final class LoopThread: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false

    /// Starts `body` on a new thread named `name`, then again `interval` after each return,
    /// until it returns false or ``stop()`` is called.
    init(name: String, interval: Duration, _ body: @escaping @Sendable () -> Bool) {
        let thread = Thread { [self] in
            while !isStopped && body() {
                let (seconds, attoseconds) = interval.components
                var pause = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
                var left = timespec()
                while nanosleep(&pause, &left) != 0 && errno == EINTR { pause = left }
            }
        }
        thread.name = name
        thread.start()
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    /// The loop ends after its current turn.
    func stop() { lock.withLock { stopped = true } }
}
