import CLMDB
import SnapbackCore

/// A named table beside the events in the log's environment (the data plane's bitmap chunks).
/// It is written only together with events, in the same durable commit, and read in key order:
/// callers see keys and values, never LMDB's handles or transactions.
public struct LogTable: Sendable, Hashable {
    public let name: String
    let database: MDB_dbi
}

/// A change to a ``LogTable``, made atomically with the events of its append.
public enum TableWrite: Sendable, Equatable {
    /// Stores `value` under `key` (replacing what was there).
    case put(key: [UInt8], value: [UInt8])
    /// Removes every entry whose key starts with `prefix`.
    case deletePrefix([UInt8])
}

extension EventLog {
    /// Opens table `name`, creating it when the log is writable.
    /// - Throws: ``LogError/lmdb(_:)`` (a read-only log without the table: `notFound`).
    public func table(_ name: String) throws(LogError) -> LogTable {
        LogTable(name: name, database: try openDatabase(name))
    }

    /// Appends `events` (possibly none) and makes `writes` in the same durable commit (group
    /// committed like any append). `callers` is parallel to `events`, or empty when none has a
    /// caller. On error neither the events nor the writes were recorded.
    public func append(
        _ events: [Event], callers: [Caller?] = [], timestampMilliseconds: Int64, writing writes: [(table: LogTable, write: TableWrite)]
    ) throws(LogError) -> AppendReceipt {
        if writes.isEmpty && !events.isEmpty { return try append(events, callers: callers, timestampMilliseconds: timestampMilliseconds) }
        return try append(events, callers: callers, timestampMilliseconds: timestampMilliseconds) { transaction in
            for (table, write) in writes {
                switch write {
                case let .put(key, value):
                    try key.withUnsafeBytes { key in try value.withUnsafeBytes { try transaction.put(table.database, key: key, value: $0) } }
                case let .deletePrefix(prefix):
                    var keys: [[UInt8]] = []
                    try prefix.withUnsafeBytes { start in
                        try transaction.scan(table.database, from: start) { key, _ in
                            guard key.starts(with: prefix) else { return false }
                            keys.append(Array(key))
                            return true
                        }
                    }
                    for key in keys { try key.withUnsafeBytes { _ = try transaction.delete(table.database, key: $0) } }
                }
            }
        }
    }

    /// Calls `body` with every entry of `table` whose key starts with `prefix`, in key order, from
    /// one consistent snapshot (never blocks the writer).
    public func scan(
        _ table: LogTable, prefix: [UInt8], _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Void
    ) throws {
        try environment.read { transaction in
            try prefix.withUnsafeBytes { start in
                try transaction.scan(table.database, from: start) { key, value in
                    guard key.starts(with: prefix) else { return false }
                    try body(key, value)
                    return true
                }
            }
        }
    }

    /// The directory holding the log's LMDB environment.
    public var directory: String { environment.directory }
}
