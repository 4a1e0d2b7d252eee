import Foundation
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

        var text: String {
            switch self {
            case let .text(value): value
            case let .number(value): String(value)
            }
        }

        var json: Any {
            switch self {
            case let .text(value): value
            case let .number(value): value
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
    /// `lsvolume`'s columns: id, name, size (bytes), status, path, fault_id, fault_reason.
    static func volumes(_ volumes: [Volume]) -> Listing {
        Listing(
            columns: ["id", "name", "size", "status", "path", "fault_id", "fault_reason"],
            rows: volumes.map { volume in
                [
                    .number(UInt64(volume.id)), .text(volume.name), .number(volume.sizeBytes), .text(volume.status.description),
                    .text(volume.path ?? ""), .text(volume.fault.map { String($0.id) } ?? ""), .text(volume.fault?.reason ?? ""),
                ]
            })
    }

    /// `lslcmap`'s columns: the brief's id, name, source, target, status, progress, copyrate,
    /// autorestore, restoring, partner; then grainsize (KiB), role, restore_progress and
    /// restore_trigger.
    static func maps(_ maps: [LCMap], in state: ControllerState) -> Listing {
        Listing(
            columns: [
                "id", "name", "source", "target", "status", "progress", "copyrate", "autorestore", "restoring", "partner",
                "grainsize", "role", "restore_progress", "restore_trigger",
            ],
            rows: maps.map { map in
                let forward = map.role == .forward ? map : state.maps[map.partnerID]
                let rollback = forward?.rollback
                return [
                    .number(UInt64(map.id)), .text(map.name), .text(state.volumes[map.sourceID]?.name ?? String(map.sourceID)),
                    .text(state.volumes[map.targetID]?.name ?? String(map.targetID)), .text(map.state.description),
                    .number(UInt64(map.progressPercent)), .number(UInt64(map.copyRate)), .text(map.autorestore ? "on" : "off"),
                    .text(rollback != nil ? "yes" : "no"), .text(state.maps[map.partnerID]?.name ?? ""),
                    .number(UInt64(map.grainSizeBytes / 1024)), .text(map.role.description),
                    .number(UInt64(rollback?.progressPercent ?? 0)), .text(rollback?.trigger.description ?? ""),
                ]
            })
    }
}
