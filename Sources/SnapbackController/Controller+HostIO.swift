import SnapbackCore
import SnapbackData

/// Host I/O (brief section 3), what reads and writes share: exports, checks, flushes. Reads are
/// in `Controller+Reads.swift`, writes in `Controller+Writes.swift` and `Controller+WriteBatch.swift`,
/// grain movements in `GrainPlanner.swift` and `Controller+Execute.swift`, faults in
/// `Controller+Faults.swift`.
extension Controller {
    /// How a host sees a volume: its size and whether it may write.
    public struct Export: Sendable, Equatable {
        public var volumeID: VolumeID
        public var sizeBytes: UInt64
        public var readOnly: Bool
        /// The volume's host epoch when the export was opened: writes carry it (see
        /// ``Controller/hostEpoch(of:)``).
        public var hostEpoch: UInt64
    }

    /// The export of volume `name` (by name or id), or `nil`. Never waits for the lock (the NBD
    /// handshake calls it on an event loop); every read and write checks again under the lock.
    public func export(_ name: String) -> Export? {
        let state = state
        guard let volume = state.volume(name) else { return nil }
        return Export(
            volumeID: volume.id, sizeBytes: volume.sizeBytes, readOnly: Self.isReadOnly(volume.id, in: state), hostEpoch: hostEpoch(of: volume.id))
    }

    /// A map's target is read-only to hosts while the map exists (`Specs/data-plane.md`, writes,
    /// step 1): its image is what a rollback restores, so no host may change it.
    func isReadOnlyLocked(_ volumeID: VolumeID) -> Bool {
        Self.isReadOnly(volumeID, in: committed)
    }

    static func isReadOnly(_ volumeID: VolumeID, in state: ControllerState) -> Bool {
        state.maps.values.contains { $0.role == .forward && $0.targetID == volumeID }
    }

    /// The forward map whose target is `volumeID`, if any.
    func mapTargetingLocked(_ volumeID: VolumeID) -> LCMap? {
        committed.maps.values.first { $0.role == .forward && $0.targetID == volumeID }
    }

    /// Checks that the volume exists, is online to hosts and that the range lies inside it.
    func hostVolumeLocked(_ volumeID: VolumeID, _ offset: UInt64, _ length: Int) throws(HostIOError) -> (Volume, BlockStore) {
        guard let volume = committed.volumes[volumeID] else { throw .unknownVolume(String(volumeID)) }
        guard volume.status != .faulted, let store = stores[volumeID] else { throw .faulted(volume: volume.name) }
        // An I/O error whose fault is not durable yet: the volume serves nothing until it is.
        if hasPendingDamageLocked(volumeID) {
            throw .io(volume: volume.name, detail: "an I/O error's fault is being recorded")
        }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        guard length >= 0, !overflow, end <= volume.sizeBytes else {
            throw .outOfRange(offset: offset, length: length, sizeBytes: volume.sizeBytes)
        }
        return (volume, store)
    }

    /// The grains of `map` that `offset..<offset+length` touches.
    func grains(of map: LCMap, _ offset: UInt64, _ length: Int) -> ClosedRange<UInt64>? {
        GrainPlanner.grains(of: map, offset, length)
    }

    /// True when what hosts see of the volume is its own bytes: it is no valid image's target
    /// (whose unsplit grains are read from the source) and no rollback restores it (whose
    /// grains not yet restored are read from the image).
    func holdsOwnBytesLocked(_ volumeID: VolumeID) -> Bool {
        mapTargetingLocked(volumeID)?.imageValid != true && committed.runningRollback(onto: volumeID) == nil
    }

    /// Makes every completed host write on the volume durable. Runs alongside plain writes.
    public func flush(volume volumeID: VolumeID) throws(HostIOError) {
        _ = try plainAccess(volume: volumeID) { () throws(HostIOError) -> (Volume, BlockStore)? in
            try hostVolumeLocked(volumeID, 0, 0)
        } io: { (store) throws(BlockStoreError) in
            try store.sync()
        }
    }
}
