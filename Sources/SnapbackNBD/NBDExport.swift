/// Why an NBD request failed; each case maps to the NBD error value the client receives.
public enum NBDIOError: Error, Sendable, Equatable {
    /// NBD_EIO (5): the device could not do it (a faulted volume, an I/O error).
    case io
    /// NBD_EPERM (1): the export is read-only.
    case permission
    /// NBD_EINVAL (22): the request is outside the export or otherwise invalid.
    case invalid
    /// NBD_ENOSPC (28): no space left.
    case noSpace

    /// The NBD protocol's error value.
    public var nbdErrorValue: UInt32 {
        switch self {
        case .io: 5
        case .permission: 1
        case .invalid: 22
        case .noSpace: 28
        }
    }
}

/// One export: a block device that the NBD server reads and writes on a client's behalf.
/// Calls may block on disk I/O; the server makes them off its event loops.
public protocol NBDExport: Sendable {
    /// The size in bytes, fixed while a client is connected.
    var sizeBytes: UInt64 { get }
    /// True when writes, trims and write-zeroes must be refused with EPERM.
    var readOnly: Bool { get }
    /// Reads `length` bytes at `offset` (the range is within the export).
    func read(offset: UInt64, length: UInt32) throws(NBDIOError) -> [UInt8]
    /// Writes `bytes` at `offset`; durable before returning when `fua` is set.
    func write(offset: UInt64, bytes: [UInt8], fua: Bool) throws(NBDIOError)
    /// Makes every completed write durable.
    func flush() throws(NBDIOError)
    /// Discards the range (reads may then return anything, zeroes in practice).
    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError)
    /// Writes zeroes over the range.
    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError)
}

/// The set of exports, looked up by name at every connection.
public protocol NBDExportProvider: Sendable {
    /// Export names for NBD_OPT_LIST, with an optional description each.
    func exportNames() -> [(name: String, description: String)]
    /// The export called `name`, or `nil` when there is none (NBD_REP_ERR_UNKNOWN).
    func export(named name: String) -> (any NBDExport)?
}
