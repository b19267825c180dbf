import Schemas
@testable import RouterCore

/// Builders for routing inputs; every test states only what it cares about.
enum Fixture {
    static let tenantID = "acme"

    static func tenant(status: String = "active") -> Tenant {
        Tenant(id: tenantID, name: "Acme Bistro", status: status, packageName: "gastronomy")
    }

    static func agent(
        _ name: String,
        enabled: Bool = true,
        provider: String = "openai",
        model: String = "gpt-4o-mini",
        version: String = "1.0.0",
        fallback: String = "",
        intents: [IntentRule] = []
    ) -> AgentManifest {
        AgentManifest(agent: name, provider: provider, model: model, systemPrompt: "be nice", intents: intents,
                      fallbackAgent: fallback, enabled: enabled, version: version)
    }

    static func rule(_ name: String, keywords: [String] = [], pattern: String = "", priority: Int32 = 0) -> IntentRule {
        IntentRule(name: name, keywords: keywords, pattern: pattern, priority: priority)
    }

    static func manifest(_ agents: [AgentManifest], defaultAgent: String = "") -> PackageManifest {
        PackageManifest(packageName: "gastronomy", agents: agents, defaultAgent: defaultAgent, tenantID: tenantID)
    }

    static func request(
        model: String = "",
        user: String? = "hello",
        messages: [ChatMessage]? = nil,
        conversationID: String = "conv-1",
        requestID: String = "req-1",
        eventID: String = "evt-1"
    ) -> ChatRequested {
        let turns = messages ?? (user.map { [ChatMessage(role: "user", content: $0)] } ?? [])
        return ChatRequested(
            meta: EventMeta(eventID: eventID, tenantID: tenantID, occurredAtUnixNanos: 1_000, producer: "api-gateway",
                            schemaVersion: 1, requestID: requestID, traceID: "0af7651916cd43dd8448eb211c80319c"),
            messages: turns,
            model: model,
            conversationID: conversationID,
            channel: "web"
        )
    }

    static func input(
        tenant: Tenant = Fixture.tenant(),
        manifest: PackageManifest?,
        rollouts: [RolloutSettings] = [],
        request: ChatRequested = Fixture.request()
    ) -> RoutingInput {
        RoutingInput(tenant: tenant, manifest: manifest,
                     rollouts: Dictionary(rollouts.map { ($0.agent, $0) }, uniquingKeysWith: { first, _ in first }),
                     request: request)
    }

    static func killed(_ agent: String) -> RolloutSettings {
        RolloutSettings(agent: agent, killSwitch: true, tenantID: tenantID)
    }

    static func canary(_ agent: String, percent: UInt32, stable: String = "1.0.0", canary: String = "2.0.0-rc1")
        -> RolloutSettings {
        RolloutSettings(agent: agent, stableVersion: stable, canaryVersion: canary, canaryPercent: percent,
                        tenantID: tenantID)
    }

    /// A gastronomy package: reservations (intents), menu (intents), support (default, no intents).
    static let gastronomy = manifest([
        agent("reservations", intents: [
            rule("book-table", keywords: ["reservation", "book a table", "table for"], priority: 10),
        ]),
        agent("menu", provider: "anthropic", model: "claude-3-5-haiku", intents: [
            rule("menu-question", keywords: ["menu", "vegan", "ham"], priority: 5),
        ]),
        agent("support", provider: "", model: "llama3", fallback: "menu"),
    ], defaultAgent: "support")
}

extension RoutingOutcome {
    var decision: RoutingDecision? {
        if case .routed(let decision) = self { return decision }
        return nil
    }

    var rejection: RoutingRejection? {
        if case .rejected(let rejection) = self { return rejection }
        return nil
    }
}

func decide(_ input: RoutingInput) -> RoutingOutcome { RoutingPolicy().decide(input) }
