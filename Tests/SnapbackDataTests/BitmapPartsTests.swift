import Foundation
@testable import SnapbackAdapters
import SnapbackCore
import SnapbackData
import SnapbackLog
import Testing

/// The LMDB store keeps bitmaps in 1 KiB parts; a log written before parts holds whole 8 KiB
/// chunks, which still load, under the parts written since.
@Suite("bitmap parts in the log")
struct BitmapPartsTests {
    @Test("a log with whole chunks from an older build loads, parts written since win, a clear drops both")
    func olderChunksThenParts() throws {
        let directory = NSTemporaryDirectory() + "snapback-parts-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try EventLog(directory: directory)
        defer { log.close() }
        let store = try LogDurableStore(log: log)
        let grainCount: UInt64 = 150_000
        var old = GrainBitmap(grainCount: grainCount)
        for grain in [1, 9000, 70_000, 149_999] as [UInt64] { old[grain] = true }
        // As an older build wrote them: whole chunks under the plain kind byte.
        let table = try log.table("bitmaps")
        let legacy = (0..<old.chunkCount).map { chunk in
            (table: table, write: TableWrite.put(key: LogDurableStore.key(map: 4, kind: .dirty, chunk: chunk), value: old.chunkBytes(chunk)))
        }
        _ = try log.append([.controllerStarted(version: "old")], timestampMilliseconds: 1, writing: legacy)
        #expect(try store.loadBitmap(map: 4, kind: .dirty, grainCount: grainCount) == old)

        // A mark made now writes one part; loading gives the old chunks with the new part over them.
        var bitmaps: [MapID: MapBitmaps] = [4: MapBitmaps(grainCount: grainCount)]
        bitmaps[4]![.dirty] = old
        var marks = BitmapMarks()
        marks.set(4, .dirty, 9000, false)
        marks.set(4, .dirty, 9001, true)
        let changes = marks.changes(against: bitmaps)
        #expect(changes.count == 1)
        _ = try store.commit(events: [], bitmapChanges: changes, timestampMilliseconds: 2)
        var expected = old
        expected[9000] = false
        expected[9001] = true
        #expect(try store.loadBitmap(map: 4, kind: .dirty, grainCount: grainCount) == expected)

        // A clear drops the chunks and the parts.
        _ = try store.commit(events: [], bitmapChanges: [.clear(map: 4, kind: .dirty)], timestampMilliseconds: 3)
        #expect(try store.loadBitmap(map: 4, kind: .dirty, grainCount: grainCount) == GrainBitmap(grainCount: grainCount))
    }
}
