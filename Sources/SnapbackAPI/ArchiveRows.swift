/// `POST /v1/log/archive`: move records out of the live log into archive segments. Exactly one
/// of `before` (archive the records before this sequence number) and `keep` (keep at least this
/// many of the newest records live) is given.
public struct ArchiveRequest: Codable, Sendable, Equatable {
    public var before: UInt64?
    public var keep: UInt64?

    public init(before: UInt64? = nil, keep: UInt64? = nil) {
        self.before = before
        self.keep = keep
    }

    /// The last sequence number to archive in a log whose last record is `lastSequence`; the
    /// newest checkpoint bounds it further.
    /// - Throws: ``ErrorBody`` `bad_request` unless exactly one of the two is given, or
    ///   `before` is 0.
    public func through(lastSequence: UInt64) throws(ErrorBody) -> UInt64 {
        switch (before, keep) {
        case let (before?, nil):
            guard before >= 1 else { throw ErrorBody(code: "bad_request", message: "before must be a sequence number of 1 or more") }
            return before - 1
        case let (nil, keep?):
            return lastSequence > keep ? lastSequence - keep : 0
        default:
            throw ErrorBody(code: "bad_request", message: "give exactly one of before and keep")
        }
    }
}

/// What an archive run did (`POST /v1/log/archive`).
public struct ArchiveResult: Codable, Sendable, Equatable {
    /// The last archived sequence number (0: nothing is archived); the live log starts after it.
    public var archived_through: UInt64
    /// Records this run moved out of the live log.
    public var records_archived: UInt64
    /// Segments this run wrote.
    public var segments_written: Int
    /// The newest checkpoint (0: none), which bounds what may be archived: records before it.
    public var latest_checkpoint: UInt64

    public init(archived_through: UInt64, records_archived: UInt64, segments_written: Int, latest_checkpoint: UInt64) {
        self.archived_through = archived_through
        self.records_archived = records_archived
        self.segments_written = segments_written
        self.latest_checkpoint = latest_checkpoint
    }
}
