#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SnapbackCore

/// The controller's locking rule, in one type (`Specs/data-plane.md`, "Concurrency").
///
/// - Every volume has a gate (``HostIOGate``). Plain host I/O holds its volume's gate shared.
///   Whatever can change what plain I/O must do (commands, background steps, faults,
///   coordinated writes, image reads) holds exclusively the gates of every volume of the
///   *family* it touches: the volumes connected to it through forward maps. Work on one family
///   never holds a gate that another family's I/O needs.
/// - A thread takes gates in ascending volume id, all before the state lock, and never while
///   it holds the state lock or another set of gates.
/// - The state lock guards the controller's state, bitmaps and stores. It is held briefly:
///   released during grain copies, syncs, host data writes and durable commits.
/// - Durable commits queue for a group commit (`Controller+GroupCommit.swift`): one leader at a
///   time decides, commits and applies a group, so the state is always `reduce(log)`. A thread
///   waiting in the queue keeps its family's gates and releases the state lock.
///
/// Which gates a thread holds is recorded, so that code needing a hold checks it with
/// `precondition` (``requireHeld(_:)``).
final class FamilyGates: @unchecked Sendable {
    private let registry = NSLock()
    private var gates: [VolumeID: HostIOGate] = [:]
    /// The gates each thread holds exclusively, by thread.
    private var holds: [pthread_t: [(VolumeID, HostIOGate)]] = [:]
    /// Threads holding the gates of every volume (start-up, checkpoints, tests).
    private var everything: Set<pthread_t> = []

    /// The gate of `volume` (made on first use; a gate is a few bytes and volume ids are bounded
    /// by the ones ever created).
    func gate(_ volume: VolumeID) -> HostIOGate {
        registry.withLock {
            if let gate = gates[volume] { return gate }
            let gate = HostIOGate()
            gates[volume] = gate
            return gate
        }
    }

    /// Takes the gates of `volumes` exclusively, in ascending id. `background` takers (steps of
    /// copies and rollbacks) do not mark the gates contended.
    func holdExclusively(_ volumes: Set<VolumeID>, all: Bool, background: Bool) {
        let thread = pthread_self()
        precondition(registry.withLock { holds[thread] == nil }, "a thread took a second set of gates")
        var taken: [(VolumeID, HostIOGate)] = []
        for volume in volumes.sorted() {
            let gate = gate(volume)
            gate.lockExclusive(background: background)
            taken.append((volume, gate))
        }
        registry.withLock {
            holds[thread] = taken
            if all { everything.insert(thread) }
        }
    }

    /// Releases the gates this thread holds.
    func release() {
        let thread = pthread_self()
        let taken = registry.withLock {
            everything.remove(thread)
            return holds.removeValue(forKey: thread)
        }
        precondition(taken != nil, "release without a hold")
        for (_, gate) in taken!.reversed() { gate.unlock() }
    }

    /// The volumes whose gates the calling thread holds exclusively, or `nil`.
    func heldVolumes() -> Set<VolumeID>? {
        registry.withLock { holds[pthread_self()].map { Set($0.map(\.0)) } }
    }

    /// True when the calling thread holds some set of gates (possibly empty: a command that
    /// names no existing volume).
    var holdsAny: Bool { registry.withLock { holds[pthread_self()] != nil } }

    /// Traps unless the calling thread holds `volume`'s gate exclusively (or every gate).
    func requireHeld(_ volume: VolumeID, _ what: @autoclosure () -> String) {
        let held = registry.withLock { () -> Bool in
            let thread = pthread_self()
            return everything.contains(thread) || holds[thread]?.contains { $0.0 == volume } == true
        }
        precondition(held, "\(what()) on volume \(volume) without holding its gate exclusively")
    }

    /// True when some taker is waiting, or waited, for the gate of any of `volumes` since the
    /// last ``takeContended(_:)`` (which clears it; this does not).
    func isContended(_ volumes: Set<VolumeID>) -> Bool {
        volumes.contains { gate($0).isContended }
    }

    /// How many times the gates of volumes outside `volumes` were taken other than by background
    /// work (host I/O and commands), summed (wraps): a change between two calls means someone
    /// else used the machine meanwhile.
    func takerCount(outside volumes: Set<VolumeID>) -> UInt64 {
        registry.withLock {
            gates.reduce(0) { sum, entry in volumes.contains(entry.key) ? sum : sum &+ entry.value.takerCount }
        }
    }

    /// True when some taker had to wait for the gate of any of `volumes` since the last call.
    func takeContended(_ volumes: Set<VolumeID>) -> Bool {
        var contended = false
        for volume in volumes where gate(volume).takeContended() { contended = true }
        return contended
    }
}
