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
    /// NBD_ENOTSUP (95): a fast zero that would be no faster than writing zeroes.
    case notSupported

    /// The NBD protocol's error value.
    public var nbdErrorValue: UInt32 {
        switch self {
        case .io: 5
        case .permission: 1
        case .invalid: 22
        case .noSpace: 28
        case .notSupported: 95
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
    /// Fills `buffer` with the bytes at `offset` (the range is within the export). The server
    /// passes the reply's own memory, so the data is copied once, from the disk into the reply.
    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(NBDIOError)
    /// Writes `buffer` at `offset`; durable before returning when `fua` is set. The server passes
    /// the payload where it was received, without copying it.
    func write(offset: UInt64, from buffer: UnsafeRawBufferPointer, fua: Bool) throws(NBDIOError)
    /// Writes `buffer` at `offset` if that can be done at once: a plain write that waits for no
    /// sync, no copy and no other request. The server calls it on its event loop before handing a
    /// write without FUA to its thread pool, and hands the write over when it returns false (for
    /// any reason, errors included: `write` then makes the whole write, or reports the error).
    func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool
    /// Makes every completed write durable.
    func flush() throws(NBDIOError)
    /// Discards the range (reads may then return anything, zeroes in practice).
    func trim(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError)
    /// Writes zeroes over the range.
    func writeZeroes(offset: UInt64, length: UInt32, fua: Bool) throws(NBDIOError)
    /// Makes the range read as zeroes (NBD_CMD_WRITE_ZEROES): `mayPunch` (no NO_HOLE flag) lets
    /// the export deallocate it; `fast` (NBD_CMD_FLAG_FAST_ZERO) asks it to throw `.notSupported`,
    /// changing nothing, when the zeroing would be no faster than writing zeroes.
    func zero(offset: UInt64, length: UInt32, fua: Bool, mayPunch: Bool, fast: Bool) throws(NBDIOError)
    /// The meta contexts the export offers besides `base:allocation` (which every export offers),
    /// by full name, e.g. `snapback:dirty:m0`.
    var metaContextNames: [String] { get }
    /// The extents of the meta context `context` (`base:allocation` or one of
    /// `metaContextNames`) from `offset` on: at least one, covering at most `lengthBytes` bytes
    /// (a prefix of the range when the answer would be long). The range is within the export.
    func blockStatus(context: String, offset: UInt64, lengthBytes: UInt32) throws(NBDIOError) -> [NBDExtent]
}

extension NBDExport {
    /// By default every write goes to the thread pool.
    public func writeImmediately(offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool { false }

    /// By default zeroes are written (`writeZeroes`), so a fast zero is refused.
    public func zero(offset: UInt64, length: UInt32, fua: Bool, mayPunch: Bool, fast: Bool) throws(NBDIOError) {
        if fast { throw .notSupported }
        try writeZeroes(offset: offset, length: length, fua: fua)
    }

    /// By default only `base:allocation`.
    public var metaContextNames: [String] { [] }

    /// By default everything is allocated data (flags 0), the answer that is always true.
    public func blockStatus(context: String, offset: UInt64, lengthBytes: UInt32) throws(NBDIOError) -> [NBDExtent] {
        guard context == NBDMetaContextName.baseAllocation else { throw .invalid }
        return [NBDExtent(lengthBytes: lengthBytes, flags: 0)]
    }
}

/// The set of exports, looked up by name at every connection.
public protocol NBDExportProvider: Sendable {
    /// Export names for NBD_OPT_LIST, with an optional description each.
    func exportNames() -> [(name: String, description: String)]
    /// The export called `name`, or `nil` when there is none (NBD_REP_ERR_UNKNOWN).
    func export(named name: String) -> (any NBDExport)?
}
