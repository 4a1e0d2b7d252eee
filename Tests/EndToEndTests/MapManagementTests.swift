import Foundation
import SnapbackAPI
import Testing

/// Map management beyond the main story: renaming, a faulted target, removal with -force.
@Suite("map management")
struct MapManagementTests {
    @Test("chlcmap -name renames the map and its reverse map; ids still resolve")
    func rename() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            let before = try await daemon.map("m0")
            try await daemon.ok("chlcmap", "-name", "nightly", "m0")
            let renamed = try await daemon.map("nightly")
            #expect(renamed.id == before.id)
            #expect(renamed.partner == "nightly_rev")
            #expect(try await daemon.map("nightly_rev").partner == "nightly")
            let old = try await daemon.snapback("lslcmap", "m0")
            #expect(old.exitCode == 1 && old.stderr.contains("unknown_map"))
            // By id, too.
            #expect(try await daemon.map(String(before.id)).name == "nightly")
            #expect(try await daemon.volume("0").name == "src")
            // The audit follows the map across its rename: by id, all of its events.
            let byID = try await daemon.log("show", "-map", String(before.id))
            #expect(byID.stdout.contains("MapCreated") && byID.stdout.contains("renamed to nightly"), "\(byID)")
            // Was a bug: `-map NEW_NAME` missed the map's events from before its rename.
            let byName = try await daemon.log("show", "-map", "nightly")
            #expect(byName.stdout == byID.stdout, "-map nightly:\n\(byName.stdout)\n-map \(before.id):\n\(byID.stdout)")
            // Renaming onto an existing reverse name is refused.
            try await daemon.ok("mkvolume", "-name", "t2", "-size", "4m")
            try await daemon.ok("mklcmap", "-source", "src", "-target", "t2", "-name", "other")
            let clash = try await daemon.snapback("chlcmap", "-name", "other", "nightly")
            #expect(clash.exitCode == 1 && clash.stderr.contains("duplicate_name"), "\(clash)")
        }
    }

    @Test("a faulted target stops its map: no rollback from an untrustworthy image")
    func faultedTarget() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.write("src", byte: 0x11, length: mebibyte)
            try await daemon.ok("startlcmap", "m0")
            try await daemon.write("src", byte: 0x22, length: mebibyte)

            try await daemon.ok("fault", "-volume", "tgt", "-reason", "target disk failing")
            let map = try await daemon.map("m0")
            #expect(map.status == "stopped")
            // Now a source fault has nothing valid to roll back.
            let faulted = try await daemon.ok("fault", "-volume", "src", "-reason", "ransomware")
            #expect(!faulted.stdout.contains("rollback"))
            #expect(try await daemon.volume("src").status == "faulted")
            let restore = try await daemon.snapback("startlcmap", "-restore", "m0")
            #expect(restore.exitCode == 1 && restore.stderr.contains("no_valid_image"), "\(restore)")
            #expect(try await daemon.events().of("RollbackStarted").isEmpty)
            // The operator accepts the source as it is; the data is the host's last write.
            try await daemon.ok("recovervolume", "src")
            #expect(try await daemon.holds("src", byte: 0x22, length: mebibyte))
        }
    }

    @Test("a host attached to a volume before it became a target cannot write it while the map exists, autorestore off or on")
    func targetReadOnlyForEarlyHosts() async throws {
        try await withDaemon { daemon in
            try await daemon.ok("mkvolume", "-name", "src", "-size", "4m")
            try await daemon.ok("mkvolume", "-name", "tgt", "-size", "4m")
            let early = try RawNBDClient(port: daemon.port)
            try early.go("tgt")
            #expect(try early.write(offset: 0, bytes: [UInt8](repeating: 1, count: 4096)) == 0, "an ordinary volume is writable")
            try await daemon.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "off")
            // The controller refuses it (EPERM), not only the handshake.
            #expect(try early.write(offset: 0, bytes: [UInt8](repeating: 2, count: 4096), cookie: 3) == 1, "EPERM")
            // The start closes the connections to the target (it shows a new image).
            try await daemon.ok("startlcmap", "m0")
            #expect(early.serverCloses())
            let late = try await daemon.qemuIO("tgt", ["write -P 0x44 0 4k"])
            #expect(late.exitCode != 0, "\(late)")
            try await daemon.ok("chlcmap", "-autorestore", "on", "m0")
            #expect(try await daemon.qemuIO("tgt", ["write -P 0x45 0 4k"]).exitCode != 0)
            #expect(try await daemon.holds("tgt", byte: 0, length: 4 * mebibyte), "the image (an empty source) is intact")
        }
    }

    @Test("rmlcmap -force removes an active map; its target becomes an ordinary writable volume")
    func forceRemove() async throws {
        try await withDaemon { daemon in
            try await daemon.makeSourceTargetMap(size: "4m")
            try await daemon.ok("startlcmap", "m0")
            let refused = try await daemon.qemuIO("tgt", ["write -P 0x44 0 4k"])
            #expect(refused.exitCode != 0)
            try await daemon.ok("rmlcmap", "-force", "m0")
            #expect(try await daemon.maps().isEmpty)
            try await daemon.write("tgt", byte: 0x44, length: 4096)
            #expect(try await daemon.holds("tgt", byte: 0x44, length: 4096))
            try await daemon.ok("rmvolume", "tgt")
            try await daemon.ok("rmvolume", "src")
            #expect(!FileManager.default.fileExists(atPath: daemon.directory + "/volumes/0.img"), "a removed volume's sparse file is deleted")
        }
    }
}
