import Foundation
import Schemas

/// What an agent answered to a case, as the scorers see it.
public struct ObservedAnswer: Sendable, Equatable {
    public var content: String
    public var handedOff: Bool
    public var latencyMilliseconds: Int

    public init(content: String, handedOff: Bool, latencyMilliseconds: Int) {
        self.content = content
        self.handedOff = handedOff
        self.latencyMilliseconds = latencyMilliseconds
    }
}

/// One case's result: its score in 0…1 (the weighted share of expectations met) and the ones not met.
public struct CaseScore: Sendable, Equatable {
    public var caseID: String
    public var score: Double
    public var weight: Double
    public var failed: [String]
}

/// The scorers: plain functions of an expectation and an answer, no I/O (STYLE 10).
public enum Scorer {
    /// Whether `answer` meets `expectation`, with a short reason when it doesn't.
    public static func check(_ expectation: EvalExpectation, _ answer: ObservedAnswer) -> String? {
        let content = answer.content
        switch expectation.kind {
        case "contains":
            return content.localizedCaseInsensitiveContains(expectation.value) ? nil
                : "does not contain \"\(expectation.value.prefix(60))\""
        case "not_contains":
            return content.localizedCaseInsensitiveContains(expectation.value)
                ? "contains \"\(expectation.value.prefix(60))\"" : nil
        case "regex":
            guard let regex = try? NSRegularExpression(pattern: expectation.value) else { return "invalid pattern" }
            let range = NSRange(content.startIndex..., in: content)
            return regex.firstMatch(in: content, range: range) == nil ? "does not match /\(expectation.value.prefix(60))/" : nil
        case "exact":
            return content.trimmingCharacters(in: .whitespacesAndNewlines)
                == expectation.value.trimmingCharacters(in: .whitespacesAndNewlines) ? nil : "is not exactly the expected text"
        case "keywords":
            let missing = expectation.values.filter { !content.localizedCaseInsensitiveContains($0) }
            return missing.isEmpty ? nil : "lacks keywords \(missing.prefix(5).joined(separator: ", "))"
        case "handoff":
            let expected = expectation.value == "true"
            return answer.handedOff == expected ? nil : (expected ? "did not hand off" : "handed off")
        case "language":
            let detected = LanguageGuess.guess(content)
            return detected == expectation.value ? nil : "language \(detected ?? "unknown"), expected \(expectation.value)"
        case "judge":
            return "no judge verdict"
        case "max_latency_ms":
            let limit = Int(expectation.value) ?? 0
            return answer.latencyMilliseconds <= limit ? nil : "took \(answer.latencyMilliseconds) ms (limit \(limit) ms)"
        default:
            return "unknown expectation \(expectation.kind)"
        }
    }

    /// - Parameter judgments: the judge's verdicts on the case's `judge` expectations, in order (nil = met).
    public static func score(_ evalCase: EvalCase, _ answer: ObservedAnswer, judgments: [String?] = []) -> CaseScore {
        var total = 0.0
        var met = 0.0
        var failed: [String] = []
        var verdicts = judgments.makeIterator()
        for expectation in evalCase.expectations {
            let weight = expectation.weight > 0 ? expectation.weight : 1
            total += weight
            let reason = expectation.kind == "judge" ? (verdicts.next() ?? "no judge verdict") : check(expectation, answer)
            if let reason {
                failed.append("\(expectation.kind): \(reason)")
            } else {
                met += weight
            }
        }
        return CaseScore(caseID: evalCase.id, score: total > 0 ? met / total : 0,
                         weight: evalCase.weight > 0 ? evalCase.weight : 1, failed: failed)
    }

    /// The suite's score: the cases' scores weighted by the cases' weights.
    public static func aggregate(_ scores: [CaseScore]) -> Double {
        let total = scores.reduce(0) { $0 + $1.weight }
        guard total > 0 else { return 0 }
        return scores.reduce(0) { $0 + $1.score * $1.weight } / total
    }
}

/// German or English, by counting each language's most common short words; nil when neither shows.
public enum LanguageGuess {
    static let words: [String: Set<String>] = [
        "de": ["der", "die", "das", "und", "ist", "wir", "nicht", "ein", "eine", "zu", "von", "mit", "sie", "haben",
               "ihr", "ihnen", "uhr", "bis", "für", "auf", "gerne", "bitte", "sind", "den", "dem", "es", "ich", "auch",
               "geöffnet", "tisch", "sonntag", "montag", "wie", "was", "wann", "oder", "kann", "können"],
        "en": ["the", "and", "is", "we", "not", "a", "an", "to", "of", "with", "you", "have", "your", "are", "for",
               "on", "at", "please", "it", "i", "also", "open", "table", "sunday", "monday", "how", "what", "when",
               "or", "can", "from", "our", "be", "will"],
    ]

    public static func guess(_ text: String) -> String? {
        let tokens = text.lowercased().split { !$0.isLetter }.map(String.init)
        let german = tokens.filter { words["de"]!.contains($0) }.count
        let english = tokens.filter { words["en"]!.contains($0) }.count
        if german > english { return "de" }
        if english > german { return "en" }
        return nil
    }
}
