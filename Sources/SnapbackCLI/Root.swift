import ArgumentParser
import Foundation
import SnapbackLog

/// The `snapback` command.
public struct SnapbackCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "snapback",
        abstract: "Control a Snapback snapshot controller and audit its event log.",
        subcommands: [
            ListSystem.self, MakeVolume.self, ChangeVolume.self, ListVolumes.self, RemoveVolume.self, MakeMap.self, ChangeMap.self, ListMaps.self,
            StartMap.self, StopMap.self, RemoveMap.self, MakeGroup.self, ChangeGroup.self, ListGroups.self, StartGroup.self, StopGroup.self,
            RemoveGroup.self, ReportFault.self, RecoverVolume.self, WaitForMap.self, ListCluster.self,
            LogCommand.self,
        ]
    )

    public init() {}

    /// Parses `arguments`, runs the command and returns the process exit code: 0 on success,
    /// 1 for a command the controller rejects, 2 for malformed syntax, and the documented codes
    /// of `log verify`.
    /// Synchronous: no command needs Swift concurrency, and not starting its thread pool and
    /// event loop saves the CLI's start-up about a millisecond of CPU.
    public static func main(arguments: [String]) -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            precondition(!(command is AsyncParsableCommand), "an async subcommand needs the root to run it on an executor")
            try command.run()
            return 0
        } catch let error as CLIError {
            printError("snapback: error \(error.code): \(error.message)")
            return error.exitCode
        } catch let error as LogError {
            printError("snapback: error \(error.code): \(error)")
            return 1
        } catch {
            let exitCode = Self.exitCode(for: error)
            if exitCode == .success {
                print(Self.fullMessage(for: error))
                return 0
            }
            if let exit = error as? ExitCode { return exit.rawValue }
            guard exitCode == .validationFailure else {
                printError("snapback: error internal: \(error)")
                return 1
            }
            // Everything ArgumentParser rejects is malformed syntax: exit 2 with its one-line reason.
            let message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid usage"
            printError("snapback: error usage: \(message)")
            return 2
        }
    }
}
