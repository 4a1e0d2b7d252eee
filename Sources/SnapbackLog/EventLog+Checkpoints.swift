import CLMDB
import Foundation
import SnapbackCore

/// A checkpoint: the reduced state after record `sequence`, and the hash of that record, which
/// ties the checkpoint to the log it summarises.
///
/// Value layout: `version` (1 byte, 1), `recordHash` (32 bytes), `stateChecksum` (CRC-32C of the
/// state bytes, 4 bytes little-endian), then the state encoding (`ControllerState.encoded()`).
public struct Checkpoint: Sendable {
    public static let version: UInt8 = 1
    public var sequence: UInt64
    public var recordHash: [UInt8]
    public var stateBytes: [UInt8]

    func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 37 + stateBytes.count)
        writer.write(Self.version)
        writer.write(bytes: recordHash)
        writer.write(CRC32C.checksum(stateBytes))
        writer.write(bytes: stateBytes)
        return writer.bytes
    }

    /// Decodes a stored checkpoint, checking its version and checksum.
    static func decode(sequence: UInt64, value: UnsafeRawBufferPointer) throws(LogError) -> Checkpoint {
        guard value.count >= 37 else { throw .checkpointRejected("checkpoint at seq \(sequence) has \(value.count) bytes") }
        guard value[0] == version else { throw .checkpointRejected("checkpoint at seq \(sequence) has version \(value[0])") }
        let stored = value.loadUnaligned(fromByteOffset: 33, as: UInt32.self).littleEndian
        let state = UnsafeRawBufferPointer(rebasing: value[37...])
        let computed = CRC32C.checksum(state)
        guard stored == computed else {
            throw .checkpointRejected("checkpoint at seq \(sequence): checksum \(hex32(stored)) stored, \(hex32(computed)) computed")
        }
        return Checkpoint(sequence: sequence, recordHash: Array(value[1..<33]), stateBytes: Array(state))
    }
}

extension Checkpoint {
    /// Decodes `bytes` as the reduced state after record `sequence`; `what` names their place
    /// (a checkpoint, an archive segment) in the errors.
    /// - Throws: ``LogError/checkpointSuperseded(_:)`` for an older build's encoding,
    ///   ``LogError/checkpointRejected(_:)`` when they do not decode or hold another count.
    static func state(_ bytes: [UInt8], after sequence: UInt64, what: String) throws(LogError) -> ControllerState {
        if let version = bytes.first, version < ControllerState.encodingVersion {
            throw .checkpointSuperseded("\(what) holds state encoding \(version); this build writes \(ControllerState.encodingVersion)")
        }
        let state: ControllerState
        do {
            state = try bytes.withUnsafeBytes { (bytes) throws(DecodeError) in try ControllerState.decode(bytes) }
        } catch {
            throw .checkpointRejected("\(what) does not decode: \(error)")
        }
        guard state.eventsApplied == sequence else { throw .checkpointRejected("\(what) holds a state of \(state.eventsApplied) events") }
        return state
    }
}

/// The outcome of replaying the log.
public struct Replay: Sendable {
    /// `reduce(log[1...lastSequence])`.
    public var state: ControllerState
    /// The checkpoint (or archive segment's state) replay started from, or `nil` for a replay
    /// from the first record.
    public var checkpointSequence: UInt64?
    /// Events folded after the checkpoint.
    public var eventsReplayed: UInt64
    /// Checkpoints that did not match the log and were skipped, with the reason.
    public var checkpointsRejected: [String]
}

extension EventLog {
    /// Saves `state` as a checkpoint at `state.eventsApplied`, which must be the reduction of the
    /// log's first `state.eventsApplied` records. Keeps the newest ``checkpointsKept``.
    /// - Throws: ``LogError/checkpointRejected(_:)`` when that record does not exist.
    public func saveCheckpoint(_ state: ControllerState) throws {
        let sequence = state.eventsApplied
        let stateBytes = state.encoded()
        let eventsDatabase = events
        let checkpointsDatabase = checkpoints
        try write { transaction in
            let key = LogRecord.key(sequence)
            guard sequence > 0, let value = try key.withUnsafeBytes({ try transaction.get(eventsDatabase, key: $0) }) else {
                throw LogError.checkpointRejected("no record at seq \(sequence)")
            }
            let checkpoint = Checkpoint(sequence: sequence, recordHash: LogRecord.hash(sequence: sequence, value: value), stateBytes: stateBytes)
            let encoded = checkpoint.encoded()
            try key.withUnsafeBytes { keyBytes in
                try encoded.withUnsafeBytes { try transaction.put(checkpointsDatabase, key: keyBytes, value: $0) }
            }
            var sequences: [UInt64] = []
            try transaction.scan(checkpointsDatabase, from: nil, backwards: true) { key, _ in
                if let stored = LogRecord.sequence(ofKey: key) { sequences.append(stored) }
                return true
            }
            for old in sequences.dropFirst(Self.checkpointsKept) {
                _ = try LogRecord.key(old).withUnsafeBytes { try transaction.delete(checkpointsDatabase, key: $0) }
            }
        }
    }

    /// The sequence numbers of the stored checkpoints, newest first.
    public func checkpointSequences() throws -> [UInt64] {
        try environment.read { transaction in
            var sequences: [UInt64] = []
            try transaction.scan(checkpoints, from: nil, backwards: true) { key, _ in
                sequences.append(LogRecord.sequence(ofKey: key) ?? 0)
                return true
            }
            return sequences
        }
    }

    /// Checks the checkpoint at `sequence` against the log (its checksum, and the hash of the
    /// record it claims to follow) and decodes its state.
    func loadCheckpoint(_ sequence: UInt64, _ transaction: Transaction) throws -> ControllerState {
        let key = LogRecord.key(sequence)
        guard let value = try key.withUnsafeBytes({ try transaction.get(checkpoints, key: $0) }) else {
            throw LogError.checkpointRejected("no checkpoint at seq \(sequence)")
        }
        return try Checkpoint.checkedState(sequence: sequence, stored: value) { try recordHash(sequence, transaction) }
    }

    /// Reduces the log through `last` (the whole log by default), starting from the newest
    /// checkpoint at or before `last` that matches the log, or from the state of the newest
    /// archive segment at or before `last` when that is newer. Every replayed record's format,
    /// checksum and sequence number are checked, and with `checkChain` its hash-chain link too
    /// (SHA-256 per record; `verify` always checks the chain, start-up leaves it to `verify`).
    /// - Throws: ``LogError/damagedRecord(sequence:problem:)`` at the first damaged record:
    ///   replay never guesses.
    public func replay(through last: UInt64 = .max, useCheckpoints: Bool = true, checkChain: Bool = false) throws -> Replay {
        var state = ControllerState()
        var checkpointSequence: UInt64?
        var rejected: [String] = []
        var previousHash = LogRecord.zeroHash
        try environment.read { transaction in
            if useCheckpoints {
                for sequence in try checkpointSequences() where sequence <= last {
                    do {
                        state = try loadCheckpoint(sequence, transaction)
                        checkpointSequence = sequence
                        // loadCheckpoint found the record and matched its hash.
                        previousHash = try recordHash(sequence, transaction)!
                        break
                    } catch let error as LogError {
                        rejected.append(error.description)
                    }
                }
                if let archived = try archivedState(through: last, after: checkpointSequence ?? 0, transaction, rejected: &rejected) {
                    state = archived.state
                    checkpointSequence = archived.state.eventsApplied
                    previousHash = archived.hash
                }
            }
        }
        let first = (checkpointSequence ?? 0) + 1
        var expected = first
        var replayed: UInt64 = 0
        if first <= last {
            try scan(from: first, through: last) { record in
                do throws(RecordProblem) {
                    guard record.sequence == expected else { throw .gap(expected: expected, found: record.sequence) }
                    try record.checkChecksum()
                    if checkChain { try record.checkChain(previous: previousHash) }
                    state.apply(try record.decodeEvent(), at: record.timestampMilliseconds)
                } catch {
                    throw LogError.damagedRecord(sequence: record.sequence, problem: error)
                }
                if checkChain { previousHash = record.hash }
                expected += 1
                replayed += 1
                return true
            }
        }
        return Replay(state: state, checkpointSequence: checkpointSequence, eventsReplayed: replayed, checkpointsRejected: rejected)
    }
}
