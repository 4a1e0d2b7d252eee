import Foundation
import SnapbackCLI

@main
enum Entry {
    static func main() async {
        exit(await SnapbackCommand.main(arguments: Array(CommandLine.arguments.dropFirst())))
    }
}
