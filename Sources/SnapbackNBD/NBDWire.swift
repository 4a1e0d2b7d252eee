// The NBD wire vocabulary: magics, limits, option and command codes, flags, reply types and error
// values, as the NBD protocol specification (NetworkBlockDevice/nbd, doc/proto.md) defines them.
// Everything on the wire is big-endian.

/// The magic numbers that frame every NBD message.
public enum NBDMagic {
    /// `NBDMAGIC`: the first 8 bytes the server sends.
    public static let greeting: UInt64 = 0x4E42_444D_4147_4943
    /// `IHAVEOPT`: follows the greeting, and starts every option request the client sends.
    public static let option: UInt64 = 0x4948_4156_454F_5054
    /// Starts every option reply the server sends during the handshake.
    public static let optionReply: UInt64 = 0x0003_E889_0455_65A9
    /// Starts every transmission request (`NBD_REQUEST_MAGIC`).
    public static let request: UInt32 = 0x2560_9513
    /// Starts every simple reply (`NBD_SIMPLE_REPLY_MAGIC`).
    public static let simpleReply: UInt32 = 0x6744_6698
    /// Starts every structured reply chunk (`NBD_STRUCTURED_REPLY_MAGIC`), sent once the client
    /// has negotiated NBD_OPT_STRUCTURED_REPLY.
    public static let structuredReply: UInt32 = 0x668E_33EF
}

/// The bounds this server puts on what a client may send.
public enum NBDLimits {
    /// The largest data payload of one request, in bytes (32 MiB): a WRITE longer than this closes
    /// the connection, a READ longer than this gets EINVAL. Also the advertised maximum block size.
    public static let payloadBytesMax: UInt32 = 32 * 1024 * 1024
    /// The largest option data a client may send during the handshake, in bytes (64 KiB); a longer
    /// option closes the connection before any of its data is read.
    public static let optionDataBytesMax: UInt32 = 64 * 1024
    /// The longest export name or other protocol string, in bytes (the specification's MUST).
    public static let stringBytesMax: Int = 4096
    /// The most options one connection may send before it is dropped as a denial of service.
    public static let optionsPerConnectionMax: Int = 1024
    /// The advertised minimum block size, in bytes: any alignment is served.
    public static let blockSizeMinimumBytes: UInt32 = 1
    /// The advertised preferred block size, in bytes.
    public static let blockSizePreferredBytes: UInt32 = 4096
    /// The most meta-context queries one NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT may carry.
    public static let metaContextQueriesMax: Int = 256
    /// The most extents one NBD_REPLY_TYPE_BLOCK_STATUS chunk carries (512 KiB of descriptors);
    /// an answer that would need more covers only a prefix of the request, as the protocol allows.
    public static let blockStatusExtentsMax: Int = 65536
}

/// The fixed sizes of NBD message headers, in bytes.
public enum NBDHeaderSize {
    /// Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags.
    public static let greetingBytes = 18
    /// Client flags sent in answer to the greeting.
    public static let clientFlagsBytes = 4
    /// Option request header: IHAVEOPT, option, data length.
    public static let optionRequestBytes = 16
    /// Option reply header: magic, option, reply type, data length.
    public static let optionReplyBytes = 20
    /// Transmission request header: magic, flags, type, cookie, offset, length.
    public static let requestBytes = 28
    /// Simple reply header: magic, error, cookie.
    public static let simpleReplyBytes = 16
    /// Structured reply chunk header: magic, flags, type, cookie, payload length.
    public static let structuredReplyBytes = 20
    /// Zero padding after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated.
    public static let exportNamePaddingBytes = 124
}

/// Handshake flags the server sends after the greeting magics (16 bits).
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_FLAG_FIXED_NEWSTYLE`: the server speaks fixed newstyle negotiation.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_NO_ZEROES`: the server can omit the 124 zero bytes after NBD_OPT_EXPORT_NAME.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// Client flags the client sends in answer to the greeting (32 bits).
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt32
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`: required by this server.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_C_NO_ZEROES`: omit the 124 zero bytes after NBD_OPT_EXPORT_NAME.
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)
    /// Every flag this server knows; any other bit closes the connection.
    public static let known: NBDClientFlags = [.fixedNewstyle, .noZeroes]
}

/// Transmission flags that describe an export to the client (16 bits).
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_FLAG_HAS_FLAGS`: always set.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_READ_ONLY`: writes, trims and write-zeroes are refused with EPERM.
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    /// `NBD_FLAG_SEND_FLUSH`: NBD_CMD_FLUSH is supported.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    /// `NBD_FLAG_SEND_FUA`: NBD_CMD_FLAG_FUA is honoured.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    /// `NBD_FLAG_ROTATIONAL`: a hint that the medium is rotational.
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    /// `NBD_FLAG_SEND_TRIM`: NBD_CMD_TRIM is supported.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    /// `NBD_FLAG_SEND_WRITE_ZEROES`: NBD_CMD_WRITE_ZEROES is supported.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// `NBD_FLAG_SEND_DF`: only with structured replies; never set by this server.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// `NBD_FLAG_CAN_MULTI_CONN`: flushes are visible across connections to the same export.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    /// `NBD_FLAG_SEND_RESIZE`: never set by this server.
    public static let sendResize = NBDTransmissionFlags(rawValue: 1 << 9)
    /// `NBD_FLAG_SEND_CACHE`: never set by this server.
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    /// `NBD_FLAG_SEND_FAST_ZERO`: NBD_CMD_FLAG_FAST_ZERO is honoured on WRITE_ZEROES (ENOTSUP
    /// when zeroing would be no faster than writing).
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)

    /// The flags this server advertises for an export: everything it serves, and READ_ONLY for a
    /// read-only export (which then does not advertise TRIM, WRITE_ZEROES and FAST_ZERO either).
    public static func advertised(readOnly: Bool) -> NBDTransmissionFlags {
        if readOnly {
            return [.hasFlags, .readOnly, .sendFlush, .sendFUA, .canMultiConn]
        }
        return [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .canMultiConn]
    }
}

/// An option code sent by the client during the handshake (32 bits). Unknown codes are kept.
public struct NBDOption: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public let rawValue: UInt32
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `NBD_OPT_EXPORT_NAME` (1): choose an export and enter transmission; cannot report errors.
    public static let exportName = NBDOption(rawValue: 1)
    /// `NBD_OPT_ABORT` (2): end the session.
    public static let abort = NBDOption(rawValue: 2)
    /// `NBD_OPT_LIST` (3): list the exports.
    public static let list = NBDOption(rawValue: 3)
    /// `NBD_OPT_PEEK_EXPORT` (4): withdrawn.
    public static let peekExport = NBDOption(rawValue: 4)
    /// `NBD_OPT_STARTTLS` (5): upgrade the connection to TLS (when the server has TLS configured).
    public static let startTLS = NBDOption(rawValue: 5)
    /// `NBD_OPT_INFO` (6): describe an export without entering transmission.
    public static let info = NBDOption(rawValue: 6)
    /// `NBD_OPT_GO` (7): describe an export and enter transmission.
    public static let go = NBDOption(rawValue: 7)
    /// `NBD_OPT_STRUCTURED_REPLY` (8): structured replies from then on (no data).
    public static let structuredReply = NBDOption(rawValue: 8)
    /// `NBD_OPT_LIST_META_CONTEXT` (9): list the meta contexts matching some queries.
    public static let listMetaContext = NBDOption(rawValue: 9)
    /// `NBD_OPT_SET_META_CONTEXT` (10): select meta contexts for NBD_CMD_BLOCK_STATUS (needs
    /// structured replies).
    public static let setMetaContext = NBDOption(rawValue: 10)
    /// `NBD_OPT_EXTENDED_HEADERS` (11): not supported.
    public static let extendedHeaders = NBDOption(rawValue: 11)

    /// The specification's name for the value.

    public var description: String {
        switch self {
        case .exportName: "NBD_OPT_EXPORT_NAME"
        case .abort: "NBD_OPT_ABORT"
        case .list: "NBD_OPT_LIST"
        case .peekExport: "NBD_OPT_PEEK_EXPORT"
        case .startTLS: "NBD_OPT_STARTTLS"
        case .info: "NBD_OPT_INFO"
        case .go: "NBD_OPT_GO"
        case .structuredReply: "NBD_OPT_STRUCTURED_REPLY"
        case .listMetaContext: "NBD_OPT_LIST_META_CONTEXT"
        case .setMetaContext: "NBD_OPT_SET_META_CONTEXT"
        case .extendedHeaders: "NBD_OPT_EXTENDED_HEADERS"
        default: "option \(rawValue)"
        }
    }
}

/// The type of an option reply (32 bits); error types have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt32
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `NBD_REP_ACK` (1): the option succeeded, or a list ended.
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// `NBD_REP_SERVER` (2): one export in an NBD_OPT_LIST answer.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// `NBD_REP_INFO` (3): one piece of information about an export.
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// `NBD_REP_META_CONTEXT` (4).
    public static let metaContext = NBDOptionReplyType(rawValue: 4)
    /// `NBD_REP_ERR_UNSUP`: the option is unknown to this server.
    public static let errorUnsupported = NBDOptionReplyType(rawValue: 1 << 31 | 1)
    /// `NBD_REP_ERR_POLICY`: known, but forbidden by policy.
    public static let errorPolicy = NBDOptionReplyType(rawValue: 1 << 31 | 2)
    /// `NBD_REP_ERR_INVALID`: known, but its data is malformed.
    public static let errorInvalid = NBDOptionReplyType(rawValue: 1 << 31 | 3)
    /// `NBD_REP_ERR_PLATFORM`.
    public static let errorPlatform = NBDOptionReplyType(rawValue: 1 << 31 | 4)
    /// `NBD_REP_ERR_TLS_REQD`.
    public static let errorTLSRequired = NBDOptionReplyType(rawValue: 1 << 31 | 5)
    /// `NBD_REP_ERR_UNKNOWN`: no export has that name.
    public static let errorUnknown = NBDOptionReplyType(rawValue: 1 << 31 | 6)
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    public static let errorShutdown = NBDOptionReplyType(rawValue: 1 << 31 | 7)
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`.
    public static let errorBlockSizeRequired = NBDOptionReplyType(rawValue: 1 << 31 | 8)
    /// `NBD_REP_ERR_TOO_BIG`.
    public static let errorTooBig = NBDOptionReplyType(rawValue: 1 << 31 | 9)

    /// True for the error reply types (bit 31 set).
    public var isError: Bool { rawValue & (1 << 31) != 0 }
}

/// The type of an `NBD_REP_INFO` item (16 bits), also what a client asks for in INFO and GO.
public struct NBDInfoType: RawRepresentable, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_INFO_EXPORT` (0): size and transmission flags; always sent.
    public static let export = NBDInfoType(rawValue: 0)
    /// `NBD_INFO_NAME` (1): the canonical export name.
    public static let name = NBDInfoType(rawValue: 1)
    /// `NBD_INFO_DESCRIPTION` (2): a description for humans.
    public static let description = NBDInfoType(rawValue: 2)
    /// `NBD_INFO_BLOCK_SIZE` (3): minimum, preferred and maximum block sizes.
    public static let blockSize = NBDInfoType(rawValue: 3)
}

/// A transmission command code (16 bits). Unknown codes are kept (and answered with EINVAL).
public struct NBDCommand: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_CMD_READ` (0).
    public static let read = NBDCommand(rawValue: 0)
    /// `NBD_CMD_WRITE` (1): the only command followed by a payload.
    public static let write = NBDCommand(rawValue: 1)
    /// `NBD_CMD_DISC` (2): soft disconnect; no reply.
    public static let disconnect = NBDCommand(rawValue: 2)
    /// `NBD_CMD_FLUSH` (3).
    public static let flush = NBDCommand(rawValue: 3)
    /// `NBD_CMD_TRIM` (4).
    public static let trim = NBDCommand(rawValue: 4)
    /// `NBD_CMD_CACHE` (5): not supported.
    public static let cache = NBDCommand(rawValue: 5)
    /// `NBD_CMD_WRITE_ZEROES` (6).
    public static let writeZeroes = NBDCommand(rawValue: 6)
    /// `NBD_CMD_BLOCK_STATUS` (7): extents of the selected meta contexts (needs structured replies
    /// and NBD_OPT_SET_META_CONTEXT).
    public static let blockStatus = NBDCommand(rawValue: 7)
    /// `NBD_CMD_RESIZE` (8): not supported.
    public static let resize = NBDCommand(rawValue: 8)

    /// The specification's name for the value.

    public var description: String {
        switch self {
        case .read: "NBD_CMD_READ"
        case .write: "NBD_CMD_WRITE"
        case .disconnect: "NBD_CMD_DISC"
        case .flush: "NBD_CMD_FLUSH"
        case .trim: "NBD_CMD_TRIM"
        case .cache: "NBD_CMD_CACHE"
        case .writeZeroes: "NBD_CMD_WRITE_ZEROES"
        case .blockStatus: "NBD_CMD_BLOCK_STATUS"
        case .resize: "NBD_CMD_RESIZE"
        default: "command \(rawValue)"
        }
    }
}

/// Command flags of a transmission request (16 bits).
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_CMD_FLAG_FUA`: the data must be durable before the reply. Valid on every command.
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// `NBD_CMD_FLAG_NO_HOLE`: on WRITE_ZEROES, write zeroes and leave the range allocated.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// `NBD_CMD_FLAG_DF`: do not fragment a structured reply; invalid here (no SEND_DF).
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// `NBD_CMD_FLAG_REQ_ONE`: on BLOCK_STATUS, one extent per context.
    public static let requestOne = NBDCommandFlags(rawValue: 1 << 3)
    /// `NBD_CMD_FLAG_FAST_ZERO`: on WRITE_ZEROES, fail at once with ENOTSUP unless the zeroing is
    /// faster than writing zeroes.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
    /// `NBD_CMD_FLAG_PAYLOAD_LEN`: extended headers only; invalid here.
    public static let payloadLength = NBDCommandFlags(rawValue: 1 << 5)
}

/// An error value of a simple reply (32 bits). Zero means success.
public struct NBDErrorValue: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value on the wire.
    public let rawValue: UInt32
    /// The code or flags with this wire value (unknown values are kept).
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Success.
    public static let none = NBDErrorValue(rawValue: 0)
    /// `EPERM` (1): operation not permitted, e.g. a write to a read-only export.
    public static let permission = NBDErrorValue(rawValue: 1)
    /// `EIO` (5): input/output error.
    public static let io = NBDErrorValue(rawValue: 5)
    /// `ENOMEM` (12).
    public static let noMemory = NBDErrorValue(rawValue: 12)
    /// `EINVAL` (22): invalid argument, unknown command or flag, range outside the export.
    public static let invalid = NBDErrorValue(rawValue: 22)
    /// `ENOSPC` (28): no space left; also a write beyond the end of the export.
    public static let noSpace = NBDErrorValue(rawValue: 28)
    /// `EOVERFLOW` (75).
    public static let overflow = NBDErrorValue(rawValue: 75)
    /// `ENOTSUP` (95): a fast zero that would be no faster than a write.
    public static let notSupported = NBDErrorValue(rawValue: 95)
    /// `ESHUTDOWN` (108): the server is shutting down.
    public static let shutdown = NBDErrorValue(rawValue: 108)

    /// The error value a failed export call is reported with.
    public init(_ error: NBDIOError) { self.init(rawValue: error.nbdErrorValue) }

    /// The specification's name for the value.

    public var description: String {
        switch self {
        case .none: "OK"
        case .permission: "EPERM"
        case .io: "EIO"
        case .noMemory: "ENOMEM"
        case .invalid: "EINVAL"
        case .noSpace: "ENOSPC"
        case .overflow: "EOVERFLOW"
        case .notSupported: "ENOTSUP"
        case .shutdown: "ESHUTDOWN"
        default: "error \(rawValue)"
        }
    }
}

/// The type of a structured reply chunk (16 bits); error types have bit 15 set.
public struct NBDReplyType: RawRepresentable, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The code with this wire value (unknown values are kept).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_REPLY_TYPE_NONE` (0): no payload; ends a reply (with DONE).
    public static let none = NBDReplyType(rawValue: 0)
    /// `NBD_REPLY_TYPE_OFFSET_DATA` (1): 64-bit offset, then data.
    public static let offsetData = NBDReplyType(rawValue: 1)
    /// `NBD_REPLY_TYPE_OFFSET_HOLE` (2): 64-bit offset, 32-bit length of zeroes.
    public static let offsetHole = NBDReplyType(rawValue: 2)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS` (5): 32-bit context id, then (length, flags) descriptors.
    public static let blockStatus = NBDReplyType(rawValue: 5)
    /// `NBD_REPLY_TYPE_ERROR` (2^15 + 1): 32-bit error, 16-bit message length, message.
    public static let error = NBDReplyType(rawValue: 1 << 15 | 1)
    /// `NBD_REPLY_TYPE_ERROR_OFFSET` (2^15 + 2).
    public static let errorOffset = NBDReplyType(rawValue: 1 << 15 | 2)

    /// True for the error chunk types (bit 15 set).
    public var isError: Bool { rawValue & (1 << 15) != 0 }
}

/// Flags of a structured reply chunk (16 bits).
public struct NBDReplyFlags: OptionSet, Sendable, Hashable {
    /// The value on the wire.
    public let rawValue: UInt16
    /// The flags with this wire value.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_REPLY_FLAG_DONE`: the last chunk of the reply.
    public static let done = NBDReplyFlags(rawValue: 1 << 0)
}

/// The meta contexts this server knows, by name.
public enum NBDMetaContextName {
    /// `base:allocation`: NBD_STATE_HOLE (bit 0) and NBD_STATE_ZERO (bit 1).
    public static let baseAllocation = "base:allocation"
    /// The `base:` namespace.
    public static let baseNamespace = "base:"
}

/// The state bits of the `base:allocation` context.
public enum NBDAllocationState {
    /// `NBD_STATE_HOLE`: the range is not allocated.
    public static let hole: UInt32 = 1 << 0
    /// `NBD_STATE_ZERO`: the range reads as zeroes.
    public static let zero: UInt32 = 1 << 1
}

/// One extent of a BLOCK_STATUS answer: a length in bytes and the context's flags over it.
public struct NBDExtent: Sendable, Hashable {
    /// The length in bytes (more than zero).
    public var lengthBytes: UInt32
    /// The context's state bits over the extent.
    public var flags: UInt32

    /// An extent of `lengthBytes` bytes with `flags`.
    public init(lengthBytes: UInt32, flags: UInt32) {
        self.lengthBytes = lengthBytes
        self.flags = flags
    }
}
