import ArgumentParser
import Foundation
import SnapbackCore
import SnapbackLog
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `snapback log follow`: `tail -f` for the event log. It reads the log read-only, so it needs no
/// daemon and never slows one down (LMDB readers do not block the writer); new records are found
/// by polling, one short read transaction per poll.
struct LogFollow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "follow",
        abstract: "Print events as they are committed, like tail -f (log show's lines, or its JSON objects).",
        discussion: """
            Reads the log read-only, with or without a running snapbackd, and looks for new records \
            every 100 ms. Without -from it prints only the events committed after it started; \
            -from SEQ first prints the log from SEQ on (1 replays it all; the last sequence number \
            + 1 waits for the next event; anything else is refused with seq_out_of_range). \
            SIGINT, SIGTERM or a closed standard output (`| head`) end it with exit 0.
            """)

    /// How long to wait between looks at the log when nothing new was found.
    static let pollIntervalMicroseconds: UInt32 = 100_000
    /// A bound on the records read in one read transaction, so a long replay never pins old
    /// pages the writer would otherwise reuse.
    static let recordsPerTransactionMax: UInt64 = 4096

    @OptionGroup var location: LogLocation
    @Option(name: .ibm("from"), help: "First sequence number: 1 through the last + 1 (default: the next event committed).")
    var from: UInt64?
    @Flag(name: .ibm("json"), help: "One JSON object per line, as log show -json prints them.") var json = false

    func run() throws {
        if location.cluster.isGiven {
            throw CLIError(code: "invalid_value", message: "log follow reads a node's log: give -data-dir DIR of a cluster node (its mirror of the cluster log), not -cluster")
        }
        var log = try location.open()
        let head = log.lastSequence
        if let from, from < 1 || from > head + 1 {
            throw CLIError(
                code: "seq_out_of_range",
                message: "-from \(from) is outside 1 to \(head + 1): the log ends at seq \(head) (\(head + 1) waits for the next event)")
        }
        var next = from ?? head + 1
        // A human line names objects as the state before its event knew them.
        var state = json || next == 1 ? ControllerState() : try log.replay(through: next - 1).state
        StopSignals.install()
        let output = LineWriter(descriptor: STDOUT_FILENO)
        while !StopSignals.requested, output.isOpen {
            let last = next + Self.recordsPerTransactionMax - 1
            var found: UInt64 = 0
            do {
                try log.scan(from: next, through: last) { record in
                    let stored = try EventLog.storedEvent(record)
                    output.line(json ? EventText.jsonLine(stored) : LogShow.humanLine(stored, state))
                    if !json { state.apply(stored.event, at: stored.timestampMilliseconds) }
                    next = stored.sequence + 1
                    found += 1
                    return output.isOpen && !StopSignals.requested
                }
            } catch where Self.mapGrew(error) {
                // The writer grew the map past what this reader mapped: open it again.
                log = try location.open()
                continue
            }
            output.flush()
            if found == Self.recordsPerTransactionMax { continue }
            if output.readerClosed() { return }
            usleep(Self.pollIntervalMicroseconds)
        }
        output.flush()
    }

    /// True for LMDB's `MDB_MAP_RESIZED`: another process grew the map beyond this reader's.
    static func mapGrew(_ error: any Error) -> Bool {
        if let error = error as? LMDBError { return error.code == .mapResized }
        if case let .lmdb(inner)? = error as? LogError { return inner.code == .mapResized }
        return false
    }
}

/// SIGINT and SIGTERM ask `log follow` to stop after the line it is writing; SIGPIPE is ignored so
/// that a closed standard output shows up as `EPIPE`, which ends it with exit 0.
enum StopSignals {
    private static let received = Atomic<Bool>(false)

    /// True once SIGINT or SIGTERM arrived.
    static var requested: Bool { received.load(ordering: .relaxed) }

    static func install() {
        signal(SIGPIPE, SIG_IGN)
        var handled = sigset_t()
        sigemptyset(&handled)
        for number in [SIGINT, SIGTERM] {
            // An atomic store is async-signal-safe.
            signal(number) { _ in StopSignals.received.store(true, ordering: .relaxed) }
            sigaddset(&handled, number)
        }
        // A parent may have left them blocked (a spawned child inherits the signal mask).
        pthread_sigmask(SIG_UNBLOCK, &handled, nil)
    }
}

/// Writes lines to a file descriptor with write(2), buffered and flushed explicitly. Once the
/// reader has gone (`EPIPE`) it drops everything and `isOpen` turns false.
final class LineWriter {
    private let descriptor: Int32
    private var buffer: [UInt8] = []
    private let flushBytes = 1 << 16
    /// False once a write failed: the reader closed the pipe (or the output broke otherwise).
    private(set) var isOpen = true

    init(descriptor: Int32) { self.descriptor = descriptor }

    func line(_ text: String) {
        guard isOpen else { return }
        buffer.append(contentsOf: text.utf8)
        buffer.append(0x0A)
        if buffer.count >= flushBytes { flush() }
    }

    func flush() {
        defer { buffer.removeAll(keepingCapacity: true) }
        var offset = 0
        while isOpen, offset < buffer.count {
            let written = buffer.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written >= 0 {
                offset += written
            } else if errno != EINTR {
                isOpen = false
            }
        }
    }

    /// True when the output is a pipe or terminal whose other end is gone, so a quiet log does
    /// not keep `log follow` alive after `| head` has exited.
    func readerClosed() -> Bool {
        var entry = pollfd(fd: descriptor, events: 0, revents: 0)
        guard poll(&entry, 1, 0) == 1 else { return false }
        return entry.revents & Int16(POLLERR | POLLHUP) != 0
    }
}
