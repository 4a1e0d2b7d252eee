import Foundation
import SnapbackController
import SnapbackCore
import SnapbackData
import SnapbackSimulated
import SnapbackTesting
import Testing

/// Brief section 3, each rule with a crash injected at every I/O point of the operation.
@Suite("Durability rules under crashes at every step")
struct DurabilityTests {
    /// Runs `operation` once to count its I/O points, then once per point with a crash there,
    /// handing each crashed-and-restarted rig to `check` with whether the operation completed.
    func crashAtEveryPoint(
        setup: (Rig) throws -> [UInt8], operation: (Rig) throws -> Void, check: (Rig, [UInt8], Bool) throws -> Void
    ) throws {
        let dry = try Rig(seed: 1)
        _ = try setup(dry)
        let before = dry.world.ioPoints
        try operation(dry)
        let points = dry.world.ioPoints - before
        #expect(points > 0)
        for point in 1...(points + 1) {
            let rig = try Rig(seed: UInt64(point))
            let image = try setup(rig)
            rig.world.crashAtIOPoint = rig.world.ioPoints + point
            var completed = false
            do {
                try operation(rig)
                completed = !rig.world.crashed
            } catch {
                completed = false
            }
            try rig.restart()
            try check(rig, image, completed)
        }
    }

    @Test func copyOnWriteNeverChangesTheImageAndKeepsAcknowledgedWrites() throws {
        let update = pattern(seed: 7, length: 100 << 10)
        try crashAtEveryPoint(
            setup: { try $0.scene() },
            operation: { try $0.write("s", 50 << 10, update, fua: true) },
            check: { rig, image, completed in
                let observed1 = try rig.read("t")
                #expect(observed1 == image, "the point-in-time image changed")
                if completed {
                    let observed2 = try rig.read("s", 50 << 10, update.count)
                    #expect(observed2 == update, "an acknowledged write was lost")
                }
                // State is exactly the reduction of the durable log.
                #expect(rig.controller.state == (try rig.durable.replayState()))
                // The dirty and split marks never claim what the target does not hold.
                let bitmaps = rig.controller.bitmaps(of: rig.controller.state.map("m")!.id)!
                for grain in 0..<bitmaps.dirty.grainCount where bitmaps.dirty[grain] {
                    #expect(bitmaps.split[grain], "grain \(grain) is dirty but not split")
                }
                // And a rollback afterwards brings back the image byte for byte.
                try rig.controller.execute(.startRestore(map: "m"))
                rig.drain()
                let observed3 = try rig.read("s")
                #expect(observed3 == image)
            })
    }

    @Test func aRollbackInterruptedAnywhereFinishesWithTheImage() throws {
        try crashAtEveryPoint(
            setup: { rig in
                let image = try rig.scene()
                for index in 0..<6 {
                    try rig.write("s", UInt64(index) * (150 << 10), pattern(seed: UInt64(20 + index), length: 70 << 10))
                }
                let events = try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "ransomware"))
                #expect(events.contains { if case .rollbackStarted(_, .auto, _) = $0 { true } else { false } })
                return image
            },
            operation: { $0.drain() },
            check: { rig, image, _ in
                rig.drain()
                let state = rig.controller.state
                #expect(state.volume("s")?.status == .online)
                #expect(state.map("m")?.rollback == nil)
                let observed4 = try rig.read("s")
                #expect(observed4 == image, "the restored source differs from the image")
                let observed5 = try rig.read("t")
                #expect(observed5 == image, "the target changed during the rollback")
            })
    }

    @Test func aWriteDuringARollbackRestoresItsGrainFirst() throws {
        let update = pattern(seed: 99, length: 5000)
        let offset: UInt64 = (64 << 10) + 1000
        try crashAtEveryPoint(
            setup: { rig in
                let image = try rig.scene()
                try rig.write("s", 64 << 10, pattern(seed: 5, length: 64 << 10))
                try rig.controller.execute(.reportFault(volume: "s", cause: .operator, reason: "bad data"))
                return image
            },
            operation: { try $0.write("s", offset, update, fua: true) },
            check: { rig, image, completed in
                rig.drain()
                var expected = image
                if completed {
                    expected.replaceSubrange(Int(offset)..<Int(offset) + update.count, with: update)
                }
                let source = try rig.read("s")
                if completed {
                    #expect(source == expected, "an acknowledged write during the rollback was lost or overwritten")
                } else {
                    // Outside the unacknowledged write's range, the source is the image.
                    #expect(source[..<Int(offset)] == expected[..<Int(offset)])
                    #expect(source[(Int(offset) + update.count)...] == expected[(Int(offset) + update.count)...])
                }
                let observed6 = try rig.read("t")
                #expect(observed6 == image)
            })
    }

    @Test func aBackgroundCopyInterruptedAnywhereCompletesWithTheImage() throws {
        try crashAtEveryPoint(
            setup: { rig in try rig.scene(sizeBytes: 512 << 10, autorestore: false, copyRate: 150) },
            operation: { rig in
                rig.controller.step(budgetBytes: 128 << 10)
                try rig.write("s", 3000, pattern(seed: 3, length: 200 << 10))
                rig.drain()
            },
            check: { rig, image, _ in
                rig.drain()
                let map = rig.controller.state.map("m")!
                #expect(map.state == .idleOrCopied)
                #expect(map.progressPercent == 100)
                let observed7 = try rig.read("t")
                #expect(observed7 == image)
                // Copied: the target holds every grain itself.
                let target = rig.volumes.stores[rig.id("t")]!
                #expect(target.current == image)
            })
    }
}
