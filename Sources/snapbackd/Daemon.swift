import ArgumentParser
import Foundation
import SnapbackLog
import SnapbackServer

/// `snapbackd --data-dir DIR [--socket PATH] [--nbd HOST:PORT]`: the Snapback controller.
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
    @Option(name: [.customLong("map-size-mib"), .customLong("map-size-mib", withSingleDash: true)], help: "Initial LMDB map size in MiB (it grows when full).")
    var mapSizeMebibytes = EventLog.mapSizeBytesDefault >> 20

    func validate() throws {
        guard let colon = nbd.lastIndex(of: ":"), let port = Int(nbd[nbd.index(after: colon)...]), (0...65535).contains(port),
            colon != nbd.startIndex
        else {
            throw ValidationError("--nbd takes HOST:PORT, such as 127.0.0.1:10809")
        }
        guard mapSizeMebibytes >= 1 else { throw ValidationError("--map-size-mib must be at least 1") }
    }

    func run() async throws {
        let colon = nbd.lastIndex(of: ":")!
        var host = String(nbd[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let options = DaemonOptions(
            dataDirectory: dataDirectory, socketPath: socket, nbdHost: host, nbdPort: Int(nbd[nbd.index(after: colon)...])!,
            mapSizeBytes: mapSizeMebibytes << 20)
        do {
            try await Daemon.run(options)
        } catch {
            FileHandle.standardError.write(Data("snapbackd: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
