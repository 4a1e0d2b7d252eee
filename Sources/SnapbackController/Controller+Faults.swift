import SnapbackCore
import SnapbackData

/// Faults met on the data path: recorded durably before the host hears of the error, retried
/// with backoff when the log cannot record them (`Specs/data-plane.md`, "Failed durable commits").
extension Controller {
    /// Records an I/O error on `volume` as a fault (which may start an automatic rollback) and
    /// returns the error to give the host. The fault waits in `pendingFaults` until it is durable:
    /// an exclusive holder records it at once; under the lock alone (a host read) the caller
    /// takes the gate exclusively next, since a fault may start a rollback, which no plain write
    /// may overlap. Until the fault is durable the volume serves no host I/O.
    func faultLocked(_ volume: Volume, _ error: BlockStoreError) -> HostIOError {
        if committed.volumes[volume.id]?.status != .faulted, !pendingFaults.contains(where: { $0.volumeID == volume.id }) {
            pendingFaults.append((volume.id, String("\(error)".prefix(Limits.reasonBytesMax / 4))))
        }
        if exclusivelyHeld { recordPendingFaultsLocked() }
        return .io(volume: volume.name, detail: "\(error)")
    }

    /// Commits the faults in `pendingFaults` of volumes not faulted since. A fault the log cannot
    /// record stays pending and is tried again after a backoff (10 ms doubling to 1 s); one the
    /// state machine refuses (its volume was removed) is dropped. Must hold the gate exclusively.
    func recordPendingFaultsLocked() {
        guard !pendingFaults.isEmpty, faultBackoff.due(at: clock()) else { return }
        // Only the held family's: a fault may start a rollback, which no plain I/O may overlap.
        let held = gates.heldVolumes() ?? []
        var remaining: [(volumeID: VolumeID, reason: String)] = []
        for fault in pendingFaults {
            guard held.contains(fault.volumeID), remaining.allSatisfy({ !held.contains($0.volumeID) }) else {
                remaining.append(fault)
                continue
            }
            guard committed.volumes[fault.volumeID].map({ $0.status != .faulted }) == true else { continue }
            do throws(ControllerError) {
                _ = try commitLocked(.reportFault(volume: String(fault.volumeID), cause: .ioError, reason: fault.reason))
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
}
