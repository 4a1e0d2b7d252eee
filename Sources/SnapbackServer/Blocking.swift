import Dispatch

/// Runs blocking work (fsync, LMDB commits, disk I/O) on a dispatch queue, off the concurrency
/// pool and the event loops, and awaits its result.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}
