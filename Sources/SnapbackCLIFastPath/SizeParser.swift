// The size syntax of `-size` (`snapback mkvolume`), shared by the fast path and the complete CLI.
// Apart from ArgumentParser so the fuzz target `api-request` (Tests/Fuzz) can compile it on its own.

/// Parses sizes such as 512, 64k, 64m, 1g, 1t (binary units; an optional trailing b or ib).
public func parseSize(_ text: String) -> UInt64? {
    var digits = text.lowercased()
    for suffix in ["ib", "b"] where digits.hasSuffix(suffix) && digits.count > suffix.count {
        let trimmed = String(digits.dropLast(suffix.count))
        if trimmed.last.map({ "kmgt".contains($0) }) == true || suffix == "b" { digits = trimmed }
    }
    var shift: UInt64 = 0
    if let unit = digits.last, let index = Array("kmgt").firstIndex(of: unit) {
        shift = UInt64(index + 1) * 10
        digits.removeLast()
    }
    guard !digits.isEmpty, digits.allSatisfy(\.isNumber), let value = UInt64(digits) else { return nil }
    let (scaled, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
    return overflow ? nil : scaled
}
