import Foundation

/// Runs `body` on a thread of its own and awaits its result. For tests that block for long
/// (simulation sweeps, writer threads, sleeps): run on Swift's cooperative pool, which has as
/// many threads as cores, they starve the async tests and servers running beside them.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result(catching: body)) }
    }
}
