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
    /// Replies are structured (the client negotiated NBD_OPT_STRUCTURED_REPLY).
    public let structuredReplies: Bool
    /// The meta contexts selected for NBD_CMD_BLOCK_STATUS, in the order of their ids (empty:
    /// BLOCK_STATUS is refused with EINVAL).
    public let metaContexts: [NBDMetaContext]

    /// Reads `export`'s size and read-only state once, for the whole connection.
    public init(name: String, export: any NBDExport, structuredReplies: Bool = false, metaContexts: [NBDMetaContext] = []) {
        precondition(structuredReplies || metaContexts.isEmpty, "meta contexts need structured replies")
        self.name = name
        self.export = export
        self.sizeBytes = export.sizeBytes
        self.readOnly = export.readOnly
        self.transmissionFlags = NBDTransmissionFlags.advertised(readOnly: readOnly)
        self.structuredReplies = structuredReplies
        self.metaContexts = metaContexts
    }
}

/// A meta context selected by NBD_OPT_SET_META_CONTEXT: the id the server gave it and its name.
public struct NBDMetaContext: Sendable, Hashable {
    /// The id BLOCK_STATUS chunks carry (from 1, in the order selected).
    public var id: UInt32
    /// The full name, e.g. `base:allocation`.
    public var name: String

    /// A context `name` with `id`.
    public init(id: UInt32, name: String) {
        self.id = id
        self.name = name
    }
}

/// Whether a connection may, or must, upgrade to TLS with NBD_OPT_STARTTLS (the protocol's TLS
/// modes, chosen per listener).
public enum NBDTLSMode: Sendable, Hashable {
    /// NOTLS: no TLS configured; NBD_OPT_STARTTLS answers `NBD_REP_ERR_UNSUP`.
    case none
    /// SELECTIVETLS with no TLS-only export: STARTTLS is accepted, nothing requires it (the NBD
    /// Unix socket, whose file mode already says who may connect).
    case optional
    /// FORCEDTLS: every option but STARTTLS and ABORT answers `NBD_REP_ERR_TLS_REQD` until TLS is
    /// up, and NBD_OPT_EXPORT_NAME (which cannot answer an error) closes the connection.
    case required
}

/// What the server does after one option request.
public enum NBDNegotiationStep: Sendable {
    /// Send these bytes and wait for the next option.
    case reply([UInt8])
    /// Send these bytes (NBD_OPT_STARTTLS's ACK) in the clear, then run the TLS handshake as the
    /// server; every later byte, both ways, goes through TLS, and negotiation continues there.
    case replyAndStartTLS([UInt8])
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
    /// What this connection's listener asks of TLS.
    public let tlsMode: NBDTLSMode
    /// NBD_OPT_STARTTLS was acknowledged: everything after it runs over TLS.
    public private(set) var tlsStarted = false
    /// The flags the client answered the greeting with.
    public private(set) var clientFlags: NBDClientFlags = []
    /// How many options the client has sent so far.
    public private(set) var optionCount = 0
    /// The client negotiated NBD_OPT_STRUCTURED_REPLY.
    public private(set) var structuredReplies = false
    /// The last NBD_OPT_SET_META_CONTEXT's export and selection: used only if the client then
    /// enters transmission with that same export.
    public private(set) var selectedContexts: (name: String, contexts: [NBDMetaContext])?

    /// A negotiation that looks exports up in `provider`, under `tlsMode`.
    public init(provider: any NBDExportProvider, tlsMode: NBDTLSMode = .none) {
        self.provider = provider
        self.tlsMode = tlsMode
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
        if tlsMode == .required, !tlsStarted, option != .startTLS, option != .abort {
            // FORCEDTLS: nothing is looked up or negotiated in the clear.
            if option == .exportName { return .close(.exportNameWithoutTLS) }
            return .reply(NBDWireEncoder.optionError(option: option, type: .errorTLSRequired, message: "TLS is required: send NBD_OPT_STARTTLS first"))
        }
        switch option {
        case .exportName:
            guard let name = NBDWireDecoder.parseExportName(request.data),
                  let export = provider.export(named: name)
            else { return .close(.exportNameRefused) }
            let session = session(name: name, export: export)
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
            let session = session(name: info.name, export: export)
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
            guard tlsMode != .none else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnsupported, message: "TLS is not configured on this server"))
            }
            guard !tlsStarted else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "TLS is already up"))
            }
            guard request.data.isEmpty else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "NBD_OPT_STARTTLS takes no data"))
            }
            // What was negotiated in the clear does not carry over into TLS (an attacker in the
            // middle could have chosen it): the client negotiates again.
            tlsStarted = true
            structuredReplies = false
            selectedContexts = nil
            return .replyAndStartTLS(NBDWireEncoder.optionReply(option: option, type: .ack))

        case .structuredReply:
            guard request.data.isEmpty else {
                return .reply(NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "NBD_OPT_STRUCTURED_REPLY takes no data"))
            }
            structuredReplies = true
            return .reply(NBDWireEncoder.optionReply(option: option, type: .ack))

        case .listMetaContext, .setMetaContext:
            return .reply(metaContext(option, request.data))

        default:
            return .reply(NBDWireEncoder.optionError(option: option, type: .errorUnsupported, message: "unsupported option"))
        }
    }

    /// The session for `export`, with structured replies and the selected contexts if the client
    /// selected them for this export.
    private func session(name: String, export: any NBDExport) -> NBDSession {
        let contexts = selectedContexts?.name == name ? selectedContexts?.contexts ?? [] : []
        return NBDSession(name: name, export: export, structuredReplies: structuredReplies, metaContexts: structuredReplies ? contexts : [])
    }

    /// Answers NBD_OPT_LIST_META_CONTEXT (every context a query matches, id 0; no query: all of
    /// them; a query ending in `:` matches the names it prefixes) or NBD_OPT_SET_META_CONTEXT (the
    /// contexts named exactly, numbered from 1, replacing any earlier selection).
    private mutating func metaContext(_ option: NBDOption, _ data: [UInt8]) -> [UInt8] {
        guard let request = NBDMetaContextRequest.parse(optionData: data) else {
            return NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "malformed \(option) data")
        }
        let set = option == .setMetaContext
        if set {
            // A failed SET leaves nothing selected.
            selectedContexts = nil
            guard structuredReplies else {
                return NBDWireEncoder.optionError(option: option, type: .errorInvalid, message: "negotiate NBD_OPT_STRUCTURED_REPLY first")
            }
        }
        guard let export = provider.export(named: request.name) else {
            return NBDWireEncoder.optionError(option: option, type: .errorUnknown, message: "no such export")
        }
        let offered = [NBDMetaContextName.baseAllocation] + export.metaContextNames
        var chosen: [String] = []
        if set {
            for query in request.queries where offered.contains(query) && !chosen.contains(query) { chosen.append(query) }
        } else if request.queries.isEmpty {
            chosen = offered
        } else {
            for name in offered where request.queries.contains(where: { $0 == name || ($0.hasSuffix(":") && name.hasPrefix($0)) }) {
                chosen.append(name)
            }
        }
        var bytes: [UInt8] = []
        var contexts: [NBDMetaContext] = []
        for (index, name) in chosen.enumerated() {
            let context = NBDMetaContext(id: set ? UInt32(index + 1) : 0, name: name)
            contexts.append(context)
            bytes += NBDWireEncoder.optionReply(
                option: option, type: .metaContext, data: NBDWireEncoder.metaContextReplyData(id: context.id, name: name))
        }
        if set { selectedContexts = (request.name, contexts) }
        bytes += NBDWireEncoder.optionReply(option: option, type: .ack)
        return bytes
    }
}
