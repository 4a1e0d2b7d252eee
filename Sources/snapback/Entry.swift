import Foundation
import SnapbackCLI

@main
enum Entry {
    static func main() {
        exit(SnapbackCommand.main(arguments: Array(CommandLine.arguments.dropFirst())))
    }
}
