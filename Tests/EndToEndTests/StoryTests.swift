import Foundation
import SnapbackAPI
import Testing

/// Issue 4, the whole story: volumes, a map with its reverse map, a point-in-time image that
/// hosts read over NBD while the source changes under them, and the teardown.
@Suite("the whole story")
struct StoryTests {
    @Test("create, snapshot, write through NBD, read the image, tear down")
    func wholeStory() async throws {
        try await withDaemon { daemon in
            // Create two volumes and a map with its reverse map.
            let created = try await daemon.ok("mkvolume", "-name", "src", "-size", "64m")
            #expect(created.stdout.contains("Volume, id [0], successfully created"))
            try await daemon.ok("mkvolume", "-name", "tgt", "-size", "64m")
            let mapped = try await daemon.ok("mklcmap", "-source", "src", "-target", "tgt", "-name", "m0", "-autorestore", "on", "-copyrate", "0")
            #expect(mapped.stdout.contains("LC Mapping, id [0], successfully created"))

            // lslcmap, the concise table: the map, its reverse map, autorestore on.
            let table = try await daemon.ok("lslcmap")
            let lines = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            #expect(lines.first == MapRow.columns)
            let forwardLine = try #require(lines.first { $0.count > 1 && $0[1] == "m0" })
            let reverseLine = try #require(lines.first { $0.count > 1 && $0[1] == "m0_rev" })
            let column = { (name: String) in MapRow.columns.firstIndex(of: name)! }
            #expect(forwardLine[column("source")] == "src" && forwardLine[column("target")] == "tgt")
            #expect(forwardLine[column("autorestore")] == "on")
            #expect(forwardLine[column("partner")] == "m0_rev")
            #expect(forwardLine[column("copyrate")] == "0")
            #expect(reverseLine[column("source")] == "tgt" && reverseLine[column("target")] == "src")
            #expect(reverseLine[column("partner")] == "m0")
            #expect(reverseLine[column("role")] == "reverse")

            // lslcmap MAP: IBM-style key/value detail lines.
            let detail = try await daemon.ok("lslcmap", "m0")
            let detailLines = Set(detail.stdout.split(separator: "\n").map(String.init))
            #expect(detailLines.isSuperset(of: ["name m0", "source src", "target tgt", "autorestore on", "partner m0_rev", "copyrate 0", "grainsize 256", "status idle_or_copied"]))

            // lslcmap -json: the same names and values, as raw JSON (not only through the API type).
            let json = try await daemon.ok("lslcmap", "-json")
            let objects = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
            #expect(objects.count == 2)
            let forward = try #require(objects.first { $0["name"] as? String == "m0" })
            #expect(forward["autorestore"] as? String == "on")
            #expect(forward["status"] as? String == "idle_or_copied")
            #expect(forward["partner"] as? String == "m0_rev")
            #expect(forward["source"] as? String == "src")
            #expect(forward["target"] as? String == "tgt")
            #expect(forward["copyrate"] as? Int == 0)
            #expect(forward["restoring"] as? String == "no")
            #expect(Set(forward.keys) == Set(MapRow.columns))
            let reverse = try #require(objects.first { $0["name"] as? String == "m0_rev" })
            #expect(reverse["partner"] as? String == "m0")
            #expect(reverse["autorestore"] as? String == "on")

            // lsvolume -json: sizes and status.
            let volumes = try JSONDecoder().decode([VolumeRow].self, from: Data(try await daemon.ok("lsvolume", "-json").stdout.utf8))
            #expect(volumes.map(\.name) == ["src", "tgt"])
            #expect(volumes.allSatisfy { $0.size == 64 * mebibyte && $0.status == "online" })

            // Pre-fill the first 2 MiB of the source with a pattern; the rest stays zero.
            try await daemon.write("src", byte: 0x5A, offset: 0, length: 2 * mebibyte)

            // Start: the point-in-time image is taken.
            try await daemon.ok("startlcmap", "m0")
            let started = try await daemon.map("m0")
            #expect(started.status == "copying")
            #expect(started.copyrate == 0)

            // The host overwrites 4 MiB of the source while the map is active.
            try await daemon.write("src", byte: 0xAB, offset: 0, length: 4 * mebibyte)
            #expect(try await daemon.holds("src", byte: 0xAB, offset: 0, length: 4 * mebibyte))

            // The target shows the point-in-time bytes: the pattern where it was, zero elsewhere,
            // both inside the overwritten range and beyond it.
            let image = try await daemon.holds("tgt", [
                (0x5A, 0, 2 * mebibyte), (0, 2 * mebibyte, 2 * mebibyte), (0, 4 * mebibyte, 60 * mebibyte),
            ])
            #expect(image.exitCode == 0 && !image.stdout.contains("verification failed"), "the target's image: \(image)")

            // Writes to the target export fail: it is read-only while autorestore is on.
            let refused = try await daemon.qemuIO("tgt", ["write -P 0xCC 0 64k"])
            #expect(refused.exitCode != 0, "a write to the read-only target: \(refused)")
            #expect(!refused.stdout.contains("wrote"))
            #expect(try await daemon.holds("tgt", byte: 0x5A, offset: 0, length: 64 * kibibyte))

            // nbdinfo: sizes and read-only flags of both exports.
            for (export, readOnly) in [("src", false), ("tgt", true)] {
                let info = try await runProcess(Binaries.nbdinfo, ["--json", "--no-content", daemon.uri(export)])
                #expect(info.exitCode == 0, "nbdinfo \(export): \(info)")
                let root = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
                let exports = try #require(root["exports"] as? [[String: Any]])
                let described = try #require(exports.first)
                #expect(described["export-size"] as? Int == Int(64 * mebibyte))
                #expect(described["is_read_only"] as? Bool == readOnly, "\(export) read-only")
            }

            // qemu-img sees the same size.
            let qemuInfo = try await runProcess(Binaries.qemuImg, ["info", "--output=json", "-f", "raw", daemon.uri("tgt")])
            #expect(qemuInfo.exitCode == 0, "qemu-img info: \(qemuInfo)")
            #expect(qemuInfo.stdout.contains("\"virtual-size\": \(64 * mebibyte)"))

            // nbdcopy reads the whole image; it matches what the map captured.
            let copyPath = daemon.directory + "/image.copy"
            let copied = try await runProcess(Binaries.nbdcopy, [daemon.uri("tgt"), copyPath])
            #expect(copied.exitCode == 0, "nbdcopy: \(copied)")
            let copySize = try FileManager.default.attributesOfItem(atPath: copyPath)[.size] as? Int
            #expect(copySize == Int(64 * mebibyte))
            #expect(try firstMismatch(copyPath, byte: 0x5A, length: 2 * mebibyte) == nil)
            #expect(try firstMismatch(copyPath, byte: 0, offset: 2 * mebibyte) == nil)

            // Tear down: stop, remove the map (and its reverse map), remove the volumes.
            try await daemon.ok("stoplcmap", "m0")
            #expect(try await daemon.map("m0").status == "stopped")
            try await daemon.ok("rmlcmap", "m0")
            #expect(try await daemon.maps().isEmpty)
            let gone = try await daemon.snapback("lslcmap", "m0_rev")
            #expect(gone.exitCode == 1 && gone.stderr.contains("unknown_map"))
            try await daemon.ok("rmvolume", "tgt")
            try await daemon.ok("rmvolume", "src")
            let empty = try await daemon.ok("lsvolume", "-json")
            #expect(try JSONDecoder().decode([VolumeRow].self, from: Data(empty.stdout.utf8)).isEmpty)
            let noExport = try await daemon.qemuIO("src", readOnly: true, ["read 0 512"])
            #expect(noExport.exitCode != 0, "the removed volume is no longer exported: \(noExport)")

            // The log tells the same story, and verifies.
            let types = try await daemon.events().map(\.type)
            #expect(types == [
                "ControllerStarted", "VolumeCreated", "VolumeCreated", "MapCreated", "MapPreparing", "MapPrepared", "MapStarted",
                "MapStopping", "MapStopped", "MapRemoved", "VolumeRemoved", "VolumeRemoved",
            ])
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }
}
