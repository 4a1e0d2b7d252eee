/// One bit per grain, in 64-bit words: memory is grains / 8 bytes.
public struct GrainBitmap: Sendable, Equatable {
    public private(set) var words: [UInt64]
    public let grainCount: UInt64

    public init(grainCount: UInt64) {
        self.grainCount = grainCount
        words = [UInt64](repeating: 0, count: Int((grainCount + 63) / 64))
    }

    public subscript(grain: UInt64) -> Bool {
        get {
            precondition(grain < grainCount, "grain \(grain) outside \(grainCount)")
            return words[Int(grain >> 6)] & (1 << (grain & 63)) != 0
        }
        set {
            precondition(grain < grainCount, "grain \(grain) outside \(grainCount)")
            if newValue {
                words[Int(grain >> 6)] |= 1 << (grain & 63)
            } else {
                words[Int(grain >> 6)] &= ~(1 << (grain & 63))
            }
        }
    }

    /// How many grains are set.
    public var setCount: UInt64 { words.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } }

    /// How many grains are set in this bitmap or in `other` (of the same size).
    public func unionCount(_ other: GrainBitmap) -> UInt64 {
        precondition(other.grainCount == grainCount)
        var count: UInt64 = 0
        for index in words.indices { count += UInt64((words[index] | other.words[index]).nonzeroBitCount) }
        return count
    }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    public mutating func clearAll() {
        for index in words.indices { words[index] = 0 }
    }

    /// The first set grain at or after `start`, or `nil`.
    public func nextSet(from start: UInt64) -> UInt64? { first(from: start) { $0 } }

    /// The first clear grain at or after `start`, or `nil`.
    public func nextClear(from start: UInt64) -> UInt64? { first(from: start) { ~$0 } }

    /// The first grain at or after `start` whose bit is set in `view(word)`, or `nil`.
    @inline(__always)
    private func first(from start: UInt64, _ view: (UInt64) -> UInt64) -> UInt64? {
        guard start < grainCount else { return nil }
        var index = Int(start >> 6)
        var word = view(words[index]) & (~0 << (start & 63))
        while true {
            if word != 0 {
                let grain = UInt64(index) << 6 + UInt64(word.trailingZeroBitCount)
                return grain < grainCount ? grain : nil
            }
            index += 1
            if index >= words.count { return nil }
            word = view(words[index])
        }
    }

    /// Bytes per stored chunk: 8 KiB, 65,536 grains.
    public static let chunkBytes = 8192
    public static let grainsPerChunk = UInt64(chunkBytes * 8)

    /// The chunks a stored bitmap is split into; an absent chunk means all zeroes.
    public var chunkCount: Int { Int((grainCount + Self.grainsPerChunk - 1) / Self.grainsPerChunk) }

    /// The chunk holding `grain`.
    public static func chunk(of grain: UInt64) -> Int { Int(grain / grainsPerChunk) }

    /// The bytes of chunk `index` (little-endian words; the last chunk may be shorter).
    public func chunkBytes(_ index: Int) -> [UInt8] {
        let wordsPerChunk = Self.chunkBytes / 8
        let first = index * wordsPerChunk
        let last = min(words.count, first + wordsPerChunk)
        var bytes: [UInt8] = []
        bytes.reserveCapacity((last - first) * 8)
        for word in words[first..<last] {
            withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// True when chunk `index` differs between this bitmap and `other` (of the same size).
    public func chunkDiffers(from other: GrainBitmap, chunk index: Int) -> Bool {
        let wordsPerChunk = Self.chunkBytes / 8
        let first = index * wordsPerChunk
        let last = min(words.count, first + wordsPerChunk)
        return words[first..<last] != other.words[first..<last]
    }

    /// Loads chunk `index` from stored bytes; fails when the length does not fit.
    public mutating func loadChunk(_ index: Int, from bytes: UnsafeRawBufferPointer) -> Bool {
        let wordsPerChunk = Self.chunkBytes / 8
        let first = index * wordsPerChunk
        let last = min(words.count, first + wordsPerChunk)
        guard index >= 0, index < chunkCount, bytes.count == (last - first) * 8 else { return false }
        for (offset, wordIndex) in (first..<last).enumerated() {
            words[wordIndex] = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset * 8, as: UInt64.self))
        }
        return true
    }
}
