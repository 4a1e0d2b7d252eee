import SnapbackNBD
import SnapbackRandom
import Testing

/// `NBDReadReply.splitHoles`: zero runs of a structured read as OFFSET_HOLE chunks.
@Suite("Read replies with holes")
struct ReadReplyTests {
    /// Reassembles the chunks of one structured read reply: the bytes they describe (holes as
    /// zeroes), the chunk types in order, and whether only the last has DONE.
    private func reassemble(_ reply: [UInt8], offset: UInt64, lengthBytes: Int) -> (data: [UInt8], types: [UInt16], doneLast: Bool)? {
        var data = [UInt8](repeating: 0xEE, count: lengthBytes)
        var covered = 0
        var types: [UInt16] = []
        var doneLast = true
        var index = 0
        while index < reply.count {
            guard index + 20 <= reply.count, bigEndian(reply[index ..< index + 4], as: UInt32.self) == NBDMagic.structuredReply,
                  bigEndian(reply[index + 8 ..< index + 16], as: UInt64.self) == 7
            else { return nil }
            let flags: UInt16 = bigEndian(reply[index + 4 ..< index + 6])
            let type: UInt16 = bigEndian(reply[index + 6 ..< index + 8])
            let payload = Int(bigEndian(reply[index + 16 ..< index + 20], as: UInt32.self))
            let body = Array(reply[index + 20 ..< index + 20 + payload])
            index += 20 + payload
            if (flags & 1 == 1) != (index == reply.count) { doneLast = false }
            types.append(type)
            let chunkOffset = Int(bigEndian(body[0 ..< 8], as: UInt64.self) - offset)
            guard chunkOffset == covered else { return nil }  // in order, no gap, no overlap
            if type == NBDReplyType.offsetData.rawValue {
                data.replaceSubrange(chunkOffset ..< chunkOffset + payload - 8, with: body[8...])
                covered += payload - 8
            } else if type == NBDReplyType.offsetHole.rawValue {
                let length = Int(bigEndian(body[8 ..< 12], as: UInt32.self))
                guard length >= NBDReadReply.holeBytesMin else { return nil }
                data.replaceSubrange(chunkOffset ..< chunkOffset + length, with: repeatElement(0, count: length))
                covered += length
            } else {
                return nil
            }
        }
        return covered == lengthBytes ? (data, types, doneLast) : nil
    }

    private func split(_ data: [UInt8], offset: UInt64) -> [UInt8] {
        var reply = NBDWireEncoder.offsetDataHeader(cookie: 7, offset: offset, lengthBytes: UInt32(data.count)) + data
        let count = reply.withUnsafeMutableBytes { NBDReadReply.splitHoles($0, cookie: 7, offset: offset, lengthBytes: data.count) }
        return Array(reply[..<count])
    }

    @Test("a read with zero runs: data, hole, data chunks in order, the last with DONE; short runs and short reads stay data")
    func holesInTheMiddle() throws {
        var data = [UInt8](repeating: 0, count: 512 << 10)
        for index in 0 ..< 4096 { data[index] = 1 }
        for index in (300 << 10) ..< (300 << 10) + 10 { data[index] = 2 }
        let reply = split(data, offset: 1 << 20)
        let parsed = try #require(reassemble(reply, offset: 1 << 20, lengthBytes: data.count))
        #expect(parsed.data == data && parsed.doneLast)
        #expect(parsed.types == [1, 2, 1, 2])
        #expect(reply.count < 30_000)
        // A run shorter than 64 KiB, and a read shorter than 128 KiB, stay one data chunk.
        var short = [UInt8](repeating: 9, count: 256 << 10)
        for index in (8 << 10) ..< (8 << 10) + (60 << 10) { short[index] = 0 }
        #expect(split(short, offset: 0) == NBDWireEncoder.offsetDataHeader(cookie: 7, offset: 0, lengthBytes: UInt32(short.count)) + short)
        let small = [UInt8](repeating: 0, count: 100 << 10)
        #expect(split(small, offset: 0).count == 28 + small.count)
        // All zeroes: one hole chunk with DONE.
        let empty = split([UInt8](repeating: 0, count: 1 << 20), offset: 4096)
        #expect(empty.count == 32 && reassemble(empty, offset: 4096, lengthBytes: 1 << 20)?.types == [2])
    }

    @Test("any mix of data and zeroes at any offset reassembles to the same bytes (seeded)", arguments: 0 ..< 40)
    func reassemblesExactly(seed: UInt64) throws {
        var random = SeededRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        let length = Int.random(in: 1 ..< (1 << 20), using: &random)
        let offset = UInt64.random(in: 0 ..< (1 << 30), using: &random)
        var data = [UInt8](repeating: 0, count: length)
        var position = 0
        while position < length {
            let run = min(length - position, Int.random(in: 1 ..< 200_000, using: &random))
            if Bool.random(using: &random) {
                for index in position ..< position + run where Int.random(in: 0 ..< 8, using: &random) == 0 { data[index] = UInt8.random(in: 1 ... 255, using: &random) }
            }
            position += run
        }
        let reply = split(data, offset: offset)
        let parsed = try #require(reassemble(reply, offset: offset, lengthBytes: length), "seed \(seed)")
        #expect(parsed.data == data, "seed \(seed)")
        #expect(parsed.doneLast, "seed \(seed)")
        #expect(reply.count <= 28 + length, "seed \(seed)")
    }
}
