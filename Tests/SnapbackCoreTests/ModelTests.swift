@testable import SnapbackCore
import Testing

@Suite("model")
struct ModelTests {
    @Test("copy rates follow IBM's table: 128 KiB/s doubling every band of ten, 64 MiB/s at 91–100, 2 GiB/s at 141–150")
    func copyRateTable() {
        #expect(CopyRate.bytesPerSecond(0) == 0)
        for rate in 1...10 { #expect(CopyRate.bytesPerSecond(rate) == 128 << 10) }
        for rate in 11...20 { #expect(CopyRate.bytesPerSecond(rate) == 256 << 10) }
        for rate in 91...100 { #expect(CopyRate.bytesPerSecond(rate) == 64 << 20) }
        for rate in 101...110 { #expect(CopyRate.bytesPerSecond(rate) == 128 << 20) }
        for rate in 141...150 { #expect(CopyRate.bytesPerSecond(rate) == 2 << 30) }
        // Monotonic, doubling at each band edge.
        for rate in 1..<150 {
            let here = CopyRate.bytesPerSecond(rate)
            let next = CopyRate.bytesPerSecond(rate + 1)
            #expect(next == (rate % 10 == 0 ? here * 2 : here))
        }
    }

    @Test("grain counts round up to whole grains")
    func grains() {
        #expect(grainCount(sizeBytes: 0, grainSizeBytes: 64 << 10) == 0)
        #expect(grainCount(sizeBytes: 512, grainSizeBytes: 64 << 10) == 1)
        #expect(grainCount(sizeBytes: 64 << 10, grainSizeBytes: 64 << 10) == 1)
        #expect(grainCount(sizeBytes: (64 << 10) + 512, grainSizeBytes: 64 << 10) == 2)
        #expect(grainCount(sizeBytes: 1 << 20, grainSizeBytes: 256 << 10) == 4)
        #expect(grainCount(sizeBytes: Limits.volumeSizeBytesMax, grainSizeBytes: 64 << 10) == 1 << 32)
    }

    @Test("progress percentages round down; a map with no grains shows 100, a rollback not yet counted 0")
    func progress() {
        var map = LCMap(id: 0, name: "m", role: .forward, partnerID: 1, sourceID: 0, targetID: 1, copyRate: 50, grainSizeBytes: 64 << 10, autorestore: false, grainsTotal: 3)
        #expect(map.progressPercent == 0)
        map.grainsCopied = 1
        #expect(map.progressPercent == 33)
        map.grainsCopied = 3
        #expect(map.progressPercent == 100)
        map.grainsTotal = 0
        map.grainsCopied = 0
        #expect(map.progressPercent == 100)
        var rollback = Rollback(trigger: .auto, faultID: 1)
        #expect(rollback.progressPercent == 0)
        rollback.grainsToRestore = 3
        rollback.grainsRestored = 2
        #expect(rollback.progressPercent == 66)
        rollback.grainsRestored = 3
        #expect(rollback.progressPercent == 100)
    }

    @Test("only a forward map with a valid image is active")
    func isActive() {
        var map = LCMap(id: 0, name: "m", role: .forward, partnerID: 1, sourceID: 0, targetID: 1, copyRate: 50, grainSizeBytes: 64 << 10, autorestore: false, grainsTotal: 3)
        #expect(!map.isActive)
        map.imageValid = true
        #expect(map.isActive)
        map.role = .reverse
        #expect(!map.isActive)
    }

    @Test("the CLI and API spellings are stable")
    func spellings() {
        #expect(MapState.allCases.map(\.description) == ["idle_or_copied", "preparing", "prepared", "copying", "stopping", "stopped"])
        #expect(MapState.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 5])
        #expect(VolumeStatus.allCases.map(\.description) == ["online", "faulted", "restoring", "out_of_space"])
        #expect(VolumeStatus.allCases.map(\.rawValue) == [0, 1, 2, 3])
        #expect(FaultCause.allCases.map(\.description) == ["operator", "io_error", "backing_missing", "backing_resized", "rollback_abandoned", "detector"])
        #expect(FaultCause.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 5])
        #expect(DetectionSensitivity.allCases.map(\.description) == ["low", "medium", "high"])
        #expect(DetectionSensitivity.allCases.map(\.rawValue) == [0, 1, 2])
        #expect(DetectionSensitivity.allCases.map { DetectionSensitivity(name: $0.description) } == DetectionSensitivity.allCases)
        #expect(DetectionSensitivity(name: "extreme") == nil && DetectionSensitivity(name: "") == nil)
        #expect(RollbackTrigger.operator.description == "operator" && RollbackTrigger.auto.description == "auto")
        #expect(RollbackTrigger.operator.rawValue == 0 && RollbackTrigger.auto.rawValue == 1)
        #expect(MapRole.forward.description == "forward" && MapRole.reverse.description == "reverse")
    }

    @Test("error codes are stable and unique")
    func errorCodes() {
        let codes = CommandError.Code.allCases.map(\.rawValue)
        #expect(Set(codes).count == codes.count)
        #expect(codes == [
            "unknown_volume", "unknown_map", "duplicate_name", "invalid_name", "invalid_size", "invalid_path",
            "same_source_target", "size_mismatch", "target_in_use", "volume_in_map", "copyrate_out_of_range",
            "invalid_grain_size", "map_already_started", "map_not_started", "map_active", "map_is_reverse", "no_valid_image",
            "map_restoring", "volume_restoring", "volume_faulted", "volume_not_faulted", "invalid_reason", "invalid_progress",
            "invalid_state", "nothing_to_change", "limit_reached", "path_exists", "backing_unavailable", "invalid_delay",
            "invalid_onset", "unknown_group", "group_not_empty", "group_empty", "group_restoring", "group_conflict",
            "group_changed", "map_in_group",
        ])
        let error = CommandError(.unknownMap, "lcmap \"x\" does not exist")
        #expect(error.description == "unknown_map: lcmap \"x\" does not exist")
    }

    @Test("limits are consistent with each other")
    func limits() {
        #expect(Limits.mapNameBytesMax + Limits.reverseNameSuffix.utf8.count == Limits.nameBytesMax)
        #expect(Limits.grainSizesBytes.contains(Limits.grainSizeBytesDefault))
        #expect((0...Limits.copyRateMax).contains(Limits.copyRateDefault))
        #expect(Limits.volumeSizeBytesMax % Limits.sectorBytes == 0)
        #expect(Limits.mapsMax >= 2 * (Limits.volumesMax - 1))
    }
}
