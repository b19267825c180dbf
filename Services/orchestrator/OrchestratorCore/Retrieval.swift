import Foundation
import Schemas

// BM25 retrieval over a tenant's knowledge-base entries, used by the built-in `local` provider.
//
// Everything here is a pure value: build a `KnowledgeIndex` from the entries loaded from Postgres, then
// `search` it. No I/O, no clock, deterministic ordering (ties keep the order the entries were given in).

/// Turns text into index terms. The same function runs on documents and queries, so what matters is that
/// it is consistent, not that it is linguistically perfect.
///
/// Steps:
/// 1. fold case and diacritics (`Ä`→`a`, `é`→`e`) and spell `ß` as `ss`;
/// 2. split on everything that is not a Unicode letter or digit;
/// 3. drop a small German + English stopword list (checked on the folded word);
/// 4. strip one common suffix (see `stem`), so `opening`/`open`, `Öffnungszeiten`/`Öffnung` meet.
public enum Tokenizer {
    /// Folded words, in order, without stopword removal or stemming (also used for phrase matching).
    public static func words(_ text: String) -> [String] {
        let folded = fold(text)
        var words: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in folded.unicodeScalars {
            if isWordScalar(scalar) {
                current.append(scalar)
            } else if !current.isEmpty {
                words.append(String(current))
                current = String.UnicodeScalarView()
            }
        }
        if !current.isEmpty { words.append(String(current)) }
        return words
    }

    /// Index terms: folded words minus stopwords, lightly stemmed.
    public static func terms(_ text: String) -> [String] {
        words(text).compactMap { word in
            stopwords.contains(word) ? nil : stem(word)
        }
    }

    /// Lowercases, removes diacritics and spells `ß` as `ss`.
    public static func fold(_ text: String) -> String {
        text.folding(options: [.diacriticInsensitive, .caseInsensitive], locale: nil)
            .lowercased()
            .replacingOccurrences(of: "ß", with: "ss")
    }

    /// Strips at most one suffix from words longer than three letters, keeping a stem of at least three.
    /// A deliberately tiny suffix stripper (German + English), not a real stemmer.
    public static func stem(_ word: String) -> String {
        guard word.count > 3 else { return word }
        for suffix in suffixes where word.hasSuffix(suffix) {
            let stemLength = word.count - suffix.count
            if stemLength >= 3 { return String(word.dropLast(suffix.count)) }
        }
        return word
    }

    /// Longest first: the first that fits wins.
    static let suffixes = ["ungen", "ung", "ing", "ern", "en", "er", "es", "ed", "s", "e"]

    /// Folded forms (umlauts already removed, `ß` as `ss`).
    public static let stopwords: Set<String> = [
        // English
        "a", "an", "the", "and", "or", "but", "is", "are", "was", "were", "be", "been", "am", "to", "of",
        "in", "on", "at", "for", "with", "by", "from", "as", "it", "its", "this", "that", "these", "those",
        "i", "me", "my", "you", "your", "we", "our", "us", "they", "them", "he", "she", "do", "does", "did",
        "can", "could", "would", "should", "will", "have", "has", "had", "what", "when", "where", "which",
        "who", "how", "why", "there", "any", "some", "please", "if", "so", "not", "no", "about",
        // German
        "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines", "und",
        "oder", "aber", "ist", "sind", "war", "bin", "bist", "seid", "sein", "ich", "du", "er", "sie", "es",
        "wir", "ihr", "mich", "mir", "dich", "dir", "uns", "euch", "ihnen", "habt", "haben", "hat", "habe",
        "wann", "wie", "was", "wo", "warum", "welche", "welcher", "welches", "mit", "von", "vom", "zu",
        "zum", "zur", "im", "an", "am", "auf", "fur", "bei", "nicht", "auch", "noch", "kann", "konnen",
        "konnt", "man", "bitte", "gibt", "ja", "nein", "mal", "denn", "doch", "schon",
    ]

    private static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        let p = scalar.properties
        return p.isAlphabetic || p.numericType != nil
    }
}

/// One search hit.
public struct ScoredEntry: Sendable, Hashable {
    public var entry: KnowledgeEntry
    /// BM25 score, > 0 for every returned hit. Comparable within one index only.
    public var score: Double

    public init(entry: KnowledgeEntry, score: Double) {
        self.entry = entry
        self.score = score
    }
}

/// An in-memory BM25 index over knowledge-base entries.
///
/// Each entry is one document made of its title (every title term counted `titleWeight` times), its
/// content and its tags. Scoring is Okapi BM25 with
/// `idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))` (the non-negative Lucene variant) and
/// `score(d, q) = Σ_{t ∈ q, distinct} idf(t) · tf·(k1+1) / (tf + k1·(1 − b + b·|d|/avgdl))`
/// where `|d|` counts the weighted title terms too. Repeated query terms count once.
public struct KnowledgeIndex: Sendable {
    public static let k1 = 1.2
    public static let b = 0.75
    public static let titleWeight = 2

    private struct Document: Sendable {
        var entry: KnowledgeEntry
        var termFrequencies: [String: Int]
        var length: Int
    }

    private let documents: [Document]
    private let documentFrequency: [String: Int]
    private let averageLength: Double

    public init(entries: [KnowledgeEntry]) {
        var documents: [Document] = []
        documents.reserveCapacity(entries.count)
        var documentFrequency: [String: Int] = [:]
        var totalLength = 0
        for entry in entries {
            var tf: [String: Int] = [:]
            var length = 0
            for term in Tokenizer.terms(entry.title) {
                tf[term, default: 0] += Self.titleWeight
                length += Self.titleWeight
            }
            for term in Tokenizer.terms(entry.content) + entry.tags.flatMap(Tokenizer.terms) {
                tf[term, default: 0] += 1
                length += 1
            }
            for term in tf.keys { documentFrequency[term, default: 0] += 1 }
            totalLength += length
            documents.append(Document(entry: entry, termFrequencies: tf, length: length))
        }
        self.documents = documents
        self.documentFrequency = documentFrequency
        self.averageLength = documents.isEmpty ? 0 : Double(totalLength) / Double(documents.count)
    }

    /// Number of indexed entries.
    public var count: Int { documents.count }

    /// Inverse document frequency of an (already tokenized) term; 0 for unknown terms.
    public func idf(term: String) -> Double {
        guard let n = documentFrequency[term] else { return 0 }
        let total = Double(documents.count)
        return log(1 + (total - Double(n) + 0.5) / (Double(n) + 0.5))
    }

    /// The best `limit` entries for `query`, highest score first; entries scoring 0 are left out.
    /// Equal scores keep the order the entries were given in.
    public func search(_ query: String, limit: Int) -> [ScoredEntry] {
        guard limit > 0, !documents.isEmpty, averageLength > 0 else { return [] }
        var seen = Set<String>()
        let queryTerms = Tokenizer.terms(query).filter { seen.insert($0).inserted }
        let weights = queryTerms.map { ($0, idf(term: $0)) }.filter { $0.1 > 0 }
        guard !weights.isEmpty else { return [] }

        var hits: [(index: Int, score: Double)] = []
        for (index, document) in documents.enumerated() {
            var score = 0.0
            let norm = Self.k1 * (1 - Self.b + Self.b * Double(document.length) / averageLength)
            for (term, idf) in weights {
                guard let tf = document.termFrequencies[term] else { continue }
                let f = Double(tf)
                score += idf * f * (Self.k1 + 1) / (f + norm)
            }
            if score > 0 { hits.append((index, score)) }
        }
        hits.sort { $0.score != $1.score ? $0.score > $1.score : $0.index < $1.index }
        return hits.prefix(limit).map { ScoredEntry(entry: documents[$0.index].entry, score: $0.score) }
    }
}
