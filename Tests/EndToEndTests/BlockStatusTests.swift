import Foundation
import Testing

/// Block status with real clients (Specs/nbd.md): `base:allocation` of a sparse volume and of a
/// target's point-in-time image through `nbdinfo --map` and `qemu-img map`, the changed grains of
/// a map through `nbdinfo --map=snapback:dirty:MAP`, and reads with structured replies on.
@Suite("NBD block status")
struct BlockStatusTests {
    static func uri(_ daemon: Daemon, _ export: String) -> String { "nbd+unix:///\(export)?socket=\(daemon.nbdSocketPath)" }

    /// `nbdinfo --map[=CONTEXT]`'s lines as (offset, length, flags).
    static func map(_ daemon: Daemon, _ export: String, context: String? = nil) async throws -> [(UInt64, UInt64, UInt32)] {
        let option = context.map { "--map=\($0)" } ?? "--map"
        let result = try await runProcess(Binaries.nbdinfo, [option, uri(daemon, export)])
        #expect(result.exitCode == 0, "\(result.stderr)")
        return result.stdout.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let offset = UInt64(fields[0]), let length = UInt64(fields[1]), let flags = UInt32(fields[2]) else { return nil }
            return (offset, length, flags)
        }
    }

    /// The data extents (flags 0 for base:allocation, 1 for a dirty context) as ranges.
    static func ranges(_ map: [(UInt64, UInt64, UInt32)], flags wanted: UInt32) -> [Range<UInt64>] {
        map.filter { $0.2 == wanted }.map { $0.0 ..< $0.0 + $0.1 }
    }

    @Test("a sparse volume's holes, and a target image's: split grains from the target, the others from the source")
    func holesOfVolumeAndImage() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "s", "-size", "64m")
            try await daemon.ok("mkvolume", "-name", "t", "-size", "64m")
            try await daemon.write("s", byte: 0x11, offset: 4 << 20, length: 65536)
            let before = try await Self.map(daemon, "s")
            let written: Range<UInt64> = (4 << 20) ..< (4 << 20) + 65536
            #expect(Self.ranges(before, flags: 0) == [written], "\(before)")
            #expect(before.reduce(0) { $0 + $1.1 } == 64 << 20)

            try await daemon.ok("mklcmap", "-source", "s", "-target", "t", "-name", "m0", "-copyrate", "0")
            try await daemon.ok("startlcmap", "m0")
            // A write to a new grain splits it: the target holds the old (hole) grain's zeroes,
            // the image still reports the source's data grain at 4 MiB.
            try await daemon.write("s", byte: 0x22, offset: 10 << 20, length: 4096)
            let image = try await Self.map(daemon, "t")
            #expect(Self.ranges(image, flags: 0).contains(written), "\(image)")
            #expect(image.reduce(0) { $0 + $1.1 } == 64 << 20)
            let json = try await runProcess(Binaries.qemuImg, ["map", "--output=json", "-f", "raw", Self.uri(daemon, "t")])
            #expect(json.exitCode == 0, "\(json.stderr)")
            #expect(json.stdout.contains("\"start\": 4194304, \"length\": 65536") && json.stdout.contains("\"zero\": true"), "\(json.stdout)")
            let source = try await runProcess(Binaries.qemuImg, ["map", "--output=json", "-f", "raw", Self.uri(daemon, "s")])
            #expect(source.stdout.contains("\"start\": 10485760, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
                    "\(source.stdout)")
        }
    }

    @Test("snapback:dirty:MAP lists exactly the grains written since the start; qemu-io reads stay correct")
    func dirtyContextListsWrittenGrains() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "s", "-size", "16m")
            try await daemon.ok("mkvolume", "-name", "t", "-size", "16m")
            try await daemon.write("s", byte: 0x33, offset: 0, length: 1 << 20)
            try await daemon.ok("mklcmap", "-source", "s", "-target", "t", "-name", "m0", "-copyrate", "0", "-grainsize", "256")
            try await daemon.ok("startlcmap", "m0")
            #expect(Self.ranges(try await Self.map(daemon, "s", context: "snapback:dirty:m0"), flags: 1).isEmpty)
            // Grains 1 (one byte), 8 and 9 (a write across their boundary), and 60.
            try await daemon.write("s", byte: 0x44, offset: 256 << 10, length: 1)
            try await daemon.write("s", byte: 0x44, offset: (9 << 18) - 512, length: 1024)
            try await daemon.write("s", byte: 0x44, offset: 60 << 18, length: 65536)
            let dirty = try await Self.map(daemon, "s", context: "snapback:dirty:m0")
            let grain: UInt64 = 256 << 10
            let expected: [Range<UInt64>] = [grain ..< 2 * grain, 8 * grain ..< 10 * grain, 60 * grain ..< 61 * grain]
            #expect(Self.ranges(dirty, flags: 1) == expected, "\(dirty)")

            let read = try await runProcess(Binaries.qemuIO, [
                "-f", "raw", "-r", Self.uri(daemon, "s"), "-c", "read -P 0x33 0 262144", "-c", "read -P 0x44 262144 1",
                "-c", "read -P 0 14680064 65536", "-c", "read -P 0x44 15728640 65536",
            ])
            #expect(read.exitCode == 0 && !read.stdout.contains("Pattern verification failed"), "\(read.stdout) \(read.stderr)")
            let image = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", Self.uri(daemon, "t"), "-c", "read -P 0x33 262144 1"])
            #expect(image.exitCode == 0 && !image.stdout.contains("Pattern verification failed"), "\(image.stdout) \(image.stderr)")
        }
    }

    @Test("write-zeroes punches a hole where the volume holds its own bytes, and copies the grain first under a map")
    func writeZeroesPunchesOrCopies() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "s", "-size", "8m")
            try await daemon.ok("mkvolume", "-name", "t", "-size", "8m")
            try await daemon.write("s", byte: 0x55, offset: 0, length: 2 << 20)
            let zeroed = try await runProcess(Binaries.qemuIO, ["-f", "raw", Self.uri(daemon, "s"), "-c", "write -z -u 0 1048576"])
            #expect(zeroed.exitCode == 0, "\(zeroed.stderr)")
            let left: Range<UInt64> = (1 << 20) ..< (2 << 20)
            #expect(Self.ranges(try await Self.map(daemon, "s"), flags: 0) == [left])

            try await daemon.ok("mklcmap", "-source", "s", "-target", "t", "-name", "m0", "-copyrate", "0")
            try await daemon.ok("startlcmap", "m0")
            let underMap = try await runProcess(Binaries.qemuIO, ["-f", "raw", Self.uri(daemon, "s"), "-c", "write -z -u 1048576 262144"])
            #expect(underMap.exitCode == 0, "\(underMap.stderr)")
            // The image keeps the old bytes; the source reads zeroes.
            let image = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", Self.uri(daemon, "t"), "-c", "read -P 0x55 1048576 262144"])
            #expect(image.exitCode == 0 && !image.stdout.contains("Pattern verification failed"), "\(image.stdout)")
            let source = try await runProcess(Binaries.qemuIO, ["-f", "raw", "-r", Self.uri(daemon, "s"), "-c", "read -P 0 1048576 262144"])
            #expect(source.exitCode == 0 && !source.stdout.contains("Pattern verification failed"), "\(source.stdout)")
        }
    }
}
