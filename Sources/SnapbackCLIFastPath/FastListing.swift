// The listings on the fast path (lsvolume, lslcmap, lslcgrp, lssystem): the same text as
// SnapbackCLI's `Listing` (Tables.swift), rendered from the API's JSON answer. An answer the fast
// path cannot render exactly as `Listing` would (a missing or odd field, text `Listing` would
// align or escape differently) is left to snapback-full, which sends the same GET again.

/// A listing's columns (the API row types' `columns` in SnapbackAPI; SnapbackCLIFastPathTests
/// check that they agree).
public enum FastListing {
    public static let volumeColumns = [
        "id", "name", "size", "status", "path", "fault_id", "fault_reason", "fault_onset", "rollback_at", "rollback_note", "detect",
        "sensitivity", "anomaly_score",
    ]
    public static let mapColumns = [
        "id", "name", "source", "target", "status", "progress", "copyrate", "autorestore", "restoring", "partner", "grainsize", "role",
        "restore_progress", "restore_trigger", "start_time", "autorestoredelay", "rollback_at", "lcgrp",
    ]
    public static let groupColumns = [
        "id", "name", "status", "autorestore", "maps", "start_time", "restoring", "restore_progress", "autorestoredelay", "rollback_at",
    ]
    public static let systemColumns = ["status", "reason", "degraded_since", "failed_commits", "log_size", "last_sequence", "version"]

    /// A field: text, a non-negative integer, or names (lslcgrp's `lcmaps`).
    enum Field {
        case text(String)
        case number(String)
        case list([String])

        var text: String {
            switch self {
            case let .text(value), let .number(value): value
            case let .list(values): values.joined(separator: ",")
            }
        }
    }

    /// The fields of `row` in `columns` order; `nil` when one is missing or of a kind `Listing`
    /// would not print the same way.
    static func fields(_ row: JSONValue, _ columns: [String]) -> [Field]? {
        var fields: [Field] = []
        for column in columns {
            switch row[column] {
            case let .string(value)?:
                fields.append(.text(value))
            case let .number(value)? where !value.isEmpty && value.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }):
                fields.append(.number(value))
            case let .array(values)?:
                let names = values.compactMap(\.string)
                guard names.count == values.count else { return nil }
                fields.append(.list(names))
            default:
                return nil
            }
        }
        return fields
    }

    /// The listing of `rows` as `Listing.render(json:delimiter:detail:)` prints it, or `nil`
    /// when snapback-full must render it.
    static func render(_ rows: [JSONValue], columns: [String], json: Bool, delimiter: String?, detail: Bool) -> String? {
        var table: [[Field]] = []
        for row in rows {
            guard let fields = fields(row, columns) else { return nil }
            table.append(fields)
        }
        if json { return renderJSON(table, columns) }
        if detail {
            guard let row = table.first else { return "" }
            return zip(columns, row).map { "\($0)\(delimiter ?? " ")\($1.text)" }.joined(separator: "\n")
        }
        var lines: [String] = []
        if let delimiter {
            lines.append(columns.joined(separator: delimiter))
            for row in table { lines.append(row.map(\.text).joined(separator: delimiter)) }
            return lines.joined(separator: "\n")
        }
        // Aligned: `Listing` measures in characters and pads in UTF-16 units, the same for ASCII only.
        guard table.allSatisfy({ $0.allSatisfy { $0.text.utf8.allSatisfy { $0 < 0x80 } } }) else { return nil }
        var widths = columns.map(\.utf8.count)
        for row in table { for (index, field) in row.enumerated() { widths[index] = max(widths[index], field.text.utf8.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.utf8.count)
            }.joined(separator: " ")
        }
        lines.append(line(columns))
        for row in table { lines.append(line(row.map(\.text))) }
        return lines.joined(separator: "\n")
    }

    /// `JSONSerialization`'s `[.prettyPrinted, .sortedKeys]` text of an array of objects: two
    /// spaces a level, `"key" : value`, `/` escaped, an empty array as `[`, an empty line, `]`.
    static func renderJSON(_ table: [[Field]], _ columns: [String]) -> String? {
        func string(_ text: String) -> String? {
            var result = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": result += "\\\""
                case "\\": result += "\\\\"
                case "/": result += "\\/"
                case _ where scalar.value < 0x20 || scalar.value == 0x7F: return nil
                default: result.unicodeScalars.append(scalar)
                }
            }
            return result + "\""
        }
        func array(_ items: [String], indent: String) -> String {
            items.isEmpty ? "[\n\n\(indent)]" : "[\n" + items.map { indent + "  " + $0 }.joined(separator: ",\n") + "\n\(indent)]"
        }
        let order = columns.indices.sorted { columns[$0] < columns[$1] }
        var objects: [String] = []
        for row in table {
            var members: [String] = []
            for index in order {
                let value: String
                switch row[index] {
                case let .text(text):
                    guard let quoted = string(text) else { return nil }
                    value = quoted
                case let .number(digits):
                    value = digits
                case let .list(names):
                    var items: [String] = []
                    for name in names {
                        guard let quoted = string(name) else { return nil }
                        items.append(quoted)
                    }
                    value = array(items, indent: "    ")
                }
                members.append("    \"\(columns[index])\" : \(value)")
            }
            objects.append("{\n" + members.joined(separator: ",\n") + "\n  }")
        }
        return array(objects, indent: "")
    }
}
