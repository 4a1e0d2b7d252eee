// Parsing of what an NBD client sends: client flags, option requests, transmission request
// headers. Pure functions over bytes: no I/O, no NIO, no allocation except option data and names.

/// A breach of the protocol that makes the server close the connection without a reply and
/// without touching any export.
public enum NBDProtocolViolation: Error, Sendable, Hashable, CustomStringConvertible {
    /// The client flags have bits this server does not know.
    case clientFlagsUnknown(UInt32)
    /// The client did not set NBD_FLAG_C_FIXED_NEWSTYLE; only fixed newstyle is served.
    case clientNotFixedNewstyle
    /// An option request did not start with `IHAVEOPT`.
    case optionMagicInvalid(UInt64)
    /// An option announced more data than `NBDLimits.optionDataBytesMax`.
    case optionDataTooLong(lengthBytes: UInt32)
    /// The client sent more than `NBDLimits.optionsPerConnectionMax` options.
    case optionsTooMany
    /// NBD_OPT_EXPORT_NAME named no export, or an invalid name; the protocol gives no way to say so.
    case exportNameRefused
    /// NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS where TLS is required (FORCEDTLS): it cannot
    /// answer an error, so the protocol says to close.
    case exportNameWithoutTLS
    /// A transmission request did not start with `NBD_REQUEST_MAGIC`.
    case requestMagicInvalid(UInt32)
    /// A WRITE announced a payload longer than `NBDLimits.payloadBytesMax`.
    case writePayloadTooLong(lengthBytes: UInt32)

    /// A one-line explanation for diagnostics.
    public var description: String {
        switch self {
        case .clientFlagsUnknown(let flags): "unknown client flags 0x\(String(flags, radix: 16))"
        case .clientNotFixedNewstyle: "client does not speak fixed newstyle"
        case .optionMagicInvalid(let magic): "bad option magic 0x\(String(magic, radix: 16))"
        case .optionDataTooLong(let length): "option data of \(length) bytes exceeds the limit"
        case .optionsTooMany: "too many options"
        case .exportNameRefused: "NBD_OPT_EXPORT_NAME for an unknown or invalid export"
        case .exportNameWithoutTLS: "NBD_OPT_EXPORT_NAME without TLS, which is required"
        case .requestMagicInvalid(let magic): "bad request magic 0x\(String(magic, radix: 16))"
        case .writePayloadTooLong(let length): "write payload of \(length) bytes exceeds the limit"
        }
    }
}

/// The outcome of parsing a message from the front of a byte buffer.
public enum NBDParseOutcome<Value: Sendable>: Sendable {
    /// The bytes are a valid prefix; call again with more.
    case needMoreBytes
    /// A whole message: its value and how many bytes it took from the front of the buffer.
    case parsed(Value, consumedBytes: Int)
    /// The bytes can never become a valid message: close the connection.
    case violation(NBDProtocolViolation)
}

extension NBDParseOutcome: Equatable where Value: Equatable {}

/// One option request of the handshake, with its data.
public struct NBDOptionRequest: Sendable, Hashable {
    /// The option code.
    public var option: NBDOption
    /// The option data (at most `NBDLimits.optionDataBytesMax` bytes).
    public var data: [UInt8]

    /// An option request with its data.
    public init(option: NBDOption, data: [UInt8]) {
        self.option = option
        self.data = data
    }
}

/// The header of one transmission request. A WRITE's payload of `lengthBytes` bytes follows it.
public struct NBDRequest: Sendable, Hashable {
    /// Command flags (FUA, NO_HOLE, ...), as sent.
    public var flags: NBDCommandFlags
    /// The command, possibly one this server does not know.
    public var command: NBDCommand
    /// The client's opaque handle, echoed in the reply.
    public var cookie: UInt64
    /// Byte offset into the export.
    public var offset: UInt64
    /// Length in bytes of the range (and of the payload for a WRITE).
    public var lengthBytes: UInt32

    /// A request header with these fields (offset and length in bytes).
    public init(flags: NBDCommandFlags, command: NBDCommand, cookie: UInt64, offset: UInt64, lengthBytes: UInt32) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.lengthBytes = lengthBytes
    }

    /// How many payload bytes follow the header on the wire: `lengthBytes` for a WRITE, else 0.
    public var payloadLengthBytes: Int { command == .write ? Int(lengthBytes) : 0 }
}

/// The data of an NBD_OPT_INFO or NBD_OPT_GO request.
public struct NBDInfoRequest: Sendable, Hashable {
    /// The export name (may be empty: the default export).
    public var name: String
    /// The information items the client asked for, in order (NBD_INFO_EXPORT is sent regardless).
    public var requestedInfo: [NBDInfoType]

    /// An INFO/GO request for `name`, asking for `requestedInfo`.
    public init(name: String, requestedInfo: [NBDInfoType]) {
        self.name = name
        self.requestedInfo = requestedInfo
    }

    /// Parses option data: 32-bit name length, name, 16-bit count, count × 16-bit info types.
    /// Returns nil when the data is malformed (lengths inconsistent, name not valid UTF-8 or too
    /// long): the server answers NBD_REP_ERR_INVALID.
    public static func parse(optionData data: [UInt8]) -> NBDInfoRequest? {
        data.withUnsafeBytes { bytes -> NBDInfoRequest? in
            guard bytes.count >= 6 else { return nil }
            let nameLength = Int(bytes.loadBigEndian(UInt32.self, at: 0))
            // 4 bytes of name length, the name, 2 bytes of count.
            guard nameLength <= bytes.count - 6 else { return nil }
            guard let name = NBDWireDecoder.string(UnsafeRawBufferPointer(rebasing: bytes[4 ..< 4 + nameLength])) else {
                return nil
            }
            let count = Int(bytes.loadBigEndian(UInt16.self, at: 4 + nameLength))
            let listStart = 6 + nameLength
            guard bytes.count - listStart == 2 * count else { return nil }
            var requested: [NBDInfoType] = []
            requested.reserveCapacity(count)
            for index in 0 ..< count {
                requested.append(NBDInfoType(rawValue: bytes.loadBigEndian(UInt16.self, at: listStart + 2 * index)))
            }
            return NBDInfoRequest(name: name, requestedInfo: requested)
        }
    }
}

/// The data of an NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT request.
public struct NBDMetaContextRequest: Sendable, Hashable {
    /// The export the contexts are for.
    public var name: String
    /// The queries: full context names, or namespace prefixes such as `base:` (LIST only).
    public var queries: [String]

    /// A request for `name` with `queries`.
    public init(name: String, queries: [String]) {
        self.name = name
        self.queries = queries
    }

    /// Parses option data: 32-bit name length, name, 32-bit query count, then each query as a
    /// 32-bit length and the string. Nil when malformed (lengths inconsistent, a string not valid
    /// UTF-8 or too long, more than `NBDLimits.metaContextQueriesMax` queries): the server
    /// answers NBD_REP_ERR_INVALID.
    public static func parse(optionData data: [UInt8]) -> NBDMetaContextRequest? {
        data.withUnsafeBytes { bytes -> NBDMetaContextRequest? in
            var cursor = 0
            func string() -> String? {
                guard bytes.count - cursor >= 4 else { return nil }
                let length = Int(bytes.loadBigEndian(UInt32.self, at: cursor))
                cursor += 4
                guard length <= bytes.count - cursor else { return nil }
                defer { cursor += length }
                return NBDWireDecoder.string(UnsafeRawBufferPointer(rebasing: bytes[cursor ..< cursor + length]))
            }
            guard let name = string(), bytes.count - cursor >= 4 else { return nil }
            let count = Int(bytes.loadBigEndian(UInt32.self, at: cursor))
            cursor += 4
            guard count <= NBDLimits.metaContextQueriesMax else { return nil }
            var queries: [String] = []
            for _ in 0 ..< count {
                guard let query = string() else { return nil }
                queries.append(query)
            }
            guard cursor == bytes.count else { return nil }
            return NBDMetaContextRequest(name: name, queries: queries)
        }
    }

    /// The option data this request parses from (the inverse of `parse`).
    public var optionData: [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendBigEndian(UInt32(name.utf8.count))
        bytes.append(contentsOf: name.utf8)
        bytes.appendBigEndian(UInt32(queries.count))
        for query in queries {
            bytes.appendBigEndian(UInt32(query.utf8.count))
            bytes.append(contentsOf: query.utf8)
        }
        return bytes
    }
}

/// Parsers of the messages a client sends.
public enum NBDWireDecoder {
    /// Parses the 32-bit client flags that answer the greeting. Fails on unknown bits and when
    /// NBD_FLAG_C_FIXED_NEWSTYLE is missing.
    public static func parseClientFlags(_ bytes: UnsafeRawBufferPointer) -> NBDParseOutcome<NBDClientFlags> {
        guard bytes.count >= NBDHeaderSize.clientFlagsBytes else { return .needMoreBytes }
        let raw = bytes.loadBigEndian(UInt32.self, at: 0)
        let flags = NBDClientFlags(rawValue: raw)
        guard NBDClientFlags.known.isSuperset(of: flags) else { return .violation(.clientFlagsUnknown(raw)) }
        guard flags.contains(.fixedNewstyle) else { return .violation(.clientNotFixedNewstyle) }
        return .parsed(flags, consumedBytes: NBDHeaderSize.clientFlagsBytes)
    }

    /// Parses one option request with its data. The header is checked as soon as it is complete,
    /// so a bad magic or an oversized length fails before any of the data arrives.
    public static func parseOptionRequest(_ bytes: UnsafeRawBufferPointer) -> NBDParseOutcome<NBDOptionRequest> {
        // The magic can be refuted from its first byte on: check whatever prefix is there.
        if let violation = optionMagicViolation(bytes) { return .violation(violation) }
        guard bytes.count >= NBDHeaderSize.optionRequestBytes else { return .needMoreBytes }
        let option = NBDOption(rawValue: bytes.loadBigEndian(UInt32.self, at: 8))
        let lengthBytes = bytes.loadBigEndian(UInt32.self, at: 12)
        guard lengthBytes <= NBDLimits.optionDataBytesMax else {
            return .violation(.optionDataTooLong(lengthBytes: lengthBytes))
        }
        let total = NBDHeaderSize.optionRequestBytes + Int(lengthBytes)
        guard bytes.count >= total else { return .needMoreBytes }
        let data = [UInt8](bytes[NBDHeaderSize.optionRequestBytes ..< total])
        return .parsed(NBDOptionRequest(option: option, data: data), consumedBytes: total)
    }

    /// Parses one transmission request header (28 bytes). The payload of a WRITE
    /// (`payloadLengthBytes`) is not part of `consumedBytes`. Fails on a bad magic and on a WRITE
    /// longer than `NBDLimits.payloadBytesMax`; everything else (unknown commands, flags, ranges)
    /// is for `NBDRequest.check` to answer with an error reply.
    public static func parseRequestHeader(_ bytes: UnsafeRawBufferPointer) -> NBDParseOutcome<NBDRequest> {
        if let violation = requestMagicViolation(bytes) { return .violation(violation) }
        guard bytes.count >= NBDHeaderSize.requestBytes else { return .needMoreBytes }
        let request = NBDRequest(
            flags: NBDCommandFlags(rawValue: bytes.loadBigEndian(UInt16.self, at: 4)),
            command: NBDCommand(rawValue: bytes.loadBigEndian(UInt16.self, at: 6)),
            cookie: bytes.loadBigEndian(UInt64.self, at: 8),
            offset: bytes.loadBigEndian(UInt64.self, at: 16),
            lengthBytes: bytes.loadBigEndian(UInt32.self, at: 24)
        )
        if request.command == .write, request.lengthBytes > NBDLimits.payloadBytesMax {
            return .violation(.writePayloadTooLong(lengthBytes: request.lengthBytes))
        }
        return .parsed(request, consumedBytes: NBDHeaderSize.requestBytes)
    }

    /// Decodes an export name (NBD_OPT_EXPORT_NAME data): valid UTF-8, no NUL, at most
    /// `NBDLimits.stringBytesMax` bytes. Nil when invalid.
    public static func parseExportName(_ data: [UInt8]) -> String? {
        data.withUnsafeBytes { string($0) }
    }

    /// A protocol string: valid UTF-8 without NUL, at most `NBDLimits.stringBytesMax` bytes.
    static func string(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count <= NBDLimits.stringBytesMax, !bytes.contains(0) else { return nil }
        let units = bytes.bindMemory(to: UInt8.self)
        // Reject rather than repair invalid UTF-8: the name must match byte for byte.
        let decoded = String(decoding: units, as: UTF8.self)
        guard decoded.utf8.elementsEqual(units) else { return nil }
        return decoded
    }

    private static func optionMagicViolation(_ bytes: UnsafeRawBufferPointer) -> NBDProtocolViolation? {
        let prefix = min(bytes.count, 8)
        for index in 0 ..< prefix where bytes[index] != UInt8(truncatingIfNeeded: NBDMagic.option >> (56 - 8 * index)) {
            if bytes.count >= 8 { return .optionMagicInvalid(bytes.loadBigEndian(UInt64.self, at: 0)) }
            return .optionMagicInvalid(partialBigEndian(bytes, count: prefix))
        }
        return nil
    }

    private static func requestMagicViolation(_ bytes: UnsafeRawBufferPointer) -> NBDProtocolViolation? {
        let prefix = min(bytes.count, 4)
        for index in 0 ..< prefix where bytes[index] != UInt8(truncatingIfNeeded: NBDMagic.request >> (24 - 8 * index)) {
            if bytes.count >= 4 { return .requestMagicInvalid(bytes.loadBigEndian(UInt32.self, at: 0)) }
            return .requestMagicInvalid(UInt32(truncatingIfNeeded: partialBigEndian(bytes, count: prefix)))
        }
        return nil
    }

    private static func partialBigEndian(_ bytes: UnsafeRawBufferPointer, count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0 ..< count { value = value << 8 | UInt64(bytes[index]) }
        return value
    }
}

extension NBDWireDecoder {
    /// `parseClientFlags` over an array (tests, fuzzing).
    public static func parseClientFlags(_ bytes: [UInt8]) -> NBDParseOutcome<NBDClientFlags> {
        bytes.withUnsafeBytes { parseClientFlags($0) }
    }

    /// `parseOptionRequest` over an array (tests, fuzzing).
    public static func parseOptionRequest(_ bytes: [UInt8]) -> NBDParseOutcome<NBDOptionRequest> {
        bytes.withUnsafeBytes { parseOptionRequest($0) }
    }

    /// `parseRequestHeader` over an array (tests, fuzzing).
    public static func parseRequestHeader(_ bytes: [UInt8]) -> NBDParseOutcome<NBDRequest> {
        bytes.withUnsafeBytes { parseRequestHeader($0) }
    }
}

extension UnsafeRawBufferPointer {
    /// Loads a big-endian integer at a byte offset; the caller has checked the bounds.
    @inline(__always)
    func loadBigEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "NBD decoder read out of bounds")
        return T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
