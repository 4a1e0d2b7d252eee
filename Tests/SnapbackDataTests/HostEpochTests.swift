import SnapbackController
import SnapbackCore
import Testing

/// A write read from a connection before a rollback started onto its volume is never made after
/// the start (Specs/data-plane.md, "Host epochs"): found by the dependent-write test of consistency
/// groups, where such a write landed on the restored source and broke the order of records.
@Suite("Host epochs")
struct HostEpochTests {
    private func write(_ rig: Rig, _ offset: UInt64, _ bytes: [UInt8], epoch: UInt64?) throws(HostIOError) {
        var failure: HostIOError?
        bytes.withUnsafeBytes { buffer in
            do throws(HostIOError) {
                try rig.controller.write(volume: rig.id("s"), offset: offset, from: buffer, fua: true, hostEpoch: epoch)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    @Test("a write of a connection opened before the rollback is refused on every path; a new connection's is made")
    func supersededWritesAreRefused() throws {
        let rig = try Rig(seed: 3)
        let image = try rig.scene(sizeBytes: 1 << 20, autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)
        let before = rig.controller.export("s")!.hostEpoch
        // Before the rollback the connection's writes are made: a copy-on-write one, then a plain one.
        try write(rig, 0, pattern(seed: 7, length: 4096), epoch: before)
        try write(rig, 0, pattern(seed: 8, length: 4096), epoch: before)

        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "encrypted"))
        #expect(rig.controller.state.volume("s")?.status == .restoring)
        let after = rig.controller.export("s")!.hostEpoch
        #expect(after == before + 1)

        // The old connection's writes: a restore-before-write grain, a restored one, and the
        // event loop's immediate path are all refused, and change nothing.
        #expect(throws: HostIOError.superseded(volume: "s")) { try write(rig, 0, pattern(seed: 9, length: 4096), epoch: before) }
        rig.drain()
        #expect(throws: HostIOError.superseded(volume: "s")) { try write(rig, 0, pattern(seed: 9, length: 4096), epoch: before) }
        let immediate = pattern(seed: 10, length: 4096).withUnsafeBytes {
            rig.controller.writeImmediately(volume: rig.id("s"), offset: 0, from: $0, hostEpoch: before)
        }
        #expect(!immediate)
        #expect(try rig.read("s") == image)

        // A connection opened after the start writes as usual; so does an unchecked write.
        let fresh = pattern(seed: 11, length: 4096)
        try write(rig, 0, fresh, epoch: after)
        #expect(try rig.read("s", 0, 4096) == fresh)
        try write(rig, 4096, fresh, epoch: nil)
        #expect(try rig.read("s", 4096, 4096) == fresh)
    }

    @Test("a restarted rollback supersedes the connections opened during the first")
    func restartSupersedes() throws {
        let rig = try Rig(seed: 4)
        _ = try rig.scene(sizeBytes: 1 << 20, autorestore: true, copyRate: 0, grainSizeBytes: 64 << 10)
        try write(rig, 0, pattern(seed: 7, length: 4096), epoch: nil)
        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "first"))
        let during = rig.controller.export("s")!.hostEpoch
        try write(rig, 65536, pattern(seed: 8, length: 4096), epoch: during)
        try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "second"))
        #expect(rig.controller.state.eventsApplied > 0)
        #expect(throws: HostIOError.superseded(volume: "s")) { try write(rig, 65536, pattern(seed: 9, length: 4096), epoch: during) }
    }
}
