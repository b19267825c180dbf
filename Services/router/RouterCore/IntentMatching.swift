import Foundation
import Schemas

// Intent matching works on *folded* text: lower-cased, diacritics and character widths removed
// ("Café" → "cafe", "MÜNCHEN" → "munchen"), with every run of whitespace collapsed to one space. Keywords and
// patterns are folded the same way, so folding choices never make a rule unmatchable.

enum TextFolding {
    /// Lower-case, diacritic- and width-insensitive form of `text`, whitespace runs collapsed to " ".
    static func fold(_ text: String) -> String {
        let folded = text.folding(options: [.caseInsensitive, .diacriticInsensitive, .widthInsensitive], locale: nil)
            .lowercased()
        var out = ""
        out.reserveCapacity(folded.utf8.count)
        var pendingSpace = false
        for character in folded {
            if character.isWhitespace {
                pendingSpace = !out.isEmpty
            } else {
                if pendingSpace { out.append(" ") }
                pendingSpace = false
                out.append(character)
            }
        }
        return out
    }

    /// The words of already folded text: maximal runs of letters and digits.
    static func words(ofFolded folded: String) -> [Substring] {
        folded.split(whereSeparator: { !($0.isLetter || $0.isNumber) })
    }
}

/// A user message prepared once for matching against every intent rule.
struct IntentText: Sendable {
    let folded: String
    let words: [Substring]
    private let wordSet: Set<Substring>

    init(_ raw: String) {
        folded = TextFolding.fold(raw)
        words = TextFolding.words(ofFolded: folded)
        wordSet = Set(words)
    }

    /// Whether `keyword` occurs as whole word(s): "ham" matches "Ham, please" but not "Hamburg"; a multi-word
    /// keyword ("table for two") matches the same words in a row, whatever punctuation or spacing separates them.
    /// A keyword without any letter or digit never matches.
    func containsKeyword(_ keyword: String) -> Bool {
        let needle = TextFolding.words(ofFolded: TextFolding.fold(keyword))
        guard let first = needle.first else { return false }
        guard needle.count > 1 else { return wordSet.contains(first) }
        guard wordSet.contains(first), needle.count <= words.count else { return false }
        for start in 0...(words.count - needle.count) where words[start] == first {
            if words[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// The `pattern` of an intent rule: a deliberately small, linear-time language rather than a regular expression,
/// because patterns are tenant-supplied and run on end-user text inside a shared router (a backtracking regex
/// such as `(a+)+$` could stall routing for every tenant).
///
/// - Matching is on folded text (see `TextFolding`), unanchored: the pattern may match anywhere.
/// - `*` matches any run of characters, including none: `"book*table"` matches "Book a table".
/// - `|` separates alternatives: `"reserve|booking"`. Spaces around an alternative are ignored.
///
/// A pattern is invalid — and the rule is then decided by its keywords alone — when it is empty, longer than
/// `maxLength` characters, has an empty or match-everything (`*` only) alternative, or contains one of the
/// reserved characters `\ ( ) [ ] { } + ? ^ $` (reserved so that regex-style patterns are refused rather than
/// silently matched literally). The tenant service can call `IntentPattern(_:)` to reject them at write time.
public struct IntentPattern: Sendable, Hashable {
    /// Longest accepted pattern, in characters.
    public static let maxLength = 256
    /// Characters a pattern must not contain.
    public static let reservedCharacters: Set<Character> = ["\\", "(", ")", "[", "]", "{", "}", "+", "?", "^", "$"]

    /// Alternatives, each a list of folded literal segments that must occur in order.
    let alternatives: [[String]]

    /// Parses `source`; `nil` when it is invalid.
    public init?(_ source: String) {
        guard source.count <= Self.maxLength,
              !source.contains(where: { Self.reservedCharacters.contains($0) })
        else { return nil }
        let folded = TextFolding.fold(source)
        var alternatives: [[String]] = []
        for alternative in folded.split(separator: "|", omittingEmptySubsequences: false) {
            let segments = alternative.trimmingCharacters(in: .whitespaces)
                .split(separator: "*", omittingEmptySubsequences: true)
                .map(String.init)
            guard !segments.isEmpty else { return nil }
            alternatives.append(segments)
        }
        guard !alternatives.isEmpty else { return nil }
        self.alternatives = alternatives
    }

    /// Whether any alternative matches the (already folded) text.
    func matches(folded text: String) -> Bool {
        alternatives.contains { segments in
            var rest = text[...]
            for segment in segments {
                guard let range = rest.firstRange(of: segment) else { return false }
                rest = rest[range.upperBound...]
            }
            return true
        }
    }
}

extension IntentRule {
    /// Whether this rule matches the prepared message: any keyword as whole word(s), or the pattern if valid.
    func matches(_ text: IntentText) -> Bool {
        if keywords.contains(where: text.containsKeyword) { return true }
        guard !pattern.isEmpty, let compiled = IntentPattern(pattern) else { return false }
        return compiled.matches(folded: text.folded)
    }
}
