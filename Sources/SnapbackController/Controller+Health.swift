import SnapbackCore
import SnapbackData

/// The controller's own state: `online`, or `degraded` while durable commits fail
/// (`Specs/data-plane.md`, "Failed durable commits"). Read without the controller's lock.
public struct ControllerHealth: Sendable, Equatable {
    public enum Status: String, Sendable {
        case online
        case degraded
    }

    public var status: Status = .online
    /// Why the controller is degraded: the stable code (`storage_full` or `storage_error`) and the
    /// store's own words, errno text included.
    public var reason: String?
    /// When the first of the failures in a row happened (controller clock, milliseconds).
    public var sinceMilliseconds: Int64?
    /// Failed durable commits since the controller started.
    public var failedCommits: UInt64 = 0

    public init() {}
}

/// A failed durable commit that the caller could not answer now, waiting to be retried: the
/// work a background step or a fault must do again (`backgroundBackoff`, `faultBackoff`).
public struct CommitBackoff: Sendable, Equatable {
    /// The shortest and the longest pause between two attempts.
    public static let firstDelayMilliseconds: Int64 = 10
    public static let delayMaxMilliseconds: Int64 = 1000

    /// The pause before the next attempt: doubles from ``firstDelayMilliseconds`` after each
    /// failure in a row, up to ``delayMaxMilliseconds``.
    public private(set) var delayMilliseconds: Int64 = 0
    /// Not before this time (controller clock) may the work be attempted again.
    public private(set) var notBeforeMilliseconds: Int64 = 0

    public init() {}

    public mutating func failed(at now: Int64) {
        delayMilliseconds = min(Self.delayMaxMilliseconds, max(Self.firstDelayMilliseconds, delayMilliseconds * 2))
        notBeforeMilliseconds = now + delayMilliseconds
    }

    public mutating func succeeded() { self = CommitBackoff() }

    public func due(at now: Int64) -> Bool { now >= notBeforeMilliseconds }
}

extension Controller {
    /// The controller's state (`online`/`degraded`), without waiting for the lock.
    public var health: ControllerHealth { publishedLock.withLock { publishedHealth } }

    /// Records a failed durable commit: the controller is degraded until a commit succeeds.
    /// Returns the error commands answer with (`storage_full` or `storage_error`).
    func noteCommitFailure(_ error: any Error) -> ControllerError {
        let full = (error as? StorageFailure)?.isOutOfSpace ?? false
        let failure: ControllerError =
            if let code = (error as? StorageFailure)?.unavailableCode {
                .unavailable(code: code, detail: "\(error)")
            } else {
                full ? .storageFull("\(error)") : .storage("\(error)")
            }
        let now = clock()
        publishedLock.withLock {
            if publishedHealth.status == .online { publishedHealth.sinceMilliseconds = now }
            publishedHealth.status = .degraded
            publishedHealth.reason = failure.description
            publishedHealth.failedCommits += 1
        }
        return failure
    }

    /// A durable commit succeeded: the store works again.
    func noteCommitSuccess() {
        publishedLock.withLock {
            guard publishedHealth.status != .online else { return }
            publishedHealth.status = .online
            publishedHealth.reason = nil
            publishedHealth.sinceMilliseconds = nil
        }
    }
}
