import CLMDB
import Foundation
import SnapbackCore
import Testing

@testable import SnapbackLog

@Suite("Event log on a real LMDB environment")
struct EventLogTests {
    @Test func appendsAreNumberedFromOneAndSurviveReopening() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let log = try EventLog(directory: directory.path)
            let first = try log.append([.controllerStarted(version: "a")], timestampMilliseconds: 10)
            let second = try log.append(
                [.volumeCreated(id: 0, name: "v0", sizeBytes: 1 << 20, path: nil), .volumeRemoved(id: 0)], timestampMilliseconds: 20)
            #expect(first == AppendReceipt(firstSequence: 1, lastSequence: 1))
            #expect(second == AppendReceipt(firstSequence: 2, lastSequence: 3))
            log.close()
        }
        let reopened = try EventLog(directory: directory.path)
        #expect(reopened.lastSequence == 3)
        let stored = try reopened.storedEvents()
        #expect(stored.map(\.sequence) == [1, 2, 3])
        #expect(stored.map(\.timestampMilliseconds) == [10, 20, 20])
        #expect(stored[1].event == .volumeCreated(id: 0, name: "v0", sizeBytes: 1 << 20, path: nil))
        #expect(try reopened.tail(2).map(\.sequence) == [2, 3])
        let next = try reopened.append([.controllerStarted(version: "b")], timestampMilliseconds: 30)
        #expect(next.firstSequence == 4)
        #expect(reopened.verify().isSound)
    }

    @Test func concurrentAppendersAreGroupCommitted() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path)
        let receipts = try await withThrowingTaskGroup(of: AppendReceipt.self) { group in
            for client in 0..<64 {
                group.addTask {
                    try await log.append([.mapCopyProgressed(id: MapID(client), grainsCopied: 1), .mapCopyProgressed(id: MapID(client), grainsCopied: 2)], timestampMilliseconds: 1)
                }
            }
            var all: [AppendReceipt] = []
            for try await receipt in group { all.append(receipt) }
            return all
        }
        // Every append got two consecutive numbers, and together they cover 1...128 exactly.
        #expect(receipts.allSatisfy { $0.lastSequence == $0.firstSequence + 1 })
        #expect(receipts.flatMap { [$0.firstSequence, $0.lastSequence] }.sorted() == Array(1...128))
        #expect(log.commitCount < 64, "64 concurrent appends should share commits, made \(log.commitCount)")
        // Events of one append stay together and in order.
        for event in try log.storedEvents() where event.sequence % 2 == 1 {
            guard case let .mapCopyProgressed(_, grains) = event.event else { Issue.record("unexpected \(event)"); continue }
            #expect(grains == 1)
        }
        #expect(log.verify().isSound)
    }

    @Test func aFullMapFailsTheAppendAndRecordsNothing() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path, mapSizeBytes: 1 << 20, mapSizeBytesMax: 1 << 20)
        var appended: UInt64 = 0
        var failure: LogError?
        let reason = String(repeating: "x", count: 200)
        while failure == nil && appended < 100_000 {
            do {
                _ = try log.append(Array(repeating: .volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: reason), count: 50), timestampMilliseconds: 1)
                appended += 50
            } catch {
                failure = error
            }
        }
        let error = try #require(failure)
        #expect(error == .mapFull(mapSizeBytes: 1 << 20))
        #expect(error.description.contains("--map-size-mib"))
        #expect(log.lastSequence == appended)
        #expect(log.verify().isSound)
    }

    @Test func theMapGrowsWhenItFills() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let log = try EventLog(directory: directory.path, mapSizeBytes: 1 << 20)
        let reason = String(repeating: "y", count: 200)
        for _ in 0..<100 {
            _ = try log.append(Array(repeating: .volumeFaulted(id: 0, faultID: 1, cause: .operator, reason: reason), count: 100), timestampMilliseconds: 1)
        }
        #expect(log.lastSequence == 10_000)
        #expect(log.environment.mapSizeBytes > 1 << 20)
        #expect(log.verify().isSound)
    }

    @Test func aReadOnlyOpenOfAMissingLogSaysSo() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        #expect(throws: LogError.noLog(directory: directory.path + "/nothing")) {
            _ = try EventLog(directory: directory.path + "/nothing", readOnly: true)
        }
    }

    @Test func aReadOnlyLogRefusesAppends() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let log = try EventLog(directory: directory.path)
            _ = try log.append([.controllerStarted(version: "x")], timestampMilliseconds: 1)
            log.close()
        }
        let reader = try EventLog(directory: directory.path, readOnly: true)
        #expect(throws: LogError.readOnly) { _ = try reader.append([.controllerStarted(version: "y")], timestampMilliseconds: 2) }
        #expect(reader.lastSequence == 1)
    }

    @Test func everyLMDBReturnCodeHasAMeaning() {
        let codes: [Int32] = [
            MDB_KEYEXIST, MDB_NOTFOUND, MDB_PAGE_NOTFOUND, MDB_CORRUPTED, MDB_PANIC, MDB_VERSION_MISMATCH, MDB_INVALID,
            MDB_MAP_FULL, MDB_DBS_FULL, MDB_READERS_FULL, MDB_TLS_FULL, MDB_TXN_FULL, MDB_CURSOR_FULL, MDB_PAGE_FULL,
            MDB_MAP_RESIZED, MDB_INCOMPATIBLE, MDB_BAD_RSLOT, MDB_BAD_TXN, MDB_BAD_VALSIZE, MDB_BAD_DBI, -30779,
        ]
        var seen: [String] = []
        for code in codes {
            let error = LMDBError(returnCode: code, operation: "op")
            if case .system = error.code { Issue.record("code \(code) fell through to system") }
            seen.append("\(error.code)")
            #expect(error.description.hasPrefix("op: "))
        }
        #expect(Set(seen).count == codes.count)
        #expect(LMDBError(returnCode: ENOSPC, operation: "op").code == .system(errno: ENOSPC))
        #expect(LMDBError(returnCode: MDB_MAP_FULL, operation: "mdb_put").description.contains("larger map size"))
    }
}
