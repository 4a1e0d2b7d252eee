import ArgumentParser
import Foundation
import SnapbackCore
import SnapbackLog

/// `snapback log explain MAP|VOLUME|GROUP`: the story of one object in plain sentences, with the
/// sequence numbers as evidence.
struct LogExplain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain", abstract: "Tell the story of one lcmap, lcgrp or volume, with sequence numbers as evidence.")

    @OptionGroup var location: LogLocation
    @Argument(help: "An lcmap, an lcgrp or a volume, by name (or id).") var object: String

    func run() throws {
        // The sentences are built in SnapbackLog (`Story`), shared with snapbackd's status page.
        let lines = try location.open().story(of: object)
        guard !lines.isEmpty else {
            throw CLIError(code: "unknown_object", message: "the log never mentions an lcmap, lcgrp or volume called \(object)")
        }
        lines.forEach { print($0.text) }
    }
}
