/// One bit per grain, kept as chunks of 65,536 grains (8 KiB) that exist only once a bit in them
/// was set: a bitmap costs one optional reference per chunk plus 8 KiB per chunk that holds a set
/// grain, so a 256 TiB volume with 64 KiB grains (2^32 grains) starts at 512 KiB per bitmap
/// instead of 512 MiB. Bits change in place; the count of set grains is kept as they change.
/// The durable store keeps a bitmap in *parts* of 8,192 grains (1 KiB), an eighth of a chunk,
/// so that a mark writes 1 KiB, not 8 (`Specs/data-plane.md`); logs written before parts keep
/// whole chunks, which still load.
public struct GrainBitmap: Sendable {
    public let grainCount: UInt64
    /// The chunks' 64-bit words (little-endian bit order: grain g is bit g % 64 of word g / 64 of
    /// its chunk); `nil` is a chunk with no grain set.
    private var chunks: [[UInt64]?]
    /// How many grains are set.
    public private(set) var setCount: UInt64 = 0

    public init(grainCount: UInt64) {
        self.grainCount = grainCount
        chunks = [[UInt64]?](repeating: nil, count: Int((grainCount + Self.grainsPerChunk - 1) / Self.grainsPerChunk))
    }

    /// Bytes per stored chunk: 8 KiB, 65,536 grains.
    public static let chunkBytes = 8192
    public static let grainsPerChunk = UInt64(chunkBytes * 8)
    static let wordsPerChunk = chunkBytes / 8

    /// The chunks a bitmap is split into; an absent chunk means all zeroes.
    public var chunkCount: Int { chunks.count }

    /// The chunk holding `grain`.
    public static func chunk(of grain: UInt64) -> Int { Int(grain / grainsPerChunk) }

    /// The number of words of chunk `index` (the last chunk may be shorter).
    func wordCount(ofChunk index: Int) -> Int {
        let totalWords = Int((grainCount + 63) / 64)
        return min(Self.wordsPerChunk, totalWords - index * Self.wordsPerChunk)
    }

    public subscript(grain: UInt64) -> Bool {
        get {
            precondition(grain < grainCount, "grain \(grain) outside \(grainCount)")
            guard let words = chunks[Int(grain / Self.grainsPerChunk)] else { return false }
            return words[Int((grain % Self.grainsPerChunk) >> 6)] & (1 << (grain & 63)) != 0
        }
        set {
            precondition(grain < grainCount, "grain \(grain) outside \(grainCount)")
            let chunk = Int(grain / Self.grainsPerChunk)
            let word = Int((grain % Self.grainsPerChunk) >> 6)
            let bit: UInt64 = 1 << (grain & 63)
            if chunks[chunk] == nil {
                guard newValue else { return }
                chunks[chunk] = [UInt64](repeating: 0, count: wordCount(ofChunk: chunk))
            }
            let old = chunks[chunk]![word]
            let new = newValue ? old | bit : old & ~bit
            guard new != old else { return }
            chunks[chunk]![word] = new
            if newValue { setCount += 1 } else { setCount -= 1 }
        }
    }

    /// How many grains are set in this bitmap or in `other` (of the same size). Costs the chunks
    /// that hold a set grain, not the volume.
    public func unionCount(_ other: GrainBitmap) -> UInt64 {
        precondition(other.grainCount == grainCount)
        var count: UInt64 = 0
        for index in chunks.indices {
            switch (chunks[index], other.chunks[index]) {
            case (nil, nil): continue
            case let (words?, nil), let (nil, words?):
                for word in words { count += UInt64(word.nonzeroBitCount) }
            case let (words?, others?):
                for position in words.indices { count += UInt64((words[position] | others[position]).nonzeroBitCount) }
            }
        }
        return count
    }

    /// True when every grain set here is set in `other` (of the same size).
    public func isSubset(of other: GrainBitmap) -> Bool { firstNotIn(other) == nil }

    /// The first grain set here and clear in `other` (of the same size), or `nil`.
    public func firstNotIn(_ other: GrainBitmap) -> UInt64? {
        precondition(other.grainCount == grainCount)
        for index in chunks.indices {
            guard let words = chunks[index] else { continue }
            let others = other.chunks[index]
            for position in words.indices {
                let bits = words[position] & ~(others?[position] ?? 0)
                if bits != 0 { return UInt64(index) * Self.grainsPerChunk + UInt64(position << 6 + bits.trailingZeroBitCount) }
            }
        }
        return nil
    }

    public var isEmpty: Bool { setCount == 0 }

    /// Clears every grain (drops every chunk).
    public mutating func clearAll() {
        guard setCount > 0 else { return }
        for index in chunks.indices where chunks[index] != nil { chunks[index] = nil }
        setCount = 0
    }

    /// The first set grain at or after `start`, or `nil`. Skips absent chunks whole.
    public func nextSet(from start: UInt64) -> UInt64? { first(from: start, absentMatches: false) { $0 } }

    /// The first clear grain at or after `start`, or `nil`.
    public func nextClear(from start: UInt64) -> UInt64? { first(from: start, absentMatches: true) { ~$0 } }

    /// The first grain at or after `start` whose bit is set in `view(word)`, or `nil`; an absent
    /// chunk matches at its first grain when `absentMatches`, else is skipped.
    @inline(__always)
    private func first(from start: UInt64, absentMatches: Bool, _ view: (UInt64) -> UInt64) -> UInt64? {
        guard start < grainCount else { return nil }
        var chunk = Int(start / Self.grainsPerChunk)
        var firstWord = Int((start % Self.grainsPerChunk) >> 6)
        var mask: UInt64 = ~0 << (start & 63)
        while chunk < chunks.count {
            let base = UInt64(chunk) * Self.grainsPerChunk
            if let words = chunks[chunk] {
                for position in firstWord..<words.count {
                    let bits = view(words[position]) & mask
                    mask = ~0
                    if bits != 0 {
                        let grain = base + UInt64(position << 6 + bits.trailingZeroBitCount)
                        return grain < grainCount ? grain : nil
                    }
                }
            } else if absentMatches {
                let grain = base + UInt64(firstWord << 6) + UInt64((~0 & mask).trailingZeroBitCount)
                return grain < grainCount ? grain : nil
            }
            chunk += 1
            firstWord = 0
            mask = ~0
        }
        return nil
    }

    /// The bytes of chunk `index` (little-endian words; the last chunk may be shorter).
    public func chunkBytes(_ index: Int) -> [UInt8] {
        let count = wordCount(ofChunk: index)
        var bytes = [UInt8](repeating: 0, count: count * 8)
        guard let words = chunks[index] else { return bytes }
        bytes.withUnsafeMutableBytes { buffer in
            for (position, word) in words.enumerated() {
                buffer.storeBytes(of: word.littleEndian, toByteOffset: position * 8, as: UInt64.self)
            }
        }
        return bytes
    }

    /// Bytes per stored part: 1 KiB, 8,192 grains (an eighth of a chunk).
    public static let partBytes = 1024
    public static let grainsPerPart = UInt64(partBytes * 8)
    static let wordsPerPart = partBytes / 8

    /// The part holding `grain`.
    public static func part(of grain: UInt64) -> Int { Int(grain / grainsPerPart) }

    /// The parts a bitmap is stored in.
    public var partCount: Int { Int((grainCount + Self.grainsPerPart - 1) / Self.grainsPerPart) }

    /// The bytes of part `index` (little-endian words; the last part may be shorter).
    public func partBytes(_ index: Int) -> [UInt8] {
        let chunk = index / (Self.chunkBytes / Self.partBytes)
        let firstWord = (index % (Self.chunkBytes / Self.partBytes)) * Self.wordsPerPart
        let count = min(Self.wordsPerPart, wordCount(ofChunk: chunk) - firstWord)
        var bytes = [UInt8](repeating: 0, count: count * 8)
        guard let words = chunks[chunk] else { return bytes }
        bytes.withUnsafeMutableBytes { buffer in
            for position in 0..<count {
                buffer.storeBytes(of: words[firstWord + position].littleEndian, toByteOffset: position * 8, as: UInt64.self)
            }
        }
        return bytes
    }

    /// Loads part `index` from stored bytes (over whatever its chunk held); fails when the index
    /// or the length does not fit.
    public mutating func loadPart(_ index: Int, from bytes: UnsafeRawBufferPointer) -> Bool {
        guard index >= 0, index < partCount else { return false }
        let chunk = index / (Self.chunkBytes / Self.partBytes)
        let firstWord = (index % (Self.chunkBytes / Self.partBytes)) * Self.wordsPerPart
        let count = min(Self.wordsPerPart, wordCount(ofChunk: chunk) - firstWord)
        guard bytes.count == count * 8 else { return false }
        var words = chunks[chunk] ?? [UInt64](repeating: 0, count: wordCount(ofChunk: chunk))
        var delta: Int64 = 0
        for position in 0..<count {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position * 8, as: UInt64.self))
            delta += Int64(word.nonzeroBitCount) - Int64(words[firstWord + position].nonzeroBitCount)
            words[firstWord + position] = word
        }
        let tailBits = grainCount % 64
        if chunk == chunkCount - 1, tailBits != 0, words[words.count - 1] >> tailBits != 0 { return false }
        chunks[chunk] = words.allSatisfy { $0 == 0 } ? nil : words
        setCount = UInt64(Int64(setCount) + delta)
        return true
    }

    /// Loads chunk `index` from stored bytes; fails when the index or the length does not fit.
    public mutating func loadChunk(_ index: Int, from bytes: UnsafeRawBufferPointer) -> Bool {
        guard index >= 0, index < chunkCount else { return false }
        let count = wordCount(ofChunk: index)
        guard bytes.count == count * 8 else { return false }
        var words = [UInt64](repeating: 0, count: count)
        var loaded: UInt64 = 0
        for position in 0..<count {
            words[position] = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position * 8, as: UInt64.self))
            loaded += UInt64(words[position].nonzeroBitCount)
        }
        // Bits past the last grain are never set by this type; stored ones would corrupt counts.
        let tailBits = grainCount % 64
        if index == chunkCount - 1, tailBits != 0, words[count - 1] >> tailBits != 0 { return false }
        setCount -= chunks[index].map { $0.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } } ?? 0
        chunks[index] = loaded == 0 ? nil : words
        setCount += loaded
        return true
    }
}

extension GrainBitmap: Equatable {
    /// Equal when the same grains are set (an absent chunk equals a chunk of zeroes).
    public static func == (left: GrainBitmap, right: GrainBitmap) -> Bool {
        guard left.grainCount == right.grainCount, left.setCount == right.setCount else { return false }
        for index in left.chunks.indices {
            switch (left.chunks[index], right.chunks[index]) {
            case (nil, nil): continue
            case let (words?, nil), let (nil, words?): if words.contains(where: { $0 != 0 }) { return false }
            case let (words?, others?): if words != others { return false }
            }
        }
        return true
    }
}
