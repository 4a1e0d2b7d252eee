import ArgumentParser
import Foundation
import SnapbackAPI
import SnapbackLog

/// `snapback log archive -before SEQ | -keep N`: moves records before the newest checkpoint out
/// of LMDB into compressed, write-once segments in `DATA-DIR/archive/` (Specs/log-archive.md).
/// With snapbackd running on the data directory it asks snapbackd to do it; otherwise it opens
/// the log itself, holding the daemon's lock so that no snapbackd starts meanwhile, and first
/// checkpoints the head so that everything before it may go.
struct LogArchiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Move old records out of LMDB into compressed archive segments (DATA-DIR/archive/).",
        discussion:
            "The log stays one hash chain from seq 1: log verify, show, explain, state and export read the archive and the live log together. Only records before the newest checkpoint move. Through snapbackd when it runs on the data directory."
    )

    @OptionGroup var location: LogLocation
    @Option(name: .ibm("before"), help: ArgumentHelp("Archive the records before this sequence number.", valueName: "SEQ"))
    var before: UInt64?
    @Option(name: .ibm("keep"), help: ArgumentHelp("Keep at least the newest N records in LMDB; archive the rest.", valueName: "N"))
    var keep: UInt64?
    @Option(name: .ibm("socket"), help: "snapbackd's control socket, when it runs (default: DATA-DIR/control.sock).")
    var socket: String?
    @Flag(name: .ibm("json"), help: "Print {archivedThrough, recordsArchived, segmentsWritten, firstLiveSeq, latestCheckpoint}.")
    var json = false

    func validate() throws {
        guard (before == nil) != (keep == nil) else { throw ValidationError("give exactly one of -before SEQ and -keep N") }
        guard !location.cluster.isGiven else { throw ValidationError("log archive archives a node's LMDB log; a cluster's log in etcd is not archived (Specs/cluster.md)") }
        if let before, before < 1 { throw ValidationError("-before takes a sequence number of 1 or more") }
    }

    func run() throws {
        let dataDirectory = location.dataDirectory
        let request = ArchiveRequest(before: before, keep: keep)
        let result: ArchiveResult
        guard FileManager.default.fileExists(atPath: LogLocation.logDirectory(dataDirectory) + "/data.mdb") else {
            throw LogError.noLog(directory: LogLocation.logDirectory(dataDirectory))
        }
        let lock: DataDirectoryLock?
        do throws(DataDirectoryLockError) { lock = try DataDirectoryLock(directory: dataDirectory) } catch {
            throw CLIError(code: "lock_error", message: error.description)
        }
        if let lock {
            result = try withExtendedLifetime(lock) { try archiveHere(dataDirectory, request) }
        } else {
            let client = ControlClient(socketPath: socket ?? dataDirectory + "/control.sock")
            result = try client.call("POST", "/v1/log/archive", body: request, as: ArchiveResult.self)
        }
        if json {
            let object: [String: Any] = [
                "archivedThrough": result.archived_through, "recordsArchived": result.records_archived,
                "segmentsWritten": result.segments_written, "firstLiveSeq": result.archived_through + 1,
                "latestCheckpoint": result.latest_checkpoint,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let segments = "\(result.segments_written) segment\(result.segments_written == 1 ? "" : "s")"
        print(
            "archived \(result.records_archived) records in \(segments); records 1 to \(result.archived_through) are archived, the live log starts at seq \(result.archived_through + 1) (newest checkpoint: seq \(result.latest_checkpoint))"
        )
    }

    /// Archives with the log opened by this process (no snapbackd runs on the directory).
    private func archiveHere(_ dataDirectory: String, _ request: ArchiveRequest) throws -> ArchiveResult {
        let log = try EventLog(directory: LogLocation.logDirectory(dataDirectory), archiveDirectory: LogLocation.archiveDirectory(dataDirectory))
        defer { log.close() }
        let through: UInt64
        do throws(ErrorBody) { through = try request.through(lastSequence: log.lastSequence) } catch {
            throw CLIError(code: error.code, message: error.message)
        }
        // Records before the newest checkpoint may go: checkpoint the head first.
        if log.lastSequence > 0, try log.checkpointSequences().first != log.lastSequence {
            try log.saveCheckpoint(try log.replay().state)
        }
        let report = try log.archive(through: through)
        return ArchiveResult(
            archived_through: report.archivedThrough, records_archived: report.recordsArchived, segments_written: report.segmentsWritten,
            latest_checkpoint: report.latestCheckpoint ?? 0)
    }
}
