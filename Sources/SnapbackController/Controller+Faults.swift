import SnapbackCore
import SnapbackData

/// A backing-store failure met on the data path, waiting to be recorded durably: a fault, or a
/// volume out of space (`StorageFailureClass`).
struct PendingFault: Sendable, Equatable {
    var volumeID: VolumeID
    var reason: String
    var failureClass: StorageFailureClass
}

/// Failures met on the data path: recorded durably before the host hears of the error, retried
/// with backoff when the log cannot record them (`Specs/data-plane.md`, "Failed durable commits").
extension Controller {
    /// Records a backing-store failure on `volume` and returns the error to give the host.
    ///
    /// - Damage (EIO and the like) is a fault, which may start an automatic rollback. Until it is
    ///   durable the volume serves no host I/O.
    /// - Capacity (ENOSPC, EDQUOT) is not: an `online` volume becomes `out_of_space`, the host
    ///   gets ENOSPC, and nothing is rolled back.
    ///
    /// The record waits in `pendingFaults` until it is durable: an exclusive holder records it at
    /// once; under the lock alone (a host read) the caller takes the gate exclusively next, since
    /// a fault may start a rollback, which no plain write may overlap.
    func failureLocked(_ volume: Volume, _ error: BlockStoreError) -> HostIOError {
        let failureClass = error.failureClass
        let owed: Bool = switch failureClass {
        case .damage: committed.volumes[volume.id]?.status != .faulted
        case .capacity: committed.volumes[volume.id]?.status == .online
        }
        if owed, !pendingFaults.contains(where: { $0.volumeID == volume.id && $0.failureClass == failureClass }) {
            pendingFaults.append(PendingFault(volumeID: volume.id, reason: String("\(error)".prefix(Limits.reasonBytesMax / 4)), failureClass: failureClass))
        }
        if exclusivelyHeld { recordPendingFaultsLocked() }
        switch failureClass {
        case .damage: return .io(volume: volume.name, detail: "\(error)")
        case .capacity: return .outOfSpace(volume: volume.name, detail: "\(error)")
        }
    }

    /// Commits the records in `pendingFaults` still owed (a fault of a volume not faulted since;
    /// out of space for a volume still `online`). One the log cannot record stays pending and is
    /// tried again after a backoff (10 ms doubling to 1 s); one the state machine refuses (its
    /// volume was removed) is dropped. Must hold the gate exclusively.
    func recordPendingFaultsLocked() {
        guard !pendingFaults.isEmpty, faultBackoff.due(at: clock()) else { return }
        // Only the held family's: a fault may start a rollback, which no plain I/O may overlap.
        let held = gates.heldVolumes() ?? []
        var remaining: [PendingFault] = []
        for fault in pendingFaults {
            guard held.contains(fault.volumeID), remaining.allSatisfy({ !held.contains($0.volumeID) }) else {
                remaining.append(fault)
                continue
            }
            guard let status = committed.volumes[fault.volumeID]?.status else { continue }
            let command: Command
            switch fault.failureClass {
            case .damage:
                guard status != .faulted else { continue }
                command = .reportFault(volume: String(fault.volumeID), cause: .ioError, reason: fault.reason)
            case .capacity:
                guard status == .online else { continue }
                command = .reportOutOfSpace(volume: fault.volumeID, reason: fault.reason)
            }
            do throws(ControllerError) {
                _ = try commitLocked(command)
                faultBackoff.succeeded()
            } catch {
                if case .rejected = error { continue }
                faultBackoff.failed(at: clock())
                remaining.append(fault)
            }
        }
        pendingFaults = remaining
    }

    /// True while a fault waits to be recorded (background work to retry).
    var hasPendingFaultsLocked: Bool { !pendingFaults.isEmpty }

    /// True while a fault of `volumeID` (damage, not capacity) waits to be recorded: the volume
    /// serves no host I/O until it is durable.
    func hasPendingDamageLocked(_ volumeID: VolumeID) -> Bool {
        pendingFaults.contains { $0.volumeID == volumeID && $0.failureClass == .damage }
    }

    /// After a write to `volumeID` succeeded: an `out_of_space` volume is `online` again. When
    /// the log cannot record it, the volume stays `out_of_space` (the write itself stands) and
    /// the next successful write records it.
    func noteWriteSucceededLocked(_ volumeID: VolumeID) {
        guard committed.volumes[volumeID]?.status == .outOfSpace else { return }
        do throws(ControllerError) {
            _ = try commitLocked(.recordSpaceRestored(volume: volumeID))
        } catch {
            // Logged through the controller's health (degraded) when the log failed; a refusal
            // means the status changed meanwhile. Either way the write was made.
            return
        }
    }
}
