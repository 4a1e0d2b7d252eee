import Foundation
import SnapbackAPI
import SnapbackCore

/// A listing: named columns and rows of text, printed as a concise table, a delimited table,
/// a JSON array, or (for one object) IBM-style key/value detail lines.
struct Listing {
    var columns: [String]
    var rows: [[Field]]

    /// A value: text in tables, and a string or a number in JSON.
    enum Field {
        case text(String)
        case number(UInt64)
        /// Names: joined by commas in text, an array in JSON.
        case list([String])

        var text: String {
            switch self {
            case let .text(value): value
            case let .number(value): String(value)
            case let .list(values): values.joined(separator: ",")
            }
        }

        var json: Any {
            switch self {
            case let .text(value): value
            case let .number(value): value
            case let .list(values): values
            }
        }
    }

    /// The concise table: a header line and one line per row, columns aligned with spaces, or
    /// separated by `delimiter` when one is given.
    func table(delimiter: String?) -> String {
        var lines: [String] = []
        if let delimiter {
            lines.append(columns.joined(separator: delimiter))
            for row in rows { lines.append(row.map(\.text).joined(separator: delimiter)) }
        } else {
            var widths = columns.map(\.count)
            for row in rows { for (index, field) in row.enumerated() { widths[index] = max(widths[index], field.text.count) } }
            func line(_ cells: [String]) -> String {
                cells.enumerated().map { index, cell in
                    index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                }.joined(separator: " ")
            }
            lines.append(line(columns))
            for row in rows { lines.append(line(row.map(\.text))) }
        }
        return lines.joined(separator: "\n")
    }

    /// Key/value lines for the first row (lsfcmap's detail view), separated by `delimiter` or a space.
    func detail(delimiter: String?) -> String {
        guard let row = rows.first else { return "" }
        return zip(columns, row).map { "\($0)\(delimiter ?? " ")\($1.text)" }.joined(separator: "\n")
    }

    /// A JSON array of objects with the same names and values.
    func json() -> String {
        let objects = rows.map { row in
            Dictionary(uniqueKeysWithValues: zip(columns, row.map(\.json)))
        }
        let data = try! JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    func render(json: Bool, delimiter: String?, detail: Bool) -> String {
        if json { return self.json() }
        return detail ? self.detail(delimiter: delimiter) : table(delimiter: delimiter)
    }
}

extension Listing {
    /// `lsvolume`'s listing (the columns of ``VolumeRow``).
    static func volumes(_ rows: [VolumeRow]) -> Listing {
        Listing(
            columns: VolumeRow.columns,
            rows: rows.map { row in
                [
                    .number(UInt64(row.id)), .text(row.name), .number(row.size), .text(row.status), .text(row.path),
                    .text(row.fault_id), .text(row.fault_reason), .text(row.fault_onset), .text(row.rollback_at), .text(row.rollback_note),
                    .text(row.detect), .text(row.sensitivity), .number(UInt64(row.anomaly_score)),
                ]
            })
    }

    /// `lslcmap`'s listing (the columns of ``MapRow``).
    static func maps(_ rows: [MapRow]) -> Listing {
        Listing(
            columns: MapRow.columns,
            rows: rows.map { row in
                [
                    .number(UInt64(row.id)), .text(row.name), .text(row.source), .text(row.target), .text(row.status),
                    .number(UInt64(row.progress)), .number(UInt64(row.copyrate)), .text(row.autorestore), .text(row.restoring),
                    .text(row.partner), .number(UInt64(row.grainsize)), .text(row.role), .number(UInt64(row.restore_progress)),
                    .text(row.restore_trigger), .text(row.start_time), .number(UInt64(row.autorestoredelay)), .text(row.rollback_at),
                    .text(row.lcgrp),
                ]
            })
    }

    /// `lssystem`'s listing (the columns of ``SystemRow``).
    static func system(_ row: SystemRow) -> Listing {
        Listing(
            columns: SystemRow.columns,
            rows: [
                [
                    .text(row.status), .text(row.reason), .text(row.degraded_since), .number(row.failed_commits), .number(row.log_size),
                    .number(row.last_sequence), .text(row.version),
                ]
            ])
    }

    static func volumes(_ volumes: [Volume], in state: ControllerState) -> Listing { self.volumes(volumes.map { VolumeRow($0, in: state) }) }

    static func maps(_ maps: [LCMap], in state: ControllerState) -> Listing { self.maps(maps.map { MapRow($0, in: state) }) }
}
