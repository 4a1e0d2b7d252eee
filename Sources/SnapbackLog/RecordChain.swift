import SnapbackCore

/// The log's record checks for logs kept outside LMDB (the cluster store on etcd): the same
/// record encoding (``LogRecord``), hash chain and checkpoint encoding, checked the same way as
/// ``EventLog/verify(anchors:)`` and ``EventLog/replay(through:useCheckpoints:checkChain:)`` do,
/// so the two stores never drift apart in what counts as a sound log.
public struct RecordChain: Sendable {
    /// What has been checked so far; ``VerifyReport/problem`` is set at the first problem.
    public private(set) var report = VerifyReport()
    /// `reduce` of the records accepted so far (from ``init(after:state:)``'s state).
    public private(set) var state: ControllerState
    /// The chain hash of the last accepted record (zeros before the first).
    public private(set) var lastHash: [UInt8]
    /// The sequence number the next record must carry.
    public private(set) var nextSequence: UInt64

    /// A chain that starts at the first record.
    public init() {
        state = ControllerState()
        lastHash = LogRecord.zeroHash
        nextSequence = 1
    }

    /// A chain that continues after record `sequence`, whose hash is `hash` and whose state is
    /// `state` (from a checkpoint, or a follower's warm state).
    public init(after sequence: UInt64, hash: [UInt8], state: ControllerState) {
        precondition(hash.count == 32 && state.eventsApplied == sequence, "a chain continues from a record's hash and the state after it")
        self.state = state
        lastHash = hash
        nextSequence = sequence + 1
        report.lastSequence = sequence
    }

    /// Checks the record `value` stored at `sequence` (shape, version, checksum, sequence
    /// continuity, chain link, payload) and folds its event into ``state``.
    /// - Returns: the stored event, or `nil` after recording the problem in ``report`` (the
    ///   chain then accepts nothing more).
    @discardableResult
    public mutating func append(sequence: UInt64, value: UnsafeRawBufferPointer) -> StoredEvent? {
        guard report.problem == nil else { return nil }
        do throws(RecordProblem) {
            guard sequence == nextSequence else { throw .gap(expected: nextSequence, found: sequence) }
            let record = try RecordView(sequence: sequence, value: value)
            try record.checkChecksum()
            try record.checkChain(previous: lastHash)
            let event = try record.decodeEvent()
            state.apply(event, at: record.timestampMilliseconds)
            lastHash = record.hash
            nextSequence += 1
            report.recordsChecked += 1
            report.lastSequence = sequence
            return StoredEvent(sequence: sequence, timestampMilliseconds: record.timestampMilliseconds, event: event, caller: record.caller)
        } catch {
            let at = error.verifyKind == .gap ? nextSequence : sequence
            report.problem = VerifyProblem(kind: error.verifyKind, sequence: at, detail: error.description)
            return nil
        }
    }

    /// ``append(sequence:value:)``, then that the chain passes through each of `anchors` (the
    /// anchors at `sequence`) and that the replayed state equals `expectedState` (the encoded
    /// state of a checkpoint at `sequence`), when given. Returns false once a problem is recorded.
    public mutating func appendChecking(sequence: UInt64, value: UnsafeRawBufferPointer, anchors: [LogAnchor], expectedState: [UInt8]?) -> Bool {
        guard append(sequence: sequence, value: value) != nil else { return false }
        for anchor in anchors {
            guard anchor.hash == lastHash else {
                fail(
                    .anchor, sequence: sequence,
                    "the record hashes to \(LogAnchor.hex(lastHash)), not to the anchor's \(anchor.hashHex): the log was rewritten at or before seq \(sequence)")
                return false
            }
            anchorMatched()
        }
        if let expectedState {
            guard expectedState == state.encoded() else {
                fail(.checkpoint, sequence: sequence, "the checkpoint at seq \(sequence) differs from the state replayed from the log")
                return false
            }
            checkpointMatched()
        }
        return true
    }

    /// Checks that the recorded head (`sequence`, `hash`) is the last accepted record.
    public mutating func checkHead(sequence: UInt64, hash: [UInt8]) {
        guard report.problem == nil else { return }
        if sequence != report.lastSequence || hash != lastHash {
            report.problem = VerifyProblem(
                kind: .head, sequence: report.lastSequence + 1,
                detail: "the head records seq \(sequence) but the log ends at seq \(report.lastSequence)\(sequence == report.lastSequence ? " with another hash" : ""): records are missing at the end, or were rewritten")
        }
    }

    /// Records a problem found outside the records (an unreadable store, a bad checkpoint).
    public mutating func fail(_ kind: VerifyProblem.Kind, sequence: UInt64?, _ detail: String) {
        guard report.problem == nil else { return }
        report.problem = VerifyProblem(kind: kind, sequence: sequence, detail: detail)
    }

    /// Counts an anchor the chain was found to pass through.
    public mutating func anchorMatched() { report.anchorsChecked += 1 }

    /// Counts a checkpoint found equal to the replayed state.
    public mutating func checkpointMatched() { report.checkpointsChecked += 1 }
}

extension Checkpoint {
    /// A checkpoint of `state` taken after the record at `state.eventsApplied`, whose chain hash
    /// is `recordHash`.
    public init(state: ControllerState, recordHash: [UInt8]) {
        precondition(recordHash.count == 32)
        self.init(sequence: state.eventsApplied, recordHash: recordHash, stateBytes: state.encoded())
    }

    /// The stored form (version, record hash, CRC-32C, state bytes), as the LMDB log stores it.
    public var storedBytes: [UInt8] { encoded() }

    /// Decodes the checkpoint stored at `sequence` and checks it against the log: its version and
    /// checksum, that it was taken after the log's record at `sequence` (`recordHash` reads that
    /// record's chain hash, `nil` when the log has no such record; it is not called for a
    /// checkpoint that does not decode), and that its state is of `sequence` events. Replay and
    /// verify of both logs (LMDB and the cluster's) check a checkpoint here, so they reject the
    /// same checkpoints with the same words.
    /// - Throws: ``LogError/checkpointRejected(_:)``, ``LogError/checkpointSuperseded(_:)``, or
    ///   what `recordHash` throws.
    public static func checkedState(sequence: UInt64, stored: UnsafeRawBufferPointer, recordHash: () throws -> [UInt8]?) throws -> ControllerState {
        let checkpoint = try decode(sequence: sequence, value: stored)
        guard let recordHash = try recordHash() else { throw LogError.checkpointRejected("checkpoint at seq \(sequence) follows a record that does not exist") }
        guard recordHash == checkpoint.recordHash else {
            throw LogError.checkpointRejected("checkpoint at seq \(sequence) was not taken from this log (record hash differs)")
        }
        return try state(checkpoint.stateBytes, after: sequence, what: "checkpoint at seq \(sequence)")
    }
}

extension VerifyProblem {
    /// A problem found by a verifier outside this module (the cluster store's).
    public init(_ kind: Kind, at sequence: UInt64?, _ detail: String) {
        self.init(kind: kind, sequence: sequence, detail: detail)
    }
}
