import Foundation
import SnapbackAPI
import Testing

/// Issue 13's commands through the real CLI and daemon: their refusals (exit 1 with a stable
/// code, nothing recorded), malformed syntax (exit 2), and a group whose membership changed since
/// its images: a member's fault rolls nothing back, and lsvolume says why.
@Suite("consistency group commands")
struct GroupCommandTests {
    /// Volumes a, ta, b, tb, c, tc of 4 MiB; group g (autorestore on) holding ma (a → ta) and
    /// mb (b → tb); mc (c → tc) stand-alone.
    static func scene(_ daemon: Daemon) async throws {
        for name in ["a", "ta", "b", "tb", "c", "tc"] { try await daemon.ok("mkvolume", "-name", name, "-size", "4m") }
        let made = try await daemon.ok("mklcgrp", "-name", "g", "-autorestore", "on")
        #expect(made.stdout.contains("LC Consistency Group, id [0], successfully created"), "\(made)")
        try await daemon.ok("mklcmap", "-source", "a", "-target", "ta", "-name", "ma", "-copyrate", "0", "-lcgrp", "g")
        try await daemon.ok("mklcmap", "-source", "b", "-target", "tb", "-name", "mb", "-copyrate", "0")
        try await daemon.ok("chlcmap", "-lcgrp", "g", "mb")
        try await daemon.ok("mklcmap", "-source", "c", "-target", "tc", "-name", "mc", "-copyrate", "0")
    }

    @Test("refusals keep their codes and record nothing; malformed syntax exits 2")
    func refusals() async throws {
        try await withDaemon { daemon in
            try await Self.scene(daemon)
            let before = try await daemon.events().count
            let refused: [([String], String)] = [
                (["mklcgrp", "-name", "g"], "duplicate_name"),
                (["mklcgrp", "-name", "ma"], "duplicate_name"),
                (["mklcgrp", "-autorestoredelay", "86401"], "invalid_delay"),
                (["startlcmap", "ma"], "map_in_group"),
                (["startlcmap", "-restore", "ma_rev"], "map_in_group"),
                (["chlcmap", "-lcgrp", "nope", "mc"], "unknown_group"),
                (["startlcgrp", "-restore", "g"], "no_valid_image"),
                (["rmlcgrp", "g"], "group_not_empty"),
                (["lslcgrp", "nope"], "unknown_group"),
                (["chlcgrp", "g"], "nothing_to_change"),
            ]
            for (arguments, code) in refused {
                let result = try await daemon.snapback(arguments)
                #expect(result.exitCode == 1 && result.stderr.contains("error \(code):"), "\(arguments): \(result)")
            }
            // A map sharing a member's volume cannot join (a group's volumes are distinct).
            try await daemon.ok("mkvolume", "-name", "ta2", "-size", "4m")
            try await daemon.ok("mklcmap", "-source", "a", "-target", "ta2", "-name", "ma2", "-copyrate", "0")
            let conflict = try await daemon.snapback("chlcmap", "-lcgrp", "g", "ma2")
            #expect(conflict.exitCode == 1 && conflict.stderr.contains("group_conflict"), "\(conflict)")
            #expect(try await daemon.events().count == before + 2, "only mkvolume ta2 and mklcmap ma2 were recorded")
            let malformed = try await daemon.snapback("chlcmap", "-lcgrp", "g", "-nolcgrp", "mc")
            #expect(malformed.exitCode == 2, "\(malformed)")
            let empty = try await daemon.snapback("startlcgrp")
            #expect(empty.exitCode == 2, "\(empty)")
        }
    }

    @Test("a group whose membership changed is not rolled back: the fault leaves its source faulted, and lsvolume says why")
    func changedMembership() async throws {
        try await withDaemon { daemon in
            try await Self.scene(daemon)
            try await daemon.ok("startlcgrp", "g")
            let listed = try await daemon.snapback("lslcgrp", "-json", "g")
            let row = try #require(try JSONDecoder().decode([GroupRow].self, from: Data(listed.stdout.utf8)).first)
            #expect(row.status == "copying" && row.maps == 2 && row.lcmaps == ["ma", "mb"] && !row.start_time.isEmpty, "\(row)")
            try await daemon.ok("chlcmap", "-lcgrp", "g", "mc")
            try await daemon.write("a", byte: 0x66, length: 4 * mebibyte)
            let faulted = try await daemon.ok("fault", "-volume", "a", "-reason", "encrypted")
            #expect(!faulted.stdout.contains("rollback"), "\(faulted)")
            let volume = try await daemon.volume("a")
            #expect(volume.status == "faulted" && volume.rollback_note.contains("group_changed"), "\(volume)")
            #expect(try await daemon.events().of("GroupRollbackStarted").isEmpty)
            // Started again, the group holds images of its three maps: an operator's restore works.
            try await daemon.ok("stoplcgrp", "g")
            try await daemon.ok("recovervolume", "a")
            try await daemon.ok("startlcgrp", "g")
            try await daemon.write("a", byte: 0x77, length: 4 * mebibyte)
            try await daemon.ok("startlcgrp", "-restore", "g")
            #expect(try await daemon.snapback("wait", "g").exitCode == 0)
            #expect(try await daemon.holds("a", byte: 0x66, length: 4 * mebibyte), "a holds the group's new image")
            for name in ["a", "b", "c"] { #expect(try await daemon.volume(name).status == "online") }
            try await daemon.ok("rmlcgrp", "-force", "g")
            #expect(try await daemon.map("ma").lcgrp == "", "rmlcgrp -force leaves the maps stand-alone")
        }
    }
}
