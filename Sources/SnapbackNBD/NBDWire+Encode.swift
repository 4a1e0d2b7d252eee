// Encoding of what the server sends: the greeting, option replies and their data, the
// NBD_OPT_EXPORT_NAME reply, and simple reply headers. Every encoder checks its own output length
// (paired with the decoder's checks on the other side).

/// Encoders of the messages the server sends. Each returns the exact bytes for the wire.
public enum NBDWireEncoder {
    /// The greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags (18 bytes).
    public static func greeting(flags: NBDHandshakeFlags) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(NBDHeaderSize.greetingBytes)
        bytes.appendBigEndian(NBDMagic.greeting)
        bytes.appendBigEndian(NBDMagic.option)
        bytes.appendBigEndian(flags.rawValue)
        precondition(bytes.count == NBDHeaderSize.greetingBytes)
        return bytes
    }

    /// One option reply: magic, option, reply type, data length, data.
    /// - Precondition: `data` is at most `UInt32.max` bytes.
    public static func optionReply(option: NBDOption, type: NBDOptionReplyType, data: [UInt8] = []) -> [UInt8] {
        precondition(data.count <= UInt32.max, "option reply data too long")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(NBDHeaderSize.optionReplyBytes + data.count)
        bytes.appendBigEndian(NBDMagic.optionReply)
        bytes.appendBigEndian(option.rawValue)
        bytes.appendBigEndian(type.rawValue)
        bytes.appendBigEndian(UInt32(data.count))
        bytes.append(contentsOf: data)
        precondition(bytes.count == NBDHeaderSize.optionReplyBytes + data.count)
        return bytes
    }

    /// An error option reply with a message for humans (UTF-8, cut to `NBDLimits.stringBytesMax`).
    /// - Precondition: `type` is an error type.
    public static func optionError(option: NBDOption, type: NBDOptionReplyType, message: String) -> [UInt8] {
        precondition(type.isError, "optionError needs an error reply type")
        return optionReply(option: option, type: type, data: Array(message.utf8.prefix(NBDLimits.stringBytesMax)))
    }

    /// The data of an `NBD_REP_SERVER` reply: 32-bit name length, name, description (cut to
    /// `NBDLimits.stringBytesMax` bytes).
    public static func serverReplyData(name: String, description: String) -> [UInt8] {
        let nameBytes = Array(name.utf8)
        precondition(nameBytes.count <= UInt32.max, "export name too long")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + nameBytes.count + min(description.utf8.count, NBDLimits.stringBytesMax))
        bytes.appendBigEndian(UInt32(nameBytes.count))
        bytes.append(contentsOf: nameBytes)
        bytes.append(contentsOf: description.utf8.prefix(NBDLimits.stringBytesMax))
        return bytes
    }

    /// The data of `NBD_REP_INFO` / `NBD_INFO_EXPORT`: type, size in bytes, transmission flags
    /// (12 bytes).
    public static func infoExportData(sizeBytes: UInt64, flags: NBDTransmissionFlags) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(12)
        bytes.appendBigEndian(NBDInfoType.export.rawValue)
        bytes.appendBigEndian(sizeBytes)
        bytes.appendBigEndian(flags.rawValue)
        precondition(bytes.count == 12)
        return bytes
    }

    /// The data of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`: type, minimum, preferred and maximum
    /// block sizes in bytes (14 bytes).
    /// - Precondition: the sizes obey the protocol: minimum a power of two, preferred a power of
    ///   two at least max(minimum, 512), maximum at least preferred and a multiple of minimum.
    public static func infoBlockSizeData(minimumBytes: UInt32, preferredBytes: UInt32, maximumBytes: UInt32) -> [UInt8] {
        precondition(minimumBytes.nonzeroBitCount == 1 && preferredBytes.nonzeroBitCount == 1)
        precondition(preferredBytes >= max(minimumBytes, 512) && maximumBytes >= preferredBytes)
        precondition(maximumBytes % minimumBytes == 0)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(14)
        bytes.appendBigEndian(NBDInfoType.blockSize.rawValue)
        bytes.appendBigEndian(minimumBytes)
        bytes.appendBigEndian(preferredBytes)
        bytes.appendBigEndian(maximumBytes)
        precondition(bytes.count == 14)
        return bytes
    }

    /// The data of `NBD_REP_INFO` carrying a string: `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
    /// - Precondition: `type` is `.name` or `.description`.
    public static func infoStringData(type: NBDInfoType, value: String) -> [UInt8] {
        precondition(type == .name || type == .description, "not a string info type")
        var bytes: [UInt8] = []
        bytes.appendBigEndian(type.rawValue)
        bytes.append(contentsOf: value.utf8.prefix(NBDLimits.stringBytesMax))
        return bytes
    }

    /// The reply to a successful NBD_OPT_EXPORT_NAME: size in bytes, transmission flags, and 124
    /// zero bytes unless the client negotiated NO_ZEROES (10 or 134 bytes).
    public static func exportNameReply(sizeBytes: UInt64, flags: NBDTransmissionFlags, noZeroes: Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(10 + NBDHeaderSize.exportNamePaddingBytes)
        bytes.appendBigEndian(sizeBytes)
        bytes.appendBigEndian(flags.rawValue)
        if !noZeroes { bytes.append(contentsOf: repeatElement(0, count: NBDHeaderSize.exportNamePaddingBytes)) }
        precondition(bytes.count == (noZeroes ? 10 : 10 + NBDHeaderSize.exportNamePaddingBytes))
        return bytes
    }

    /// A simple reply header: magic, error, cookie (16 bytes). A successful READ's data follows it.
    public static func simpleReplyHeader(error: NBDErrorValue, cookie: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(NBDHeaderSize.simpleReplyBytes)
        bytes.appendBigEndian(NBDMagic.simpleReply)
        bytes.appendBigEndian(error.rawValue)
        bytes.appendBigEndian(cookie)
        precondition(bytes.count == NBDHeaderSize.simpleReplyBytes)
        return bytes
    }
}

extension NBDWireEncoder {
    /// The data of an `NBD_REP_META_CONTEXT` reply: 32-bit context id, then the context's name.
    public static func metaContextReplyData(id: UInt32, name: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + name.utf8.count)
        bytes.appendBigEndian(id)
        bytes.append(contentsOf: name.utf8)
        return bytes
    }

    /// A structured reply chunk header: magic, flags, type, cookie, payload length (20 bytes).
    public static func structuredReplyHeader(flags: NBDReplyFlags, type: NBDReplyType, cookie: UInt64, payloadBytes: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(NBDHeaderSize.structuredReplyBytes)
        bytes.appendBigEndian(NBDMagic.structuredReply)
        bytes.appendBigEndian(flags.rawValue)
        bytes.appendBigEndian(type.rawValue)
        bytes.appendBigEndian(cookie)
        bytes.appendBigEndian(payloadBytes)
        precondition(bytes.count == NBDHeaderSize.structuredReplyBytes)
        return bytes
    }

    /// The header of a whole read's `NBD_REPLY_TYPE_OFFSET_DATA` chunk (DONE set), with its
    /// 64-bit offset (28 bytes); `lengthBytes` bytes of data follow it.
    public static func offsetDataHeader(cookie: UInt64, offset: UInt64, lengthBytes: UInt32) -> [UInt8] {
        precondition(lengthBytes > 0 && lengthBytes <= UInt32.max - 8, "an OFFSET_DATA chunk carries data")
        var bytes = structuredReplyHeader(flags: .done, type: .offsetData, cookie: cookie, payloadBytes: 8 + lengthBytes)
        bytes.appendBigEndian(offset)
        return bytes
    }

    /// The reply that ends a successful request without data: `NBD_REPLY_TYPE_NONE` with DONE.
    public static func structuredDone(cookie: UInt64) -> [UInt8] {
        structuredReplyHeader(flags: .done, type: .none, cookie: cookie, payloadBytes: 0)
    }

    /// A failed request's reply: `NBD_REPLY_TYPE_ERROR` with DONE, the error and a message for
    /// humans (cut to `NBDLimits.stringBytesMax` bytes).
    /// - Precondition: `error` is not `.none`.
    public static func structuredError(cookie: UInt64, error: NBDErrorValue, message: String) -> [UInt8] {
        precondition(error != .none, "an error chunk needs an error")
        let text = Array(message.utf8.prefix(NBDLimits.stringBytesMax))
        var bytes = structuredReplyHeader(flags: .done, type: .error, cookie: cookie, payloadBytes: UInt32(6 + text.count))
        bytes.appendBigEndian(error.rawValue)
        bytes.appendBigEndian(UInt16(text.count))
        bytes.append(contentsOf: text)
        return bytes
    }

    /// One `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: the context id and its extents.
    /// - Precondition: 1 to `NBDLimits.blockStatusExtentsMax` extents, none empty.
    public static func blockStatusChunk(cookie: UInt64, done: Bool, contextID: UInt32, extents: [NBDExtent]) -> [UInt8] {
        precondition(!extents.isEmpty && extents.count <= NBDLimits.blockStatusExtentsMax, "extent count out of bounds")
        var bytes = structuredReplyHeader(
            flags: done ? .done : [], type: .blockStatus, cookie: cookie, payloadBytes: UInt32(4 + 8 * extents.count))
        bytes.reserveCapacity(NBDHeaderSize.structuredReplyBytes + 4 + 8 * extents.count)
        bytes.appendBigEndian(contextID)
        for extent in extents {
            precondition(extent.lengthBytes > 0, "an empty extent")
            bytes.appendBigEndian(extent.lengthBytes)
            bytes.appendBigEndian(extent.flags)
        }
        return bytes
    }
}

extension [UInt8] {
    /// Appends an integer in network byte order.
    @inline(__always)
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}
