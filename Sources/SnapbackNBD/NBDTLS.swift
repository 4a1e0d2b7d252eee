// TLS for NBD (`snapbackd --nbd-tls psk:FILE | x509:DIR`): loading the credentials into a
// swift-nio-ssl (BoringSSL) server context. The upgrade itself (NBD_OPT_STARTTLS) is
// `NBDNegotiation`'s and `NBDConnectionHandler`'s.

import Foundation
import NIOSSL

/// Why TLS credentials could not be used. Each case has a stable code and a one-line message.
public enum NBDTLSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The `--nbd-tls` argument is neither `psk:FILE` nor `x509:DIR`.
    case argumentMalformed(String)
    /// A file could not be read.
    case fileUnreadable(path: String, reason: String)
    /// A line of a PSK file is not `IDENTITY:HEXKEY` within the limits.
    case pskLineMalformed(path: String, line: Int, reason: String)
    /// A PSK file holds no key.
    case pskFileEmpty(path: String)
    /// A certificate, key or CA file of an x509 directory is missing or cannot be parsed.
    case x509Invalid(path: String, reason: String)

    /// A stable code for scripts and tests.
    public var code: String {
        switch self {
        case .argumentMalformed: "nbd_tls_argument"
        case .fileUnreadable: "nbd_tls_file_unreadable"
        case .pskLineMalformed: "nbd_tls_psk_malformed"
        case .pskFileEmpty: "nbd_tls_psk_empty"
        case .x509Invalid: "nbd_tls_x509_invalid"
        }
    }

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .argumentMalformed(let text): "--nbd-tls takes psk:FILE or x509:DIR, not '\(text)'"
        case .fileUnreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .pskLineMalformed(let path, let line, let reason): "\(path), line \(line): \(reason) (each line is IDENTITY:HEXKEY)"
        case .pskFileEmpty(let path): "\(path) holds no key (each line is IDENTITY:HEXKEY)"
        case .x509Invalid(let path, let reason): "\(path): \(reason)"
        }
    }
}

/// Where TLS credentials come from: the value of `--nbd-tls`.
public enum NBDTLSSource: Sendable, Hashable, CustomStringConvertible {
    /// Pre-shared keys in the file of nbdkit's `--tls-psk`, qemu's `tls-creds-psk` (`keys.psk`)
    /// and libnbd's `tls-psk-file`: one `IDENTITY:HEXKEY` per line.
    case psk(file: String)
    /// An X.509 directory in qemu's and nbdkit's layout: `ca-cert.pem`, `server-cert.pem`,
    /// `server-key.pem`. Clients must present a certificate that `ca-cert.pem` signed.
    case x509(directory: String)

    /// Parses `psk:FILE` or `x509:DIR`.
    public init(argument: String) throws(NBDTLSError) {
        if argument.hasPrefix("psk:"), argument.count > 4 {
            self = .psk(file: String(argument.dropFirst(4)))
        } else if argument.hasPrefix("x509:"), argument.count > 5 {
            self = .x509(directory: String(argument.dropFirst(5)))
        } else {
            throw .argumentMalformed(argument)
        }
    }

    /// `psk:FILE` or `x509:DIR`, as given.
    public var description: String {
        switch self {
        case .psk(let file): "psk:\(file)"
        case .x509(let directory): "x509:\(directory)"
        }
    }
}

/// The keys of a PSK file, by identity (the username a client gives).
public struct NBDPreSharedKeys: Sendable, Hashable {
    /// The longest identity BoringSSL accepts, in bytes (`PSK_MAX_IDENTITY_LEN`).
    public static let identityBytesMax = 128
    /// The longest key BoringSSL accepts, in bytes (`PSK_MAX_PSK_LEN`).
    public static let keyBytesMax = 256

    /// Each identity's key.
    public let keys: [String: [UInt8]]

    /// Parses a PSK file's text: one `IDENTITY:HEXKEY` per line (the identity up to the first
    /// colon, 1 to 128 bytes; the key 1 to 256 bytes as an even number of hex digits); blank lines
    /// are skipped; an identity given twice is an error. `path` only names the file in errors.
    public init(parsing text: String, path: String) throws(NBDTLSError) {
        var keys: [String: [UInt8]] = [:]
        // "\r\n" is one Character in Swift, and a line break as much as "\n".
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            func malformed(_ reason: String) -> NBDTLSError { .pskLineMalformed(path: path, line: index + 1, reason: reason) }
            guard let colon = line.firstIndex(of: ":") else { throw malformed("no colon") }
            let identity = String(line[..<colon])
            let hex = line[line.index(after: colon)...]
            guard (1...Self.identityBytesMax).contains(identity.utf8.count) else {
                throw malformed("the identity must be 1 to \(Self.identityBytesMax) bytes")
            }
            guard let key = Self.bytes(hex: hex), (1...Self.keyBytesMax).contains(key.count) else {
                throw malformed("the key must be 1 to \(Self.keyBytesMax) bytes as an even number of hex digits")
            }
            guard keys[identity] == nil else { throw malformed("identity '\(identity)' appears twice") }
            keys[identity] = key
        }
        guard !keys.isEmpty else { throw .pskFileEmpty(path: path) }
        self.keys = keys
    }

    /// Reads and parses the PSK file at `path`.
    public init(contentsOf path: String) throws(NBDTLSError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .fileUnreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        try self.init(parsing: text, path: path)
    }

    private static func bytes(hex: Substring) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard !digits.isEmpty, digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}

/// A TLS server context for NBD connections, made once at start-up and shared by all of them.
///
/// PSK: BoringSSL does external pre-shared keys only in TLS 1.2 (its TLS 1.3 has no external PSK
/// API), so the context is TLS 1.2 only, with the ECDHE-PSK suites GnuTLS clients (qemu, libnbd,
/// nbdkit's client side) also offer: ChaCha20-Poly1305 first, then AES-CBC-SHA. GnuTLS offers
/// TLS 1.3 too; with a TLS 1.2 server it settles on 1.2. X.509: TLS 1.2 and 1.3, BoringSSL's
/// default suites, and a client certificate signed by `ca-cert.pem` required.
public struct NBDTLSCredentials: Sendable {
    /// The BoringSSL ciphers offered with PSK, in order of preference.
    public static let pskCipherSuites = "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES128-CBC-SHA:ECDHE-PSK-AES256-CBC-SHA"

    /// Where the credentials came from.
    public let source: NBDTLSSource
    /// The server context every TLS connection uses.
    let context: NIOSSLContext

    /// Credentials from pre-shared keys (for tests, and for `load`).
    public init(keys: NBDPreSharedKeys, source: NBDTLSSource) throws(NBDTLSError) {
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = Self.pskCipherSuites
        let table = keys.keys
        configuration.pskServerProvider = { context in
            // An unknown identity fails the handshake (BoringSSL answers unknown_psk_identity).
            guard let key = table[context.clientIdentity], key.count <= context.maxPSKLength else { throw UnknownIdentity() }
            return PSKServerIdentityResponse(key: NIOSSLSecureBytes(key))
        }
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw .fileUnreadable(path: source.description, reason: "\(error)")
        }
        self.source = source
    }

    /// Loads the credentials `source` names: parses the PSK file, or reads the x509 directory's
    /// three PEM files.
    public static func load(_ source: NBDTLSSource) throws(NBDTLSError) -> NBDTLSCredentials {
        switch source {
        case .psk(let file):
            return try NBDTLSCredentials(keys: NBDPreSharedKeys(contentsOf: file), source: source)
        case .x509(let directory):
            return try x509(directory: directory, source: source)
        }
    }

    private static func x509(directory: String, source: NBDTLSSource) throws(NBDTLSError) -> NBDTLSCredentials {
        func path(_ name: String) throws(NBDTLSError) -> String {
            let path = directory + "/" + name
            guard FileManager.default.isReadableFile(atPath: path) else { throw .x509Invalid(path: path, reason: "missing or unreadable") }
            return path
        }
        let caPath = try path("ca-cert.pem")
        let certificatePath = try path("server-cert.pem")
        let keyPath = try path("server-key.pem")
        let authorities: [NIOSSLCertificate]
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do { authorities = try NIOSSLCertificate.fromPEMFile(caPath) } catch { throw .x509Invalid(path: caPath, reason: "not a PEM certificate (\(error))") }
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch { throw .x509Invalid(path: certificatePath, reason: "not a PEM certificate (\(error))") }
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch { throw .x509Invalid(path: keyPath, reason: "not a PEM private key (\(error))") }
        guard !authorities.isEmpty else { throw .x509Invalid(path: caPath, reason: "no certificate") }
        guard !chain.isEmpty else { throw .x509Invalid(path: certificatePath, reason: "no certificate") }
        var configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key), trustRoots: .certificates(authorities))
        configuration.minimumTLSVersion = .tlsv12
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw .x509Invalid(path: directory, reason: "the certificate and key do not make a TLS context (\(error))")
        }
        return NBDTLSCredentials(source: source, context: context)
    }

    private struct UnknownIdentity: Error {}

    private init(source: NBDTLSSource, context: NIOSSLContext) {
        self.source = source
        self.context = context
    }

    /// A new server-side TLS handler for one connection.
    func makeHandler() throws -> NIOSSLServerHandler {
        try NIOSSLServerHandler(context: context)
    }
}
