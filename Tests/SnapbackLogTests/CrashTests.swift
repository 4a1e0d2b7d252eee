import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog
import SnapbackRandom

@Suite("Crash safety with real processes")
struct CrashTests {
    /// Starts the log driver appending to `directory`, printing acknowledgements.
    func startDriver(_ directory: String, clients: Int) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: productsDirectory + "/snapback-log-driver")
        process.arguments = ["--dir", directory, "--events", "1000000", "--batch", "3", "--clients", String(clients), "--print-acks"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }

    @Test func killingTheWriterMidAppendLosesNoAcknowledgedEvent() throws {
        let directory = TemporaryDirectory("crash")
        defer { directory.remove() }
        var random = SeededRandom(seed: 31)
        var acknowledgedTotal = 0
        for round in 0..<6 {
            let (process, pipe) = try startDriver(directory.path, clients: round % 2 == 0 ? 1 : 8)
            // Let it run long enough to acknowledge some appends, then SIGKILL it mid-stream.
            usleep(UInt32.random(in: 150_000...400_000, using: &random))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let acknowledged = output.split(separator: "\n").compactMap { line -> UInt64? in
                let parts = line.split(separator: " ")
                return parts.count == 3 && parts[0] == "ack" ? UInt64(parts[2]) : nil
            }
            acknowledgedTotal += acknowledged.count
            let log = try EventLog(directory: directory.path)
            let report = log.verify()
            #expect(report.isSound, "round \(round): \(String(describing: report.problem))")
            if let highest = acknowledged.max() {
                #expect(log.lastSequence >= highest, "round \(round): acknowledged seq \(highest) lost; log ends at \(log.lastSequence)")
            }
            // Every append is whole: batches of 3 never split by a crash.
            #expect(log.lastSequence % 3 == 0)
            log.close()
        }
        #expect(acknowledgedTotal > 0, "the driver should have acknowledged something before each kill")
    }

    @Test func aReaderSeesAConsistentLogWhileAnotherProcessWrites() throws {
        let directory = TemporaryDirectory("reader")
        defer { directory.remove() }
        let (process, _) = try startDriver(directory.path, clients: 4)
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        usleep(200_000)
        var previous: UInt64 = 0
        for _ in 0..<5 {
            let reader = try EventLog(directory: directory.path, readOnly: true)
            let report = reader.verify()
            #expect(report.isSound, "\(String(describing: report.problem))")
            #expect(report.lastSequence >= previous)
            previous = report.lastSequence
            usleep(100_000)
        }
        #expect(previous > 0)
    }
}
