// A stand-in for swift-crypto's `Crypto` module, so that Sources/SnapbackLog/LogRecord.swift
// compiles unchanged into a fuzz target without linking swift-crypto (tools/fuzz builds it as a
// separate tiny module named `Crypto`). It provides only what LogRecord uses: `SHA256()`,
// `update(bufferPointer:)` and a 32-byte `finalize()`.
//
// NOT SHA-256: a fixed mixing of the input bytes. The fuzz targets never check the hash chain
// against real hashes, only that computing it does not crash.

/// A 32-byte digest with the shape of swift-crypto's `SHA256`.
public struct SHA256 {
    private var state = [UInt8](repeating: 0, count: 32)
    private var countBytes = 0

    public init() {}

    public mutating func update(bufferPointer: UnsafeRawBufferPointer) {
        for byte in bufferPointer {
            let index = countBytes % 32
            state[index] = state[index] &* 31 &+ byte
            countBytes += 1
        }
    }

    /// The 32 digest bytes.
    public func finalize() -> [UInt8] { state }
}
