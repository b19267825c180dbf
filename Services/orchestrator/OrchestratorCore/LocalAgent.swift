import Foundation
import Schemas

// The built-in `local` provider: answers from the tenant's knowledge base, says how sure it is, and hands
// off to a human when asked to or when unsure. Plain values in, a `LocalAnswer` out.

/// Why the agent hands the conversation to a human.
public enum HandoffReason: String, Sendable, Hashable, CaseIterable {
    case userAskedForHuman = "user_asked_for_human"
    case lowConfidence = "low_confidence"
}

/// The language the answer is written in.
public enum AnswerLanguage: String, Sendable, Hashable, CaseIterable {
    case english = "en"
    case german = "de"

    /// Maps a BCP 47 tag (`de`, `de-AT`, `en-US`, …) to a supported language; nil for anything else.
    public init?(bcp47 tag: String) {
        let primary = tag.lowercased().split(whereSeparator: { $0 == "-" || $0 == "_" }).first.map(String.init)
        switch primary {
        case "de": self = .german
        case "en": self = .english
        default: return nil
        }
    }
}

/// What the local agent decided.
public struct LocalAnswer: Sendable, Hashable {
    /// The reply text (the knowledge-base answer, or a polite handoff message).
    public var content: String
    /// Retrieval confidence for the last user message, in 0...1 (see `LocalAgent.confidence`).
    public var confidence: Double
    /// Set when the conversation goes to a human.
    public var handoff: HandoffReason?
    /// Knowledge-base entries the content was composed from (empty on handoff).
    public var usedEntryIDs: [String]
    /// The language `content` is written in.
    public var language: AnswerLanguage

    public init(
        content: String, confidence: Double, handoff: HandoffReason?, usedEntryIDs: [String],
        language: AnswerLanguage
    ) {
        self.content = content
        self.confidence = confidence
        self.handoff = handoff
        self.usedEntryIDs = usedEntryIDs
        self.language = language
    }
}

public struct LocalAgent: Sendable {
    /// Suggested operator default for `handoffThreshold`.
    public static let defaultHandoffThreshold = 0.35
    /// Score scale of the confidence curve: a top score of `scoreScale` gives base confidence 1 − 1/e ≈ 0.63.
    public static let scoreScale = 4.0
    /// Weight of the margin term: a dead heat between the top two entries costs this share of confidence.
    public static let marginWeight = 0.25
    /// A second entry is added to the answer when it scores at least this share of the top score.
    public static let secondEntryRatio = 0.6
    /// Each entry's content is cut (at a sentence end where possible) to about this many characters.
    public static let maxCharactersPerEntry = 400

    public init() {}

    /// Decides the local provider's reply to `messages` (the last `user` message is the question).
    ///
    /// - Parameters:
    ///   - handoffThreshold: confidence below this hands off (`.lowConfidence`).
    ///   - languageHint: BCP 47 tag of the conversation (tenant default / `Accept-Language`), used when
    ///     the question's own language can't be told.
    ///
    /// Language: the question's detected language, else `languageHint`, else the best entry's language,
    /// else English.
    public func answer(
        messages: [ChatMessage], index: KnowledgeIndex, handoffThreshold: Double, languageHint: String? = nil
    ) -> LocalAnswer {
        let question = messages.last(where: { $0.role == "user" })?.content ?? ""
        let hits = index.search(question, limit: 2)
        let confidence = Self.confidence(topScore: hits.first?.score, secondScore: hits.dropFirst().first?.score)
        let language = LanguageDetector.detect(question)
            ?? languageHint.flatMap(AnswerLanguage.init(bcp47:))
            ?? hits.first.flatMap { AnswerLanguage(bcp47: $0.entry.language) }
            ?? .english

        if HandoffPhrases.asksForHuman(question) {
            return LocalAnswer(
                content: Self.handoffMessage(.userAskedForHuman, language: language),
                confidence: confidence, handoff: .userAskedForHuman, usedEntryIDs: [], language: language)
        }
        guard let best = hits.first, confidence >= handoffThreshold else {
            return LocalAnswer(
                content: Self.handoffMessage(.lowConfidence, language: language),
                confidence: confidence, handoff: .lowConfidence, usedEntryIDs: [], language: language)
        }
        var used = [best]
        if let second = hits.dropFirst().first, second.score >= best.score * Self.secondEntryRatio {
            used.append(second)
        }
        let content = used.map { Self.concise($0.entry.content) }.joined(separator: "\n\n")
        return LocalAnswer(
            content: content, confidence: confidence, handoff: nil, usedEntryIDs: used.map(\.entry.id),
            language: language)
    }

    /// Confidence in 0...1 from the top two BM25 scores `s1 ≥ s2 ≥ 0`:
    ///
    ///     base   = 1 − exp(−s1 / scoreScale)
    ///     margin = s2 == nil ? 1 : (s1 − s2) / s1            // 0 for a dead heat, 1 for a clear winner
    ///     confidence = base · (1 − marginWeight · (1 − margin))
    ///
    /// No hit (or a zero score) gives 0.
    public static func confidence(topScore: Double?, secondScore: Double?) -> Double {
        guard let s1 = topScore, s1 > 0, s1.isFinite else { return 0 }
        let base = 1 - exp(-s1 / scoreScale)
        let margin = secondScore.map { max(0, min(1, (s1 - $0) / s1)) } ?? 1
        return max(0, min(1, base * (1 - marginWeight * (1 - margin))))
    }

    /// The polite message shown when the conversation goes to a human.
    public static func handoffMessage(_ reason: HandoffReason, language: AnswerLanguage) -> String {
        switch (reason, language) {
        case (.userAskedForHuman, .english):
            "Of course — I'm passing you on to a member of our team. Someone will get back to you shortly."
        case (.userAskedForHuman, .german):
            "Sehr gerne — ich leite Sie an unser Team weiter. Jemand meldet sich in Kürze bei Ihnen."
        case (.lowConfidence, .english):
            "I'm not sure I can answer that correctly, so I'm passing your question on to a member of our team. "
                + "Someone will get back to you shortly."
        case (.lowConfidence, .german):
            "Das kann ich leider nicht sicher beantworten. Ich gebe Ihre Frage an unser Team weiter; "
                + "jemand meldet sich in Kürze bei Ihnen."
        }
    }

    /// Trims `text` and cuts it to about `maxCharactersPerEntry` characters, at the last sentence end
    /// inside the limit if there is one, else at the last space (with an ellipsis).
    static func concise(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.count > maxCharactersPerEntry else { return trimmed }
        let head = trimmed.prefix(maxCharactersPerEntry)
        if let end = head.lastIndex(where: { ".!?".contains($0) }), head.distance(from: head.startIndex, to: end) > 0 {
            return String(head[...end])
        }
        if let space = head.lastIndex(of: " ") {
            return String(head[..<space]) + "…"
        }
        return String(head) + "…"
    }
}

/// Recognises requests to talk to a human, in English and German, by whole words (case and diacritics
/// folded; "humanity" is not "human").
///
/// Two rules:
/// 1. a *phrase* (e.g. "speak to a human", "mit einem Menschen sprechen", "echte Person") anywhere in the
///    message triggers;
/// 2. a bare *person word* ("human", "agent", "Mitarbeiter", …) triggers only when every other word of the
///    message is request filler ("please", "I want", "bitte", "ich möchte einen", …). So "Human please!" and
///    "Ich möchte einen Mitarbeiter" hand off, while "How many Mitarbeiter do you have?" or
///    "Is the agent fee included?" do not.
public enum HandoffPhrases {
    public static let phrases: [String] = [
        // English
        "speak to a human", "speak with a human", "talk to a human", "talk with a human",
        "speak to a person", "speak with a person", "talk to a person", "talk with a person",
        "speak to someone", "speak with someone", "talk to someone", "talk with someone",
        "speak to an agent", "talk to an agent", "speak to a representative", "talk to a representative",
        "real person", "real human", "human agent", "live agent", "live person",
        "customer service representative", "agent please", "human please", "representative please",
        "operator please",
        // German
        "mit einem menschen sprechen", "mit einem menschen reden", "mit einem mitarbeiter sprechen",
        "mit einer mitarbeiterin sprechen", "mit einem mitarbeiter reden", "mit jemandem sprechen",
        "mit jemandem reden", "echte person", "echten person", "echter mensch", "echten menschen",
        "menschlichen mitarbeiter", "mitarbeiter bitte", "mensch bitte", "mit dem kundenservice sprechen",
    ]

    public static let personWords: Set<String> = [
        "human", "person", "someone", "agent", "representative", "operator", "staff",
        "mensch", "menschen", "mitarbeiter", "mitarbeiterin", "jemand", "jemanden", "jemandem",
    ]

    /// Words that may surround a bare person word ("I want to talk to a human please").
    public static let filler: Set<String> = [
        "i", "want", "would", "like", "need", "to", "a", "an", "the", "please", "can", "could", "may", "me",
        "get", "give", "connect", "with", "talk", "speak", "let", "hi", "hello", "hey", "now", "real", "live",
        "ich", "mochte", "will", "brauche", "hatte", "gern", "gerne", "einen", "eine", "einem", "einer", "ein",
        "mit", "sprechen", "reden", "bitte", "hallo", "kann", "konnen", "zu", "jetzt", "sofort", "echten",
        "echte", "menschlichen",
    ]

    /// True when `text` asks to be passed to a human.
    public static func asksForHuman(_ text: String) -> Bool {
        let words = Tokenizer.words(text)
        guard !words.isEmpty else { return false }
        for phrase in tokenizedPhrases where contains(words, phrase) { return true }
        let hasPersonWord = words.contains(where: personWords.contains)
        return hasPersonWord && words.allSatisfy { personWords.contains($0) || filler.contains($0) }
    }

    private static let tokenizedPhrases: [[String]] = phrases.map(Tokenizer.words)

    private static func contains(_ words: [String], _ phrase: [String]) -> Bool {
        guard !phrase.isEmpty, phrase.count <= words.count else { return false }
        for start in 0...(words.count - phrase.count) where words[start..<start + phrase.count].elementsEqual(phrase) {
            return true
        }
        return false
    }
}

/// Tells German from English by counting marker words (and umlauts/ß). Returns nil when undecided.
public enum LanguageDetector {
    static let germanMarkers: Set<String> = [
        "der", "die", "das", "und", "ist", "sind", "ich", "wir", "ihr", "sie", "habt", "haben", "hat", "wann",
        "wie", "was", "wo", "warum", "mit", "von", "zu", "fur", "bei", "nicht", "auch", "bitte", "ein", "eine",
        "einen", "kann", "konnen", "gibt", "es", "euch", "mochte", "geoffnet", "heute", "morgen", "tisch",
        "danke", "hallo", "guten", "tag", "offnungszeiten", "sonntag", "sonntags",
    ]
    static let englishMarkers: Set<String> = [
        "the", "and", "is", "are", "i", "we", "you", "your", "when", "what", "how", "where", "why", "with",
        "for", "not", "please", "can", "do", "does", "open", "there", "a", "an", "have", "thanks", "hello",
        "hi", "table", "today", "tomorrow", "on", "sunday",
    ]

    public static func detect(_ text: String) -> AnswerLanguage? {
        var german = 0
        var english = 0
        for word in Tokenizer.words(text) {
            if germanMarkers.contains(word) { german += 1 }
            if englishMarkers.contains(word) { english += 1 }
        }
        if text.contains(where: { "äöüÄÖÜß".contains($0) }) { german += 1 }
        if german > english { return .german }
        if english > german { return .english }
        return nil
    }
}
