import SnapbackCore

/// What `snapback log verify` found.
public struct VerifyReport: Sendable {
    public var recordsChecked: UInt64 = 0
    public var lastSequence: UInt64 = 0
    public var checkpointsChecked = 0
    /// The first problem, in log order; `nil` when the log is sound.
    public var problem: VerifyProblem?

    public var isSound: Bool { problem == nil }
}

/// The first thing wrong with a log.
public struct VerifyProblem: Sendable, Equatable, CustomStringConvertible {
    /// The kinds of damage, each with its own exit code (`Specs/errors.md`).
    public enum Kind: String, Sendable, CaseIterable {
        case checksum
        case chain
        case gap
        case version
        case malformed
        case undecodable
        case head
        case checkpoint
        case unreadable

        /// The exit code of `snapback log verify` for this kind of damage.
        public var exitCode: Int32 {
            switch self {
            case .checksum: 3
            case .chain: 4
            case .gap, .head: 5
            case .version: 6
            case .malformed, .undecodable: 7
            case .checkpoint: 8
            case .unreadable: 9
            }
        }
    }

    public var kind: Kind
    /// The first bad record's sequence number, when the damage is in a record.
    public var sequence: UInt64?
    public var detail: String

    public var description: String {
        if let sequence { return "seq \(sequence): \(kind.rawValue): \(detail)" }
        return "\(kind.rawValue): \(detail)"
    }
}

extension RecordProblem {
    var verifyKind: VerifyProblem.Kind {
        switch self {
        case .malformed: .malformed
        case .unsupportedVersion: .version
        case .checksumMismatch: .checksum
        case .chainBroken: .chain
        case .gap: .gap
        case .undecodable: .undecodable
        }
    }
}

extension EventLog {
    /// Checks every record (shape, version, checksum, chain link, sequence continuity, payload),
    /// the head, and every checkpoint against the replayed log. Stops at the first problem.
    public func verify() -> VerifyReport {
        var report = VerifyReport()
        do {
            // Checkpoints first, so the single pass over the log can compare states.
            // A damaged record is reported before a checkpoint that no longer matches it.
            var expectedStates: [UInt64: [UInt8]] = [:]
            var checkpointProblems: [VerifyProblem] = []
            for sequence in try checkpointSequences().reversed() {
                do {
                    let state = try environment.read { try loadCheckpoint(sequence, $0) }
                    expectedStates[sequence] = state.encoded()
                } catch LogError.checkpointSuperseded {
                    // An older build's cache: nothing to compare, nothing wrong.
                    continue
                } catch let error as LogError {
                    checkpointProblems.append(VerifyProblem(kind: .checkpoint, sequence: sequence, detail: error.description))
                }
            }
            var state = ControllerState()
            var previousHash = LogRecord.zeroHash
            var expected: UInt64 = 1
            // The head and the records must come from one snapshot: a writer may be appending.
            var head: (sequence: UInt64, hash: [UInt8]) = (0, LogRecord.zeroHash)
            try environment.read { transaction in
                head = try Self.decodeHead(try Self.headKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
                try transaction.scan(events, from: nil) { key, value in
                    guard let sequence = LogRecord.sequence(ofKey: key) else {
                        report.problem = VerifyProblem(kind: .malformed, sequence: expected, detail: "a key of \(key.count) bytes after seq \(expected - 1)")
                        return false
                    }
                    do throws(RecordProblem) {
                        guard sequence == expected else {
                            throw .gap(expected: expected, found: sequence)
                        }
                        let record = try RecordView(sequence: sequence, value: value)
                        try record.checkChecksum()
                        try record.checkChain(previous: previousHash)
                        state.apply(try record.decodeEvent(), at: record.timestampMilliseconds)
                        previousHash = record.hash
                    } catch {
                        let at = error.verifyKind == .gap ? expected : sequence
                        report.problem = VerifyProblem(kind: error.verifyKind, sequence: at, detail: error.description)
                        return false
                    }
                    report.recordsChecked += 1
                    report.lastSequence = sequence
                    if let stored = expectedStates[sequence], stored != state.encoded() {
                        report.problem = VerifyProblem(
                            kind: .checkpoint, sequence: sequence,
                            detail: "the checkpoint at seq \(sequence) differs from the state replayed from the log")
                        return false
                    }
                    expected += 1
                    return true
                }
            }
            if report.problem != nil { return report }
            if head.sequence != report.lastSequence || head.hash != previousHash {
                report.problem = VerifyProblem(
                    kind: .head, sequence: report.lastSequence + 1,
                    detail: "the head records seq \(head.sequence) but the log ends at seq \(report.lastSequence): records are missing at the end")
                return report
            }
            if let first = checkpointProblems.first {
                report.problem = first
                return report
            }
            report.checkpointsChecked = expectedStates.count
        } catch let error as LogError {
            report.problem = VerifyProblem(kind: .unreadable, sequence: nil, detail: error.description)
        } catch {
            report.problem = VerifyProblem(kind: .unreadable, sequence: nil, detail: "\(error)")
        }
        return report
    }
}
