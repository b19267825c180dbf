@testable import OrchestratorCore
import Schemas

/// SplitMix64: a tiny seeded generator so jitter tests are reproducible.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Always returns the same word: 0 makes `Double.random(in: 0..<1)` return 0, `.max` makes it ~1.
struct ConstantRNG: RandomNumberGenerator {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

enum Fixtures {
    static let restaurant: [KnowledgeEntry] = [
        KnowledgeEntry(
            id: "hours", tenantID: "demo", title: "Opening hours",
            content: "We are open Monday to Saturday from 11:00 to 22:00 and on Sundays from 12:00 to 21:00.",
            language: "en", tags: ["hours", "sunday"]),
        KnowledgeEntry(
            id: "hours-de", tenantID: "demo", title: "Öffnungszeiten",
            content: "Wir haben Montag bis Samstag von 11 bis 22 Uhr geöffnet, sonntags von 12 bis 21 Uhr.",
            language: "de", tags: ["Öffnungszeiten", "geöffnet"]),
        KnowledgeEntry(
            id: "reservation", tenantID: "demo", title: "Table reservations",
            content: "You can reserve a table online or by phone at +49 30 1234567. Groups of more than eight people please call us.",
            language: "en", tags: ["booking", "table"]),
        KnowledgeEntry(
            id: "parking", tenantID: "demo", title: "Parking",
            content: "There is a public car park next to the restaurant; parking is free after 18:00.",
            language: "en", tags: ["car"]),
        KnowledgeEntry(
            id: "allergens", tenantID: "demo", title: "Allergene",
            content: "Unsere Speisekarte kennzeichnet alle 14 Hauptallergene. Fragen Sie gern unser Team nach glutenfreien Gerichten.",
            language: "de", tags: ["gluten", "Allergien"]),
        KnowledgeEntry(
            id: "delivery", tenantID: "demo", title: "Delivery",
            content: "We deliver within 5 km with our own drivers. Delivery is free for orders above 30 euros.",
            language: "en", tags: ["lieferung"]),
    ]

    static var index: KnowledgeIndex { KnowledgeIndex(entries: restaurant) }

    static func user(_ text: String) -> ChatMessage { ChatMessage(role: "user", content: text) }
}

import Testing

/// Expects `body` to throw a `ProviderError` with `code` (the reason text is not compared).
func expectProviderError<R>(
    _ code: ProviderError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R
) {
    let error = #expect(throws: ProviderError.self, sourceLocation: sourceLocation) { _ = try body() }
    #expect(error?.code == code, sourceLocation: sourceLocation)
}
