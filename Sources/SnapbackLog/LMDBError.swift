import CLMDB

/// An LMDB return code, as a typed value that says what it means and what to do about it.
public struct LMDBError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The meaning of each LMDB return code (lmdb.h), and `system` for an errno.
    public enum Code: Sendable, Equatable {
        case keyExists
        case notFound
        case pageNotFound
        case corrupted
        case panic
        case versionMismatch
        case invalid
        case mapFull
        case databasesFull
        case readersFull
        case threadSlotsFull
        case transactionFull
        case cursorStackFull
        case pageFull
        case mapResized
        case incompatible
        case badReaderSlot
        case badTransaction
        case badValueSize
        case badDatabase
        case problem
        case system(errno: Int32)
    }

    public var code: Code
    /// The LMDB call that failed, such as `mdb_put`.
    public var operation: String
    /// The raw return code.
    public var returnCode: Int32

    public init(returnCode: Int32, operation: String) {
        self.returnCode = returnCode
        self.operation = operation
        switch returnCode {
        case MDB_KEYEXIST: code = .keyExists
        case MDB_NOTFOUND: code = .notFound
        case MDB_PAGE_NOTFOUND: code = .pageNotFound
        case MDB_CORRUPTED: code = .corrupted
        case MDB_PANIC: code = .panic
        case MDB_VERSION_MISMATCH: code = .versionMismatch
        case MDB_INVALID: code = .invalid
        case MDB_MAP_FULL: code = .mapFull
        case MDB_DBS_FULL: code = .databasesFull
        case MDB_READERS_FULL: code = .readersFull
        case MDB_TLS_FULL: code = .threadSlotsFull
        case MDB_TXN_FULL: code = .transactionFull
        case MDB_CURSOR_FULL: code = .cursorStackFull
        case MDB_PAGE_FULL: code = .pageFull
        case MDB_MAP_RESIZED: code = .mapResized
        case MDB_INCOMPATIBLE: code = .incompatible
        case MDB_BAD_RSLOT: code = .badReaderSlot
        case MDB_BAD_TXN: code = .badTransaction
        case MDB_BAD_VALSIZE: code = .badValueSize
        case MDB_BAD_DBI: code = .badDatabase
        case -30779: code = .problem  // MDB_PROBLEM, newer than Debian 12's lmdb.h
        default: code = .system(errno: returnCode)
        }
    }

    /// One line: the operation, what the code means, and what to do about it.
    public var description: String {
        let meaning: String
        switch code {
        case .keyExists: meaning = "the key already exists (an append out of order)"
        case .notFound: meaning = "no such key"
        case .pageNotFound: meaning = "a page the tree points to is missing: the data file is damaged or truncated"
        case .corrupted: meaning = "the data file is corrupted: a page has the wrong type"
        case .panic: meaning = "LMDB hit a fatal error; the environment must be reopened"
        case .versionMismatch: meaning = "the data file was written by an incompatible LMDB version"
        case .invalid: meaning = "the file is not an LMDB data file, or its header is damaged"
        case .mapFull:
            meaning = "the LMDB map is full; restart with a larger map size (snapbackd --map-size-mib) or free disk space"
        case .databasesFull: meaning = "too many named databases are open (maxdbs)"
        case .readersFull: meaning = "the reader table is full: too many processes or threads are reading; close some readers"
        case .threadSlotsFull: meaning = "too many threads hold read transactions"
        case .transactionFull: meaning = "the transaction has too many dirty pages; write smaller batches"
        case .cursorStackFull: meaning = "the B-tree is deeper than LMDB supports: the data file is damaged"
        case .pageFull: meaning = "a page has no room left (internal LMDB error)"
        case .mapResized: meaning = "another process grew the map; the transaction must be retried"
        case .incompatible: meaning = "the database was opened with incompatible flags"
        case .badReaderSlot: meaning = "a reader slot was reused wrongly (a transaction moved between threads)"
        case .badTransaction: meaning = "the transaction is no longer usable after an earlier error"
        case .badValueSize: meaning = "a key or value has an unsupported size"
        case .badDatabase: meaning = "the database handle changed unexpectedly"
        case .problem: meaning = "an unexpected problem; the transaction was aborted"
        case let .system(errno):
            let text = String(cString: mdb_strerror(errno))
            meaning = "system error \(errno): \(text)"
        }
        return "\(operation): \(meaning)"
    }
}

/// Throws the ``LMDBError`` for a non-zero LMDB return code.
@inline(__always)
func check(_ returnCode: Int32, _ operation: String) throws(LMDBError) {
    if returnCode != 0 { throw LMDBError(returnCode: returnCode, operation: operation) }
}
