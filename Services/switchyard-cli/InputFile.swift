import Foundation
import Schemas
import Yams

/// A JSON or YAML file holding proto3-JSON messages (`manifest set`, `kb import`).
///
/// YAML is turned into the same JSON first and then decoded by the generated `Codable` conformances, so both
/// formats get the same checks (unknown keys, wrong types). Plain YAML scalars follow the YAML 1.2 core schema:
/// `true`/`false`, numbers and `null`/`~` are typed, everything else is a string (`no`, `on` and dates stay
/// strings; quote a value to force a string). Errors name the file, the line and column (YAML) and the field.
struct InputFile {
    let path: String
    /// The JSON bytes to decode.
    let json: Data
    /// YAML only: where each value (by its JSON path, e.g. `agents[0].model`) starts in the file.
    let marks: [String: Mark]

    /// Reads and parses `path`; the format comes from the extension (.json, .yaml or .yml).
    static func load(_ path: String) throws(CLIFailure) -> InputFile {
        let lowered = path.lowercased()
        let isYAML = lowered.hasSuffix(".yaml") || lowered.hasSuffix(".yml")
        guard isYAML || lowered.hasSuffix(".json") else {
            throw CLIFailure("\(path): unknown file type: the name must end in .json, .yaml or .yml")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription
            throw CLIFailure("\(path): cannot read the file: \(reason)")
        }
        guard isYAML else { return InputFile(path: path, json: data, marks: [:]) }
        guard let text = String(data: data, encoding: .utf8) else {
            throw CLIFailure("\(path): the file is not valid UTF-8")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text, YAMLCoreSchema.resolver())
        } catch let error as YamlError {
            throw CLIFailure(YAMLCoreSchema.describe(error, path: path))
        } catch {
            throw CLIFailure("\(path): not valid YAML: \(error)")
        }
        guard let root else { throw CLIFailure("\(path): the file is empty") }
        var converter = YAMLToJSON(path: path)
        let value = try converter.convert(root, at: [])
        let json: Data
        do {
            json = try JSONEncoder().encode(value)
        } catch {
            throw CLIFailure("\(path): cannot convert the YAML to JSON: \(error)")
        }
        return InputFile(path: path, json: json, marks: converter.marks)
    }

    /// Decodes the file as `T`; a failure names the file, the position and the field.
    func decode<T: Decodable>(_ type: T.Type) throws(CLIFailure) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: json)
        } catch let error as DecodingError {
            throw CLIFailure(describe(error))
        } catch {
            throw CLIFailure("\(path): \(error)")
        }
    }

    private func describe(_ error: DecodingError) -> String {
        let path: [any CodingKey]
        var message: String
        switch error {
        case .typeMismatch(let type, let c):
            path = c.codingPath
            message = "wrong type (expected \(Self.jsonTypeName(type)))"
            if type == String.self && !marks.isEmpty { message += "; quote the value in YAML" }
        case .valueNotFound(let type, let c):
            path = c.codingPath
            message = "missing value (expected \(Self.jsonTypeName(type)))"
        case .keyNotFound(let key, let c):
            path = c.codingPath
            message = "missing key \"\(key.stringValue)\""
        case .dataCorrupted(let c):
            path = c.codingPath
            message = c.debugDescription
            if c.codingPath.isEmpty && marks.isEmpty, let syntax = jsonSyntaxError() { return syntax }
        @unknown default:
            return "\(self.path): cannot decode: \(error)"
        }
        let field = JSONPath.render(path)
        var location = self.path
        if let mark = mark(for: path) { location += ":\(mark.line):\(mark.column)" }
        return field.isEmpty ? "\(location): \(message)" : "\(location): \(field): \(message)"
    }

    /// `path:line:column: not valid JSON: …` for a JSON file that does not parse (JSONDecoder does not say where).
    private func jsonSyntaxError() -> String? {
        do {
            _ = try JSONSerialization.jsonObject(with: json, options: [.fragmentsAllowed])
            return nil
        } catch {
            var detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            var location = path
            // Foundation reports "… around character N." (a byte offset).
            if let range = detail.range(of: " around character "),
               let offset = Int(detail[range.upperBound...].prefix { $0.isNumber }), offset <= json.count {
                let before = json.prefix(offset)
                let line = before.count { $0 == UInt8(ascii: "\n") } + 1
                let column = offset - (before.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0) + 1
                location += ":\(line):\(column)"
                detail = String(detail[..<range.lowerBound])
            }
            return "\(location): not valid JSON: \(detail)"
        }
    }

    /// The YAML position of the deepest known node on `path`.
    private func mark(for path: [any CodingKey]) -> Mark? {
        var path = path
        while true {
            if let mark = marks[JSONPath.render(path)] { return mark }
            if path.isEmpty { return nil }
            path.removeLast()
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int32.Type, is Int64.Type, is UInt32.Type, is UInt64.Type, is Int.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        default:
            if "\(type)".hasPrefix("Array") { "a list" } else { "an object" }
        }
    }
}

/// `agents[0].intents[2].name` from a coding path.
enum JSONPath {
    static func render(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            // Array positions are JSONDecoder's "Index N" keys.
            if let index = key.intValue, key.stringValue.hasPrefix("Index") {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text
    }

    static func render(_ components: [Component]) -> String {
        var text = ""
        for component in components {
            switch component {
            case .index(let index): text += "[\(index)]"
            case .key(let key): text += text.isEmpty ? key : ".\(key)"
            }
        }
        return text
    }

    enum Component {
        case key(String)
        case index(Int)
    }
}

/// A JSON document built from YAML.
enum JSONValue: Encodable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let value):
            var c = encoder.singleValueContainer()
            try c.encode(value)
        case .integer(let value):
            var c = encoder.singleValueContainer()
            try c.encode(value)
        case .number(let value):
            var c = encoder.singleValueContainer()
            // The proto3 JSON mapping writes non-finite numbers as strings.
            if value.isNaN {
                try c.encode("NaN")
            } else if value.isInfinite {
                try c.encode(value < 0 ? "-Infinity" : "Infinity")
            } else {
                try c.encode(value)
            }
        case .string(let value):
            var c = encoder.singleValueContainer()
            try c.encode(value)
        case .array(let values):
            var c = encoder.unkeyedContainer()
            for value in values { try c.encode(value) }
        case .object(let members):
            var c = encoder.container(keyedBy: Key.self)
            for (key, value) in members { try c.encode(value, forKey: Key(key)) }
        }
    }
}

/// The YAML 1.2 core schema for plain scalars (Yams' default resolver follows YAML 1.1, where `no`, `on`
/// and dates are typed).
enum YAMLCoreSchema {
    static func resolver() -> Resolver {
        // The rules are constant and valid: building them cannot fail.
        do {
            return try Resolver.basic
                .appending(.null, "^(?:~|null|Null|NULL|)$")
                .appending(.bool, "^(?:true|True|TRUE|false|False|FALSE)$")
                .appending(.int, "^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
                .appending(.float, """
                    ^(?:[-+]?(?:\\.[0-9]+|[0-9]+(?:\\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\
                    |[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$
                    """)
        } catch {
            preconditionFailure("invalid YAML resolver rule: \(error)")
        }
    }

    /// `path:line:column: problem (context)` on one line.
    static func describe(_ error: YamlError, path: String) -> String {
        func line(_ mark: Mark, _ context: YamlError.Context?, _ problem: String) -> String {
            var text = "\(path):\(mark.line):\(mark.column): not valid YAML: \(problem)"
            if let context { text += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))" }
            return text
        }
        switch error {
        case let .scanner(context, problem, mark, _): return line(mark, context, problem)
        case let .parser(context, problem, mark, _): return line(mark, context, problem)
        case let .composer(context, problem, mark, _): return line(mark, context, problem)
        case let .reader(problem, offset, _, _):
            return "\(path): not valid YAML: \(problem)" + (offset.map { " at character \($0)" } ?? "")
        default:
            return "\(path): not valid YAML: \(error)"
        }
    }
}

/// Converts a composed YAML tree into `JSONValue`, recording where each value is.
struct YAMLToJSON {
    let path: String
    var marks: [String: Mark] = [:]

    init(path: String) { self.path = path }

    mutating func convert(_ node: Node, at location: [JSONPath.Component]) throws(CLIFailure) -> JSONValue {
        let rendered = JSONPath.render(location)
        if marks[rendered] == nil, let mark = node.mark { marks[rendered] = mark }
        switch node {
        case .scalar(let scalar):
            return try convert(scalar, tag: node.tag.description, at: rendered)
        case .sequence(let sequence):
            var values: [JSONValue] = []
            for (index, element) in sequence.enumerated() {
                values.append(try convert(element, at: location + [.index(index)]))
            }
            return .array(values)
        case .mapping(let mapping):
            var members: [(String, JSONValue)] = []
            var seen = Set<String>()
            for (keyNode, valueNode) in mapping {
                guard case .scalar(let key) = keyNode else {
                    throw failure(keyNode.mark, rendered, "a key must be a plain string, not a list or a mapping")
                }
                let childLocation = location + [.key(key.string)]
                let child = JSONPath.render(childLocation)
                guard seen.insert(key.string).inserted else {
                    throw failure(key.mark, child, "the key \"\(key.string)\" is given twice")
                }
                // Errors about a member (unknown key, wrong type) point at its key.
                if let mark = key.mark { marks[child] = mark }
                members.append((key.string, try convert(valueNode, at: childLocation)))
            }
            return .object(members)
        }
    }

    /// `tag` is the resolved tag (explicit, or from `YAMLCoreSchema.resolver()` for plain scalars).
    private func convert(_ scalar: Node.Scalar, tag: String, at rendered: String) throws(CLIFailure) -> JSONValue {
        let string = scalar.string
        switch Tag.Name(rawValue: tag) {
        case .str:
            return .string(string)
        case .null:
            return .null
        case .bool:
            return .bool(string.lowercased() == "true")
        case .int:
            var digits = string
            var sign: Int64 = 1
            if digits.hasPrefix("-") { sign = -1; digits.removeFirst() } else if digits.hasPrefix("+") { digits.removeFirst() }
            let radix = digits.hasPrefix("0x") ? 16 : digits.hasPrefix("0o") ? 8 : 10
            if radix != 10 { digits.removeFirst(2) }
            guard let magnitude = Int64(digits, radix: radix) else {
                throw failure(scalar.mark, rendered, "the integer is too large")
            }
            return .integer(sign * magnitude)
        case .float:
            let lowered = string.lowercased()
            if lowered.hasSuffix(".nan") { return .number(.nan) }
            if lowered.hasSuffix(".inf") { return .number(lowered.hasPrefix("-") ? -.infinity : .infinity) }
            guard let value = Double(string) else { throw failure(scalar.mark, rendered, "not a number") }
            return .number(value)
        default:
            throw failure(scalar.mark, rendered, "unsupported YAML tag \(tag)")
        }
    }

    private func failure(_ mark: Mark?, _ field: String, _ message: String) -> CLIFailure {
        let location = mark.map { "\(path):\($0.line):\($0.column)" } ?? path
        return CLIFailure(field.isEmpty ? "\(location): \(message)" : "\(location): \(field): \(message)")
    }
}
