import Foundation
@testable import OrchestratorCore
import Schemas
import Testing

@Suite("HandoffPhrases")
struct HandoffPhrasesTests {
    @Test(arguments: [
        "Can I speak to a human?", "I want a real person", "agent please", "Agent, please!", "Human!", "HUMAN PLEASE",
        "Let me talk to someone", "connect me with a human", "I need to speak with a person about my order",
        "a live agent", "representative", "Could I talk to a representative please",
    ])
    func englishRequestsHandOff(text: String) {
        #expect(HandoffPhrases.asksForHuman(text))
    }

    @Test(arguments: [
        "Ich möchte mit einem Menschen sprechen", "Mitarbeiter bitte", "Mitarbeiter", "MITARBEITERIN!",
        "Kann ich bitte mit einem Mitarbeiter sprechen?", "Eine echte Person bitte", "Ich will einen Menschen",
        "ich moechte mit jemandem reden, das Formular geht nicht", "Hallo, gerne mit einem Menschen sprechen.",
        "Ich möchte mit einem Mitarbeiter sprechen",
    ])
    func germanRequestsHandOff(text: String) {
        #expect(HandoffPhrases.asksForHuman(text))
    }

    /// Decision: whole words only ("humanity", "humane", compounds like "Mitarbeiterparkplatz" don't count),
    /// and a bare person word inside an ordinary question doesn't count either.
    @Test(arguments: [
        "What do you think about humanity?", "Is the food humane?", "How many Mitarbeiter do you have?",
        "Wie viele Mitarbeiter habt ihr?", "Is the travel agent fee included?", "When are you open?",
        "Gibt es einen Mitarbeiterparkplatz?", "", "   ", "humans are welcome", "Personal data policy?",
        "Are dogs allowed for a person with allergies?",
    ])
    func ordinaryQuestionsDoNotHandOff(text: String) {
        #expect(!HandoffPhrases.asksForHuman(text))
    }
}

@Suite("LanguageDetector")
struct LanguageDetectorTests {
    @Test func detectsGermanEnglishOrNothing() {
        #expect(LanguageDetector.detect("Wann habt ihr geöffnet?") == .german)
        #expect(LanguageDetector.detect("Gibt es glutenfreie Gerichte?") == .german)
        #expect(LanguageDetector.detect("when are you open on sunday") == .english)
        #expect(LanguageDetector.detect("Parking?") == nil)
        #expect(LanguageDetector.detect("") == nil)
        #expect(LanguageDetector.detect("Grüße") == .german)
    }

    @Test func bcp47Tags() {
        #expect(AnswerLanguage(bcp47: "de") == .german)
        #expect(AnswerLanguage(bcp47: "de-AT") == .german)
        #expect(AnswerLanguage(bcp47: "EN_us") == .english)
        #expect(AnswerLanguage(bcp47: "fr") == nil)
        #expect(AnswerLanguage(bcp47: "") == nil)
    }
}

@Suite("LocalAgent")
struct LocalAgentTests {
    let agent = LocalAgent()
    let threshold = LocalAgent.defaultHandoffThreshold

    @Test func answersEnglishQuestionFromTheBestEntry() {
        let answer = agent.answer(
            messages: [Fixtures.user("When are you open on Sunday?")], index: Fixtures.index, handoffThreshold: threshold)
        #expect(answer.handoff == nil)
        #expect(answer.usedEntryIDs.first == "hours")
        #expect(answer.content.hasPrefix("We are open Monday to Saturday"))
        #expect(answer.language == .english)
        #expect(answer.confidence >= threshold && answer.confidence <= 1)
    }

    @Test func answersGermanQuestionInGerman() {
        let answer = agent.answer(
            messages: [Fixtures.user("Wann habt ihr geöffnet?")], index: Fixtures.index, handoffThreshold: threshold)
        #expect(answer.handoff == nil)
        #expect(answer.usedEntryIDs == ["hours-de"])
        #expect(answer.content.contains("geöffnet"))
        #expect(answer.language == .german)
    }

    @Test func usesTheLastUserMessageOnly() {
        let messages = [
            ChatMessage(role: "system", content: "You are the host. Parking parking parking."),
            Fixtures.user("Where can I park?"),
            ChatMessage(role: "assistant", content: "There is a car park next door."),
            Fixtures.user("Do you deliver? Delivery"),
        ]
        let answer = agent.answer(messages: messages, index: Fixtures.index, handoffThreshold: threshold)
        #expect(answer.usedEntryIDs.first == "delivery")
    }

    @Test func userAskingForHumanHandsOffPolitelyInTheirLanguage() {
        let en = agent.answer(messages: [Fixtures.user("Can I speak to a human?")], index: Fixtures.index, handoffThreshold: 0)
        #expect(en.handoff == .userAskedForHuman)
        #expect(en.content == LocalAgent.handoffMessage(.userAskedForHuman, language: .english))
        #expect(en.usedEntryIDs.isEmpty)

        let de = agent.answer(
            messages: [Fixtures.user("Ich möchte mit einem Menschen sprechen")], index: Fixtures.index, handoffThreshold: 0)
        #expect(de.handoff == .userAskedForHuman)
        #expect(de.language == .german)
        #expect(de.content == LocalAgent.handoffMessage(.userAskedForHuman, language: .german))
    }

    @Test func humanRequestWinsEvenWithAGoodAnswer() {
        let answer = agent.answer(
            messages: [Fixtures.user("Opening hours on sunday? Actually, let me speak to a human")],
            index: Fixtures.index, handoffThreshold: 0)
        #expect(answer.handoff == .userAskedForHuman)
        #expect(answer.confidence > 0)  // retrieval confidence is still reported
    }

    @Test func unrelatedQuestionHandsOffForLowConfidence() {
        let answer = agent.answer(
            messages: [Fixtures.user("What is the meaning of life?")], index: Fixtures.index, handoffThreshold: threshold)
        #expect(answer.handoff == .lowConfidence)
        #expect(answer.confidence == 0)
        #expect(answer.usedEntryIDs.isEmpty)
        #expect(answer.content == LocalAgent.handoffMessage(.lowConfidence, language: .english))
    }

    @Test func thresholdDecides() {
        let question = [Fixtures.user("When are you open on Sunday?")]
        let answered = agent.answer(messages: question, index: Fixtures.index, handoffThreshold: 0)
        #expect(answered.handoff == nil)
        let justBelow = agent.answer(messages: question, index: Fixtures.index, handoffThreshold: answered.confidence)
        #expect(justBelow.handoff == nil)  // confidence == threshold answers
        let above = agent.answer(
            messages: question, index: Fixtures.index, handoffThreshold: answered.confidence.nextUp)
        #expect(above.handoff == .lowConfidence)
        #expect(above.confidence == answered.confidence)
    }

    @Test func noUserMessageOrEmptyIndexHandsOff() {
        #expect(agent.answer(messages: [], index: Fixtures.index, handoffThreshold: 0).handoff == .lowConfidence)
        #expect(agent.answer(
            messages: [Fixtures.user("open sunday")], index: KnowledgeIndex(entries: []), handoffThreshold: 0
        ).handoff == .lowConfidence)
    }

    @Test func languageFallsBackToHintThenBestEntry() {
        let viaHint = agent.answer(
            messages: [Fixtures.user("xyzzy")], index: Fixtures.index, handoffThreshold: threshold, languageHint: "de-DE")
        #expect(viaHint.language == .german)
        #expect(viaHint.content == LocalAgent.handoffMessage(.lowConfidence, language: .german))

        let viaEntry = agent.answer(messages: [Fixtures.user("Allergene?")], index: Fixtures.index, handoffThreshold: 0)
        #expect(viaEntry.usedEntryIDs.first == "allergens")
        #expect(viaEntry.language == .german)

        let fallback = agent.answer(messages: [Fixtures.user("xyzzy")], index: Fixtures.index, handoffThreshold: 0)
        #expect(fallback.language == .english)
    }

    @Test func secondEntryIsAddedOnlyWhenClose() {
        let index = KnowledgeIndex(entries: [
            KnowledgeEntry(id: "brunch", title: "Sunday brunch", content: "Brunch is served every Sunday from 10 to 14."),
            KnowledgeEntry(id: "hours", title: "Sunday hours", content: "On Sunday we open at 12."),
            KnowledgeEntry(id: "parking", title: "Parking", content: "Free parking after six."),
        ])
        let close = agent.answer(messages: [Fixtures.user("sunday")], index: index, handoffThreshold: 0)
        #expect(Set(close.usedEntryIDs) == ["brunch", "hours"])
        #expect(close.content.contains("\n\n"))

        let clear = agent.answer(messages: [Fixtures.user("brunch")], index: index, handoffThreshold: 0)
        #expect(clear.usedEntryIDs == ["brunch"])
    }

    @Test func longEntriesAreCutAtASentenceEnd() {
        let sentence = "This sentence is exactly fifty characters long ok. "
        let long = String(repeating: sentence, count: 20)
        let cut = LocalAgent.concise(long)
        #expect(cut.count <= LocalAgent.maxCharactersPerEntry)
        #expect(cut.hasSuffix("."))
        #expect(LocalAgent.concise("  short.  ") == "short.")
        let noSentence = String(repeating: "word ", count: 200)
        #expect(LocalAgent.concise(noSentence).hasSuffix("…"))
    }

    @Test func confidenceFormula() {
        #expect(LocalAgent.confidence(topScore: nil, secondScore: nil) == 0)
        #expect(LocalAgent.confidence(topScore: 0, secondScore: nil) == 0)
        #expect(LocalAgent.confidence(topScore: .nan, secondScore: nil) == 0)
        #expect(abs(LocalAgent.confidence(topScore: 4, secondScore: nil) - (1 - exp(-1))) < 1e-12)
        // a dead heat costs `marginWeight`, a clear winner nothing
        #expect(abs(LocalAgent.confidence(topScore: 4, secondScore: 4) - 0.75 * (1 - exp(-1))) < 1e-12)
        #expect(LocalAgent.confidence(topScore: 4, secondScore: 0) == LocalAgent.confidence(topScore: 4, secondScore: nil))
        // monotone in the top score, bounded
        var previous = 0.0
        for s in stride(from: 0.25, through: 100, by: 0.25) {
            let c = LocalAgent.confidence(topScore: s, secondScore: s / 2)
            #expect(c > previous || c == 1)
            #expect((0...1).contains(c))
            previous = c
        }
        #expect(LocalAgent.confidence(topScore: .infinity, secondScore: nil) == 0)
    }
}
