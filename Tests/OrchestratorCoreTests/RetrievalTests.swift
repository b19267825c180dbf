import Foundation
@testable import OrchestratorCore
import Schemas
import Testing

@Suite("Tokenizer")
struct TokenizerTests {
    @Test func foldsCaseDiacriticsAndEszett() {
        #expect(Tokenizer.words("Öffnungszeiten GRÜSSE Straße Café") == ["offnungszeiten", "grusse", "strasse", "cafe"])
        #expect(Tokenizer.fold("ÄÖÜäöüß") == "aouaouss")
    }

    @Test func splitsOnEverythingButLettersAndDigits() {
        #expect(Tokenizer.words("café-bar/Müller's 11:00, 2×Pizza!") == ["cafe", "bar", "muller", "s", "11", "00", "2", "pizza"])
        #expect(Tokenizer.words("  \n\t ") == [])
        #expect(Tokenizer.words("日本語 テスト") == ["日本語", "テスト"])
    }

    @Test func dropsGermanAndEnglishStopwords() {
        #expect(Tokenizer.terms("Wann habt ihr geöffnet?") == ["geoffnet"])
        #expect(Tokenizer.terms("when are you open on sunday") == ["open", "sunday"])
        #expect(Tokenizer.terms("the and of der die das und für") == [])
    }

    @Test func stopwordsAreStoredFolded() {
        for word in Tokenizer.stopwords {
            #expect(Tokenizer.fold(word) == word, "\(word)")
            #expect(Tokenizer.words(word) == [word], "\(word)")
        }
    }

    @Test(arguments: [
        ("opening", "open"), ("opened", "open"), ("open", "open"), ("hours", "hour"), ("sundays", "sunday"),
        ("sonntags", "sonntag"), ("offnungen", "offn"), ("offnung", "offn"), ("reservieren", "reservier"),
        ("bus", "bus"), ("eis", "eis"), ("tees", "tee"),
    ])
    func stemsLightly(word: String, stem: String) {
        #expect(Tokenizer.stem(word) == stem)
    }
}

@Suite("KnowledgeIndex (BM25)")
struct KnowledgeIndexTests {
    @Test func openingHoursWinsInEnglish() {
        let hits = Fixtures.index.search("when are you open on sunday", limit: 3)
        #expect(hits.first?.entry.id == "hours")
    }

    @Test func openingHoursWinsInGerman() {
        let hits = Fixtures.index.search("Wann habt ihr geöffnet?", limit: 3)
        #expect(hits.first?.entry.id == "hours-de")
        #expect(hits.count == 1)
    }

    @Test func umlautsFoldOnBothSides() {
        #expect(Fixtures.index.search("Offnungszeiten", limit: 1).first?.entry.id == "hours-de")
        #expect(Fixtures.index.search("ÖFFNUNGSZEITEN", limit: 1).first?.entry.id == "hours-de")
        #expect(Fixtures.index.search("geoffnet", limit: 1).first?.entry.id == "hours-de")
    }

    @Test func tagsAreIndexed() {
        #expect(Fixtures.index.search("gluten", limit: 1).first?.entry.id == "allergens")
        #expect(Fixtures.index.search("Lieferung", limit: 1).first?.entry.id == "delivery")
    }

    @Test func stopwordOnlyAndUnknownQueriesFindNothing() {
        #expect(Fixtures.index.search("the", limit: 5).isEmpty)
        #expect(Fixtures.index.search("wann habt ihr", limit: 5).isEmpty)
        #expect(Fixtures.index.search("quantum chromodynamics", limit: 5).isEmpty)
        #expect(Fixtures.index.search("", limit: 5).isEmpty)
    }

    @Test func limitIsRespected() {
        #expect(Fixtures.index.search("table parking delivery hours", limit: 2).count == 2)
        #expect(Fixtures.index.search("table parking delivery hours", limit: 0).isEmpty)
        #expect(Fixtures.index.search("table parking delivery hours", limit: -1).isEmpty)
        #expect(Fixtures.index.search("table parking delivery hours", limit: 100).count == 4)
    }

    @Test func emptyIndexFindsNothing() {
        let index = KnowledgeIndex(entries: [])
        #expect(index.count == 0)
        #expect(index.search("open", limit: 3).isEmpty)
    }

    @Test func resultsAreSortedAndPositive() {
        let hits = Fixtures.index.search("free table parking sunday delivery open", limit: 10)
        #expect(hits.count > 2)
        for (a, b) in zip(hits, hits.dropFirst()) { #expect(a.score >= b.score) }
        #expect(hits.allSatisfy { $0.score > 0 })
    }

    @Test func singleDocumentScoreMatchesTheFormula() {
        // N = 1, n = 1: idf = ln(1 + 0.5/1.5); tf = 1, |d| = avgdl: tf·2.2 / (1 + 1.2) = 1.
        let index = KnowledgeIndex(entries: [KnowledgeEntry(id: "a", content: "pizza")])
        let score = try? #require(index.search("pizza", limit: 1).first?.score)
        #expect(abs((score ?? 0) - log(4.0 / 3.0)) < 1e-12)
        #expect(abs(index.idf(term: "pizza") - log(4.0 / 3.0)) < 1e-12)
        #expect(index.idf(term: "unknown") == 0)
    }

    @Test func titleCountsDouble() {
        let index = KnowledgeIndex(entries: [
            KnowledgeEntry(id: "content", title: "menu", content: "pizza"),
            KnowledgeEntry(id: "title", title: "pizza", content: "menu"),
        ])
        let hits = index.search("pizza", limit: 2)
        #expect(hits.map(\.entry.id) == ["title", "content"])
        #expect(hits[0].score > hits[1].score)
    }

    @Test func rareTermsWeighMoreThanCommonOnes() {
        let index = KnowledgeIndex(entries: [
            KnowledgeEntry(id: "1", content: "pizza pasta"),
            KnowledgeEntry(id: "2", content: "pizza salad"),
            KnowledgeEntry(id: "3", content: "pizza soup"),
        ])
        #expect(index.idf(term: "pasta") > index.idf(term: "pizza"))
        #expect(index.search("pizza pasta", limit: 1).first?.entry.id == "1")
    }

    @Test func shorterDocumentWinsAtEqualTermFrequency() {
        let index = KnowledgeIndex(entries: [
            KnowledgeEntry(id: "long", content: "pizza with many other words about things"),
            KnowledgeEntry(id: "short", content: "pizza place"),
        ])
        #expect(index.search("pizza", limit: 2).map(\.entry.id) == ["short", "long"])
    }

    @Test func tiesKeepInputOrderAndRepeatedQueryTermsCountOnce() {
        let index = KnowledgeIndex(entries: [
            KnowledgeEntry(id: "b", content: "pizza"),
            KnowledgeEntry(id: "a", content: "pizza"),
        ])
        let once = index.search("pizza", limit: 2)
        #expect(once.map(\.entry.id) == ["b", "a"])
        #expect(index.search("pizza pizza PIZZA", limit: 2) == once)
    }
}
