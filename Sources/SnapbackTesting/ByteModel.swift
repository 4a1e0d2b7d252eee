#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a host may read from one volume, known only from acknowledged operations (never from the
/// controller's internals): the bytes it must read now, the bytes that survive any crash, and the
/// host writes in between.
///
/// A byte is *known* when it was written and then made durable (FUA, flush) or when a crash has
/// since been observed; it is *uncertain* while a write to it is not durable: after a crash it may
/// hold the old value, the new one, or (a torn write) either per sector. A write that failed may
/// or may not have landed. A *wild* byte may hold anything (a stopped target's mixture of grains).
public struct ByteModel: Sendable, Equatable {
    /// A host write that is not durable yet.
    struct PendingWrite: Sendable, Equatable {
        var offset: Int
        var bytes: [UInt8]
        /// False for a write that failed: it may or may not have landed.
        var acknowledged: Bool
        var end: Int { offset + bytes.count }
    }

    /// What a read must return now, where no failed write and no wildness intervene.
    public private(set) var current: [UInt8]
    /// What survives any crash, where no pending write and no wildness intervene.
    public private(set) var stable: [UInt8]
    var pending: [PendingWrite] = []
    /// Bytes whose current value is unknown (sorted, disjoint).
    private(set) var wildCurrent: [Range<Int>] = []
    /// Bytes whose durable value is unknown (sorted, disjoint); a superset of `wildCurrent`.
    private(set) var wildStable: [Range<Int>] = []

    /// A volume of `sizeBytes` zeroes, all durable (a new simulated disk).
    public init(sizeBytes: Int) {
        current = [UInt8](repeating: 0, count: sizeBytes)
        stable = current
    }

    /// The volume's size in bytes.
    public var sizeBytes: Int { current.count }

    /// True when nothing about the bytes is known.
    public var isWhollyWild: Bool { wildCurrent == [0..<sizeBytes] }

    /// True when every byte is known now and durably (no pending write, nothing wild).
    public var isSettled: Bool { pending.isEmpty && wildStable.isEmpty }

    // MARK: Transitions

    /// An acknowledged host write; `fua` made it durable before it was acknowledged.
    mutating func write(at offset: Int, _ bytes: [UInt8], fua: Bool) {
        let range = offset..<offset + bytes.count
        guard !range.isEmpty else { return }
        Self.copy(bytes, 0, into: &current, offset, bytes.count)
        Self.subtract(range, from: &wildCurrent)
        if fua {
            Self.copy(bytes, 0, into: &stable, offset, bytes.count)
            Self.subtract(range, from: &wildStable)
            trimPending(range)
        } else {
            pending.append(PendingWrite(offset: offset, bytes: bytes, acknowledged: true))
        }
    }

    /// A host write that failed: it may or may not have landed, now and after a crash.
    mutating func failedWrite(at offset: Int, _ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        pending.append(PendingWrite(offset: offset, bytes: bytes, acknowledged: false))
    }

    /// An acknowledged flush: every acknowledged write is durable.
    mutating func flush() {
        stable = current
        wildStable = wildCurrent
        pending.removeAll { $0.acknowledged }
    }

    /// Nothing is known any more (a stopped target holds an unknown mixture of grains).
    mutating func makeWild() {
        pending.removeAll()
        wildCurrent = sizeBytes > 0 ? [0..<sizeBytes] : []
        wildStable = wildCurrent
    }

    /// A crash the model could not observe (the volume was unreadable): from now on a read may
    /// return any value that could have survived.
    mutating func crashUnobserved() {
        current = stable
        wildCurrent = wildStable
        for index in pending.indices { pending[index].acknowledged = false }
    }

    /// After a crash, `observed` is what survived; it is durable (the simulated disks keep
    /// nothing unsynced across a restart) and becomes the known content.
    mutating func settle(observed: [UInt8]) {
        precondition(observed.count == sizeBytes)
        current = observed
        stable = observed
        pending.removeAll()
        wildCurrent.removeAll()
        wildStable.removeAll()
    }

    /// Removes `range` from every pending write (a newer durable write covers it).
    private mutating func trimPending(_ range: Range<Int>) {
        var kept: [PendingWrite] = []
        for write in pending {
            guard write.offset < range.upperBound, write.end > range.lowerBound else {
                kept.append(write)
                continue
            }
            if write.offset < range.lowerBound {
                kept.append(PendingWrite(offset: write.offset, bytes: Array(write.bytes[0..<range.lowerBound - write.offset]), acknowledged: write.acknowledged))
            }
            if write.end > range.upperBound {
                kept.append(PendingWrite(offset: range.upperBound, bytes: Array(write.bytes[(range.upperBound - write.offset)...]), acknowledged: write.acknowledged))
            }
        }
        pending = kept
    }

    // MARK: Checks

    /// When bytes must be judged: as a read now, or as what survived a crash.
    public enum Moment: Sendable, Equatable {
        /// No crash since the model last changed: acknowledged writes must be there.
        case now
        /// After a crash: each byte is the durable value or any pending write's.
        case afterCrash
        /// Either (used for the `snapshot` of a scenario).
        case either
    }

    /// The first byte of `observed` (read at `offset`) that the model does not allow at
    /// `moment`, with the values it would allow; `nil` when all are allowed.
    public func firstDisallowed(_ observed: [UInt8], at offset: Int, _ moment: Moment) -> (offset: Int, observed: UInt8, allowed: [UInt8])? {
        firstDisallowed(observed, 0, at: offset, count: observed.count, moment)
    }

    /// ``firstDisallowed(_:at:_:)`` for `observed[start..<start+count]`.
    func firstDisallowed(_ observed: [UInt8], _ start: Int, at offset: Int, count: Int, _ moment: Moment) -> (offset: Int, observed: UInt8, allowed: [UInt8])? {
        precondition(offset >= 0 && offset + count <= sizeBytes && start + count <= observed.count)
        let reference = moment == .afterCrash ? stable : current
        // Fast path: equal in bulk.
        if Self.equal(observed, start, reference, offset, count) { return nil }
        if moment == .either, Self.equal(observed, start, stable, offset, count) { return nil }
        // Else sector by sector (a crash tears writes at sector granularity): a sector that
        // differs must equal another allowed version of it as a whole, else it is judged byte by
        // byte.
        let sectorBytes = 512
        var position = offset
        let end = offset + count
        while position < end {
            let sectorEnd = min(end, (position / sectorBytes + 1) * sectorBytes)
            let length = sectorEnd - position
            let observedStart = start + position - offset
            defer { position = sectorEnd }
            if Self.equal(observed, observedStart, reference, position, length) { continue }
            if moment == .either, Self.equal(observed, observedStart, stable, position, length) { continue }
            var candidates: [PendingWrite] = []
            for write in pending where write.offset < sectorEnd && write.end > position && (moment != .now || !write.acknowledged) {
                candidates.append(write)
            }
            if candidates.contains(where: { $0.offset <= position && $0.end >= sectorEnd && Self.equal(observed, observedStart, $0.bytes, position - $0.offset, length) }) {
                continue
            }
            let wild = moment == .now ? wildCurrent : moment == .afterCrash ? wildStable : wildCurrent + wildStable
            for index in 0..<length {
                let at = position + index
                let value = observed[observedStart + index]
                if reference[at] == value || (moment == .either && stable[at] == value) { continue }
                var allowed = false
                for write in candidates where write.offset <= at && at < write.end && write.bytes[at - write.offset] == value {
                    allowed = true
                    break
                }
                if allowed || Self.contains(wild, at) { continue }
                return (at, value, allowedValues(at: at, moment))
            }
        }
        return nil
    }

    /// True when `value` may be read at byte `position` at `moment`.
    func allows(_ value: UInt8, at position: Int, _ moment: Moment) -> Bool {
        switch moment {
        case .now:
            if current[position] == value || Self.contains(wildCurrent, position) { return true }
            return pending.contains { !$0.acknowledged && $0.offset <= position && position < $0.end && $0.bytes[position - $0.offset] == value }
        case .afterCrash:
            if stable[position] == value || Self.contains(wildStable, position) { return true }
            return pending.contains { $0.offset <= position && position < $0.end && $0.bytes[position - $0.offset] == value }
        case .either:
            return allows(value, at: position, .now) || allows(value, at: position, .afterCrash)
        }
    }

    /// The values allowed at `position` (for messages; empty means any).
    func allowedValues(at position: Int, _ moment: Moment) -> [UInt8] {
        switch moment {
        case .now:
            if Self.contains(wildCurrent, position) { return [] }
            var values = [current[position]]
            for write in pending where !write.acknowledged && write.offset <= position && position < write.end {
                values.append(write.bytes[position - write.offset])
            }
            return values
        case .afterCrash:
            if Self.contains(wildStable, position) { return [] }
            var values = [stable[position]]
            for write in pending where write.offset <= position && position < write.end {
                values.append(write.bytes[position - write.offset])
            }
            return values
        case .either:
            let now = allowedValues(at: position, .now)
            let later = allowedValues(at: position, .afterCrash)
            return now.isEmpty || later.isEmpty ? [] : now + later
        }
    }

    /// The parts of `range` whose value at `moment` is known (not wild).
    func knownParts(of range: Range<Int>, _ moment: Moment) -> [Range<Int>] {
        var parts: [Range<Int>] = []
        var start = range.lowerBound
        let wildRanges = moment == .now ? wildCurrent : moment == .afterCrash ? wildStable : wildCurrent + wildStable
        for wild in wildRanges.sorted(by: { $0.lowerBound < $1.lowerBound }) where wild.upperBound > start && wild.lowerBound < range.upperBound {
            if wild.lowerBound > start { parts.append(start..<wild.lowerBound) }
            start = max(start, wild.upperBound)
        }
        if start < range.upperBound { parts.append(start..<range.upperBound) }
        return parts
    }

    // MARK: Byte helpers

    static func equal(_ a: [UInt8], _ aOffset: Int, _ b: [UInt8], _ bOffset: Int, _ count: Int) -> Bool {
        guard count > 0 else { return true }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in memcmp(pa.baseAddress! + aOffset, pb.baseAddress! + bOffset, count) == 0 }
        }
    }

    static func copy(_ source: [UInt8], _ sourceOffset: Int, into target: inout [UInt8], _ targetOffset: Int, _ count: Int) {
        guard count > 0 else { return }
        source.withUnsafeBytes { from in
            target.withUnsafeMutableBytes { to in
                _ = memcpy(to.baseAddress! + targetOffset, from.baseAddress! + sourceOffset, count)
            }
        }
    }

    static func contains(_ ranges: [Range<Int>], _ position: Int) -> Bool {
        ranges.contains { $0.contains(position) }
    }

    static func subtract(_ range: Range<Int>, from ranges: inout [Range<Int>]) {
        guard !ranges.isEmpty else { return }
        var result: [Range<Int>] = []
        for existing in ranges {
            if existing.upperBound <= range.lowerBound || existing.lowerBound >= range.upperBound {
                result.append(existing)
                continue
            }
            if existing.lowerBound < range.lowerBound { result.append(existing.lowerBound..<range.lowerBound) }
            if existing.upperBound > range.upperBound { result.append(range.upperBound..<existing.upperBound) }
        }
        ranges = result
    }
}
