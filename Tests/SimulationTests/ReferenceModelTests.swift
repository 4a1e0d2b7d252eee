@testable import SnapbackTesting
import Testing

/// The reference model's own rules, checked on their own: what a read may return now and after
/// a crash.
@Suite("Reference model")
struct ReferenceModelTests {
    @Test("an unflushed write may be old, new or torn after a crash; a flushed one is known")
    func uncertainty() {
        var model = ByteModel(sizeBytes: 1024)
        model.write(at: 0, [UInt8](repeating: 1, count: 1024), fua: true)
        model.write(at: 512, [UInt8](repeating: 2, count: 512), fua: false)
        var now = [UInt8](repeating: 1, count: 1024)
        now.replaceSubrange(512..<1024, with: [UInt8](repeating: 2, count: 512))
        #expect(model.firstDisallowed(now, at: 0, .now) == nil)
        // Before any crash the write must be there.
        #expect(model.firstDisallowed([UInt8](repeating: 1, count: 1024), at: 0, .now)?.offset == 512)
        // After a crash: old, new or torn at sector granularity.
        #expect(model.firstDisallowed([UInt8](repeating: 1, count: 1024), at: 0, .afterCrash) == nil)
        #expect(model.firstDisallowed(now, at: 0, .afterCrash) == nil)
        var torn = [UInt8](repeating: 1, count: 1024)
        torn[700] = 2
        #expect(model.firstDisallowed(torn, at: 0, .afterCrash) == nil)
        torn[0] = 2
        #expect(model.firstDisallowed(torn, at: 0, .afterCrash)?.offset == 0)
        // A flush makes it known.
        model.flush()
        #expect(model.firstDisallowed([UInt8](repeating: 1, count: 1024), at: 0, .afterCrash)?.offset == 512)
        #expect(model.isSettled)
    }

    @Test("a newer FUA write supersedes an older unflushed one")
    func fuaSupersedes() {
        var model = ByteModel(sizeBytes: 1024)
        model.write(at: 0, [UInt8](repeating: 3, count: 1024), fua: false)
        model.write(at: 256, [UInt8](repeating: 4, count: 256), fua: true)
        var after = [UInt8](repeating: 0, count: 1024)
        after.replaceSubrange(256..<512, with: [UInt8](repeating: 4, count: 256))
        #expect(model.firstDisallowed(after, at: 0, .afterCrash) == nil)
        after[300] = 3
        #expect(model.firstDisallowed(after, at: 0, .afterCrash)?.offset == 300)
    }
}
