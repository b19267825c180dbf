import Foundation

/// Human and JSON output.
enum Output {
    /// Pretty-printed JSON with sorted keys (the proto3 JSON names of the generated types).
    static func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            throw CLIFailure("cannot print the response as JSON: \(error)")
        }
        print(String(decoding: data, as: UTF8.self))
    }

    /// `2026-01-31T12:00:00Z`, or `-` for 0 (unset).
    static func time(_ unixNanos: Int64) -> String {
        guard unixNanos != 0 else { return "-" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(unixNanos) / 1e9))
    }

    /// A limit where 0 means none.
    static func limit(_ value: some BinaryInteger, unit: String = "") -> String {
        value == 0 ? "unlimited" : "\(value)\(unit)"
    }

    static func list(_ values: [String]) -> String {
        values.isEmpty ? "-" : values.joined(separator: ",")
    }

    static func text(_ value: String) -> String {
        value.isEmpty ? "-" : value
    }

    /// "key=value" lines, aligned.
    static func printFields(_ fields: [(String, String)], indent: String = "  ") {
        let width = fields.map(\.0.count).max() ?? 0
        for (name, value) in fields {
            print("\(indent)\(name):\(String(repeating: " ", count: width - name.count + 1))\(value)")
        }
    }
}

/// A plain-text table: columns separated by two spaces, the last one not padded.
struct TextTable {
    var headers: [String]
    var rows: [[String]] = []

    init(_ headers: String...) { self.headers = headers }
    init(headers: [String]) { self.headers = headers }

    mutating func add(_ row: String...) { rows.append(row) }
    mutating func add(row: [String]) { rows.append(row) }

    func print(ifEmpty: String) {
        if rows.isEmpty {
            Swift.print(ifEmpty)
            return
        }
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        for row in [headers] + rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                if index == row.count - 1 {
                    line += cell
                } else {
                    line += cell + String(repeating: " ", count: widths[index] - cell.count + 2)
                }
            }
            Swift.print(line)
        }
    }
}

/// Free text shortened for a table cell (one line).
func cell(_ text: String, max: Int = 40) -> String {
    let oneLine = text.split(whereSeparator: \.isNewline).joined(separator: " ")
    if oneLine.isEmpty { return "-" }
    return oneLine.count <= max ? oneLine : String(oneLine.prefix(max - 1)) + "…"
}
