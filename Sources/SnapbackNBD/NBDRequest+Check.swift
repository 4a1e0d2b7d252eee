// Validation of a parsed transmission request against the export it targets: the pure decision of
// what the server does with it, before any export call.

/// What a valid request asks the export to do. Offsets and lengths are in bytes and lie within
/// the export.
public enum NBDOperation: Sendable, Hashable {
    /// Read `lengthBytes` bytes at `offset` (at most `NBDLimits.payloadBytesMax`).
    case read(offset: UInt64, lengthBytes: UInt32)
    /// Write the request's payload (`lengthBytes` bytes) at `offset`; durable first when `fua`.
    case write(offset: UInt64, lengthBytes: UInt32, fua: Bool)
    /// Make every completed write durable.
    case flush
    /// Discard the range.
    case trim(offset: UInt64, lengthBytes: UInt32, fua: Bool)
    /// Write zeroes over the range; `mayPunch` unless NO_HOLE was set, `fast` for FAST_ZERO.
    case writeZeroes(offset: UInt64, lengthBytes: UInt32, fua: Bool, mayPunch: Bool, fast: Bool)
    /// Answer the extents of the selected meta contexts over the range (`requestOne`: one each).
    case blockStatus(offset: UInt64, lengthBytes: UInt32, requestOne: Bool)
    /// Close the connection (NBD_CMD_DISC); no reply.
    case disconnect
}

/// The server's decision on one request.
public enum NBDRequestCheck: Sendable, Hashable {
    /// Serve it.
    case accept(NBDOperation)
    /// Answer with this error and leave the export untouched (a WRITE's payload is still consumed).
    case reject(NBDErrorValue)
}

extension NBDRequest {
    /// Decides what to do with this request for an export of `exportSizeBytes` bytes.
    ///
    /// Rejections, in order: an unknown or unsupported command, or a flag not valid for the command
    /// → EINVAL; a WRITE, TRIM or WRITE_ZEROES on a read-only export → EPERM; a FLUSH with a
    /// non-zero offset or length, or a READ longer than `NBDLimits.payloadBytesMax` → EINVAL; a
    /// range that overflows or ends past the export → ENOSPC for WRITE and WRITE_ZEROES (as the
    /// specification recommends), EINVAL for READ, TRIM and BLOCK_STATUS. BLOCK_STATUS is
    /// EINVAL too when no meta context is selected (`metaContextsSelected` false) or its length
    /// is zero.
    public func check(exportSizeBytes: UInt64, readOnly: Bool, metaContextsSelected: Bool = false) -> NBDRequestCheck {
        let allowedFlags: NBDCommandFlags
        switch command {
        case .disconnect:
            // Whatever the fields say, the client is leaving.
            return .accept(.disconnect)
        case .read, .write, .flush, .trim:
            allowedFlags = [.fua]
        case .writeZeroes:
            // FAST_ZERO is advertised on every writable export; a read-only one gets EPERM below.
            allowedFlags = [.fua, .noHole, .fastZero]
        case .blockStatus:
            guard metaContextsSelected, lengthBytes > 0 else { return .reject(.invalid) }
            allowedFlags = [.fua, .requestOne]
        default:
            return .reject(.invalid)
        }
        guard allowedFlags.isSuperset(of: flags) else { return .reject(.invalid) }
        let fua = flags.contains(.fua)
        if readOnly, command == .write || command == .trim || command == .writeZeroes {
            return .reject(.permission)
        }
        if command == .flush {
            guard offset == 0, lengthBytes == 0 else { return .reject(.invalid) }
            return .accept(.flush)
        }
        if command == .read, lengthBytes > NBDLimits.payloadBytesMax { return .reject(.invalid) }
        // offset + length may overflow UInt64: compare against what is left instead.
        guard offset <= exportSizeBytes, UInt64(lengthBytes) <= exportSizeBytes - offset else {
            return .reject(command == .write || command == .writeZeroes ? .noSpace : .invalid)
        }
        switch command {
        case .read: return .accept(.read(offset: offset, lengthBytes: lengthBytes))
        case .write: return .accept(.write(offset: offset, lengthBytes: lengthBytes, fua: fua))
        case .trim: return .accept(.trim(offset: offset, lengthBytes: lengthBytes, fua: fua))
        case .writeZeroes:
            return .accept(.writeZeroes(
                offset: offset, lengthBytes: lengthBytes, fua: fua, mayPunch: !flags.contains(.noHole), fast: flags.contains(.fastZero)))
        case .blockStatus: return .accept(.blockStatus(offset: offset, lengthBytes: lengthBytes, requestOne: flags.contains(.requestOne)))
        default: preconditionFailure("command \(command) passed the command switch above")
        }
    }
}
