import SnapbackCore
import SnapbackData
import SnapbackRandom
import Testing

/// The chunked bitmap against a plain array of booleans, and the costs that must not grow with
/// the volume.
@Suite("grain bitmaps")
struct GrainBitmapTests {
    @Test("a chunked bitmap behaves like an array of booleans", arguments: [1, 63, 64, 65, 65_536, 65_537, 200_000] as [UInt64])
    func behavesLikeBooleans(grainCount: UInt64) {
        var random = SeededRandom(seed: grainCount)
        var bitmap = GrainBitmap(grainCount: grainCount)
        var other = GrainBitmap(grainCount: grainCount)
        var reference = [Bool](repeating: false, count: Int(grainCount))
        var otherReference = reference
        for _ in 0..<2000 {
            let grain = random.next() % grainCount
            let value = random.next() % 3 != 0
            bitmap[grain] = value
            reference[Int(grain)] = value
            let otherGrain = random.next() % grainCount
            other[otherGrain] = true
            otherReference[Int(otherGrain)] = true
        }
        #expect(bitmap.setCount == UInt64(reference.count { $0 }))
        #expect(bitmap.unionCount(other) == UInt64(zip(reference, otherReference).count { $0 || $1 }))
        for start in [0, grainCount / 3, grainCount - 1] {
            #expect(bitmap.nextSet(from: start) == reference.indices.first { $0 >= start && reference[$0] }.map(UInt64.init))
            #expect(bitmap.nextClear(from: start) == reference.indices.first { $0 >= start && !reference[$0] }.map(UInt64.init))
        }
        let notIn = zip(reference, otherReference).enumerated().first { $0.element.0 && !$0.element.1 }.map { UInt64($0.offset) }
        #expect(bitmap.firstNotIn(other) == notIn)
        // Stored chunks load back to an equal bitmap.
        var loaded = GrainBitmap(grainCount: grainCount)
        for chunk in 0..<bitmap.chunkCount {
            let bytes = bitmap.chunkBytes(chunk)
            #expect(bytes.withUnsafeBytes { loaded.loadChunk(chunk, from: $0) })
        }
        #expect(loaded == bitmap && loaded.setCount == bitmap.setCount)
    }

    @Test("clearing every bit of a chunk, and absent chunks, compare equal to a new bitmap")
    func equality() {
        var bitmap = GrainBitmap(grainCount: 300_000)
        bitmap[70_000] = true
        bitmap[70_000] = false
        #expect(bitmap == GrainBitmap(grainCount: 300_000) && bitmap.isEmpty)
        bitmap[299_999] = true
        bitmap.clearAll()
        #expect(bitmap == GrainBitmap(grainCount: 300_000))
    }

    @Test("a stored chunk of the wrong length, index or with bits past the end is refused")
    func refusesBadChunks() {
        var bitmap = GrainBitmap(grainCount: 100)
        #expect([UInt8](repeating: 0, count: 8).withUnsafeBytes { !bitmap.loadChunk(0, from: $0) })
        #expect([UInt8](repeating: 0, count: 16).withUnsafeBytes { !bitmap.loadChunk(1, from: $0) })
        var tail = [UInt8](repeating: 0, count: 16)
        tail[15] = 0x80  // grain 127: past the 100th
        #expect(tail.withUnsafeBytes { !bitmap.loadChunk(0, from: $0) })
        #expect(bitmap.isEmpty)
    }

    @Test("a 256 TiB volume's bitmap (2^32 grains of 64 KiB) costs chunks touched, not the volume")
    func hugeBitmap() {
        let grainCount: UInt64 = 1 << 32
        var bitmap = GrainBitmap(grainCount: grainCount)
        #expect(bitmap.chunkCount == 65_536)
        for grain in [0, 123_456_789, grainCount - 1] as [UInt64] { bitmap[grain] = true }
        #expect(bitmap.setCount == 3)
        #expect(bitmap.nextSet(from: 1) == 123_456_789)
        #expect(bitmap.nextSet(from: 123_456_790) == grainCount - 1)
        #expect(bitmap.nextClear(from: 0) == 1)
        #expect(bitmap.unionCount(GrainBitmap(grainCount: grainCount)) == 3)
    }

    @Test("marks become the 1 KiB parts they touch, with the marks applied, and change bitmaps in place")
    func marks() {
        var bitmaps: [MapID: MapBitmaps] = [3: MapBitmaps(grainCount: 200_000)]
        bitmaps[3]!.split[5] = true
        var marks = BitmapMarks()
        marks.set(3, .split, 6, true)
        marks.set(3, .split, 5, false)
        marks.set(3, .dirty, 150_000, true)
        marks.set(9, .dirty, 1, true)  // a map without bitmaps: dropped
        let changes = marks.changes(against: bitmaps)
        #expect(changes.count == 2)
        guard case let .setPart(map, kind, part, bytes) = changes[0], case let .setPart(_, otherKind, otherPart, otherBytes) = changes[1] else {
            Issue.record("unexpected changes \(changes)")
            return
        }
        #expect(map == 3 && kind == .split && part == 0 && bytes.count == 1024 && bytes[0] == 0b0100_0000)
        #expect(otherKind == .dirty && otherPart == 150_000 / 8192 && otherBytes[(150_000 % 8192) / 8] == 1 << (150_000 % 8))
        marks.apply(to: &bitmaps)
        #expect(bitmaps[3]!.split[6] && !bitmaps[3]!.split[5] && bitmaps[3]!.dirty[150_000] && bitmaps[9] == nil)
        #expect(bitmaps[3]!.split.setCount == 1 && bitmaps[3]!.dirty.setCount == 1)
    }

    @Test("parts load over whole chunks (an older log's), and a short last part round-trips")
    func partsOverChunks() {
        let grainCount: UInt64 = 200_003
        var original = GrainBitmap(grainCount: grainCount)
        for grain in [0, 8191, 8192, 70_000, 131_072, grainCount - 1] as [UInt64] { original[grain] = true }
        // Stored as an older log would (whole chunks), then part 1 rewritten with grain 9000 set.
        var newer = original
        newer[9000] = true
        newer[8192] = false
        var loaded = GrainBitmap(grainCount: grainCount)
        for chunk in 0..<original.chunkCount {
            let bytes = original.chunkBytes(chunk)
            #expect(bytes.withUnsafeBytes { loaded.loadChunk(chunk, from: $0) })
        }
        #expect(newer.partBytes(1).withUnsafeBytes { loaded.loadPart(1, from: $0) })
        #expect(loaded == newer && loaded.setCount == newer.setCount)
        // Every part of a bitmap, loaded alone, gives the bitmap back; wrong sizes are refused.
        var fromParts = GrainBitmap(grainCount: grainCount)
        for part in 0..<newer.partCount {
            #expect(newer.partBytes(part).withUnsafeBytes { fromParts.loadPart(part, from: $0) })
        }
        #expect(fromParts == newer)
        #expect(newer.partBytes(newer.partCount - 1).count == Int((grainCount % 8192 + 63) / 64) * 8)
        #expect(![UInt8](repeating: 0, count: 1024).withUnsafeBytes { fromParts.loadPart(newer.partCount - 1, from: $0) })
        #expect(![UInt8](repeating: 0, count: 1024).withUnsafeBytes { fromParts.loadPart(newer.partCount, from: $0) })
    }
}
