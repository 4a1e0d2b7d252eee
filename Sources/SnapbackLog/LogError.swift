import SnapbackCore

/// Why the event log could not do what was asked.
public enum LogError: Error, Sendable, Equatable, CustomStringConvertible {
    /// LMDB refused; the wrapped error says what the return code means.
    case lmdb(LMDBError)
    /// The directory holds no Snapback log (read-only open).
    case noLog(directory: String)
    /// The log was written in a format this build does not read.
    case incompatibleFormat(found: String)
    /// A stored record is damaged or unreadable; start-up refuses to guess.
    case damagedRecord(sequence: UInt64, problem: RecordProblem)
    /// The recorded head (last sequence number and hash) does not match the last record.
    case headMismatch(String)
    /// The map is full and may not grow further.
    case mapFull(mapSizeBytes: Int)
    /// The log was opened read-only.
    case readOnly
    /// The log is closed.
    case closed
    /// Writes committed alongside an append failed; nothing of that commit was recorded.
    case sideWriteFailed(String)
    /// The data file is shorter than its own meta page says.
    case truncatedDataFile(bytes: Int, neededBytes: Int)
    /// A checkpoint was asked for a state that does not match the log.
    case checkpointRejected(String)
    /// A checkpoint of an older state encoding: a cache this build does not read (replay starts
    /// before it; `log verify` skips it). Not damage.
    case checkpointSuperseded(String)
    /// An archive segment is missing, unreadable or altered, or the segments do not hold every
    /// archived record.
    case archiveDamaged(String)
    /// Writing an archive segment (or removing an unrecorded one) failed; nothing was moved.
    case archiveWriteFailed(String)

    /// A stable code for each case, used by the CLI and the API.
    public var code: String {
        switch self {
        case .lmdb: "lmdb_error"
        case .noLog: "no_log"
        case .incompatibleFormat: "incompatible_log_format"
        case .damagedRecord: "damaged_record"
        case .headMismatch: "head_mismatch"
        case .mapFull: "log_map_full"
        case .readOnly: "log_read_only"
        case .closed: "log_closed"
        case .truncatedDataFile: "truncated_data_file"
        case .sideWriteFailed: "side_write_failed"
        case .checkpointRejected: "checkpoint_rejected"
        case .checkpointSuperseded: "checkpoint_superseded"
        case .archiveDamaged: "archive_damaged"
        case .archiveWriteFailed: "archive_write_failed"
        }
    }

    public var description: String {
        switch self {
        case let .lmdb(error): error.description
        case let .noLog(directory): "no Snapback log in \(directory) (is --data-dir right?)"
        case let .incompatibleFormat(found): "the log's format is \(found); this build reads snapback-log version \(LogRecord.formatVersion)"
        case let .damagedRecord(sequence, problem): "record seq \(sequence) is damaged: \(problem); run `snapback log verify`"
        case let .headMismatch(detail): "the log's head does not match its last record: \(detail); run `snapback log verify`"
        case let .mapFull(bytes):
            "the log's LMDB map is full at \(bytes) bytes; restart snapbackd with a larger --map-size-mib, or free disk space"
        case .readOnly: "the log is open read-only"
        case .closed: "the log is closed"
        case let .sideWriteFailed(detail): "writes committed with the events failed: \(detail); nothing was recorded"
        case let .truncatedDataFile(bytes, neededBytes):
            "the LMDB data file is truncated: \(bytes) bytes, but its pages reach \(neededBytes) bytes"
        case let .checkpointRejected(detail): "checkpoint rejected: \(detail)"
        case let .checkpointSuperseded(detail): "checkpoint superseded: \(detail)"
        case let .archiveDamaged(detail): "the log's archive is damaged: \(detail); run `snapback log verify`"
        case let .archiveWriteFailed(detail): "archiving failed: \(detail); nothing was moved out of the live log"
        }
    }
}
