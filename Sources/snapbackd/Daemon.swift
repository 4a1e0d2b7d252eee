import ArgumentParser
import Foundation
import Logging
import SnapbackCore
import SnapbackLog

/// `snapbackd --data-dir DIR [--socket PATH] [--nbd HOST:PORT]`: the Snapback controller.
@main
struct Daemon: ParsableCommand {
    static let version = "0.1.0"
    /// A checkpoint is written at start-up when more events than this were replayed since the last one.
    static let checkpointIntervalEvents: UInt64 = 10_000

    static let configuration = CommandConfiguration(
        commandName: "snapbackd", abstract: "The Snapback snapshot controller.", version: version)

    @Option(name: [.customLong("data-dir"), .customLong("data-dir", withSingleDash: true)], help: "Data directory (LMDB log, volumes, control socket).")
    var dataDirectory = "./var"
    @Option(name: [.customLong("socket"), .customLong("socket", withSingleDash: true)], help: "Control socket (default DIR/control.sock).")
    var socket: String?
    @Option(name: [.customLong("nbd"), .customLong("nbd", withSingleDash: true)], help: "NBD listen address.")
    var nbd = "127.0.0.1:10809"
    @Option(name: [.customLong("map-size-mib"), .customLong("map-size-mib", withSingleDash: true)], help: "LMDB map size in MiB.")
    var mapSizeMebibytes = EventLog.mapSizeBytesDefault >> 20

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "snapbackd")
        logger.logLevel = .info
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw DaemonError("cannot create data directory \(dataDirectory): \(error.localizedDescription)")
        }
        let lock = try DataDirectoryLock(directory: dataDirectory)
        defer { withExtendedLifetime(lock) {} }

        let started = Date()
        let log = try EventLog(directory: dataDirectory + "/log", mapSizeBytes: mapSizeMebibytes << 20)
        let replay = try log.replay()
        for rejected in replay.checkpointsRejected {
            logger.warning("checkpoint skipped", metadata: ["reason": "\(rejected)"])
        }
        var state = replay.state
        let events = try decide(.recordControllerStart(version: Self.version), state)
        _ = try log.append(events, timestampMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        events.forEach { state.apply($0) }
        if replay.eventsReplayed >= Self.checkpointIntervalEvents {
            try log.saveCheckpoint(state)
        }
        logger.info(
            "log replayed",
            metadata: [
                "dataDir": "\(dataDirectory)", "lastSeq": "\(state.eventsApplied)",
                "checkpoint": "\(replay.checkpointSequence.map(String.init) ?? "none")",
                "eventsReplayed": "\(replay.eventsReplayed)", "volumes": "\(state.volumes.count)",
                "lcmaps": "\(state.maps.count)",
                "milliseconds": "\(Int(Date().timeIntervalSince(started) * 1000))",
            ])

        // Until the control API lands, the daemon holds the log open and waits for a signal.
        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        logger.info("shutting down")
        if state.eventsApplied > (replay.checkpointSequence ?? 0) {
            try log.saveCheckpoint(state)
        }
        log.close()
    }
}

/// An exclusive `flock` on `DIR/snapbackd.lock`: a second snapbackd on the same data directory
/// is refused. The kernel drops the lock when the process dies, so a crash leaves nothing stale.
final class DataDirectoryLock {
    private let descriptor: Int32

    init(directory: String) throws {
        let path = directory + "/snapbackd.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw DaemonError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw DaemonError("another snapbackd is already running on \(directory) (it holds \(path))")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = pid.withCString { write(descriptor, $0, strlen($0)) }
    }

    deinit { close(descriptor) }
}

/// A start-up failure: printed as one line, exit status 1.
struct DaemonError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
