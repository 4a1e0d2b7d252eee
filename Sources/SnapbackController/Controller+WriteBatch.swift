import Foundation
import SnapbackCore
import SnapbackData

/// Group commit of coordinated host writes (`Specs/data-plane.md`, "Batches"). Writes that need
/// copy-on-write or marks wait in a queue; one thread at a time takes the whole queue and makes it
/// as one batch under the gate: every grain copy first, one sync per target, one commit of all the
/// marks, then the source writes and one sync per volume for the FUA writes. The order of the
/// durability rules is the same as for one write; what concurrent writers share is the syncs.
extension Controller {
    /// A host write as the batch sees it. `bytes` stays valid while the write is in progress.
    public struct HostWrite: @unchecked Sendable {
        public var volumeID: VolumeID
        public var offset: UInt64
        public var bytes: UnsafeRawBufferPointer
        public var fua: Bool
        /// The host epoch of the connection that sent it (``Controller/hostEpoch(of:)``); `nil`:
        /// not checked.
        public var hostEpoch: UInt64?
        /// The volume's anomaly detector, which counts the write once it is acknowledged, and the
        /// blocks of `bytes` it samples (reserved by ``Controller/reserveSamples(_:length:)``).
        var detector: VolumeDetector?
        var samples = SampledBlocks.none

        public init(volumeID: VolumeID, offset: UInt64, bytes: UnsafeRawBufferPointer, fua: Bool, hostEpoch: UInt64? = nil) {
            self.volumeID = volumeID
            self.offset = offset
            self.bytes = bytes
            self.fua = fua
            self.hostEpoch = hostEpoch
        }
    }

    /// The most writes in one batch (the queue itself holds at most one write per blocked
    /// writer thread). A bigger batch holds the gate longer for a smaller share of syncs.
    public static let batchWritesMax = 64

    /// A write in the queue, and its outcome once a batch has made it.
    final class WaitingWrite: @unchecked Sendable {
        let write: HostWrite
        var outcome: Result<Void, HostIOError>?
        init(_ write: HostWrite) { self.write = write }
    }

    /// How many batches `writeCoordinated` made, of how many writes in all (for tests).
    @_spi(Testing) public var coordinatedBatches: (batches: Int, writes: Int) {
        batchCondition.withLock { batchStatistics }
    }

    /// Makes `writes` as one batch, as if one after another in this order, and returns each
    /// one's outcome. (snapbackd's writers meet in `writeCoordinated`; the simulator calls this
    /// to make batches of its own.)
    public func write(_ writes: [HostWrite]) -> [Result<Void, HostIOError>] {
        exclusive(volumes: { Set(writes.map(\.volumeID)) }) { writeBatchLocked(writes) }
    }

    /// Queues `write` in its family's lane (named by the family's lowest volume id); the first
    /// writer to find no batch in progress in that lane makes one of what is queued there
    /// (oldest first, at most ``batchWritesMax``), while the others wait for their outcome. A
    /// writer left in the queue makes the next batch. Families batch side by side: a batch
    /// never waits for another family's. (A family that grows between the queueing and the
    /// batch is still held whole: `exclusive` takes the family of the batch's volumes as it is.)
    func writeCoordinated(_ write: HostWrite) throws(HostIOError) {
        let lane = locked { familyLocked([write.volumeID]).min() ?? write.volumeID }
        let waiting = WaitingWrite(write)
        batchCondition.lock()
        waitingWrites[lane, default: []].append(waiting)
        while waiting.outcome == nil {
            if batchesInProgress.contains(lane) {
                batchCondition.wait()
                continue
            }
            batchesInProgress.insert(lane)
            let queued = waitingWrites.removeValue(forKey: lane) ?? []
            let batch = Array(queued.prefix(Self.batchWritesMax))
            if queued.count > batch.count { waitingWrites[lane] = Array(queued.dropFirst(batch.count)) }
            batchCondition.unlock()
            let outcomes = exclusive(volumes: { Set(batch.map(\.write.volumeID)) }) { writeBatchLocked(batch.map(\.write)) }
            batchCondition.lock()
            batchStatistics.batches += 1
            batchStatistics.writes += batch.count
            for (entry, outcome) in zip(batch, outcomes) { entry.outcome = outcome }
            batchesInProgress.remove(lane)
            batchCondition.broadcast()
        }
        batchCondition.unlock()
        try waiting.outcome!.get()
    }

    /// Makes `writes` in one batch. A batch of one, a batch with any write that is refused, or
    /// restores, or writes a target or an `out_of_space` volume, and any batch whose copies or marks fail, is made one
    /// write at a time instead (repeating a grain copy is harmless: no source was written yet).
    /// Must hold the gate exclusively.
    func writeBatchLocked(_ writes: [HostWrite]) -> [Result<Void, HostIOError>] {
        let oneByOne = { () -> [Result<Void, HostIOError>] in
            writes.map { write in
                do throws(HostIOError) {
                    try self.writeOneLocked(write)
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
        }
        guard writes.count > 1, !Self.brokenOrderingForTesting else { return oneByOne() }
        var sources: [(volume: Volume, store: BlockStore)] = []
        for write in writes {
            guard let (volume, store) = try? hostVolumeLocked(write.volumeID, write.offset, write.bytes.count),
                  (try? checkHostEpochLocked(volume, write.hostEpoch)) != nil,
                  !isReadOnlyLocked(volume.id), holdsOwnBytesLocked(volume.id), volume.status != .outOfSpace
            else { return oneByOne() }
            sources.append((volume, store))
        }

        // 1-3. One plan for the whole batch (each grain copied once, from the source as it was
        // before the batch): every copy, one sync per target, one commit of all the marks.
        let stage = { () -> GrainStage in
            var view = PlannedBitmaps(bitmaps)
            var stage = GrainStage()
            for write in writes {
                stage.copies += GrainPlanner.copyOnWrite(committed, &view, source: write.volumeID, offset: write.offset, length: write.bytes.count)
            }
            stage.marks = view.endStage()
            return stage
        }()
        do throws(StageFailure) {
            try perform(stage)
        } catch {
            if case let .volume(failedID, failure) = error, let failed = committed.volumes[failedID] { _ = failureLocked(failed, failure) }
            return oneByOne()
        }

        // 4-5, with the lock released: the source writes in order (a volume that fails takes no
        // more of the batch's writes: they fail), then one sync per volume for its FUA writes. A
        // FUA write is acknowledged only once that sync succeeded (a volume that failed in step 4
        // syncs nothing: its FUA writes fail).
        // The anomaly detectors' entropies of every sampled block, the writes' one after another.
        let sampleStarts = writes.reduce(into: [0]) { starts, write in starts.append(starts.last! + write.samples.count) }
        return SampleEntropies.with(count: sampleStarts.last!) { entropies in
            writeSourcesLocked(writes, sources) { index in entropies[sampleStarts[index]..<sampleStarts[index + 1]] }
        }
    }

    /// Steps 4-5 of a batch and its outcomes (see `writeBatchLocked`); `entropies(i)` is the room
    /// for the sampled blocks of `writes[i]`. Must hold the gate exclusively.
    private func writeSourcesLocked(
        _ writes: [HostWrite], _ sources: [(volume: Volume, store: BlockStore)], entropies: (Int) -> SampleEntropies
    ) -> [Result<Void, HostIOError>] {
        let (writeFailures, syncFailures) = unlocked { () -> ([VolumeID: (index: Int, error: BlockStoreError)], [VolumeID: BlockStoreError]) in
            // What each sampled write replaces, for the anomaly detectors, before the sources
            // change; and what it writes (counted below, once its outcome is known).
            for (index, (write, source)) in zip(writes, sources).enumerated() where write.detector != nil {
                measureOverwritten(source.store, writeOffset: write.offset, write.samples, into: entropies(index))
                measureWritten(write.bytes, write.samples, into: entropies(index))
            }
            var failedWrites: [VolumeID: (index: Int, error: BlockStoreError)] = [:]
            for (index, (write, source)) in zip(writes, sources).enumerated() where failedWrites[source.volume.id] == nil {
                do throws(BlockStoreError) {
                    try source.store.write(at: write.offset, from: write.bytes)
                } catch {
                    failedWrites[source.volume.id] = (index, error)
                }
            }
            var failedSyncs: [VolumeID: BlockStoreError] = [:]
            var synced: Set<VolumeID> = []
            for (write, source) in zip(writes, sources)
            where write.fua && failedWrites[source.volume.id] == nil && !synced.contains(source.volume.id) {
                synced.insert(source.volume.id)
                do throws(BlockStoreError) { try source.store.sync() } catch { failedSyncs[source.volume.id] = error }
            }
            return (failedWrites, failedSyncs)
        }
        // A failed volume is faulted (durably, before any host hears of it).
        var hostErrors: [VolumeID: HostIOError] = [:]
        for source in sources where hostErrors[source.volume.id] == nil {
            if let error = writeFailures[source.volume.id]?.error ?? syncFailures[source.volume.id] {
                hostErrors[source.volume.id] = failureLocked(source.volume, error)
            }
        }
        var outcomes = [Result<Void, HostIOError>](repeating: .success(()), count: writes.count)
        for (index, (write, source)) in zip(writes, sources).enumerated() {
            if let error = hostErrors[source.volume.id] {
                let failedFromHere = writeFailures[source.volume.id].map { index >= $0.index } ?? false
                if failedFromHere || write.fua { outcomes[index] = .failure(error) }
            }
            // Only an acknowledged write counts for its volume's anomaly detector.
            if let detector = write.detector, case .success = outcomes[index] {
                countWrite(detector, length: write.bytes.count, write.samples, entropies(index))
            }
        }
        return outcomes
    }
}
