import SnapbackNBD
import Testing

/// What the `nbd-request` fuzz target taught (Tests/Fuzz/regressions/nbd-request holds the input).
@Suite("fuzz regressions: NBD")
struct NBDFuzzRegressionTests {
    // write-beside-flush.bin: a FLUSH, then a WRITE that was admitted while the FLUSH was still in
    // progress. Not a product bug: the target first required a FLUSH to run alone, but the window
    // (and the protocol) only require it to wait for the requests before it. A FLUSH makes durable
    // the writes completed before it; a later write running beside it may or may not be included.
    @Test("a request received after a FLUSH may run beside it; a FLUSH waits for those before it")
    func requestsAfterAFlushRunBesideIt() {
        var window = NBDRequestWindow()
        let flush = window.admit(.accept(.flush))
        let write = NBDRequestCheck.accept(.write(offset: 0, lengthBytes: 512, fua: true))
        #expect(window.canAdmit(write))
        let admitted = window.admit(write)
        #expect(!window.canAdmit(.accept(.flush)), "a second FLUSH waits for the first and the write")
        #expect(!window.canAdmit(.accept(.disconnect)))
        window.complete(flush)
        window.complete(admitted)
        #expect(window.isEmpty && window.canAdmit(.accept(.flush)))
    }
}
