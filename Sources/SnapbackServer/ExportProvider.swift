import SnapbackController
import SnapbackCore
import SnapbackNBD

/// Volumes as NBD exports: each under its name. A map's target is exported read-only, as its
/// point-in-time image; a faulted volume answers EIO.
final class ControllerExportProvider: NBDExportProvider {
    let controller: Controller
    let metrics: DaemonMetrics

    init(controller: Controller, metrics: DaemonMetrics) {
        self.controller = controller
        self.metrics = metrics
    }

    func exportNames() -> [(name: String, description: String)] {
        let state = controller.state
        return state.volumesByID.map { volume in
            let role = state.maps.values.contains { $0.role == .forward && $0.targetID == volume.id }
                ? "point-in-time image (read-only)" : "volume"
            return (volume.name, "\(role), \(volume.sizeBytes) bytes, \(volume.status)")
        }
    }

    func export(named name: String) -> (any NBDExport)? {
        guard let export = controller.export(name) else { return nil }
        let state = controller.state
        let isTarget = state.maps.values.contains { $0.role == .forward && $0.targetID == export.volumeID }
        let volumeName = state.volumes[export.volumeID]?.name ?? name
        var dirtyContexts: [String: MapID] = [:]
        for map in controller.mapsOfSource(export.volumeID) { dirtyContexts[VolumeExport.dirtyContextPrefix + map.name] = map.id }
        return VolumeExport(
            controller: controller, volumeID: export.volumeID, sizeBytes: export.sizeBytes, readOnly: export.readOnly || isTarget,
            hostEpoch: export.hostEpoch, meter: metrics.hostIOMeter(volume: export.volumeID, name: volumeName),
            dirtyContexts: dirtyContexts)
    }
}

/// One volume seen through NBD. Every request is timed and counted in the volume's
/// ``VolumeIOMeter`` (two clock reads and a few atomic increments: no lookup, no allocation).
struct VolumeExport: NBDExport {
    let controller: Controller
    let volumeID: VolumeID
    let sizeBytes: UInt64
    let readOnly: Bool
    /// The volume's host epoch when this connection opened it: its writes carry it, so that a
    /// write read before a rollback started is never made after (the rollback closes the
    /// connection, but a request already read may still be waiting for the volume).
    let hostEpoch: UInt64
    /// The volume's host I/O metrics.
    let meter: VolumeIOMeter
    /// The `snapback:dirty:MAP` contexts of the maps of which the volume is the source (as named
    /// when the connection opened), and their maps.
    let dirtyContexts: [String: MapID]

    /// The namespace and leaf prefix of the changed-block contexts.
    static let dirtyContextPrefix = "snapback:dirty:"

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError) {
        let started = ContinuousClock.now
        do throws(HostIOError) {
            try controller.read(volume: volumeID, offset: offset, into: buffer)
        } catch {
            meter.failed(.read, since: started)
            throw Self.nbdError(error)
        }
        meter.completed(.read, bytes: buffer.count, since: started)
    }

    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError) {
        let started = ContinuousClock.now
        guard !readOnly else {
            meter.failed(.write, since: started)
            throw .permission
        }
        do throws(HostIOError) {
            try controller.write(volume: volumeID, offset: offset, from: buffer, fua: fua, hostEpoch: hostEpoch)
        } catch {
            meter.failed(.write, since: started)
            throw Self.nbdError(error)
        }
        meter.completed(.write, bytes: buffer.count, since: started)
    }

    /// Counted only when it wrote: otherwise ``write(offset:from:fua:)`` makes the write and counts it.
    func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard !readOnly else { return false }
        let started = ContinuousClock.now
        guard controller.writeImmediately(volume: volumeID, offset: offset, from: buffer, hostEpoch: hostEpoch) else { return false }
        meter.completed(.write, bytes: buffer.count, since: started)
        return true
    }

    func flush() throws(NBDIOError) {
        let started = ContinuousClock.now
        do throws(HostIOError) { try controller.flush(volume: volumeID) } catch {
            meter.failed(.flush, since: started)
            throw Self.nbdError(error)
        }
        meter.completed(.flush, bytes: 0, since: started)
    }

    /// Trimmed ranges read back as zeroes: a trim is a write-zeroes that may punch a hole (see
    /// ``zero(offset:length:fua:mayPunch:fast:)``).
    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        try zero(offset: offset, length: length, fua: fua, mayPunch: true, fast: false)
    }

    /// A hole is punched when allowed (`mayPunch`) and the write is plain (the volume holds its
    /// own bytes and no map owes the grains a copy: `Controller.punchZeroes`); otherwise zeroes
    /// are written, through copy-on-write like any write, or, for a fast zero, ENOTSUP.
    func zero(offset: UInt64, length: UInt32, fua: Bool, mayPunch: Bool, fast: Bool) throws(NBDIOError) {
        let started = ContinuousClock.now
        guard !readOnly else {
            meter.failed(.write, since: started)
            throw .permission
        }
        if mayPunch {
            let punched: Bool
            do throws(HostIOError) {
                punched = try controller.punchZeroes(volume: volumeID, offset: offset, length: Int(length), fua: fua, hostEpoch: hostEpoch)
            } catch {
                meter.failed(.write, since: started)
                throw Self.nbdError(error)
            }
            if punched {
                meter.completed(.write, bytes: Int(length), since: started)
                return
            }
        }
        if fast { throw .notSupported }
        try writeZeroes(offset: offset, length: length, fua: fua)
    }

    var metaContextNames: [String] { dirtyContexts.keys.sorted() }

    /// `base:allocation`: holes (NBD_STATE_HOLE | NBD_STATE_ZERO) and data of what hosts read
    /// (`Controller.allocation`); `snapback:dirty:MAP`: bit 0 on the grains the source changed
    /// since MAP's point in time (`Controller.changedExtents`), the `qemu:dirty-bitmap` convention.
    func blockStatus(context: String, offset: UInt64, lengthBytes: UInt32) throws(NBDIOError) -> [NBDExtent] {
        let dirtyMap = dirtyContexts[context]
        guard context == NBDMetaContextName.baseAllocation || dirtyMap != nil else { throw .invalid }
        do throws(HostIOError) {
            if context == NBDMetaContextName.baseAllocation {
                return try controller.allocation(volume: volumeID, offset: offset, length: UInt64(lengthBytes)).map {
                    NBDExtent(lengthBytes: UInt32($0.lengthBytes), flags: $0.isHole ? NBDAllocationState.hole | NBDAllocationState.zero : 0)
                }
            }
            return try controller.changedExtents(map: dirtyMap!, offset: offset, length: UInt64(lengthBytes)).map {
                NBDExtent(lengthBytes: UInt32($0.lengthBytes), flags: $0.changed ? 1 : 0)
            }
        } catch {
            throw Self.nbdError(error)
        }
    }

    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError) {
        let zeroes = [UInt8](repeating: 0, count: Int(length))
        var failure: NBDIOError?
        zeroes.withUnsafeBytes { bytes in
            do throws(NBDIOError) { try write(offset: offset, from: bytes, fua: fua) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    static func nbdError(_ error: HostIOError) -> NBDIOError {
        switch error {
        case .unknownVolume, .faulted, .io, .superseded: .io
        case .noSpace, .outOfSpace: .noSpace
        case .outOfRange: .invalid
        case .readOnly: .permission
        }
    }
}
