#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// One volume's readers-writer gate (a pthread rwlock that prefers writers, so that a command
/// waiting for the gate is not starved by a stream of host writes). ``FamilyGates`` holds one per
/// volume and states the rule: plain host I/O on the volume holds it shared; whatever can change
/// what such I/O must do holds the gates of the volume's whole family exclusively.
final class HostIOGate: @unchecked Sendable {
    private let rwlock: UnsafeMutablePointer<pthread_rwlock_t>
    /// Set whenever a taker had to wait; read and cleared by ``takeContended()``. Background work
    /// sizes its steps by it (large while nobody waits, small when someone does).
    private let contended = Atomic<Bool>(false)
    /// Takers other than background work, counted: host I/O and commands. Background rollbacks
    /// yield their share of the machine while this moves on volumes outside their family.
    private let takers = Atomic<UInt64>(0)

    /// How many times the gate was taken other than by background work (wraps).
    var takerCount: UInt64 { takers.load(ordering: .relaxed) }

    /// True when some taker had to wait since the last call.
    func takeContended() -> Bool {
        contended.exchange(false, ordering: .relaxed)
    }

    /// True when some taker had to wait since the last ``takeContended()`` (the flag stays).
    var isContended: Bool { contended.load(ordering: .relaxed) }

    init() {
        rwlock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        precondition(pthread_rwlockattr_init(&attributes) == 0, "pthread_rwlockattr_init failed")
        #if canImport(Glibc)
        precondition(
            pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP)) == 0,
            "pthread_rwlockattr_setkind_np failed"
        )
        #endif
        precondition(pthread_rwlock_init(rwlock, &attributes) == 0, "pthread_rwlock_init failed")
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(rwlock)
        rwlock.deallocate()
    }

    func lockShared() {
        takers.wrappingAdd(1, ordering: .relaxed)
        if pthread_rwlock_tryrdlock(rwlock) == 0 { return }
        contended.store(true, ordering: .relaxed)
        precondition(pthread_rwlock_rdlock(rwlock) == 0, "pthread_rwlock_rdlock failed")
    }

    /// Takes the gate shared if that needs no waiting; false otherwise (held or wanted exclusively).
    func tryLockShared() -> Bool {
        guard pthread_rwlock_tryrdlock(rwlock) == 0 else { return false }
        takers.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    /// Takes the gate exclusively. `background` takers (steps of copies and rollbacks) do not
    /// count as waiting: they are the work that others wait for.
    func lockExclusive(background: Bool = false) {
        if !background { takers.wrappingAdd(1, ordering: .relaxed) }
        if pthread_rwlock_trywrlock(rwlock) == 0 { return }
        if !background { contended.store(true, ordering: .relaxed) }
        precondition(pthread_rwlock_wrlock(rwlock) == 0, "pthread_rwlock_wrlock failed")
    }

    func unlock() {
        precondition(pthread_rwlock_unlock(rwlock) == 0, "pthread_rwlock_unlock failed")
    }
}
