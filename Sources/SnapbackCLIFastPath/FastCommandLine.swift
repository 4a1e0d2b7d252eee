// The fast path's command line: the control commands' syntax as a table, parsed by hand.
//
// SnapbackCLI's ArgumentParser definitions stay the normative syntax. This parser accepts only
// command lines it understands completely (every option known and well formed, each given at
// most once, the required ones present) and gives up on anything else (help, a malformed or
// unusual command line, a command it does not know), which snapback-full then parses, runs or
// rejects with ArgumentParser's own message. So it may give up more often than needed, never
// accept what ArgumentParser refuses. SnapbackCLIFastPathTests check the table against the
// ArgumentParser definitions.

/// One command the fast path runs.
public struct FastCommand: Sendable {
    /// What an option's value is.
    public enum Kind: Sendable, Equatable {
        /// Any text not starting with `-`.
        case text
        /// A decimal integer (`Int(_:)`, as ArgumentParser reads an `Int`).
        case integer
        /// A size such as 64m (``parseSize(_:)``).
        case size
        /// A flag: no value.
        case flag
    }

    /// An option, spelled `-name` or `--name`.
    public struct Option: Sendable {
        public let name: String
        public let kind: Kind
        public let required: Bool

        init(_ name: String, _ kind: Kind, required: Bool = false) {
            self.name = name
            self.kind = kind
            self.required = required
        }
    }

    /// The command's one positional argument, if it has one.
    public enum Operand: Sendable, Equatable {
        case none, optional, required
    }

    public let name: String
    public let options: [Option]
    public let operand: Operand
    /// Options of the command that the fast path leaves to snapback-full (whose value needs
    /// Foundation to check, such as `fault -onset`).
    public let deferred: [String]

    init(_ name: String, _ options: [Option], operand: Operand, deferred: [String] = []) {
        self.name = name
        self.options = options
        self.operand = operand
        self.deferred = deferred
    }

    /// `-socket PATH`, which every control command takes.
    public static let socketOption = Option("socket", .text)
}

/// A parsed command line: the command, its options' values and its operand.
public struct FastInvocation: Equatable, Sendable {
    /// An option's value.
    public enum Value: Equatable, Sendable {
        case text(String)
        case integer(Int)
        case size(UInt64)
        case flag
    }

    public let command: String
    public var values: [String: Value] = [:]
    public var operand: String?

    public func text(_ name: String) -> String? {
        if case let .text(value) = values[name] { return value }
        return nil
    }

    public func integer(_ name: String) -> Int? {
        if case let .integer(value) = values[name] { return value }
        return nil
    }

    public func size(_ name: String) -> UInt64? {
        if case let .size(value) = values[name] { return value }
        return nil
    }

    public func flag(_ name: String) -> Bool { values[name] == .flag }
}

public enum FastCommandLine {
    /// The commands of the fast path, with the options of their ArgumentParser definitions.
    public static let commands: [FastCommand] = [
        FastCommand(
            "mkvolume",
            [
                .init("name", .text, required: true), .init("size", .size, required: true), .init("path", .text), .init("adopt", .flag),
                .init("detect", .text), .init("sensitivity", .text),
            ], operand: .none),
        FastCommand("chvolume", [.init("name", .text), .init("detect", .text), .init("sensitivity", .text)], operand: .required),
        FastCommand("rmvolume", [], operand: .required),
        FastCommand(
            "mklcmap",
            [
                .init("source", .text, required: true), .init("target", .text, required: true), .init("name", .text),
                .init("autorestore", .text), .init("copyrate", .integer), .init("grainsize", .integer), .init("autorestoredelay", .integer),
                .init("lcgrp", .text),
            ], operand: .none),
        FastCommand(
            "chlcmap",
            [
                .init("autorestore", .text), .init("copyrate", .integer), .init("name", .text), .init("autorestoredelay", .integer),
                .init("lcgrp", .text), .init("nolcgrp", .flag),
            ], operand: .required),
        FastCommand("startlcmap", [.init("prep", .flag), .init("restore", .flag)], operand: .required),
        FastCommand("stoplcmap", [.init("force", .flag)], operand: .required),
        FastCommand("rmlcmap", [.init("force", .flag)], operand: .required),
        FastCommand("fault", [.init("volume", .text, required: true), .init("reason", .text, required: true)], operand: .none, deferred: ["onset"]),
        FastCommand("recovervolume", [], operand: .required),
        FastCommand("mklcgrp", [.init("name", .text), .init("autorestore", .text), .init("autorestoredelay", .integer)], operand: .none),
        FastCommand(
            "chlcgrp", [.init("name", .text), .init("autorestore", .text), .init("autorestoredelay", .integer)], operand: .required),
        FastCommand("startlcgrp", [.init("prep", .flag), .init("restore", .flag)], operand: .required),
        FastCommand("stoplcgrp", [.init("force", .flag)], operand: .required),
        FastCommand("rmlcgrp", [.init("force", .flag)], operand: .required),
        FastCommand("lssystem", listingOptions, operand: .none),
        FastCommand("lsvolume", listingOptions, operand: .optional),
        FastCommand("lslcmap", listingOptions, operand: .optional),
        FastCommand("lslcgrp", listingOptions, operand: .optional),
    ]

    /// `-delim C` and `-json` of the listings.
    static let listingOptions: [FastCommand.Option] = [.init("delim", .text), .init("json", .flag)]

    /// Parses `arguments` (without the program name); `nil` when the fast path leaves them to
    /// snapback-full.
    public static func parse(_ arguments: [String]) -> FastInvocation? {
        guard let name = arguments.first, let command = commands.first(where: { $0.name == name }) else { return nil }
        var invocation = FastInvocation(command: name)
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard let first = argument.first else { return nil }
            if first != "-" {
                // `help` anywhere is ArgumentParser's to interpret.
                guard argument != "help", command.operand != .none, invocation.operand == nil else { return nil }
                invocation.operand = argument
                continue
            }
            let optionName = argument.hasPrefix("--") ? argument.dropFirst(2) : argument.dropFirst()
            guard !optionName.isEmpty, !optionName.contains("="),
                let option = optionName == "socket"
                    ? FastCommand.socketOption : command.options.first(where: { $0.name == optionName }),
                invocation.values[option.name] == nil
            else { return nil }
            if option.kind == .flag {
                invocation.values[option.name] = .flag
                continue
            }
            guard index < arguments.count, let valueFirst = arguments[index].first, valueFirst != "-" else { return nil }
            let text = arguments[index]
            index += 1
            switch option.kind {
            case .text:
                invocation.values[option.name] = .text(text)
            case .integer:
                guard let value = Int(text) else { return nil }
                invocation.values[option.name] = .integer(value)
            case .size:
                guard let value = parseSize(text) else { return nil }
                invocation.values[option.name] = .size(value)
            case .flag:
                preconditionFailure("flags take no value")
            }
        }
        for option in command.options where option.required && invocation.values[option.name] == nil { return nil }
        if command.operand == .required && invocation.operand == nil { return nil }
        // chlcmap's validate(): -lcgrp and -nolcgrp exclude each other (a usage error).
        if name == "chlcmap" && invocation.text("lcgrp") != nil && invocation.flag("nolcgrp") { return nil }
        return invocation
    }
}
