import SnapbackData
import SnapbackLog

/// Why the cluster store refused or failed an operation. Each case has a stable code
/// (`Specs/errors.md`): commands answer it instead of `storage_error`.
public enum ClusterStoreError: Error, Sendable, CustomStringConvertible, StorageFailure {
    /// This node does not hold the leadership: its lease lapsed or was never granted, another
    /// node leads, or another writer moved the head. Nothing was recorded (etcd refused the
    /// transaction), and the store appends nothing more.
    case notLeader(String)
    /// etcd could not be reached or has no quorum. For a commit the outcome is unknown (etcd may
    /// apply it later): the store appends nothing more, and the node steps down so that the next
    /// leader replays what etcd holds.
    case unavailable(String)
    /// etcd is unavailable and this node knows it, so it sent nothing: etcd has no quorum (the
    /// node holds its lease on that, `Specs/cluster.md` 3.3), or an earlier commit's outcome is
    /// still unknown. Nothing of this commit was recorded.
    case notSent(String)
    /// A commit of more operations than etcd accepts in one transaction (`--max-txn-ops`).
    case commitTooLarge(operations: Int, operationsMax: Int)
    /// The stored log is damaged (a record, the head or a checkpoint).
    case damaged(VerifyProblem)
    /// etcd refused the request for another reason; nothing was recorded.
    case refused(EtcdError)

    /// The stable code.
    public var code: String {
        switch self {
        case .notLeader: "not_leader"
        case .unavailable, .notSent: "cluster_unavailable"
        case .commitTooLarge, .refused, .damaged: "storage_error"
        }
    }

    public var description: String {
        switch self {
        case let .notLeader(detail): "not_leader: \(detail)"
        case let .unavailable(detail): "cluster_unavailable: \(detail)"
        case let .notSent(detail): "cluster_unavailable: \(detail)"
        case let .commitTooLarge(operations, operationsMax):
            "storage_error: a commit of \(operations) etcd operations is over the bound of \(operationsMax) (etcd's --max-txn-ops)"
        case let .damaged(problem): "storage_error: the cluster log is damaged: \(problem)"
        case let .refused(error): "storage_error: \(error)"
        }
    }

    public var unavailableCode: String? {
        switch self {
        case .notLeader, .unavailable, .notSent: code
        default: nil
        }
    }

    public var outcomeUnknown: Bool {
        if case .unavailable = self { return true }
        return false
    }

    /// etcd's space quota alarm ("mvcc: database space exceeded").
    public var isOutOfSpace: Bool {
        if case let .refused(.server(_, message)) = self { return message.contains("database space exceeded") }
        return false
    }
}
