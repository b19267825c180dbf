import Foundation
import Schemas
import Yams

/// A suite file that can't be used: every problem found, each with the line it is on.
public struct SuiteErrors: Error, CustomStringConvertible, Sendable {
    public struct Problem: Sendable, Equatable {
        public let line: Int
        public let message: String
    }

    public let problems: [Problem]

    public var description: String {
        problems.prefix(20).map { "line \($0.line): \($0.message)" }.joined(separator: "\n")
            + (problems.count > 20 ? "\n… and \(problems.count - 20) more" : "")
    }
}

/// Reads a golden suite from YAML or JSON (JSON is read as YAML, so both report lines):
///
/// ```yaml
/// name: restaurant-basics
/// description: Opening hours, address and reservations, in English and German
/// cases:
///   - id: hours-en
///     input: When are you open on Sunday?        # or `messages: [{role: user, content: …}, …]`
///     weight: 2                                  # optional, default 1
///     expect:
///       - contains: "12:00"
///       - not_contains: Monday
///       - regex: "\\b22:00\\b"
///       - exact: "…"
///       - keywords: [open, sunday]               # every one, case-insensitive
///       - handoff: false
///       - language: en                           # en | de
///       - max_latency_ms: 2000
///       - judge: "Names the opening hours politely"   # the operator's LLM judge (SWITCHYARD_EVAL_JUDGE_BASE_URL)
///       - {contains: "Sunday", weight: 0.5}      # an expectation's own weight, default 1
/// ```
///
/// Every problem is collected (not just the first), with its line; nothing partial is returned.
public enum SuiteParser {
    public static let expectationKinds = ["contains", "not_contains", "regex", "exact", "keywords", "handoff", "language",
                                          "max_latency_ms", "judge"]
    public static let languages = ["de", "en"]
    /// Limits: a suite is a test file, not a dataset.
    public static let maxCases = 1_000
    public static let maxSourceBytes = 1 << 20

    public static func parse(_ source: String) throws(SuiteErrors) -> EvalSuite {
        guard source.utf8.count <= maxSourceBytes else {
            throw SuiteErrors(problems: [.init(line: 1, message: "the file is larger than 1 MiB")])
        }
        if let index = source.utf8.firstIndex(of: 0) {
            let line = source.utf8[..<index].filter { $0 == 0x0A }.count + 1
            throw SuiteErrors(problems: [.init(line: line, message: "the file contains a NUL byte")])
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: source)
        } catch let error as YamlError {
            throw SuiteErrors(problems: [.init(line: Self.line(of: error), message: "not valid YAML or JSON: \(Self.reason(error))")])
        } catch {
            throw SuiteErrors(problems: [.init(line: 1, message: "not valid YAML or JSON")])
        }
        var reader = Reader()
        let suite = reader.suite(root)
        guard reader.problems.isEmpty, let suite else { throw SuiteErrors(problems: reader.problems) }
        return suite
    }

    static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return 1
        }
    }

    static func reason(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): return problem
        default: return "\(error)"
        }
    }

    /// Walks the node tree, collecting problems.
    struct Reader {
        var problems: [SuiteErrors.Problem] = []

        mutating func problem(_ node: Node?, _ message: String) {
            problems.append(.init(line: node?.mark?.line ?? 1, message: message))
        }

        mutating func suite(_ root: Node?) -> EvalSuite? {
            guard let root, let mapping = root.mapping else {
                problem(root, "the file must be a mapping with `name` and `cases`")
                return nil
            }
            var suite = EvalSuite()
            checkKeys(mapping, allowed: ["name", "description", "agent", "cases"], what: "the suite")
            suite.name = string(mapping["name"], "name", required: false) ?? ""
            if !suite.name.isEmpty && !EvalNames.isValid(suite.name) {
                problem(mapping["name"], "name must match [a-z0-9][a-z0-9._-]{0,62}")
            }
            suite.summary = string(mapping["description"], "description", required: false) ?? ""
            suite.agent = string(mapping["agent"], "agent", required: false) ?? ""
            guard let casesNode = mapping["cases"] else {
                problem(root, "missing `cases` (a list of cases)")
                return nil
            }
            guard let cases = casesNode.sequence, !cases.isEmpty else {
                problem(casesNode, "`cases` must be a non-empty list")
                return nil
            }
            if cases.count > SuiteParser.maxCases { problem(casesNode, "more than \(SuiteParser.maxCases) cases") }
            var ids: [String: Int] = [:]
            for node in cases {
                guard let parsed = evalCase(node) else { continue }
                if let first = ids[parsed.id] {
                    problem(node, "case id '\(parsed.id)' is used twice (first on line \(first))")
                }
                ids[parsed.id] = Int(parsed.line)
                suite.cases.append(parsed)
            }
            return suite
        }

        mutating func evalCase(_ node: Node) -> EvalCase? {
            guard let mapping = node.mapping else {
                problem(node, "a case must be a mapping with `id`, `input` or `messages`, and `expect`")
                return nil
            }
            let before = problems.count
            checkKeys(mapping, allowed: ["id", "input", "messages", "expect", "weight"], what: "a case")
            var result = EvalCase()
            result.line = UInt32(node.mark?.line ?? 0)
            result.id = string(mapping["id"], "id", required: true, at: node) ?? ""
            if !result.id.isEmpty && !EvalNames.isValid(result.id) {
                problem(mapping["id"], "case id must match [a-z0-9][a-z0-9._-]{0,62}")
            }
            let label = result.id.isEmpty ? "a case" : "case '\(result.id)'"
            result.weight = weight(mapping["weight"], label) ?? 1
            switch (mapping["input"], mapping["messages"]) {
            case (let input?, nil):
                if let text = string(input, "\(label): input", required: true) {
                    if text.isEmpty { problem(input, "\(label): input is empty") }
                    result.messages = [ChatMessage(role: "user", content: text, name: "")]
                }
            case (nil, let messages?):
                result.messages = self.messages(messages, label)
            case (nil, nil):
                problem(node, "\(label): needs `input` (the user's message) or `messages`")
            case (_?, _?):
                problem(node, "\(label): give `input` or `messages`, not both")
            }
            guard let expect = mapping["expect"] else {
                problem(node, "\(label): missing `expect` (a list of expectations)")
                return nil
            }
            guard let expectations = expect.sequence, !expectations.isEmpty else {
                problem(expect, "\(label): `expect` must be a non-empty list")
                return nil
            }
            for item in expectations {
                if let expectation = self.expectation(item, label) { result.expectations.append(expectation) }
            }
            return problems.count == before ? result : nil
        }

        mutating func messages(_ node: Node, _ label: String) -> [ChatMessage] {
            guard let list = node.sequence, !list.isEmpty else {
                problem(node, "\(label): `messages` must be a non-empty list of {role, content}")
                return []
            }
            var result: [ChatMessage] = []
            for item in list {
                guard let mapping = item.mapping else {
                    problem(item, "\(label): a message must be a mapping with `role` and `content`")
                    continue
                }
                checkKeys(mapping, allowed: ["role", "content"], what: "a message")
                let role = string(mapping["role"], "\(label): role", required: true, at: item) ?? ""
                if !role.isEmpty && !["system", "user", "assistant"].contains(role) {
                    problem(mapping["role"], "\(label): role must be system, user or assistant")
                }
                let content = string(mapping["content"], "\(label): content", required: true, at: item) ?? ""
                result.append(ChatMessage(role: role, content: content, name: ""))
            }
            if let last = result.last, last.role != "user" {
                problem(list.last, "\(label): the last message must be the user's")
            }
            return result
        }

        mutating func expectation(_ node: Node, _ label: String) -> EvalExpectation? {
            guard let mapping = node.mapping else {
                problem(node, "\(label): an expectation is a mapping such as `contains: \"12:00\"`")
                return nil
            }
            let kinds = mapping.keys.compactMap(\.string).filter { $0 != "weight" }
            guard kinds.count == 1, let kind = kinds.first else {
                problem(node, "\(label): an expectation names exactly one of \(SuiteParser.expectationKinds.joined(separator: ", "))")
                return nil
            }
            guard SuiteParser.expectationKinds.contains(kind) else {
                problem(node, "\(label): unknown expectation '\(kind)' (known: \(SuiteParser.expectationKinds.joined(separator: ", ")))")
                return nil
            }
            var result = EvalExpectation()
            result.kind = kind
            result.weight = weight(mapping["weight"], label) ?? 1
            let value = mapping[kind]
            switch kind {
            case "keywords":
                guard let list = value?.sequence, !list.isEmpty else {
                    problem(value ?? node, "\(label): keywords must be a non-empty list of words")
                    return nil
                }
                result.values = list.compactMap { string($0, "\(label): keyword", required: true) }
                if result.values.contains(where: \.isEmpty) { problem(value, "\(label): a keyword is empty") }
            case "handoff":
                guard let flag = value?.scalar?.string.lowercased(), ["true", "false"].contains(flag) else {
                    problem(value ?? node, "\(label): handoff must be true or false")
                    return nil
                }
                result.value = flag
            case "language":
                guard let language = string(value, "\(label): language", required: true), SuiteParser.languages.contains(language) else {
                    problem(value ?? node, "\(label): language must be one of \(SuiteParser.languages.joined(separator: ", "))")
                    return nil
                }
                result.value = language
            case "max_latency_ms":
                guard let text = value?.scalar?.string, let milliseconds = Int(text), milliseconds > 0 else {
                    problem(value ?? node, "\(label): max_latency_ms must be a positive whole number of milliseconds")
                    return nil
                }
                result.value = String(milliseconds)
            default:
                guard let text = string(value, "\(label): \(kind)", required: true) else { return nil }
                guard !text.isEmpty else {
                    problem(value, "\(label): \(kind) is empty")
                    return nil
                }
                if kind == "judge" && text.utf8.count > 2_000 {
                    problem(value, "\(label): a judge rubric has at most 2000 bytes")
                    return nil
                }
                if kind == "regex" {
                    do {
                        _ = try NSRegularExpression(pattern: text)
                    } catch {
                        problem(value, "\(label): not a valid regular expression: \(text.prefix(80))")
                        return nil
                    }
                }
                result.value = text
            }
            return result
        }

        mutating func string(_ node: Node?, _ what: String, required: Bool, at parent: Node? = nil) -> String? {
            guard let node else {
                if required { problem(parent, "missing \(what)") }
                return nil
            }
            guard let scalar = node.scalar else {
                problem(node, "\(what) must be text")
                return nil
            }
            guard scalar.string.utf8.count <= 16_384 else {
                problem(node, "\(what) is longer than 16 KiB")
                return nil
            }
            return scalar.string
        }

        mutating func weight(_ node: Node?, _ label: String) -> Double? {
            guard let node else { return nil }
            guard let text = node.scalar?.string, let value = Double(text), value > 0, value <= 1_000 else {
                problem(node, "\(label): weight must be a number above 0 (at most 1000)")
                return nil
            }
            return value
        }

        mutating func checkKeys(_ mapping: Node.Mapping, allowed: Set<String>, what: String) {
            for key in mapping.keys {
                guard let name = key.string else {
                    problem(key, "\(what): keys must be text")
                    continue
                }
                if !allowed.contains(name) {
                    problem(key, "\(what): unknown key '\(name.prefix(64))' (allowed: \(allowed.sorted().joined(separator: ", ")))")
                }
            }
        }
    }
}

/// Suite names and case ids: they appear in reports, subjects of audit events and CLI arguments.
public enum EvalNames {
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 63 else { return false }
        let isLowerOrDigit = { (byte: UInt8) in (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) }
        return isLowerOrDigit(first) && name.utf8.allSatisfy { isLowerOrDigit($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }

    /// Agent versions, as the tenant service accepts them: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    public static func isValidVersion(_ version: String) -> Bool {
        guard let first = version.utf8.first, version.utf8.count <= 64 else { return false }
        let isAlphanumeric = { (byte: UInt8) in
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
        }
        return isAlphanumeric(first) && version.utf8.allSatisfy { isAlphanumeric($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }

    /// Run ids: `run-` and 16 lower-case hex digits.
    public static func isValidRunID(_ id: String) -> Bool {
        id.utf8.count == 20 && id.hasPrefix("run-")
            && id.utf8.dropFirst(4).allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}
