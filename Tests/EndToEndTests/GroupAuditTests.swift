import Foundation
import SnapbackAPI
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Issue 13, part 5: `snapback log` on consistency groups, on logs made by the real daemon.
/// `log explain GROUP` tells the group's story, `log show -group G` filters, and `log state`
/// shows the groups.
@Suite("audit CLI on consistency groups")
struct GroupAuditTests {
    /// Polls the log until it holds `count` events of `type` (at most `timeoutSeconds`).
    func waitForEvents(_ daemon: Daemon, _ type: String, count: Int = 1, timeoutSeconds: Double = 30) async throws -> [LoggedEvent] {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            let events = try await daemon.events()
            if events.of(type).count >= count { return events }
            guard Date() < deadline else { throw RigError("no \(count) \(type) events within \(timeoutSeconds) s: \(events)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The lines of `log explain OBJECT`; each starts with `seq N`, in ascending order.
    func story(_ daemon: Daemon, _ object: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String] {
        let output = try await daemon.log("explain", object)
        #expect(output.exitCode == 0, "log explain \(object): \(output)", sourceLocation: sourceLocation)
        let lines = output.stdout.split(separator: "\n").map(String.init)
        let sequences = lines.map { line in line.hasPrefix("seq ") ? Int(line.dropFirst(4).prefix { $0 != " " }) : nil }
        #expect(!lines.isEmpty && sequences.allSatisfy { $0 != nil }, "every line has its sequence number: \(lines)", sourceLocation: sourceLocation)
        let numbers = sequences.compactMap { $0 }
        #expect(numbers == numbers.sorted(), "in log order: \(lines)", sourceLocation: sourceLocation)
        return lines
    }

    /// Each phrase is in a line of `lines`, in this order.
    func expectInOrder(_ lines: [String], _ phrases: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        var from = 0
        for phrase in phrases {
            guard let index = lines[from...].firstIndex(where: { $0.contains(phrase) }) else {
                Issue.record("\"\(phrase)\" is missing, or out of order, in:\n\(lines.joined(separator: "\n"))", sourceLocation: sourceLocation)
                return
            }
            from = index + 1
        }
    }

    /// `log state -at SEQ -json`'s groups.
    func groups(_ daemon: Daemon, at sequence: Int?) async throws -> [GroupRow] {
        let output = try await daemon.snapback(["log", "state", "-data-dir", daemon.directory, "-json"] + (sequence.map { ["-at", String($0)] } ?? []))
        guard output.exitCode == 0 else { throw RigError("log state: \(output)") }
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])
        #expect(object["volumes"] != nil && object["lcmaps"] != nil)
        let rows = try #require(object["lcgroups"] as? [Any], "log state -json has lcgroups: \(output.stdout)")
        return try JSONDecoder().decode([GroupRow].self, from: try JSONSerialization.data(withJSONObject: rows))
    }

    @Test("a group's whole story: members in, renamed, started, a member's fault rolls it back after the hold window, out, removed")
    func groupStory() async throws {
        try await withDaemon { daemon in
            for volume in ["data", "data_t", "journal", "journal_t", "other", "other_t"] {
                try await daemon.ok("mkvolume", "-name", volume, "-size", "4m")
            }
            try await daemon.ok("mklcgrp", "-name", "db", "-autorestore", "on")
            try await daemon.ok("mklcmap", "-source", "data", "-target", "data_t", "-name", "mdata", "-copyrate", "0", "-lcgrp", "db")
            try await daemon.ok("mklcmap", "-source", "journal", "-target", "journal_t", "-name", "mjournal", "-copyrate", "0")
            try await daemon.ok("chlcmap", "-lcgrp", "db", "mjournal")
            // A map outside the group, started: none of its events is the group's.
            try await daemon.ok("mklcmap", "-source", "other", "-target", "other_t", "-name", "mother", "-copyrate", "0")
            try await daemon.ok("startlcmap", "mother")
            try await daemon.ok("chlcgrp", "-name", "dbgrp", "-autorestoredelay", "1", "db")
            try await daemon.ok("startlcgrp", "dbgrp")
            try await daemon.write("data", byte: 0x66, length: mebibyte)
            try await daemon.write("journal", byte: 0x77, length: mebibyte)
            try await daemon.write("other", byte: 0x88, length: mebibyte)

            // A fault on one member: the group rolls back after its hold window of 1 s.
            try await daemon.ok("fault", "-volume", "data", "-reason", "ransomware detected")
            _ = try await waitForEvents(daemon, "GroupRollbackCompleted")
            // By hand, then stopped; one map moves out and is removed; the group is removed with
            // the other still in it.
            try await daemon.ok("startlcgrp", "-restore", "dbgrp")
            _ = try await waitForEvents(daemon, "GroupRollbackCompleted", count: 2)
            try await daemon.ok("stoplcgrp", "dbgrp")
            try await daemon.ok("chlcmap", "-nolcgrp", "mjournal")
            try await daemon.ok("rmlcmap", "mjournal")
            try await daemon.ok("rmlcgrp", "-force", "dbgrp")
            let events = try await daemon.events()

            // explain GROUP: the story in plain sentences, with sequence numbers.
            let group = try await story(daemon, "dbgrp")
            expectInOrder(group, [
                "lcgrp db created by mklcgrp with autorestore on, hold window 0 s",
                "lcmap mdata (data -> data_t) moved into lcgrp db by mklcmap -lcgrp",
                "lcmap mjournal (journal -> journal_t) moved into lcgrp db by chlcmap -lcgrp",
                "lcgrp db renamed to dbgrp by chlcgrp",
                "lcgrp dbgrp: autorestore hold window set to 1 s by chlcgrp",
                "lcmap mdata started with lcgrp dbgrp by startlcgrp: point-in-time image of data taken",
                "lcgrp dbgrp started by startlcgrp: images of its 2 lcmaps mdata, mjournal taken at one instant",
                "volume data faulted (fault 1), reported by an operator (snapback fault): ransomware detected",
                "automatic rollback of lcgrp dbgrp for fault 1 on volume data scheduled in 1 s (its hold window)",
                "rollback of lcgrp dbgrp to its images started automatically by the controller (the group's autorestore on) because of fault 1 on volume data",
                "rollback of lcmap mjournal onto journal started with lcgrp dbgrp automatically (lcgrp dbgrp's autorestore on) because of fault 1",
                "rollback of lcgrp dbgrp finished after 0 controller restarts: every source online together (data, journal)",
                "rollback of lcgrp dbgrp to its images started by an operator (startlcgrp -restore)",
                "rollback of lcgrp dbgrp finished after 0 controller restarts: every source online together (data, journal)",
                "lcmap mjournal stopped with lcgrp dbgrp: its image is no longer valid",
                "lcmap mjournal (journal -> journal_t) moved out of lcgrp dbgrp",
                "lcmap mdata (data -> data_t) moved out of lcgrp dbgrp",
                "lcgrp dbgrp removed by rmlcgrp -force; its 1 lcmap left stand-alone",
            ])
            // Each member restored its grains and waited for the other (in either order), twice.
            for member in ["mdata", "mjournal"] {
                #expect(group.filter { $0.contains("rollback of lcmap \(member) restored every grain") && $0.contains("until every lcmap of lcgrp dbgrp has") }.count == 2, "\(group)")
                #expect(group.filter { $0.contains("rollback of lcmap \(member) finished with lcgrp dbgrp") }.count == 2, "\(group)")
            }
            // Not the group's: the map outside it, and a former member's removal.
            #expect(!group.contains { $0.contains("mother") || $0.contains("other") }, "\(group)")
            #expect(!group.contains { $0.contains("mjournal removed") }, "\(group)")
            // The group under its first name, and by id, is the same object.
            #expect(try await story(daemon, "db") == group)
            let byID = try await daemon.log("explain", "0")
            #expect(group.allSatisfy(byID.stdout.contains), "explain 0 holds lcgrp 0's story: \(byID)")

            // A member's story and a volume's story mention their group.
            let member = try await story(daemon, "mdata")
            expectInOrder(member, [
                "lcmap mdata created by mklcmap from data to data_t",
                "lcmap mdata (data -> data_t) moved into lcgrp db by mklcmap -lcgrp",
                "lcmap mdata started with lcgrp dbgrp by startlcgrp",
                "volume data faulted (fault 1)",
                "automatic rollback of lcgrp dbgrp for fault 1 on volume data scheduled in 1 s",
                "rollback of lcmap mdata onto data started with lcgrp dbgrp automatically (lcgrp dbgrp's autorestore on) because of fault 1",
                "rollback of lcmap mdata finished with lcgrp dbgrp",
                "rollback of lcmap mdata onto data started with lcgrp dbgrp by an operator (startlcgrp -restore)",
                "lcmap mdata (data -> data_t) moved out of lcgrp dbgrp",
            ])
            let volume = try await story(daemon, "journal")
            expectInOrder(volume, [
                "volume journal created by mkvolume",
                "lcmap mjournal (journal -> journal_t) moved into lcgrp db by chlcmap -lcgrp",
                "automatic rollback of lcgrp dbgrp for fault 1 on volume data scheduled in 1 s",
                "rollback of lcmap mjournal onto journal started with lcgrp dbgrp automatically",
                "lcmap mjournal (journal -> journal_t) moved out of lcgrp dbgrp",
                "lcmap mjournal removed by rmlcmap",
            ])
            let unknown = try await daemon.log("explain", "nothing")
            #expect(unknown.exitCode == 1 && unknown.stderr.contains("unknown_object") && unknown.stderr.contains("lcgrp"), "\(unknown)")

            // show -group: the group's events and its maps' while they were members.
            let shown = try await daemon.log("show", "-group", "dbgrp", "-json")
            #expect(shown.exitCode == 0, "\(shown)")
            let filtered = try shown.stdout.split(separator: "\n").map { line in
                LoggedEvent(try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]))
            }
            let counts = Dictionary(filtered.map { ($0.type, 1) }, uniquingKeysWith: +)
            #expect(counts["GroupCreated"] == 1 && counts["GroupRenamed"] == 1 && counts["GroupAutorestoreDelayChanged"] == 1)
            #expect(counts["MapGroupChanged"] == 4, "two moves in, two out: \(filtered)")
            #expect(counts["MapStarted"] == 2 && counts["GroupStarted"] == 1, "\(filtered)")
            #expect(counts["GroupRollbackScheduled"] == 1 && counts["GroupRollbackStarted"] == 2 && counts["GroupRollbackCompleted"] == 2)
            #expect(counts["RollbackStarted"] == 4 && counts["GroupMemberRestored"] == 4 && counts["RollbackCompleted"] == 4)
            #expect(counts["MapStopped"] == 2 && counts["GroupRemoved"] == 1)
            // Not the group's: the other map, the fault (about a volume), the maps' creation
            // (before they joined) and a former member's removal.
            let otherMap = try #require(events.of("MapCreated").first { $0["name"] == "mother" }?["mapID"])
            #expect(!filtered.contains { $0["mapID"] == otherMap }, "\(filtered)")
            #expect(counts["VolumeFaulted"] == nil && counts["MapCreated"] == nil && counts["MapRemoved"] == nil, "\(filtered)")
            // Every event of the log that names the group is there.
            #expect(events.filter { $0["groupID"] == "0" }.map(\.sequence).allSatisfy(Set(filtered.map(\.sequence)).contains))
            // By id, the same; -last keeps the tail.
            let byGroupID = try await daemon.log("show", "-group", "0", "-json")
            #expect(byGroupID.stdout == shown.stdout)
            let last = try await daemon.log("show", "-group", "dbgrp", "-last", "2")
            let lastLines = last.stdout.split(separator: "\n")
            #expect(lastLines.count == 2 && lastLines[1].contains("GroupRemoved  lcgrp dbgrp removed"), "\(last)")

            // state -at: the groups as they stood, in JSON and in the table.
            let created = try #require(events.of("GroupCreated").first?.sequence)
            let started = try #require(events.of("GroupStarted").first?.sequence)
            #expect(try await groups(daemon, at: created - 1).isEmpty)
            let atStart = try await groups(daemon, at: started)
            #expect(atStart.count == 1, "\(atStart)")
            let row = try #require(atStart.first)
            #expect(row.name == "dbgrp" && row.id == 0 && row.status == "copying" && row.autorestore == "on" && row.autorestoredelay == 1)
            #expect(row.maps == 2 && row.lcmaps == ["mdata", "mjournal"] && row.restoring == "no" && !row.start_time.isEmpty)
            let rollingBack = try #require(events.of("GroupRollbackStarted").first?.sequence)
            #expect(try await groups(daemon, at: rollingBack).first?.restoring == "yes")
            #expect(try await groups(daemon, at: nil).isEmpty, "removed at the end")
            let table = try await daemon.log("state", "-at", String(started))
            let tableLines = table.stdout.split(separator: "\n").map(String.init)
            let lcmapsIndex = try #require(tableLines.firstIndex(of: "lcmaps:"))
            let groupsIndex = try #require(tableLines.firstIndex(of: "groups:"), "\(table)")
            #expect(groupsIndex > lcmapsIndex)
            #expect(tableLines[groupsIndex + 1].split(separator: " ").map(String.init) == GroupRow.columns + ["lcmaps"])
            let groupLine = tableLines[groupsIndex + 2].split(separator: " ").map(String.init)
            #expect(groupLine.first == "0" && groupLine.contains("dbgrp") && groupLine.last == "mdata,mjournal", "\(table)")
            let delimited = try await daemon.log("state", "-at", String(started), "-delim", ":")
            #expect(delimited.stdout.contains("\n0:dbgrp:copying:on:2:"), "\(delimited)")
            #expect(try await daemon.log("verify").exitCode == 0)
        }
    }

    @Test("a group rollback that cannot finish: stopped, every source left faulted, and the story says why")
    func stoppedGroupRollback() async throws {
        try await withDaemon { daemon in
            let sourcePath = daemon.directory + "/p.img"
            try await daemon.ok("mkvolume", "-name", "p", "-size", "4m", "-path", sourcePath)
            for volume in ["p_t", "q", "q_t"] { try await daemon.ok("mkvolume", "-name", volume, "-size", "4m") }
            try await daemon.ok("mklcgrp", "-name", "g2", "-autorestore", "on")
            try await daemon.ok("mklcmap", "-source", "p", "-target", "p_t", "-name", "mp", "-copyrate", "0", "-lcgrp", "g2")
            try await daemon.ok("mklcmap", "-source", "q", "-target", "q_t", "-name", "mq", "-copyrate", "0", "-lcgrp", "g2")
            try await daemon.ok("startlcgrp", "g2")
            try await daemon.write("p", byte: 0x66, length: mebibyte)
            try await daemon.write("q", byte: 0x66, length: mebibyte)
            // p's backing file shrinks while the daemon is down: a fault at start-up, a group
            // rollback, and p's rollback cannot write its source: the whole group's stops.
            await daemon.stop()
            #expect(truncate(sourcePath, off_t(2 * mebibyte)) == 0)
            try await daemon.restart()
            let events = try await waitForEvents(daemon, "GroupRollbackStopped")
            let faults = events.of("VolumeFaulted")
            let first = try #require(faults.first?["faultID"])

            let group = try await story(daemon, "g2")
            expectInOrder(group, [
                "lcgrp g2 created by mklcgrp with autorestore on, hold window 0 s",
                "lcmap mp (p -> p_t) moved into lcgrp g2 by mklcmap -lcgrp",
                "lcmap mq (q -> q_t) moved into lcgrp g2 by mklcmap -lcgrp",
                "lcgrp g2 started by startlcgrp: images of its 2 lcmaps mp, mq taken at one instant",
                "volume p faulted (fault \(first)), detected by the controller (backing_resized)",
                "rollback of lcgrp g2 to its images started automatically by the controller (the group's autorestore on) because of fault \(first) on volume p",
                "rollback of lcmap mq onto q started with lcgrp g2 automatically",
                "rollback of lcgrp g2 stopped before it finished (",
            ])
            #expect(group.last?.contains("every source left faulted (p, q)") == true, "\(group)")
            #expect(group.contains { $0.contains("rollback of lcmap mp stopped with lcgrp g2 before it finished") && $0.contains("p left faulted") })
            let volume = try await story(daemon, "q")
            #expect(volume.contains { $0.contains("rollback of lcmap mq stopped with lcgrp g2 before it finished") && $0.contains("q left faulted") }, "\(volume)")

            let stopped = try await daemon.log("show", "-group", "g2", "-type", "GroupRollbackStopped")
            #expect(stopped.stdout.split(separator: "\n").count == 1 && stopped.stdout.contains("every source left faulted"), "\(stopped)")
            let row = try #require(try await groups(daemon, at: nil).first)
            #expect(row.name == "g2" && row.restoring == "no" && row.lcmaps == ["mp", "mq"])
            #expect(try await daemon.volume("q").status == "faulted")
        }
    }
}
