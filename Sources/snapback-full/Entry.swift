import Foundation
import SnapbackCLI

/// snapback-full: the complete CLI (every command, help, usage errors, the audit commands).
/// `snapback` handles the control commands it can parse on its own and execs this program, found
/// beside it, with the same arguments for everything else.
@main
enum Entry {
    static func main() {
        exit(SnapbackCommand.main(arguments: Array(CommandLine.arguments.dropFirst())))
    }
}
