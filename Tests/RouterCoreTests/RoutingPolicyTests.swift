import Schemas
import Testing
@testable import RouterCore

@Suite("Tenant and manifest gates")
struct GateTests {
    @Test("a tenant that is not active is rejected with 403", arguments: ["suspended", "deleted", "", "Active", "pending"])
    func inactiveTenant(status: String) throws {
        let outcome = decide(Fixture.input(tenant: Fixture.tenant(status: status), manifest: Fixture.gastronomy))
        let rejection = try #require(outcome.rejection)
        #expect(rejection.code == .tenantSuspended)
        #expect(rejection.httpStatus == 403)
        #expect(!rejection.isRetriable)
    }

    @Test func suspendedTenantIsRejectedEvenWithoutManifest() {
        let outcome = decide(Fixture.input(tenant: Fixture.tenant(status: "suspended"), manifest: nil))
        #expect(outcome.rejection?.code == .tenantSuspended)
    }

    @Test func activeTenantRoutes() {
        #expect(decide(Fixture.input(manifest: Fixture.gastronomy)).decision != nil)
    }

    @Test func missingManifestIsRejectedWith503() throws {
        let rejection = try #require(decide(Fixture.input(manifest: nil)).rejection)
        #expect(rejection.code == .noManifest)
        #expect(rejection.httpStatus == 503)
        #expect(rejection.isRetriable)
    }

    @Test("rejection texts carry no tenant data")
    func rejectionsAreClean() {
        let all: [RoutingRejection] = [.tenantSuspended, .unknownModel, .noManifest, .noEnabledAgent,
                                       .fallbackMissing, .fallbackCycle, .fallbackTooLong]
        for rejection in all {
            for secret in [Fixture.tenantID, "Acme", "reservations", "support", "menu", "gpt"] {
                #expect(!rejection.description.contains(secret))
                #expect(!rejection.message.contains(secret))
            }
            #expect([403, 404, 503].contains(rejection.httpStatus))
        }
        #expect(RoutingRejection.Code.fallbackLoop.description == "fallback_loop")
    }
}

@Suite("Model field")
struct ModelTests {
    @Test("a model naming an enabled agent picks it, whatever the message says",
          arguments: ["menu", "Menu", " menu "])
    func modelNamesAgent(model: String) throws {
        let request = Fixture.request(model: model, user: "I want a reservation")
        let decision = try #require(decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).decision)
        #expect(decision.agent == "menu")
        #expect(decision.reason == "model-named-agent")
        #expect(decision.basis == .modelNamedAgent)
        #expect(decision.intent == "")
        #expect(decision.provider == "anthropic")
        #expect(decision.model == "claude-3-5-haiku")
    }

    @Test("an unknown model is rejected with 404", arguments: ["pizza-bot", "gpt4", "o", "oak-1", "reservations-v2"])
    func unknownModel(model: String) throws {
        let request = Fixture.request(model: model)
        let rejection = try #require(decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).rejection)
        #expect(rejection.code == .unknownModel)
        #expect(rejection.httpStatus == 404)
        #expect(!rejection.isRetriable)
    }

    @Test func modelNamingDisabledAgentIsUnknown() {
        let manifest = Fixture.manifest([Fixture.agent("menu"), Fixture.agent("secret", enabled: false)])
        let request = Fixture.request(model: "secret")
        #expect(decide(Fixture.input(manifest: manifest, request: request)).rejection?.code == .unknownModel)
    }

    @Test("generic model names fall through to intent routing",
          arguments: ["", "auto", "AUTO", "default", "gpt-4o", "gpt-4o-mini", "GPT-4.1", "chatgpt-4o-latest",
                      "claude-3-5-sonnet", "claude", "o1", "o3-mini", "o4-mini", "gemini-1.5-pro", "llama3",
                      "mistral-large", "  gpt-4  "])
    func genericModel(model: String) throws {
        #expect(RoutingPolicy.isGenericModelName(model))
        let request = Fixture.request(model: model, user: "Do you have a vegan menu?")
        let decision = try #require(decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).decision)
        #expect(decision.agent == "menu")
        #expect(decision.reason == "intent:menu-question")
        #expect(decision.basis == .intent)
    }

    @Test func agentNameWinsOverGenericPrefix() throws {
        let manifest = Fixture.manifest([Fixture.agent("menu"), Fixture.agent("gpt-helper")], defaultAgent: "menu")
        let request = Fixture.request(model: "gpt-helper")
        let decision = try #require(decide(Fixture.input(manifest: manifest, request: request)).decision)
        #expect(decision.agent == "gpt-helper")
        #expect(decision.reason == "model-named-agent")
    }

    @Test func agentNamedAutoIsPickedByName() throws {
        let manifest = Fixture.manifest([Fixture.agent("menu"), Fixture.agent("auto")], defaultAgent: "menu")
        let decision = try #require(
            decide(Fixture.input(manifest: manifest, request: Fixture.request(model: "auto"))).decision)
        #expect(decision.agent == "auto")
        #expect(decision.basis == .modelNamedAgent)
    }

    @Test func exactNameBeatsCaseInsensitiveName() throws {
        let manifest = Fixture.manifest([Fixture.agent("Menu", version: "upper"), Fixture.agent("menu", version: "lower")])
        let decision = try #require(
            decide(Fixture.input(manifest: manifest, request: Fixture.request(model: "menu"))).decision)
        #expect(decision.agentVersion == "lower")
    }

    @Test func emptyModelNeverMatchesAnUnnamedAgent() throws {
        let manifest = Fixture.manifest([Fixture.agent(""), Fixture.agent("support")])
        let decision = try #require(decide(Fixture.input(manifest: manifest)).decision)
        #expect(decision.agent == "support")
        #expect(decision.basis == .firstEnabledAgent)
    }
}

@Suite("Intent routing")
struct IntentRoutingTests {
    private func route(_ message: String, manifest: PackageManifest = Fixture.gastronomy) -> RoutingDecision? {
        decide(Fixture.input(manifest: manifest, request: Fixture.request(user: message))).decision
    }

    @Test("keywords match as whole words, ignoring case and punctuation",
          arguments: ["Ham, please!", "HAM", "do you serve ham?", "ham-and-eggs"])
    func wholeWordMatch(message: String) {
        #expect(route(message)?.agent == "menu")
        #expect(route(message)?.intent == "menu-question")
    }

    @Test("a keyword inside a longer word does not match", arguments: ["hamburg", "Hamburger", "shame", "graham"])
    func substringDoesNotMatch(message: String) {
        let decision = route(message)
        #expect(decision?.agent == "support")
        #expect(decision?.reason == "default-agent")
        #expect(decision?.intent == "")
    }

    @Test("multi-word keywords match consecutive words",
          arguments: ["Can I BOOK a table tonight?", "book  a\ntable", "a table for two"])
    func multiWordKeyword(message: String) {
        #expect(route(message)?.intent == "book-table")
    }

    @Test func multiWordKeywordNeedsConsecutiveWords() {
        #expect(route("book me a nice table")?.agent == "support")
    }

    @Test("diacritics and case are folded on both sides")
    func diacritics() {
        let manifest = Fixture.manifest([
            Fixture.agent("cafe", intents: [Fixture.rule("coffee", keywords: ["café"])]),
            Fixture.agent("city", intents: [Fixture.rule("munich", keywords: ["munchen"])]),
            Fixture.agent("fallback"),
        ], defaultAgent: "fallback")
        #expect(route("Is the CAFE open?", manifest: manifest)?.agent == "cafe")
        #expect(route("Is the Café open?", manifest: manifest)?.agent == "cafe")
        #expect(route("Ich bin in MÜNCHEN", manifest: manifest)?.agent == "city")
        #expect(route("cafeteria", manifest: manifest)?.agent == "fallback")
    }

    @Test func onlyTheLastUserMessageCounts() {
        let request = Fixture.request(messages: [
            ChatMessage(role: "system", content: "menu"),
            ChatMessage(role: "user", content: "I want a reservation"),
            ChatMessage(role: "assistant", content: "Sure, what about the menu?"),
            ChatMessage(role: "user", content: "Do you have vegan options?"),
            ChatMessage(role: "assistant", content: "reservation"),
        ])
        let decision = decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).decision
        #expect(decision?.agent == "menu")
    }

    @Test func noUserMessageFallsToDefault() {
        let request = Fixture.request(messages: [ChatMessage(role: "system", content: "reservation")])
        #expect(decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).decision?.reason == "default-agent")
    }

    @Test func patternsMatchCaseInsensitiveSubstringsAndWildcards() {
        let manifest = Fixture.manifest([
            Fixture.agent("bookings", intents: [Fixture.rule("booking", pattern: "reserv")]),
            Fixture.agent("money", intents: [Fixture.rule("refund", pattern: "refund | money*back")]),
            Fixture.agent("fallback"),
        ], defaultAgent: "fallback")
        #expect(route("RESERVATION please", manifest: manifest)?.agent == "bookings")
        #expect(route("I want my money back!", manifest: manifest)?.agent == "money")
        #expect(route("Money! Give it back", manifest: manifest)?.agent == "money")
        #expect(route("back to the money", manifest: manifest)?.agent == "fallback")
        #expect(route("Refunds?", manifest: manifest)?.reason == "intent:refund")
    }

    @Test("an invalid pattern is ignored, never fatal",
          arguments: ["(unclosed", "a+", "^start", "end$", "[abc]", #"\d+"#, "*", " * ", "a||b", "|", "   ",
                      String(repeating: "x", count: IntentPattern.maxLength + 1)])
    func invalidPattern(pattern: String) {
        #expect(IntentPattern(pattern) == nil)
        let manifest = Fixture.manifest([
            Fixture.agent("broken", intents: [Fixture.rule("broken", pattern: pattern, priority: 100)]),
            Fixture.agent("keyworded", intents: [Fixture.rule("kw", keywords: ["hello"], pattern: pattern)]),
            Fixture.agent("fallback"),
        ], defaultAgent: "fallback")
        // "broken" can never match; "keyworded" still matches by keyword.
        #expect(route("(unclosed a+ ^start end$ [abc] \\d+ * a||b xxxxxxxx hello", manifest: manifest)?.agent == "keyworded")
        #expect(route("(unclosed a+ ^start end$ [abc]", manifest: manifest)?.agent == "fallback")
    }

    @Test func validPatternsParse() {
        for pattern in ["reserv", "book*table", "a|b", "money * back", "ä*ö", String(repeating: "x", count: IntentPattern.maxLength)] {
            #expect(IntentPattern(pattern) != nil)
        }
    }

    @Test func keywordsWithoutLettersNeverMatch() {
        let manifest = Fixture.manifest([
            Fixture.agent("weird", intents: [Fixture.rule("weird", keywords: ["", "  ", "!!"])]),
            Fixture.agent("fallback"),
        ], defaultAgent: "fallback")
        #expect(route("!! hello", manifest: manifest)?.agent == "fallback")
        #expect(route("", manifest: manifest)?.agent == "fallback")
    }

    @Test func highestPriorityWins() {
        let manifest = Fixture.manifest([
            Fixture.agent("low", intents: [Fixture.rule("low", keywords: ["pizza"], priority: 1)]),
            Fixture.agent("high", intents: [Fixture.rule("high", keywords: ["pizza"], priority: 7)]),
            Fixture.agent("negative", intents: [Fixture.rule("negative", keywords: ["pizza"], priority: -3)]),
        ])
        let decision = route("pizza", manifest: manifest)
        #expect(decision?.agent == "high")
        #expect(decision?.reason == "intent:high")
    }

    @Test func tiesGoToTheEarlierAgentThenTheEarlierRule() {
        let manifest = Fixture.manifest([
            Fixture.agent("first", intents: [
                Fixture.rule("lower", keywords: ["pizza"], priority: 1),
                Fixture.rule("a", keywords: ["pizza"], priority: 5),
                Fixture.rule("b", pattern: "pizza", priority: 5),
            ]),
            Fixture.agent("second", intents: [Fixture.rule("c", keywords: ["pizza"], priority: 5)]),
        ])
        for _ in 0..<5 {
            let decision = route("pizza", manifest: manifest)
            #expect(decision?.agent == "first")
            #expect(decision?.intent == "a")
        }
        // Reversing the manifest's agent order flips the winner.
        let reversed = Fixture.manifest(manifest.agents.reversed())
        #expect(route("pizza", manifest: reversed)?.agent == "second")
    }

    @Test func disabledAgentsIntentsAreIgnored() {
        let manifest = Fixture.manifest([
            Fixture.agent("off", enabled: false, intents: [Fixture.rule("off", keywords: ["pizza"], priority: 99)]),
            Fixture.agent("on", intents: [Fixture.rule("on", keywords: ["pizza"])]),
        ])
        #expect(route("pizza", manifest: manifest)?.agent == "on")
    }
}

@Suite("Default agent")
struct DefaultAgentTests {
    @Test func defaultAgentWhenNoIntentMatches() throws {
        let decision = try #require(decide(Fixture.input(manifest: Fixture.gastronomy)).decision)
        #expect(decision.agent == "support")
        #expect(decision.reason == "default-agent")
        #expect(decision.basis == .defaultAgent)
        #expect(decision.provider == "local", "an empty provider becomes local")
        #expect(decision.model == "llama3")
        #expect(decision.agentVersion == "1.0.0")
        #expect(decision.cohort == .stable)
    }

    @Test("a disabled, missing or empty default falls back to the first enabled agent",
          arguments: ["off", "ghost", ""])
    func unusableDefault(defaultAgent: String) throws {
        let manifest = Fixture.manifest([
            Fixture.agent("off", enabled: false),
            Fixture.agent("second"),
            Fixture.agent("third"),
        ], defaultAgent: defaultAgent)
        let decision = try #require(decide(Fixture.input(manifest: manifest)).decision)
        #expect(decision.agent == "second")
        #expect(decision.reason == "first-enabled-agent")
        #expect(decision.basis == .firstEnabledAgent)
    }

    @Test("no enabled agent is rejected with 503",
          arguments: [Fixture.manifest([]),
                      Fixture.manifest([Fixture.agent("a", enabled: false), Fixture.agent("b", enabled: false)],
                                       defaultAgent: "a")])
    func noEnabledAgent(manifest: PackageManifest) throws {
        let rejection = try #require(decide(Fixture.input(manifest: manifest)).rejection)
        #expect(rejection.code == .noEnabledAgent)
        #expect(rejection.httpStatus == 503)
    }
}

@Suite("Kill switch")
struct KillSwitchTests {
    private func chain(_ links: [(String, String)]) -> PackageManifest {
        Fixture.manifest(links.map { Fixture.agent($0.0, version: "v-\($0.0)", fallback: $0.1) }, defaultAgent: links[0].0)
    }

    @Test func killSwitchRoutesToFallback() throws {
        let request = Fixture.request(user: "a table for two")
        let manifest = Fixture.manifest([
            Fixture.agent("reservations", fallback: "support",
                          intents: [Fixture.rule("book-table", keywords: ["table for"])]),
            Fixture.agent("support", provider: "", model: "llama3", version: "3.1"),
        ])
        let input = Fixture.input(manifest: manifest, rollouts: [Fixture.killed("reservations")], request: request)
        let decision = try #require(decide(input).decision)
        #expect(decision.agent == "support")
        #expect(decision.reason == "kill-switch→support")
        #expect(decision.basis == .intent, "basis records what picked the agent before the switch")
        #expect(decision.intent == "book-table")
        #expect(decision.agentVersion == "3.1")
        #expect(decision.provider == "local")
        #expect(decision.model == "llama3")
    }

    @Test func killSwitchAppliesToModelNamedAgent() throws {
        let input = Fixture.input(manifest: chain([("a", "b"), ("b", "")]), rollouts: [Fixture.killed("a")],
                                  request: Fixture.request(model: "a"))
        let decision = try #require(decide(input).decision)
        #expect(decision.agent == "b")
        #expect(decision.basis == .modelNamedAgent)
    }

    @Test func killSwitchOffMeansNoRedirect() throws {
        let rollout = RolloutSettings(agent: "a", killSwitch: false)
        let decision = try #require(decide(Fixture.input(manifest: chain([("a", "b"), ("b", "")]), rollouts: [rollout])).decision)
        #expect(decision.agent == "a")
        #expect(decision.reason == "default-agent")
    }

    @Test func chainOfKilledAgentsIsFollowed() throws {
        let manifest = chain([("a", "b"), ("b", "c"), ("c", "")])
        let decision = try #require(
            decide(Fixture.input(manifest: manifest, rollouts: [Fixture.killed("a"), Fixture.killed("b")])).decision)
        #expect(decision.agent == "c")
        #expect(decision.reason == "kill-switch→c")
        #expect(decision.agentVersion == "v-c")
    }

    @Test func threeHopsAreAllowed() throws {
        let manifest = chain([("a", "b"), ("b", "c"), ("c", "d"), ("d", "")])
        let input = Fixture.input(manifest: manifest, rollouts: ["a", "b", "c"].map(Fixture.killed))
        #expect(decide(input).decision?.agent == "d")
    }

    @Test func fourHopsAreRejected() throws {
        let manifest = chain([("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "")])
        let input = Fixture.input(manifest: manifest, rollouts: ["a", "b", "c", "d"].map(Fixture.killed))
        let rejection = try #require(decide(input).rejection)
        #expect(rejection.code == .fallbackLoop)
        #expect(rejection.httpStatus == 503)
    }

    @Test("loops are rejected", arguments: [
        [("a", "b"), ("b", "a")],
        [("a", "a")],
        [("a", "b"), ("b", "c"), ("c", "b")],
    ])
    func loop(links: [(String, String)]) throws {
        let manifest = chain(links)
        let rollouts = links.map { Fixture.killed($0.0) }
        let rejection = try #require(decide(Fixture.input(manifest: manifest, rollouts: rollouts)).rejection)
        #expect(rejection.code == .fallbackLoop)
        #expect(rejection.httpStatus == 503)
        #expect(rejection == .fallbackCycle)
    }

    @Test("a missing, disabled or unknown fallback is rejected", arguments: ["", "off", "ghost"])
    func unusableFallback(fallback: String) throws {
        let manifest = Fixture.manifest([
            Fixture.agent("a", fallback: fallback),
            Fixture.agent("off", enabled: false),
        ])
        let rejection = try #require(decide(Fixture.input(manifest: manifest, rollouts: [Fixture.killed("a")])).rejection)
        #expect(rejection.code == .fallbackLoop)
        #expect(rejection == .fallbackMissing)
    }

    @Test func decisionCarriesUsableFallbackAgentOnly() throws {
        let manifest = Fixture.manifest([
            Fixture.agent("a", fallback: "b"),
            Fixture.agent("b", fallback: "off"),
            Fixture.agent("c", fallback: "c"),
            Fixture.agent("d", fallback: "e"),
            Fixture.agent("e"),
            Fixture.agent("off", enabled: false),
        ])
        func fallback(of model: String, rollouts: [RolloutSettings] = []) -> String? {
            decide(Fixture.input(manifest: manifest, rollouts: rollouts, request: Fixture.request(model: model)))
                .decision?.fallbackAgent
        }
        #expect(fallback(of: "a") == "b")
        #expect(fallback(of: "b") == "", "disabled fallback")
        #expect(fallback(of: "c") == "", "self fallback")
        #expect(fallback(of: "e") == "", "no fallback")
        #expect(fallback(of: "d", rollouts: [Fixture.killed("e")]) == "", "kill-switched fallback")
    }
}
