import ArgumentParser
import Foundation
import SnapbackLog
import SnapbackNBD
import SnapbackServer

/// `snapbackd --data-dir DIR [--socket PATH] [--socket-group GROUP] [--nbd HOST:PORT] [--nbd-socket PATH]
/// [--nbd-tls psk:FILE|x509:DIR] [--nbd-insecure]
/// [--metrics [HOST:]PORT] [--http [HOST:]PORT] [--background-share PERCENT]`: the Snapback controller.
@main
struct SnapbackdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapbackd", abstract: "The Snapback snapshot controller.", version: Daemon.version)

    @Option(name: [.customLong("data-dir"), .customLong("data-dir", withSingleDash: true)], help: "Data directory: LMDB log, volumes, control socket.")
    var dataDirectory = "./var"
    @Option(name: [.customLong("socket"), .customLong("socket", withSingleDash: true)], help: "Control socket (default DIR/control.sock).")
    var socket: String?
    @Option(name: [.customLong("nbd"), .customLong("nbd", withSingleDash: true)], help: "NBD listen address HOST:PORT (loopback by default).")
    var nbd = "127.0.0.1:10809"
    @Option(
        name: [.customLong("nbd-socket"), .customLong("nbd-socket", withSingleDash: true)],
        help: ArgumentHelp("Also serve NBD on this Unix socket (mode 0600): nbd+unix:///VOLUME?socket=PATH.", valueName: "PATH"))
    var nbdSocket: String?
    @Option(
        name: [.customLong("nbd-tls"), .customLong("nbd-tls", withSingleDash: true)],
        help: ArgumentHelp(
            "Require TLS on NBD over TCP (NBD_OPT_STARTTLS): pre-shared keys from FILE (IDENTITY:HEXKEY lines, as nbdkit, qemu and libnbd read them), or the X.509 files of DIR (ca-cert.pem, server-cert.pem, server-key.pem; clients need a certificate signed by ca-cert.pem).",
            valueName: "psk:FILE|x509:DIR"))
    var nbdTLS: String?
    @Flag(
        name: [.customLong("nbd-insecure"), .customLong("nbd-insecure", withSingleDash: true)],
        help: "Allow NBD without TLS on an address other than loopback (anyone who can reach it reads and writes every volume).")
    var nbdInsecure = false
    @Option(
        name: [.customLong("socket-group"), .customLong("socket-group", withSingleDash: true)],
        help: ArgumentHelp(
            "Give the control socket (and the NBD socket) to this group, mode 0660, so that its members can run snapback without root.",
            valueName: "GROUP"))
    var socketGroup: String?
    @Option(name: [.customLong("map-size-mib"), .customLong("map-size-mib", withSingleDash: true)], help: "Initial LMDB map size in MiB (it grows when full).")
    var mapSizeMebibytes = EventLog.mapSizeBytesDefault >> 20
    @Option(
        name: [.customLong("metrics"), .customLong("metrics", withSingleDash: true)],
        help: ArgumentHelp(
            "Also serve GET /metrics (Prometheus text format) over TCP on HOST:PORT, a bare PORT meaning 127.0.0.1:PORT (off by default; /metrics is always on the control socket).",
            valueName: "[HOST:]PORT"))
    var metrics: String?
    @Option(
        name: [.customLong("http"), .customLong("http", withSingleDash: true)],
        help: ArgumentHelp(
            "Serve a read-only live status page (volumes, lcmaps, lcgrps, progress, the last faults and rollbacks with their stories) over HTTP on HOST:PORT, a bare PORT meaning 127.0.0.1:PORT (off by default). It has no authentication: give a non-loopback HOST only on a trusted network.",
            valueName: "[HOST:]PORT"))
    var http: String?
    @Option(
        name: [.customLong("background-share"), .customLong("background-share", withSingleDash: true)],
        help: ArgumentHelp(
            "While hosts use volumes outside a rollback's family, rollbacks run at most this share of the time (1-100; 100: always at full speed).",
            valueName: "PERCENT"))
    var backgroundShare = DaemonOptions.backgroundSharePercentDefault
    @Option(
        name: [.customLong("cluster"), .customLong("cluster", withSingleDash: true)],
        help: ArgumentHelp(
            "Run as a node of a cluster whose log is in etcd (its v3 client URLs): one node leads and serves, the others stand by and take over when its lease runs out.",
            valueName: "etcd=URL[,URL...]"))
    var cluster: String?
    @Option(
        name: [.customLong("cluster-name"), .customLong("cluster-name", withSingleDash: true)],
        help: ArgumentHelp("The cluster's name (its keys are under /snapback/NAME/); required with --cluster.", valueName: "NAME"))
    var clusterName: String?
    @Option(
        name: [.customLong("node"), .customLong("node", withSingleDash: true)],
        help: ArgumentHelp("This node's name, unique in the cluster (default: the host name).", valueName: "NODE"))
    var node: String?
    @Option(
        name: [.customLong("lease-ttl"), .customLong("lease-ttl", withSingleDash: true)],
        help: ArgumentHelp("The leader's lease in seconds (1-60): a standby takes over this long after the leader died.", valueName: "SECONDS"))
    var leaseTTL: Int64 = 2
    @Option(
        name: [.customLong("shared-dir"), .customLong("shared-dir", withSingleDash: true)],
        help: ArgumentHelp(
            "With --cluster: volumes created without -path go to DIR/volumes, which every node must see (the same files, or a shared file system); default: the data directory.",
            valueName: "DIR"))
    var sharedDirectory: String?
    @Option(
        name: [.customLong("log-archive-keep"), .customLong("log-archive-keep", withSingleDash: true)],
        help: ArgumentHelp(
            "Archive the log periodically into DATA-DIR/archive/, keeping at least the newest N records (and those from the newest checkpoint on) in LMDB (off by default).",
            valueName: "N"))
    var logArchiveKeep: UInt64?
    @Option(
        name: [.customLong("log-archive-interval"), .customLong("log-archive-interval", withSingleDash: true)],
        help: ArgumentHelp("Seconds between archive runs with --log-archive-keep.", valueName: "SECONDS"))
    var logArchiveInterval = DaemonOptions.logArchiveIntervalSecondsDefault

    /// The host name, as a node name (characters outside the allowed set become '-').
    static func hostName() -> String {
        let name = String(ProcessInfo.processInfo.hostName.prefix(63).map { $0.isLetter || $0.isNumber || "_.-".contains($0) ? $0 : "-" })
        return name.isEmpty ? "node" : name
    }

    /// The id of group `name` (a name from the group database, or a decimal id); `nil` when
    /// there is no such group.
    static func groupID(_ name: String) -> gid_t? {
        if let id = gid_t(name), String(id) == name { return id }
        var group = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getgrnam_r(name, &group, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return group.gr_gid
    }

    func validate() throws {
        guard let colon = nbd.lastIndex(of: ":"), let port = Int(nbd[nbd.index(after: colon)...]), (0...65535).contains(port),
            colon != nbd.startIndex
        else {
            throw ValidationError("--nbd takes HOST:PORT, such as 127.0.0.1:10809")
        }
        if let nbdTLS {
            do throws(NBDTLSError) { _ = try NBDTLSSource(argument: nbdTLS) } catch { throw ValidationError("\(error)") }
        }
        if let socketGroup, Self.groupID(socketGroup) == nil {
            throw ValidationError("--socket-group: no group named \(socketGroup)")
        }
        if let nbdSocket, nbdSocket.isEmpty || nbdSocket.utf8.count > 107 {
            throw ValidationError("--nbd-socket takes a path of 1 to 107 bytes (a Unix socket's limit)")
        }
        guard mapSizeMebibytes >= 1 else { throw ValidationError("--map-size-mib must be at least 1") }
        guard (1...100).contains(backgroundShare) else { throw ValidationError("--background-share takes a percentage from 1 to 100") }
        if let cluster {
            guard ClusterOptions.endpoints(parsing: cluster) != nil else {
                throw ValidationError("--cluster takes etcd=URL[,URL...], such as etcd=http://127.0.0.1:2379,http://127.0.0.1:22379")
            }
            guard let clusterName, ClusterOptions.isValidName(clusterName) else {
                throw ValidationError("--cluster needs --cluster-name NAME: 1 to 63 of letters, digits, '_', '.', '-'")
            }
            if let node, !ClusterOptions.isValidName(node) { throw ValidationError("--node takes 1 to 63 of letters, digits, '_', '.', '-'") }
            guard (1...60).contains(leaseTTL) else { throw ValidationError("--lease-ttl takes seconds from 1 to 60") }
            // The cluster's log is in etcd, which a node does not archive (Specs/cluster.md, 7):
            // refused rather than ignored.
            if logArchiveKeep != nil {
                throw ValidationError("--log-archive-keep does not go with --cluster: the cluster's log is in etcd, not archived by a node")
            }
        } else if clusterName != nil || node != nil || sharedDirectory != nil {
            throw ValidationError("--cluster-name, --node and --shared-dir go with --cluster")
        }
        guard (1...86_400).contains(logArchiveInterval) else { throw ValidationError("--log-archive-interval takes 1 to 86400 seconds") }
        if let metrics, Self.hostAndPort(metrics, defaultHost: "127.0.0.1") == nil {
            throw ValidationError("--metrics takes PORT or HOST:PORT, such as 9464 or 0.0.0.0:9464")
        }
        if let http, Self.hostAndPort(http, defaultHost: "127.0.0.1") == nil {
            throw ValidationError("--http takes PORT or HOST:PORT, such as 8080 or 127.0.0.1:8080")
        }
    }

    /// `HOST:PORT`, `[IPV6]:PORT`, or a bare `PORT` on `defaultHost`; `nil` when malformed.
    static func hostAndPort(_ text: String, defaultHost: String) -> (host: String, port: Int)? {
        let colon = text.lastIndex(of: ":")
        let portText = colon.map { text[text.index(after: $0)...] } ?? text[...]
        guard let port = Int(portText), (0...65535).contains(port) else { return nil }
        guard let colon else { return (defaultHost, port) }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    func run() async throws {
        let colon = nbd.lastIndex(of: ":")!
        var host = String(nbd[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var options = DaemonOptions(
            dataDirectory: dataDirectory, socketPath: socket, nbdHost: host, nbdPort: Int(nbd[nbd.index(after: colon)...])!,
            mapSizeBytes: mapSizeMebibytes << 20)
        options.backgroundSharePercent = backgroundShare
        if let cluster, let endpoints = ClusterOptions.endpoints(parsing: cluster), let clusterName {
            var clusterOptions = ClusterOptions(endpoints: endpoints, name: clusterName, node: node ?? Self.hostName())
            clusterOptions.leaseTTLSeconds = leaseTTL
            clusterOptions.sharedDirectory = sharedDirectory
            options.cluster = clusterOptions
        }
        options.logArchiveKeep = logArchiveKeep
        options.logArchiveIntervalSeconds = logArchiveInterval
        options.nbdSocketPath = nbdSocket
        do {
            if let nbdTLS { options.nbdTLS = try NBDTLSCredentials.load(NBDTLSSource(argument: nbdTLS)) }
            if options.nbdTLS == nil, !nbdInsecure, !NBDServer.isLoopback(host: host) {
                throw DaemonError(
                    "refusing to serve NBD without TLS on \(nbd), which is not a loopback address: give --nbd-tls psk:FILE or x509:DIR, or --nbd-insecure to serve it in the clear")
            }
        } catch {
            FileHandle.standardError.write(Data("snapbackd: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
        options.socketGroup = socketGroup.flatMap(Self.groupID)
        if let metrics, let address = Self.hostAndPort(metrics, defaultHost: "127.0.0.1") {
            options.metricsHost = address.host
            options.metricsPort = address.port
        }
        if let http, let address = Self.hostAndPort(http, defaultHost: "127.0.0.1") {
            options.httpHost = address.host
            options.httpPort = address.port
        }
        do {
            try await Daemon.run(options)
        } catch {
            FileHandle.standardError.write(Data("snapbackd: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
