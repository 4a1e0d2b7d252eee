import SnapbackCore

/// What `snapback log verify` found.
public struct VerifyReport: Sendable {
    public var recordsChecked: UInt64 = 0
    public var lastSequence: UInt64 = 0
    public var checkpointsChecked = 0
    /// Anchors the chain was found to pass through.
    public var anchorsChecked = 0
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
        /// An archive segment is missing, unreadable or altered as a file (its header, checksum or
        /// compression), or its records do not join the ones around it.
        case archive
        /// The chain does not pass through an anchor (`-anchor SEQ:HASH`): the record there hashes
        /// otherwise, or the log ends before it.
        case anchor

        /// The exit code of `snapback log verify` for this kind of damage.
        public var exitCode: Int32 {
            switch self {
            case .checksum: 3
            case .chain, .anchor: 4
            case .gap, .head: 5
            case .version: 6
            case .malformed, .undecodable: 7
            case .checkpoint: 8
            case .unreadable: 9
            case .archive: 10
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
    /// the head, every checkpoint against the replayed log, and that the chain passes through each
    /// of `anchors`. Stops at the first problem.
    public func verify(anchors: [LogAnchor] = []) -> VerifyReport {
        var report = VerifyReport()
        let anchorsBySequence = Dictionary(grouping: anchors, by: \.sequence)
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
            // Each record's own checks are the shared ones (`RecordChain`, as the cluster store's
            // reader uses them); anchors and checkpoints are checked here after each.
            var chain = RecordChain()
            /// Checks record `sequence` and folds it; false (with the chain's problem set) at a problem.
            func check(_ sequence: UInt64, _ value: UnsafeRawBufferPointer) -> Bool {
                chain.appendChecking(sequence: sequence, value: value, anchors: anchorsBySequence[sequence] ?? [], expectedState: expectedStates[sequence])
            }
            // The head, the archive mark and the live records must come from one snapshot: a
            // writer may be appending or archiving. Segments at or before the mark never change.
            var head: (sequence: UInt64, hash: [UInt8]) = (0, LogRecord.zeroHash)
            var stoppedInSegment: String?
            try environment.read { transaction in
                head = try Self.decodeHead(try Self.headKey.withUnsafeBytes { try transaction.get(meta, key: $0) })
                let mark = try archiveMark(transaction)
                if mark.sequence > 0 {
                    switch verifyArchive(through: mark, check: check, state: { chain.state.encoded() }) {
                    case .sound: break
                    case let .stopped(segment):
                        stoppedInSegment = segment
                        return
                    case let .problem(problem):
                        chain.fail(problem.kind, sequence: problem.sequence, problem.detail)
                        return
                    }
                    guard chain.lastHash == mark.hash else {
                        chain.fail(.archive, sequence: mark.sequence, "the archive mark records a hash of seq \(mark.sequence) that its segment's record does not have")
                        return
                    }
                }
                try LogRecord.key(mark.sequence + 1).withUnsafeBytes { start in
                    try transaction.scan(events, from: mark.sequence > 0 ? start : nil) { key, value in
                        guard let sequence = LogRecord.sequence(ofKey: key) else {
                            chain.fail(.malformed, sequence: chain.nextSequence, "a key of \(key.count) bytes after seq \(chain.nextSequence - 1)")
                            return false
                        }
                        return check(sequence, value)
                    }
                }
            }
            chain.checkHead(sequence: head.sequence, hash: head.hash)
            report = chain.report
            if let segment = stoppedInSegment { report.problem?.detail += " (in archive segment \(segment))" }
            if report.problem != nil { return report }
            if let beyond = anchors.filter({ $0.sequence > report.lastSequence }).min(by: { $0.sequence < $1.sequence }) {
                report.problem = VerifyProblem(
                    kind: .anchor, sequence: beyond.sequence,
                    detail: "the anchor is past the end of the log (seq \(report.lastSequence)): records were removed, or this is another log")
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

/// A point of the hash chain published outside the log (`snapback log head`): the record at
/// `sequence` hashes to `hash` (SHA-256 of its key and value, what the next record stores as
/// `previousHash`). A log rewritten from any record up to `sequence` no longer passes through it,
/// even when its own chain is intact.
public struct LogAnchor: Sendable, Equatable, CustomStringConvertible {
    /// The record's sequence number, 1 or more.
    public var sequence: UInt64
    /// The record's chain hash, 32 bytes.
    public var hash: [UInt8]

    public init(sequence: UInt64, hash: [UInt8]) {
        precondition(sequence >= 1 && hash.count == 32, "an anchor is a record's sequence number and its 32-byte hash")
        self.sequence = sequence
        self.hash = hash
    }

    /// Parses `SEQ:HASH`: a decimal sequence number of 1 or more and 64 hex digits (either case).
    /// Returns `nil` for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let sequence = UInt64(parts[0]), sequence >= 1, let hash = Self.bytes(hex: parts[1]) else { return nil }
        self.init(sequence: sequence, hash: hash)
    }

    /// `SEQ:HASH`, the hash in lowercase hex: what `init?(_:)` parses.
    public var description: String { "\(sequence):\(hashHex)" }

    /// The hash in 64 lowercase hex digits.
    public var hashHex: String { Self.hex(hash) }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The 32 bytes of 64 hex digits, or `nil`.
    static func bytes(hex: Substring) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }
}

/// The outcome of checking the archive's segments.
enum ArchiveCheck {
    case sound
    /// The record check found a problem in this segment (the check recorded it).
    case stopped(segment: String)
    /// A segment is missing or unsound as a file.
    case problem(VerifyProblem)
}

extension EventLog {
    /// Checks the archive's segments for records `1...mark.sequence`: that they tile the range,
    /// that each file is sound (header, payload checksum, zlib), passing each record to `check`
    /// (which checks it and its chain link), that each header's last hash is its last record's,
    /// and that the state each carries equals the replayed one (`state()`, after its last record).
    func verifyArchive(
        through mark: (sequence: UInt64, hash: [UInt8]), check: (UInt64, UnsafeRawBufferPointer) -> Bool, state: () -> [UInt8]
    ) -> ArchiveCheck {
        let segments: [(first: UInt64, last: UInt64, name: String)]
        do {
            segments = try archive.tiling(through: mark.sequence)
        } catch {
            return .problem(VerifyProblem(kind: .archive, sequence: nil, detail: error.description))
        }
        for entry in segments {
            let segment: ArchiveSegment
            do {
                segment = try archive.load(entry.name)
            } catch {
                return .problem(VerifyProblem(kind: .archive, sequence: entry.first, detail: error.description))
            }
            var sound = true
            do {
                try segment.forEach(from: entry.first, through: entry.last) { record in
                    sound = check(record.sequence, record.value)
                    return sound
                }
            } catch let LogError.damagedRecord(sequence, problem) {
                return .problem(VerifyProblem(kind: problem.verifyKind, sequence: sequence, detail: "\(problem) (in archive segment \(entry.name))"))
            } catch {
                return .problem(VerifyProblem(kind: .archive, sequence: entry.first, detail: "\(error)"))
            }
            guard sound else { return .stopped(segment: entry.name) }
            guard segment.header.lastHash == (segment.withValue(entry.last) { LogRecord.hash(sequence: entry.last, value: $0) }) else {
                return .problem(VerifyProblem(kind: .archive, sequence: entry.last, detail: "segment \(entry.name): its header's last hash is not its last record's"))
            }
            if let version = segment.stateBytes.first, version >= ControllerState.encodingVersion, segment.stateBytes != state() {
                return .problem(
                    VerifyProblem(kind: .archive, sequence: entry.last, detail: "segment \(entry.name): the state it carries differs from the state replayed from the log"))
            }
        }
        return .sound
    }
}
