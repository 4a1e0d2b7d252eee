import Foundation
import SnapbackCore
import SnapbackLog

// snapback-log-driver: appends synthetic events to a log, for crash tests and benchmarks.
//
//   snapback-log-driver --dir DIR --events N [--batch B] [--clients C] [--print-acks]
//                       [--archive-every-ms MS [--archive-segment-records R]]
//
// --batch B     events per append (one durable transaction each when --clients is 1)
// --clients C   C threads appending concurrently (group commit)
// --print-acks  print "ack FIRST LAST" to stdout, flushed, after each acknowledged append
// --archive-every-ms MS  meanwhile, every MS ms: checkpoint the head and archive everything
//               before it (segments of R records, 65,536 by default), printing "archived SEQ"
// Prints one JSON line at the end: events, seconds, eventsPerSecond.

func number(_ text: String, _ option: String) -> Int {
    guard let value = Int(text) else { fail("\(option) takes a number") }
    return value
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("snapback-log-driver: \(message)\n".utf8))
    exit(2)
}

var directory: String?
var eventsTotal = 1000
var batch = 1
var clients = 1
var printAcks = false
var archiveEveryMilliseconds: Int?
var archiveSegmentRecords = LogArchive.recordsPerSegmentDefault
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    func value() -> String {
        guard let value = arguments.popFirst() else { fail("\(argument) needs a value") }
        return value
    }
    switch argument {
    case "--dir": directory = value()
    case "--events": eventsTotal = number(value(), argument)
    case "--batch": batch = number(value(), argument)
    case "--clients": clients = number(value(), argument)
    case "--print-acks": printAcks = true
    case "--archive-every-ms": archiveEveryMilliseconds = number(value(), argument)
    case "--archive-segment-records": archiveSegmentRecords = number(value(), argument)
    default: fail("unknown option \(argument)")
    }
}
guard let directory, batch > 0, clients > 0, eventsTotal >= 0 else { fail("usage: --dir DIR --events N [--batch B] [--clients C] [--print-acks]") }

let batchEvents = batch
let shouldPrintAcks = printAcks
let log: EventLog
do { log = try EventLog(directory: directory) } catch { fail("\(error)") }
let output = FileHandle.standardOutput
let outputLock = NSLock()
let start = Date()
let perClient = eventsTotal / clients
let group = DispatchGroup()
if let interval = archiveEveryMilliseconds {
    let records = archiveSegmentRecords
    let archiver = Thread {
        while true {
            usleep(UInt32(interval) * 1000)
            do {
                let state = try log.replay().state
                guard state.eventsApplied > 0 else { continue }  // nothing appended yet
                try log.saveCheckpoint(state)
                let report = try log.archive(through: .max, recordsPerSegment: records)
                outputLock.lock()
                output.write(Data("archived \(report.archivedThrough)\n".utf8))
                outputLock.unlock()
            } catch {
                fail("archive: \(error)")
            }
        }
    }
    archiver.start()
}
for client in 0..<clients {
    group.enter()
    let thread = Thread {
        var appended = 0
        var grains = UInt64(client) << 40
        while appended < perClient {
            let count = min(batchEvents, perClient - appended)
            var events: [Event] = []
            for _ in 0..<count {
                grains += 1
                events.append(.mapCopyProgressed(id: MapID(client), grainsCopied: grains))
            }
            do {
                let receipt = try log.append(events, timestampMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
                if shouldPrintAcks {
                    outputLock.lock()
                    output.write(Data("ack \(receipt.firstSequence) \(receipt.lastSequence)\n".utf8))
                    outputLock.unlock()
                }
            } catch {
                fail("append: \(error)")
            }
            appended += count
        }
        group.leave()
    }
    thread.start()
}
group.wait()
let seconds = Date().timeIntervalSince(start)
log.close()
let total = perClient * clients
print("{\"events\": \(total), \"seconds\": \(seconds), \"eventsPerSecond\": \(Double(total) / max(seconds, 1e-9))}")
