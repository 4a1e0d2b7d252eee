import Foundation
import SnapbackCore
import SnapbackLog

/// Reads a cluster's log for audits (`snapback log verify|show|state -cluster`): never writes,
/// works while the cluster runs. Every read is at one etcd revision, so a leader appending
/// meanwhile never shows a half-written picture.
public struct ClusterLogReader: Sendable {
    public let client: any EtcdTransport
    public let keys: ClusterKeys

    public init(client: any EtcdTransport, keys: ClusterKeys) {
        self.client = client
        self.keys = keys
    }

    /// Checks every record (shape, version, checksum, chain link, continuity, payload), the head,
    /// and every checkpoint against the replayed log, as `EventLog.verify` does for LMDB. Stops at
    /// the first problem (its kind gives `snapback log verify`'s exit code). A checkpoint that
    /// replay would skip (``Checkpoint/checkedState(sequence:stored:recordHash:)``) is reported
    /// as LMDB's verify reports it: kind `checkpoint` at its sequence number, after the records,
    /// so that a damaged record is named first.
    public func verify(anchors: [LogAnchor] = []) -> VerifyReport {
        var chain = RecordChain()
        let anchorsBySequence = Dictionary(grouping: anchors, by: \.sequence)
        do {
            let (revision, head) = try readHead()
            var expectedStates: [UInt64: [UInt8]] = [:]
            var checkpointProblems: [VerifyProblem] = []
            for (key, stored) in try readCheckpoints(revision: revision) {
                guard let sequence = keys.sequence(ofCheckpointKey: key) else {
                    checkpointProblems.append(VerifyProblem(.checkpoint, at: nil, LogError.checkpointRejected(keys.notACheckpointKey(key)).description))
                    continue
                }
                do {
                    let state = try stored.withUnsafeBytes { bytes in
                        try Checkpoint.checkedState(sequence: sequence, stored: bytes) { try recordHash(sequence, revision: revision) }
                    }
                    expectedStates[sequence] = state.encoded()
                } catch LogError.checkpointSuperseded {
                    continue  // an older build's cache: nothing to compare, nothing wrong
                } catch let error as LogError {
                    checkpointProblems.append(VerifyProblem(.checkpoint, at: sequence, error.description))
                }
            }
            // Past the head too: a record there means the head was rolled back.
            try forEachRecord(through: .max, revision: revision) { sequence, value in
                value.withUnsafeBytes {
                    chain.appendChecking(sequence: sequence, value: $0, anchors: anchorsBySequence[sequence] ?? [], expectedState: expectedStates[sequence])
                }
            }
            if chain.report.problem == nil && chain.report.lastSequence < head.sequence {
                chain.fail(.gap, sequence: chain.report.lastSequence + 1, "record \(chain.report.lastSequence + 1) is missing (the head says \(head.sequence))")
            }
            chain.checkHead(sequence: head.sequence, hash: head.hash)
            if let beyond = anchors.filter({ $0.sequence > chain.report.lastSequence }).min(by: { $0.sequence < $1.sequence }) {
                chain.fail(.anchor, sequence: beyond.sequence, "the anchor is past the end of the log (seq \(chain.report.lastSequence))")
            }
            if let first = checkpointProblems.first { chain.fail(first.kind, sequence: first.sequence, first.detail) }
        } catch {
            chain.fail(.unreadable, sequence: nil, "\(error)")
        }
        return chain.report
    }

    /// The decoded events from `first` through `last` (each record's checksum checked).
    public func storedEvents(from first: UInt64 = 1, through last: UInt64 = .max) throws -> [StoredEvent] {
        let (revision, head) = try readHead()
        var result: [StoredEvent] = []
        try forEachRecord(from: first, through: min(last, head.sequence), revision: revision) { sequence, value in
            let event = try value.withUnsafeBytes { bytes -> StoredEvent in
                let record: RecordView
                do throws(RecordProblem) { record = try RecordView(sequence: sequence, value: bytes) } catch { throw LogError.damagedRecord(sequence: sequence, problem: error) }
                return try EventLog.storedEvent(record)
            }
            result.append(event)
            return true
        }
        return result
    }

    /// `reduce(log)` from the first record (no checkpoint trusted).
    public func replayedState() throws -> ControllerState {
        var chain = RecordChain()
        let (revision, head) = try readHead()
        try forEachRecord(through: head.sequence, revision: revision) { sequence, value in
            value.withUnsafeBytes { chain.append(sequence: sequence, value: $0) } != nil
        }
        if let problem = chain.report.problem { throw ClusterStoreError.damaged(problem) }
        return chain.state
    }

    /// The head (sequence, hash, term of its writer) and the etcd revision it was read at.
    public func readHead() throws -> (revision: Int64, head: (sequence: UInt64, hash: [UInt8], term: UInt64)) {
        let answer = try client.call("/v3/kv/range", ["key": Etcd.base64(keys.head)])
        guard let revision = Etcd.int((answer["header"] as? JSONObject)?["revision"]) else {
            throw ClusterStoreError.refused(.malformed("a range answer without a revision"))
        }
        let value = try Etcd.bytes((answer["kvs"] as? [JSONObject])?.first?["value"])
        return (revision, try ClusterDurableStore.decodeHead(value))
    }

    /// Every key under `checkpoints/` with its value, at `revision`, in key order (oldest first).
    func readCheckpoints(revision: Int64) throws -> [(key: [UInt8], value: [UInt8])] {
        let answer = try client.call(
            "/v3/kv/range",
            [
                "key": Etcd.base64(keys.checkpointsPrefix), "range_end": Etcd.base64(Etcd.prefixEnd(keys.checkpointsPrefix)),
                "revision": String(revision),
            ])
        return try (answer["kvs"] as? [JSONObject] ?? []).map { kv in (try Etcd.bytes(kv["key"]), try Etcd.bytes(kv["value"])) }
    }

    /// The chain hash of the record stored at `sequence` at `revision`, or `nil` when there is none.
    func recordHash(_ sequence: UInt64, revision: Int64) throws -> [UInt8]? {
        let answer = try client.call("/v3/kv/range", ["key": Etcd.base64(keys.event(sequence)), "revision": String(revision)])
        guard let kv = (answer["kvs"] as? [JSONObject])?.first else { return nil }
        return try Etcd.bytes(kv["value"]).withUnsafeBytes { LogRecord.hash(sequence: sequence, value: $0) }
    }

    /// Calls `body` with each stored record key's sequence and value, in order, page by page, at
    /// `revision`; `body` returns false to stop. Keys that are not sequence numbers are reported
    /// as sequence 0 (the chain then reports a gap).
    public func forEachRecord(
        from first: UInt64 = 1, through last: UInt64, revision: Int64, _ body: (UInt64, [UInt8]) throws -> Bool
    ) throws {
        guard first <= last else { return }
        var start = keys.event(first)
        let end = Etcd.prefixEnd(keys.eventsPrefix)
        while true {
            let answer = try client.call(
                "/v3/kv/range", ["key": Etcd.base64(start), "range_end": Etcd.base64(end), "revision": String(revision), "limit": "512"])
            let kvs = answer["kvs"] as? [JSONObject] ?? []
            for kv in kvs {
                let key = try Etcd.bytes(kv["key"])
                let sequence = keys.sequence(ofEventKey: key) ?? 0
                if sequence > last { return }
                guard try body(sequence, try Etcd.bytes(kv["value"])) else { return }
                start = key + [0]
            }
            guard answer["more"] as? Bool == true, !kvs.isEmpty else { return }
        }
    }
}
