import Schemas

/// The demo tenant that `make run` seeds through the tenant service's admin commands: a restaurant with the
/// gastronomy package, three agents and a small bilingual knowledge base. examples/demo-restaurant/ holds the
/// same manifest and knowledge base as the YAML files `manifest set` and `kb import` take — keep them in step.
enum DemoSeed {
    static let tenantID = "demo-restaurant"

    /// Created on the service's default plan, then moved to `plan` by set-plan (create needs an existing plan).
    static let tenant = Tenant(id: tenantID, name: "Trattoria Demo", packageName: "gastronomy", consentPolicy: "none")

    static let plan = Plan(id: "demo-starter", rpm: 6000, tpm: 2_000_000, dailyBudgetMicros: 0,
                           monthlyBudgetMicros: 0, maxTokensPerRequest: 4096)

    /// The API key the seed issues when the env file holds none that is still active.
    static let keyEnvironment = "test"
    static let keyScopes = ["chat"]
    static let keyLabel = "demo"

    static let manifest = PackageManifest(
        packageName: "gastronomy",
        agents: [
            AgentManifest(
                agent: "restaurant-host", provider: "local", model: "kb-retrieval",
                systemPrompt: "You are the friendly host of Trattoria Demo. Answer from the knowledge base.",
                intents: [
                    IntentRule(name: "reservation", keywords: ["reservation", "reserve", "book", "table",
                                                                "reservieren", "reservierung", "tisch"],
                               pattern: "", priority: 10),
                    IntentRule(name: "opening-hours", keywords: ["open", "hours", "geöffnet", "öffnungszeiten"],
                               pattern: "", priority: 5),
                ],
                fallbackAgent: "gastronomy-supervisor", enabled: true, version: "v1", handoffThreshold: 0.25),
            AgentManifest(
                agent: "gastronomy-supervisor", provider: "local", model: "kb-retrieval",
                systemPrompt: "You supervise the restaurant's agents and hand off to staff when unsure.",
                intents: [
                    IntentRule(name: "complaint", keywords: ["complaint", "refund", "beschwerde", "manager"],
                               pattern: "", priority: 20),
                ],
                fallbackAgent: "", enabled: true, version: "v1", handoffThreshold: 0.35),
            // Answers through the operator's OpenAI-compatible upstream (SWITCHYARD_OPENAI_BASE_URL); without
            // one, the orchestrator's fallback chain (default: the local knowledge-base agent) answers.
            AgentManifest(
                agent: "concierge", provider: "openai", model: "gpt-4o-mini",
                systemPrompt: "You are the concierge of Trattoria Demo. Be brief and friendly.",
                intents: [], fallbackAgent: "restaurant-host", enabled: true, version: "v1", handoffThreshold: 0.25),
        ],
        defaultAgent: "restaurant-host")

    static let rollouts: [RolloutSettings] = [
        RolloutSettings(agent: "restaurant-host", stableVersion: "v1", canaryVersion: "v2", canaryPercent: 0,
                        killSwitch: false),
        RolloutSettings(agent: "gastronomy-supervisor", stableVersion: "v1", canaryVersion: "", canaryPercent: 0,
                        killSwitch: false),
    ]

    static let knowledge: [KnowledgeEntry] = {
        func entry(_ id: String, _ language: String, _ title: String, _ content: String, _ tags: [String])
            -> KnowledgeEntry
        {
            KnowledgeEntry(id: id, title: title, content: content, language: language, tags: tags)
        }
        return [
            entry("hours-en", "en", "Opening hours",
                  "We are open Tuesday to Sunday from 12:00 to 22:00; the kitchen closes at 21:30. We are closed on Mondays.",
                  ["hours", "open", "opening"]),
            entry("hours-de", "de", "Öffnungszeiten",
                  "Wir haben Dienstag bis Sonntag von 12:00 bis 22:00 Uhr geöffnet; die Küche schließt um 21:30 Uhr. Montags ist Ruhetag.",
                  ["öffnungszeiten", "geöffnet", "offen"]),
            entry("address-en", "en", "Address and directions",
                  "Trattoria Demo is at Hauptstraße 12, 10115 Berlin, two minutes from the U-Bahn station Rosenthaler Platz.",
                  ["address", "location", "where"]),
            entry("address-de", "de", "Adresse und Anfahrt",
                  "Die Trattoria Demo liegt in der Hauptstraße 12, 10115 Berlin, zwei Minuten von der U-Bahn Rosenthaler Platz.",
                  ["adresse", "anfahrt", "wo"]),
            entry("menu-en", "en", "Menu",
                  "Our menu offers fresh pasta, wood-fired pizza, seasonal antipasti and tiramisu. Vegetarian and vegan dishes are marked on the menu.",
                  ["menu", "food", "dishes", "vegetarian", "vegan"]),
            entry("menu-de", "de", "Speisekarte",
                  "Unsere Speisekarte bietet frische Pasta, Pizza aus dem Holzofen, saisonale Antipasti und Tiramisu. Vegetarische und vegane Gerichte sind gekennzeichnet.",
                  ["speisekarte", "essen", "gerichte", "vegetarisch", "vegan"]),
            entry("allergens-en", "en", "Allergens",
                  "All 14 EU allergens are listed for every dish. Gluten-free pasta is available; please tell your server about allergies.",
                  ["allergens", "allergy", "gluten", "nuts", "lactose"]),
            entry("allergens-de", "de", "Allergene",
                  "Für jedes Gericht sind alle 14 EU-Allergene ausgewiesen. Glutenfreie Pasta ist erhältlich; bitte informieren Sie uns über Allergien.",
                  ["allergene", "allergie", "gluten", "nüsse", "laktose"]),
            entry("reservation-en", "en", "Reservation policy",
                  "Tables can be reserved for up to 8 guests online or by phone at +49 30 1234567. We hold a reservation for 15 minutes; larger groups please call.",
                  ["reservation", "reserve", "booking", "table", "book"]),
            entry("reservation-de", "de", "Reservierung",
                  "Tische für bis zu 8 Personen reservieren Sie online oder telefonisch unter +49 30 1234567. Reservierungen halten wir 15 Minuten; größere Gruppen bitte anrufen.",
                  ["reservierung", "reservieren", "tisch", "buchen"]),
            entry("payment-en", "en", "Payment",
                  "We accept cash, EC cards, Visa and Mastercard. Tips can be added on card payments.",
                  ["payment", "pay", "card", "cash"]),
            entry("payment-de", "de", "Bezahlung",
                  "Wir akzeptieren Bargeld, EC-Karte, Visa und Mastercard. Trinkgeld kann bei Kartenzahlung hinzugefügt werden.",
                  ["bezahlung", "zahlen", "karte", "bar"]),
            entry("parking-en", "en", "Parking",
                  "There is a public parking garage at Torstraße 5, 200 metres away. Bicycle stands are in front of the restaurant.",
                  ["parking", "car", "bicycle"]),
            entry("events-en", "en", "Private events",
                  "Our back room seats up to 30 guests for birthdays and company events; set menus start at 45 euros per person.",
                  ["events", "party", "private", "group"]),
            entry("kids-de", "de", "Kinder",
                  "Kinder sind herzlich willkommen: Hochstühle und eine Kinderkarte sind vorhanden.",
                  ["kinder", "familie", "hochstuhl"]),
        ]
    }()
}
