// A structured read reply with its zero runs sent as NBD_REPLY_TYPE_OFFSET_HOLE chunks: pure
// byte rewriting, no NIO (fuzzed with the wire layer).

/// Turns a structured read reply (one `OFFSET_DATA` chunk) into data and hole chunks where the
/// data has long runs of zeroes, in place.
///
/// The export has already read the data into the reply (there is no cheaper way to know a range
/// reads as zeroes on a target's image, a rollback or a block device); the zero runs are found
/// by scanning it, a few bytes per data block, since a block with data almost always shows it in
/// its first bytes. A hole saves its bytes on the wire (and their TLS encryption); clients that
/// read sparse volumes without asking for BLOCK_STATUS first (qemu-io, a kernel client's
/// userspace helpers) get them as a 12-byte chunk.
public enum NBDReadReply {
    /// Runs of zeroes are looked for in blocks of this many bytes, aligned to the export.
    public static let zeroBlockBytes = 4096
    /// The shortest zero run sent as a hole (shorter ones are not worth a chunk of their own).
    public static let holeBytesMin = 64 * 1024
    /// Reads shorter than this are sent as one data chunk without looking.
    public static let scanBytesMin = 2 * holeBytesMin

    /// The bytes of one `OFFSET_DATA` chunk before its data: chunk header and 64-bit offset.
    static let dataChunkHeaderBytes = NBDHeaderSize.structuredReplyBytes + 8
    /// The bytes of one `OFFSET_HOLE` chunk: chunk header, 64-bit offset, 32-bit length.
    static let holeChunkBytes = NBDHeaderSize.structuredReplyBytes + 12

    /// Rewrites `reply`, a whole read reply made by `NBDWireEncoder.offsetDataHeader` (DONE set)
    /// followed by `lengthBytes` bytes of data read at `offset`, into a sequence of `OFFSET_DATA`
    /// and `OFFSET_HOLE` chunks in offset order, the last with DONE, where the data has runs of
    /// at least `holeBytesMin` zero bytes (in whole `zeroBlockBytes` blocks aligned to the
    /// export). Returns the reply's new length in bytes: the original length when nothing changed.
    /// The chunks never grow the reply: each data chunk but the first follows a hole that saved
    /// far more than its header, so the rewrite moves bytes only towards the front.
    public static func splitHoles(_ reply: UnsafeMutableRawBufferPointer, cookie: UInt64, offset: UInt64, lengthBytes: Int) -> Int {
        let total = dataChunkHeaderBytes + lengthBytes
        precondition(reply.count >= total, "the reply is shorter than its data")
        guard lengthBytes >= scanBytesMin else { return total }
        let data = UnsafeRawBufferPointer(rebasing: reply[dataChunkHeaderBytes ..< total])
        let holes = zeroRuns(data, offset: offset)
        guard !holes.isEmpty else { return total }

        // Segments in order: (start, length, isHole), covering the data.
        var segments: [(start: Int, length: Int, hole: Bool)] = []
        var position = 0
        for hole in holes {
            if hole.lowerBound > position { segments.append((position, hole.lowerBound - position, false)) }
            segments.append((hole.lowerBound, hole.count, true))
            position = hole.upperBound
        }
        if position < lengthBytes { segments.append((position, lengthBytes - position, false)) }

        var written = 0
        for (index, segment) in segments.enumerated() {
            let done: NBDReplyFlags = index == segments.count - 1 ? .done : []
            let chunkOffset = offset + UInt64(segment.start)
            if segment.hole {
                var chunk = NBDWireEncoder.structuredReplyHeader(flags: done, type: .offsetHole, cookie: cookie, payloadBytes: 12)
                chunk.appendBigEndian(chunkOffset)
                chunk.appendBigEndian(UInt32(segment.length))
                // It may cover the first bytes of its own zeroes (a read that starts with a hole),
                // never data.
                precondition(written + chunk.count <= dataChunkHeaderBytes + segment.start + segment.length, "a hole chunk would overwrite data")
                chunk.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: reply[written ..< written + chunk.count]).copyMemory(from: $0) }
                written += chunk.count
            } else {
                var header = NBDWireEncoder.structuredReplyHeader(
                    flags: done, type: .offsetData, cookie: cookie, payloadBytes: UInt32(8 + segment.length))
                header.appendBigEndian(chunkOffset)
                precondition(written <= segment.start, "a data chunk would overwrite data")
                header.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: reply[written ..< written + header.count]).copyMemory(from: $0) }
                written += header.count
                let source = dataChunkHeaderBytes + segment.start
                if source != written {
                    (reply.baseAddress! + written).copyMemory(from: reply.baseAddress! + source, byteCount: segment.length)
                }
                written += segment.length
            }
        }
        precondition(written < total, "splitting holes grew the reply")
        return written
    }

    /// The runs of zeroes of at least `holeBytesMin` bytes in `data` (read at `offset`), in
    /// whole blocks aligned to the export, in order.
    static func zeroRuns(_ data: UnsafeRawBufferPointer, offset: UInt64) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        // The first block boundary of the export at or after `offset`, relative to `data`.
        let misalignment = Int(offset % UInt64(zeroBlockBytes))
        var start = misalignment == 0 ? 0 : zeroBlockBytes - misalignment
        var runStart: Int?
        while start + zeroBlockBytes <= data.count {
            if isZero(UnsafeRawBufferPointer(rebasing: data[start ..< start + zeroBlockBytes])) {
                if runStart == nil { runStart = start }
            } else if let first = runStart {
                if start - first >= holeBytesMin { runs.append(first ..< start) }
                runStart = nil
            }
            start += zeroBlockBytes
        }
        if let first = runStart, start - first >= holeBytesMin { runs.append(first ..< start) }
        return runs
    }

    /// True when every byte is zero: eight bytes at a time, stopping at the first that is not.
    static func isZero(_ block: UnsafeRawBufferPointer) -> Bool {
        let words = block.count / 8
        for index in 0 ..< words where block.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
        for index in words * 8 ..< block.count where block[index] != 0 { return false }
        return true
    }
}
