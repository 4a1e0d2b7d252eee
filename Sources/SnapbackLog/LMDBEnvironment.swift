import CLMDB
import Foundation

/// An LMDB environment: one directory holding `data.mdb` and `lock.mdb`.
///
/// Opened read-write, every commit is durable when it returns: the environment never uses
/// `MDB_NOSYNC`, `MDB_NOMETASYNC`, `MDB_MAPASYNC` or `MDB_WRITEMAP`. Write transactions must all
/// run on one thread (the log's writer); read transactions may run on any thread (`MDB_NOTLS`).
public final class LMDBEnvironment: @unchecked Sendable {
    let handle: OpaquePointer
    public let directory: String
    public let readOnly: Bool
    public private(set) var mapSizeBytes: Int

    /// Opens (read-write: creating the directory if needed) the environment in `directory`.
    /// - Parameters:
    ///   - mapSizeBytes: the virtual size of the map, a hard cap on the data file's size.
    ///   - maxDatabases: how many named databases may be opened.
    /// - Throws: ``LMDBError`` when LMDB refuses; `.system(ENOENT)` when a read-only open finds
    ///   no environment.
    public init(directory: String, mapSizeBytes: Int, maxDatabases: UInt32, readOnly: Bool) throws(LMDBError) {
        self.directory = directory
        self.readOnly = readOnly
        self.mapSizeBytes = mapSizeBytes
        if readOnly {
            guard FileManager.default.fileExists(atPath: directory + "/data.mdb") else {
                throw LMDBError(returnCode: ENOENT, operation: "open \(directory)/data.mdb")
            }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw LMDBError(returnCode: EACCES, operation: "create directory \(directory)")
            }
        }
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        guard let env else { throw LMDBError(returnCode: ENOMEM, operation: "mdb_env_create") }
        do {
            try check(mdb_env_set_maxdbs(env, maxDatabases), "mdb_env_set_maxdbs")
            try check(mdb_env_set_maxreaders(env, 256), "mdb_env_set_maxreaders")
            if !readOnly {
                try check(mdb_env_set_mapsize(env, mapSizeBytes), "mdb_env_set_mapsize")
            }
            var flags = UInt32(MDB_NOTLS)
            if readOnly { flags |= UInt32(MDB_RDONLY) }
            try check(mdb_env_open(env, directory, flags, 0o600), "mdb_env_open \(directory)")
        } catch {
            mdb_env_close(env)
            throw error
        }
        handle = env
        var info = MDB_envinfo()
        if mdb_env_info(env, &info) == 0 { self.mapSizeBytes = info.me_mapsize }
    }

    deinit { mdb_env_close(handle) }

    /// Grows the map to `bytes`. Only the writer thread may call this, and only between
    /// transactions.
    func setMapSize(_ bytes: Int) throws(LMDBError) {
        try check(mdb_env_set_mapsize(handle, bytes), "mdb_env_set_mapsize")
        mapSizeBytes = bytes
    }

    /// Opens the named database, creating it when `create` is set (read-write only).
    public func openDatabase(_ name: String, create: Bool) throws(LMDBError) -> MDB_dbi {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn), "mdb_txn_begin")
        var dbi: MDB_dbi = 0
        let flags = create && !readOnly ? UInt32(MDB_CREATE) : 0
        let openCode = mdb_dbi_open(txn, name, flags, &dbi)
        guard openCode == 0 else {
            mdb_txn_abort(txn)
            throw LMDBError(returnCode: openCode, operation: "mdb_dbi_open \(name)")
        }
        try check(mdb_txn_commit(txn), "mdb_txn_commit")
        return dbi
    }

    /// Runs `body` in a read-only transaction (a consistent snapshot; never blocks the writer).
    public func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, UInt32(MDB_RDONLY), &txn), "mdb_txn_begin (read)")
        defer { mdb_txn_abort(txn) }
        return try body(Transaction(handle: txn!))
    }

    /// Runs `body` in a write transaction and commits it durably; aborts when `body` throws.
    /// Only the log's writer thread calls this.
    func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        precondition(!readOnly, "write transaction on a read-only environment")
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, 0, &txn), "mdb_txn_begin (write)")
        let result: T
        do {
            result = try body(Transaction(handle: txn!))
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        try check(mdb_txn_commit(txn), "mdb_txn_commit")
        coverLastPage()
        return result
    }

    /// Makes the data file at least as long as the pages the newest meta page counts. LMDB
    /// counts pages a transaction allocated and freed again without writing them, so after
    /// such a commit the file can end before `last page + 1`; a reader would then take it for
    /// a truncated file (`EventLog` refuses those, since reading past the end faults). Extending
    /// the file (sparse, with zeroes) changes no page LMDB uses. Best effort: a failure here only
    /// leaves what LMDB left.
    private func coverLastPage() {
        var descriptor: Int32 = -1
        guard mdb_env_get_fd(handle, &descriptor) == 0 else { return }
        let info = info()
        let neededBytes = off_t((info.lastPageNumber + 1) * info.pageSizeBytes)
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_size < neededBytes else { return }
        _ = ftruncate(descriptor, neededBytes)
    }

    /// Statistics of the whole environment (map size, pages used).
    public func info() -> (mapSizeBytes: Int, lastPageNumber: Int, pageSizeBytes: Int) {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        mdb_env_info(handle, &info)
        mdb_env_stat(handle, &stat)
        return (info.me_mapsize, info.me_last_pgno, Int(stat.ms_psize))
    }
}

/// A transaction handle, valid only inside the closure that received it.
public struct Transaction {
    let handle: OpaquePointer

    /// The value at `key`, or `nil`. The bytes point into the map and are valid only inside the
    /// transaction.
    public func get(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws(LMDBError) -> UnsafeRawBufferPointer? {
        var keyValue = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var value = MDB_val()
        let code = mdb_get(handle, dbi, &keyValue, &value)
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_get")
        return UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size)
    }

    /// Stores `value` at `key`. `append` requires `key` to sort after every key already stored.
    public func put(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, append: Bool = false) throws(LMDBError) {
        var keyValue = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var dataValue = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try check(mdb_put(handle, dbi, &keyValue, &dataValue, append ? UInt32(MDB_APPEND) : 0), "mdb_put")
    }

    /// Deletes `key`; returns false when it was not there.
    @discardableResult
    public func delete(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws(LMDBError) -> Bool {
        var keyValue = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let code = mdb_del(handle, dbi, &keyValue, nil)
        if code == MDB_NOTFOUND { return false }
        try check(code, "mdb_del")
        return true
    }

    /// Entries in key order from the first key ≥ `start` (or from the first, or backwards from
    /// the last); `body` returns false to stop.
    public func scan(
        _ dbi: MDB_dbi, from start: UnsafeRawBufferPointer?, backwards: Bool = false,
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, dbi, &cursor), "mdb_cursor_open")
        defer { mdb_cursor_close(cursor) }
        var key = MDB_val()
        var value = MDB_val()
        var code: Int32
        if let start {
            key = MDB_val(mv_size: start.count, mv_data: UnsafeMutableRawPointer(mutating: start.baseAddress))
            code = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE)
        } else {
            code = mdb_cursor_get(cursor, &key, &value, backwards ? MDB_LAST : MDB_FIRST)
        }
        while code == 0 {
            let keepGoing = try body(
                UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size),
                UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
            if !keepGoing { return }
            code = mdb_cursor_get(cursor, &key, &value, backwards ? MDB_PREV : MDB_NEXT)
        }
        if code != MDB_NOTFOUND { try check(code, "mdb_cursor_get") }
    }

    /// Number of entries and pages of a database.
    public func statistics(_ dbi: MDB_dbi) throws(LMDBError) -> (entries: Int, pages: Int) {
        var stat = MDB_stat()
        try check(mdb_stat(handle, dbi, &stat), "mdb_stat")
        return (stat.ms_entries, stat.ms_branch_pages + stat.ms_leaf_pages + stat.ms_overflow_pages)
    }
}
