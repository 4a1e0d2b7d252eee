// Shared by every fuzz target (tools/fuzz compiles it into each).

/// Traps with `message` when `condition` is false. Unlike `precondition`, whose message an -O
/// build drops, the message is printed, so a crash report says which property failed.
func fuzzCheck(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "",
    file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() { fatalError("fuzz property failed: \(message())", file: file, line: line) }
}
