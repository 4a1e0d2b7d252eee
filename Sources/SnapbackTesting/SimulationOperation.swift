import SnapbackCore

/// One step of a simulated run, as the seeded generator or a scenario file asks for it.
public enum SimulationOperation: Sendable, Equatable, CustomStringConvertible {
    /// A command through ``Controller/execute(_:)`` (an operator's, or a monitor's fault).
    case command(Command)
    /// A host write through ``Controller/write(volume:offset:bytes:fua:)``.
    case write(volume: String, offset: UInt64, bytes: WriteBytes, fua: Bool)
    /// Host writes arriving together, as concurrent NBD writes do: one batch through
    /// ``Controller/write(_:)`` (shared copy-on-write syncs and commit).
    case writeBatch([Write])
    /// A host read, checked against the reference model.
    case read(volume: String, offset: UInt64, length: Int)
    /// A host flush.
    case flush(volume: String)
    /// One round of background work.
    case step(budgetBytes: UInt64, copies: Bool)
    /// Background work until none remains (bounded).
    case drain
    /// Lets `milliseconds` pass on the simulated clock (hold windows come due).
    case wait(milliseconds: Int64)
    /// Schedules a crash: the `ioPoints`-th I/O point from now does not happen.
    case scheduleCrash(ioPoints: Int)
    /// Crashes now (unsynced writes are lost, kept or torn) and starts a new controller.
    case crashAndRestart
    /// Makes every operation on `volume` fail with an I/O error for the next `operations` steps.
    case injectErrors(volume: String, operations: Int)
    /// Makes every write to `volume`'s disk answer ENOSPC for the next `operations` steps.
    case injectNoSpace(volume: String, operations: Int)
    /// Make every durable commit fail for `operations` operations: ENOSPC when `noSpace`, else EIO.
    case failCommits(operations: Int, noSpace: Bool)

    /// One write of a ``writeBatch(_:)``.
    public struct Write: Sendable, Equatable, CustomStringConvertible {
        public var volume: String
        public var offset: UInt64
        public var bytes: WriteBytes
        public var fua: Bool

        public init(volume: String, offset: UInt64, bytes: WriteBytes, fua: Bool) {
            self.volume = volume
            self.offset = offset
            self.bytes = bytes
            self.fua = fua
        }

        public var description: String { "\(volume) offset \(offset): \(bytes)\(fua ? " FUA" : "")" }
    }

    /// The bytes of a host write, described compactly so that a run prints readably.
    public enum WriteBytes: Sendable, Equatable, CustomStringConvertible {
        /// `length` bytes of one value.
        case fill(UInt8, length: Int)
        /// `length` bytes of the shared random pattern, from position `start` (wrapping).
        case pattern(start: Int, length: Int)

        /// The number of bytes written.
        public var length: Int {
            switch self {
            case let .fill(_, length), let .pattern(_, length): length
            }
        }

        /// The bytes themselves.
        public var bytes: [UInt8] {
            switch self {
            case let .fill(value, length):
                return [UInt8](repeating: value, count: length)
            case let .pattern(start, length):
                let pool = patternPool
                var bytes: [UInt8] = []
                bytes.reserveCapacity(length)
                var position = start % pool.count
                while bytes.count < length {
                    let take = min(length - bytes.count, pool.count - position)
                    bytes.append(contentsOf: pool[position..<position + take])
                    position = 0
                }
                return bytes
            }
        }

        /// A short account, e.g. `4096 bytes of 0xa5`.
        public var description: String {
            switch self {
            case let .fill(value, length): "\(length) bytes of 0x\(String(value, radix: 16))"
            case let .pattern(start, length): "\(length) bytes of pattern@\(start)"
            }
        }
    }

    /// The operation as a verbose replay prints it.
    public var description: String {
        switch self {
        case let .command(command): "command \(command)"
        case let .write(volume, offset, bytes, fua): "write \(volume) offset \(offset): \(bytes)\(fua ? " FUA" : "")"
        case let .writeBatch(writes): "write batch [" + writes.map(\.description).joined(separator: "; ") + "]"
        case let .read(volume, offset, length): "read \(volume) offset \(offset) length \(length)"
        case let .flush(volume): "flush \(volume)"
        case let .step(budget, copies): "step budget \(budget)\(copies ? "" : " (rollbacks only)")"
        case .drain: "drain"
        case let .wait(milliseconds): "wait \(milliseconds) ms"
        case let .scheduleCrash(points): "schedule a crash at the \(points)th I/O point from now"
        case .crashAndRestart: "crash now and restart"
        case let .injectErrors(volume, operations): "inject I/O errors on \(volume) for \(operations) operations"
        case let .injectNoSpace(volume, operations): "fill the disk of \(volume) (writes answer ENOSPC) for \(operations) operations"
        case let .failCommits(operations, noSpace): "fail every durable commit with \(noSpace ? "ENOSPC" : "EIO") for \(operations) operations"
        }
    }
}

/// 1 MiB of fixed pseudo-random bytes: host writes take slices of it, so that every write is
/// distinguishable without generating bytes per write.
let patternPool: [UInt8] = {
    var random = SeededRandom(seed: 0x5eed_b10c)
    var bytes = [UInt8](repeating: 0, count: 1 << 20)
    bytes.withUnsafeMutableBytes { buffer in
        let words = buffer.bindMemory(to: UInt64.self)
        for index in words.indices { words[index] = random.next() }
    }
    return bytes
}()
