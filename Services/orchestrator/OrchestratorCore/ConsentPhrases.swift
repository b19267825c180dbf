import Foundation

/// Recognises consent answers and phrases the consent question (English and German).
enum ConsentPhrases {
    static let yes: Set<String> = ["yes", "y", "ok", "okay", "i agree", "agree", "sure", "ja", "einverstanden",
                                   "ich stimme zu", "zustimmen", "gerne"]
    static let no: Set<String> = ["no", "n", "i do not agree", "i don't agree", "nein", "ich stimme nicht zu",
                                  "nicht einverstanden"]

    static func answer(_ text: String) -> Bool? {
        let normalized = text.lowercased().trimmingCharacters(in: .whitespacesAndNewlines.union(.punctuationCharacters))
        if yes.contains(normalized) { return true }
        if no.contains(normalized) { return false }
        return nil
    }

    static func question(for text: String) -> String {
        LanguageDetector.detect(text) == .german
            ? "Bevor wir fortfahren: Dürfen wir dieses Gespräch speichern, um Ihnen besser zu helfen? Bitte antworten Sie mit „ja“ oder „nein“."
            : "Before we continue: may we store this conversation to help you better? Please answer \"yes\" or \"no\"."
    }

    static func thanks(for text: String) -> String {
        LanguageDetector.detect(text) == .german
            ? "Danke! Wie kann ich Ihnen helfen?"
            : "Thank you! How can I help you?"
    }
}
