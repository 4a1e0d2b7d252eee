@testable import SnapbackCore
import Testing
import SnapbackRandom

/// A bit-at-a-time CRC-32C, straight from the definition (reflected polynomial 0x82F63B78).
private func referenceCRC32C(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
    var value = ~crc
    for byte in bytes {
        value ^= UInt32(byte)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
    }
    return ~value
}

@Suite("CRC32C")
struct CRC32CTests {
    @Test("check value of \"123456789\" is 0xE3069283")
    func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(referenceCRC32C(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test("the empty input has CRC 0 and continuing over nothing keeps the CRC")
    func empty() {
        #expect(CRC32C.checksum([]) == 0)
        #expect(CRC32C.checksum([], continuing: 0xDEAD_BEEF) == 0xDEAD_BEEF)
    }

    /// RFC 3720 (iSCSI) appendix B.4 test vectors.
    @Test("RFC 3720 vectors")
    func rfc3720() {
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
    }

    @Test("crc(a + b) == crc(b, continuing: crc(a)) for random splits")
    func continuation() {
        var random = SeededRandom(seed: 0xC0C0)
        for _ in 0..<300 {
            let bytes = random.bytes(random.int(0...200))
            let split = random.int(0...bytes.count)
            let first = Array(bytes[..<split])
            let second = Array(bytes[split...])
            #expect(CRC32C.checksum(bytes) == CRC32C.checksum(second, continuing: CRC32C.checksum(first)))
        }
    }

    @Test("slicing-by-8 equals the bitwise reference for lengths 0...100, at every alignment")
    func slicingMatchesReference() {
        var random = SeededRandom(seed: 0x5EED)
        for length in 0...100 {
            for _ in 0..<3 {
                let bytes = random.bytes(length)
                let start = UInt32(truncatingIfNeeded: random.next())
                #expect(CRC32C.checksum(bytes) == referenceCRC32C(bytes), "length \(length)")
                #expect(CRC32C.checksum(bytes, continuing: start) == referenceCRC32C(bytes, continuing: start))
            }
            // The same bytes read through a buffer that starts at an odd address.
            let padded = random.bytes(length + 8)
            for offset in 1..<8 {
                let expected = referenceCRC32C(Array(padded[offset..<(offset + length)]))
                let actual = padded.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)])) }
                #expect(actual == expected, "length \(length) offset \(offset)")
            }
        }
        let large = random.bytes(70_000)
        #expect(CRC32C.checksum(large) == referenceCRC32C(large))
    }

    @Test("a single flipped bit always changes the CRC")
    func detectsBitFlips() {
        var random = SeededRandom(seed: 7)
        let bytes = random.bytes(64)
        let crc = CRC32C.checksum(bytes)
        for index in bytes.indices {
            for bit in 0..<8 {
                var flipped = bytes
                flipped[index] ^= 1 << bit
                #expect(CRC32C.checksum(flipped) != crc)
            }
        }
    }
}
