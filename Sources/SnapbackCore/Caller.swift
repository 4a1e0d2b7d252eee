/// Who asked for an event: the process at the other end of the control socket, as the kernel
/// reports it (`SO_PEERCRED`). Events the controller commits by itself have none.
public struct Caller: Sendable, Hashable {
    /// The caller's effective user id.
    public var uid: UInt32
    /// The caller's effective group id.
    public var gid: UInt32
    /// The caller's process id (in snapbackd's pid namespace).
    public var pid: UInt32

    public init(uid: UInt32, gid: UInt32, pid: UInt32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

extension Event {
    /// True for an event the controller decides by itself even inside an operator's command:
    /// an automatic rollback (started or scheduled) that a reported fault sets off. Such an
    /// event records no caller, whoever reported the fault.
    public var isDecidedByController: Bool {
        switch self {
        case let .rollbackStarted(_, trigger, _), let .groupRollbackStarted(_, trigger, _): trigger == .auto
        case .rollbackScheduled, .groupRollbackScheduled, .rollbackRestarted: true
        default: false
        }
    }
}
