import Foundation
import Logging
import ServiceLifecycle
import SnapbackAPI
import SnapbackController
import SnapbackLog

/// Archives the running daemon's log (`POST /v1/log/archive`, and `--log-archive-keep` every
/// `--log-archive-interval`): checkpoints the committed state, then moves the records before that
/// checkpoint, bounded by the request, into archive segments (`EventLog.archive(through:)`, which
/// lets one run at a time).
struct LogArchiver: Sendable {
    let controller: Controller
    let log: EventLog

    /// Archives as `request` asks; runs on a blocking thread.
    /// - Throws: ``ErrorBody`` `bad_request` for a request that gives neither or both bounds;
    ///   the controller's error when the checkpoint fails; `LogError` when archiving fails.
    func archive(_ request: ArchiveRequest) async throws -> ArchiveResult {
        let (controller, log) = (controller, log)
        return try await blocking {
            let through = try request.through(lastSequence: controller.state.eventsApplied)
            if try log.checkpointSequences().first != controller.state.eventsApplied { try controller.checkpoint() }
            let report = try log.archive(through: through)
            return ArchiveResult(
                archived_through: report.archivedThrough, records_archived: report.recordsArchived,
                segments_written: report.segmentsWritten, latest_checkpoint: report.latestCheckpoint ?? 0)
        }
    }
}

/// `--log-archive-keep N`: every `--log-archive-interval` seconds, archives all but the newest N
/// records (and those from the newest checkpoint on). A failed run is logged at error level and
/// tried again at the next interval: the live log only keeps growing meanwhile.
struct ArchiveService: Service {
    let archiver: LogArchiver
    let keep: UInt64
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return  // cancelled: shutting down
            }
            do {
                let result = try await archiver.archive(ArchiveRequest(keep: keep))
                if result.records_archived > 0 {
                    logger.info(
                        "log archived",
                        metadata: [
                            "records": "\(result.records_archived)", "segments": "\(result.segments_written)",
                            "archivedThrough": "\(result.archived_through)",
                        ])
                }
            } catch {
                logger.error("archiving the log failed; trying again in \(interval)", metadata: ["error": "\(error)"])
            }
        }
    }
}
