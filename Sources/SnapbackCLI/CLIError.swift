import ArgumentParser
import Foundation

/// An error the CLI reports: a stable code, a one-line reason, and the exit code it ends with.
public struct CLIError: Error, CustomStringConvertible {
    public var code: String
    public var message: String
    public var exitCode: Int32

    public init(code: String, message: String, exitCode: Int32 = 1) {
        self.code = code
        self.message = message
        self.exitCode = exitCode
    }

    public var description: String { "\(code): \(message)" }
}

/// Writes one line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

extension NameSpecification {
    /// IBM's single-dash spelling (`-name`), with the double-dash spelling accepted too.
    static func ibm(_ name: String) -> NameSpecification {
        [.customLong(name, withSingleDash: true), .customLong(name)]
    }
}
