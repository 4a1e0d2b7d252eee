// The fixed-newstyle option haggling as a pure step machine: each option request in, the bytes to
// send and what happens next out. The connection handler only moves bytes.

/// The export a connection has entered transmission with, and what was advertised for it.
public struct NBDSession: Sendable {
    /// The export name the client chose.
    public let name: String
    /// The export served.
    public let export: any NBDExport
    /// The export size in bytes, read once at negotiation and fixed for the connection.
    public let sizeBytes: UInt64
    /// Whether the export refuses writes (EPERM).
    public let readOnly: Bool
    /// The transmission flags sent to the client.
    public let transmissionFlags: NBDTransmissionFlags

    /// Reads `export`'s size and read-only state once, for the whole connection.
    public init(name: String, export: any NBDExport) {
        self.name = name
        self.export = export
        self.sizeBytes = export.sizeBytes
        self.readOnly = export.readOnly
        self.transmissionFlags = NBDTransmissionFlags.advertised(readOnly: readOnly)
    }
}

/// What the server does after one option request.
public enum NBDNegotiationStep: Sendable {
    /// Send these bytes and wait for the next option.
    case reply([UInt8])
    /// Send these bytes, then serve requests for the session.
    case replyAndEnterTransmission([UInt8], NBDSession)
    /// Send these bytes, then close (NBD_OPT_ABORT).
    case replyAndClose([UInt8])
    /// Close at once without a reply.
    case close(NBDProtocolViolation)
}

/// The handshake state of one connection (fixed newstyle only).
public struct NBDNegotiation: Sendable {
    /// The handshake flags this server sends: FIXED_NEWSTYLE and NO_ZEROES.
    public static let handshakeFlags: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]

    private let provider: any NBDExportProvider
    /// The flags the client answered the greeting with.
    public private(set) var clientFlags: NBDClientFlags = []
    /// How many options the client has sent so far.
    public private(set) var optionCount = 0

    /// A negotiation that looks exports up in `provider`.
    public init(provider: any NBDExportProvider) {
        self.provider = provider
    }

    /// The greeting the server sends first.
    public static var greeting: [UInt8] { NBDWireEncoder.greeting(flags: handshakeFlags) }

    /// Records the client flags (already validated by `NBDWireDecoder.parseClientFlags`).
    public mutating func receive(clientFlags: NBDClientFlags) {
        self.clientFlags = clientFlags
    }

    /// Answers one option request.
    public mutating func receive(option request: NBDOptionRequest) -> NBDNegotiationStep {
        optionCount += 1
        guard optionCount <= NBDLimits.optionsPerConnectionMax else { return .close(.optionsTooMany) }
        let option = request.option
        switch option {
        case .exportName:
            guard let name = NBDWireDecoder.parseExportName(request.data),
                  let export = provider.export(named: name)
            else { return .close(.exportNameRefused) }
            let session = NBDSession(name: name, export: export)
            let reply = NBDWireEncoder.exportNameReply(
                sizeBytes: session.sizeBytes,
                flags: session.transmissionFlags,
                noZeroes: clientFlags.contains(.noZeroes)
            )
            return .replyAndEnterTransmission(reply, session)

        case .abort:
            return .replyAndClose(NBDWireEncoder.optionReply(option: option, type: .ack))

        case .list:
            guard request.data.isEmpty else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "NBD_OPT_LIST takes no data"))
            }
            var bytes: [UInt8] = []
            for entry in provider.exportNames() where entry.name.utf8.count <= NBDLimits.stringBytesMax {
                let data = NBDWireEncoder.serverReplyData(name: entry.name, description: entry.description)
                bytes += NBDWireEncoder.optionReply(option: option, type: .server, data: data)
            }
            bytes += NBDWireEncoder.optionReply(option: option, type: .ack)
            return .reply(bytes)

        case .info, .go:
            guard let info = NBDInfoRequest.parse(optionData: request.data) else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "malformed \(option) data"))
            }
            guard let export = provider.export(named: info.name) else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnknown, message: "no such export"))
            }
            let session = NBDSession(name: info.name, export: export)
            var bytes = NBDWireEncoder.optionReply(
                option: option,
                type: .info,
                data: NBDWireEncoder.infoExportData(sizeBytes: session.sizeBytes, flags: session.transmissionFlags)
            )
            if info.requestedInfo.contains(.name) {
                bytes += NBDWireEncoder.optionReply(
                    option: option,
                    type: .info,
                    data: NBDWireEncoder.infoStringData(type: .name, value: info.name)
                )
            }
            if info.requestedInfo.contains(.description),
               let entry = provider.exportNames().first(where: { $0.name == info.name }),
               !entry.description.isEmpty {
                bytes += NBDWireEncoder.optionReply(
                    option: option,
                    type: .info,
                    data: NBDWireEncoder.infoStringData(type: .description, value: entry.description)
                )
            }
            // Always sent: it tells every client it may use any alignment, and the payload limit.
            bytes += NBDWireEncoder.optionReply(
                option: option,
                type: .info,
                data: NBDWireEncoder.infoBlockSizeData(
                    minimumBytes: NBDLimits.blockSizeMinimumBytes,
                    preferredBytes: NBDLimits.blockSizePreferredBytes,
                    maximumBytes: NBDLimits.payloadBytesMax
                )
            )
            bytes += NBDWireEncoder.optionReply(option: option, type: .ack)
            if option == .go { return .replyAndEnterTransmission(bytes, session) }
            return .reply(bytes)

        case .startTLS:
            return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnsupported, message: "TLS is not supported"))

        case .structuredReply:
            return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnsupported, message: "simple replies only"))

        default:
            return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnsupported, message: "unsupported option"))
        }
    }
}
