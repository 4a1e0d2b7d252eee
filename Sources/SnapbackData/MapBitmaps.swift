import SnapbackCore

/// The three bitmaps of one forward map, in memory (see ``GrainBitmap`` for their cost).
public struct MapBitmaps: Sendable, Equatable {
    public var split: GrainBitmap
    public var dirty: GrainBitmap
    public var restored: GrainBitmap

    public init(grainCount: UInt64) {
        split = GrainBitmap(grainCount: grainCount)
        dirty = GrainBitmap(grainCount: grainCount)
        restored = GrainBitmap(grainCount: grainCount)
    }

    /// The bitmap of `kind`, changed in place through `_modify` (no copy of the bitmap).
    public subscript(kind: BitmapKind) -> GrainBitmap {
        get {
            switch kind {
            case .split: split
            case .dirty: dirty
            case .restored: restored
            }
        }
        _modify {
            switch kind {
            case .split: yield &split
            case .dirty: yield &dirty
            case .restored: yield &restored
            }
        }
    }
}

/// Planned bit changes to the bitmaps of some maps: made durable in one commit with the events
/// they go with, then applied in place to the in-memory bitmaps. A commit writes only the chunks
/// the marks touch, so its cost is the grains touched, not the volume.
public struct BitmapMarks: Sendable, Equatable {
    /// One bitmap of one map.
    public struct Key: Hashable, Sendable, Comparable {
        public var map: MapID
        public var kind: BitmapKind

        public init(map: MapID, kind: BitmapKind) {
            self.map = map
            self.kind = kind
        }

        public static func < (left: Key, right: Key) -> Bool {
            (left.map, left.kind.rawValue) < (right.map, right.kind.rawValue)
        }
    }

    /// The planned value of each changed grain, per bitmap.
    public private(set) var values: [Key: [UInt64: Bool]] = [:]

    public init() {}

    public var isEmpty: Bool { values.isEmpty }

    /// How many grain marks are planned.
    public var count: Int { values.values.reduce(0) { $0 + $1.count } }

    /// Plans grain `grain` of `map`'s bitmap `kind` to become `value`.
    public mutating func set(_ map: MapID, _ kind: BitmapKind, _ grain: UInt64, _ value: Bool) {
        values[Key(map: map, kind: kind), default: [:]][grain] = value
    }

    /// The planned value of the grain, or `nil` when no mark is planned for it.
    public func planned(_ map: MapID, _ kind: BitmapKind, _ grain: UInt64) -> Bool? {
        values[Key(map: map, kind: kind)]?[grain]
    }

    /// Adds `other`'s marks; where both plan a grain, `other`'s value wins (it comes later).
    public mutating func merge(_ other: BitmapMarks) {
        for (key, grains) in other.values {
            values[key, default: [:]].merge(grains) { _, later in later }
        }
    }

    /// Removes the planned marks of `map`.
    public mutating func removeAll(of map: MapID) {
        for key in values.keys where key.map == map { values[key] = nil }
    }

    /// The durable changes that make these marks: each touched chunk of `bitmaps[map][kind]`,
    /// whole, with the marks applied. Marks of maps without bitmaps are dropped.
    public func changes(against bitmaps: [MapID: MapBitmaps]) -> [BitmapChange] {
        var changes: [BitmapChange] = []
        for key in values.keys.sorted() {
            guard let bitmap = bitmaps[key.map]?[key.kind], let grains = values[key] else { continue }
            var byPart: [Int: [(UInt64, Bool)]] = [:]
            for (grain, value) in grains {
                precondition(grain < bitmap.grainCount, "mark of grain \(grain) outside \(bitmap.grainCount)")
                byPart[GrainBitmap.part(of: grain), default: []].append((grain, value))
            }
            for (part, marks) in byPart.sorted(by: { $0.key < $1.key }) {
                var bytes = bitmap.partBytes(part)
                for (grain, value) in marks {
                    let bit = grain % GrainBitmap.grainsPerPart
                    let mask = UInt8(1) << UInt8(bit & 7)
                    if value { bytes[Int(bit >> 3)] |= mask } else { bytes[Int(bit >> 3)] &= ~mask }
                }
                changes.append(.setPart(map: key.map, kind: key.kind, part: part, bytes: bytes))
            }
        }
        return changes
    }

    /// Applies the marks in place to `bitmaps` (maps without bitmaps are skipped).
    public func apply(to bitmaps: inout [MapID: MapBitmaps]) {
        for (key, grains) in values where bitmaps[key.map] != nil {
            for (grain, value) in grains { bitmaps[key.map]![key.kind][grain] = value }
        }
    }
}
