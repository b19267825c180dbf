import Foundation
import Schemas
import Security
import Tenancy

/// Everything the router knows when it decides one request: plain values, no I/O.
public struct RoutingInput: Sendable {
    /// The tenant the request belongs to; its `status` must be "active".
    public var tenant: Tenant
    /// The tenant's package manifest; `nil` when none is configured (→ rejected).
    public var manifest: PackageManifest?
    /// Rollout settings by agent name.
    public var rollouts: [String: RolloutSettings]
    public var request: ChatRequested
    /// An eval run's pinned version (only ever set from `evt.eval.requested`): the request runs that version of
    /// the agent, in the `eval` cohort, whatever the rollout says.
    public var pinnedVersion: String?

    public init(tenant: Tenant, manifest: PackageManifest?, rollouts: [String: RolloutSettings] = [:],
                request: ChatRequested, pinnedVersion: String? = nil) {
        self.tenant = tenant
        self.manifest = manifest
        self.rollouts = rollouts
        self.request = request
        self.pinnedVersion = pinnedVersion
    }
}

/// The result of `RoutingPolicy.decide(_:)`.
public enum RoutingOutcome: Sendable, Equatable {
    case routed(RoutingDecision)
    case rejected(RoutingRejection)
}

/// Which rollout cohort a request landed in.
public enum RolloutCohort: String, Sendable, Hashable, CaseIterable {
    case stable
    case canary
    /// An eval run's request, pinned to a version (never a tenant's own traffic).
    case eval
}

/// What picked the agent before any kill switch applied. A bounded set, fit for metric labels
/// (unlike `RoutingDecision.reason`, which names intents and agents).
public enum RoutingBasis: String, Sendable, Hashable, CaseIterable {
    /// `model` named an enabled agent.
    case modelNamedAgent = "model-named-agent"
    /// An intent rule matched the last user message.
    case intent
    /// No intent matched; the manifest's default agent.
    case defaultAgent = "default-agent"
    /// No intent matched and the default agent is missing or disabled; the first enabled agent.
    case firstEnabledAgent = "first-enabled-agent"
}

/// Where a request goes: agent, version, provider/model, and why.
public struct RoutingDecision: Sendable, Hashable {
    /// The agent that will run (after any kill-switch fallback).
    public var agent: String
    public var agentVersion: String
    /// The agent's provider; "local" when the manifest leaves it empty.
    public var provider: String
    public var model: String
    /// Name of the intent rule that matched, "" if none did (or `model` named the agent).
    public var intent: String
    public var cohort: RolloutCohort
    /// Short explanation: "model-named-agent", "intent:<rule>", "default-agent", "first-enabled-agent", or
    /// "kill-switch→<agent>" when a kill switch redirected the request.
    public var reason: String
    /// What picked the agent before any kill switch.
    public var basis: RoutingBasis
    /// The final agent's fallback agent for the orchestrator, "" unless it is enabled, not kill-switched and not
    /// the agent itself.
    public var fallbackAgent: String
    /// The agent's canary share (0-100) in force when it was routed (0 without a canary version; eval: 0).
    public var canaryPercent: UInt32

    public init(agent: String, agentVersion: String, provider: String, model: String, intent: String,
                cohort: RolloutCohort, reason: String, basis: RoutingBasis, fallbackAgent: String,
                canaryPercent: UInt32 = 0) {
        self.agent = agent
        self.agentVersion = agentVersion
        self.provider = provider
        self.model = model
        self.intent = intent
        self.cohort = cohort
        self.reason = reason
        self.basis = basis
        self.fallbackAgent = fallbackAgent
        self.canaryPercent = canaryPercent
    }
}

/// The router's decision logic (docs/ARCHITECTURE.md, "Services"). Pure: the same input always yields the same outcome.
///
/// 1. The tenant must be "active" (else 403 `tenantSuspended`); a manifest must exist (else 503 `noManifest`).
/// 2. Candidates are the manifest's agents with `enabled` and a non-empty name (first entry wins on duplicates).
/// 3. A `model` naming a candidate (exactly, else ignoring case) picks it. An empty, "auto", "default" or generic
///    provider model name ("gpt-…", "claude…", see `isGenericModelName`) falls through to intent routing; any
///    other `model` — including the name of a disabled agent — is rejected with 404 `unknownModel`.
/// 4. Intent routing on the last "user" message: the matching rule with the highest priority wins; ties go to
///    the earlier agent in the manifest, then the earlier rule.
/// 5. Otherwise the manifest's default agent if it is a candidate, else the first candidate, else 503
///    `noEnabledAgent`.
/// 6. A kill-switched agent hands over to its `fallbackAgent`, following the chain for at most
///    `maxFallbackHops` hops; a missing/disabled fallback, a loop or a longer chain is 503 `fallbackLoop`.
/// 7. The final agent's rollout puts the request in the canary cohort when
///    `rolloutBucket(…) < min(canaryPercent, 100) * 100` (and a canary version is set), keyed by the
///    conversation id (or the request id for one-off requests), so a conversation keeps its cohort. An eval
///    run's pinned version replaces that choice (cohort `eval`) if the agent has it, else 404 `unknownVersion`.
/// 8. The chosen version's own manifest entry (same agent name, that `version`), if there is one, supplies the
///    provider and model; otherwise the agent's first entry does.
public struct RoutingPolicy: Sendable {
    /// The only tenant status that may route.
    public static let activeTenantStatus = "active"
    /// Kill-switch fallbacks followed at most.
    public static let maxFallbackHops = 3
    /// Provider used when an agent's manifest leaves it empty.
    public static let defaultProvider = "local"
    /// `model` values that ask the router to choose (compared ignoring case).
    public static let autoModelNames: Set<String> = ["auto", "default"]
    /// Prefixes of generic provider model names that fall through to intent routing (compared ignoring case).
    public static let genericModelPrefixes = ["gpt-", "chatgpt-", "claude", "gemini", "llama", "mistral"]
    /// Buckets of the canary hash: a percent is `percent * 100` buckets.
    public static let bucketCount: UInt64 = 10_000

    public init() {}

    /// The enabled manifest entry of `agent` at `version`. A manifest may list an agent once per version (each
    /// with its own prompt, provider, model and handoff threshold); the first entry of a name is the agent's
    /// routing entry (intents, fallback), the others only configure their version.
    public static func entry(of agent: String, version: String, manifest: PackageManifest) -> AgentManifest? {
        manifest.agents.first { $0.enabled && $0.agent == agent && $0.version == version }
    }

    public func decide(_ input: RoutingInput) -> RoutingOutcome {
        guard input.tenant.status == Self.activeTenantStatus else { return .rejected(.tenantSuspended) }
        guard let manifest = input.manifest else { return .rejected(.noManifest) }

        var candidates: [AgentManifest] = []
        var byName: [String: AgentManifest] = [:]
        for agent in manifest.agents where agent.enabled && !agent.agent.isEmpty && byName[agent.agent] == nil {
            candidates.append(agent)
            byName[agent.agent] = agent
        }

        // Rules 3–5: pick an agent.
        let picked: (agent: AgentManifest, basis: RoutingBasis, intent: String)
        let model = input.request.model.trimmingCharacters(in: .whitespacesAndNewlines)
        let lowercasedModel = model.lowercased()
        if input.pinnedVersion != nil {
            // An eval run tests exactly the agent it names: no intent routing, no case-folding, no fallback.
            guard let named = byName[model] else { return .rejected(.unknownModel) }
            picked = (named, .modelNamedAgent, "")
        } else if !model.isEmpty,
           let named = byName[model] ?? candidates.first(where: { $0.agent.lowercased() == lowercasedModel }) {
            picked = (named, .modelNamedAgent, "")
        } else if !Self.isGenericModelName(model) {
            return .rejected(.unknownModel)
        } else if let (agent, rule) = Self.matchIntent(candidates, request: input.request) {
            picked = (agent, .intent, rule.name)
        } else if let fallback = byName[manifest.defaultAgent] {
            picked = (fallback, .defaultAgent, "")
        } else if let first = candidates.first {
            picked = (first, .firstEnabledAgent, "")
        } else {
            return .rejected(.noEnabledAgent)
        }

        // Rule 6: kill switch → fallback chain.
        var agent = picked.agent
        var visited: Set<String> = [agent.agent]
        var hops = 0
        while input.pinnedVersion == nil, input.rollouts[agent.agent]?.killSwitch == true {
            guard hops < Self.maxFallbackHops else { return .rejected(.fallbackTooLong) }
            guard let next = byName[agent.fallbackAgent] else { return .rejected(.fallbackMissing) }
            guard visited.insert(next.agent).inserted else { return .rejected(.fallbackCycle) }
            agent = next
            hops += 1
        }

        // Rule 7: version and cohort.
        let rollout = input.rollouts[agent.agent]
        var cohort = RolloutCohort.stable
        var version = rollout.map(\.stableVersion).flatMap { $0.isEmpty ? nil : $0 } ?? agent.version
        var canaryPercent: UInt32 = 0
        if let pinned = input.pinnedVersion {
            let known = manifest.versions(of: agent.agent, rollout: rollout)
            guard known.contains(pinned) else { return .rejected(.unknownVersion) }
            cohort = .eval
            version = pinned
        } else if let rollout, rollout.canaryPercent > 0, !rollout.canaryVersion.isEmpty {
            let percent = UInt64(min(rollout.canaryPercent, 100))
            canaryPercent = UInt32(percent)
            let request = input.request
            let stickyKey = request.conversationID.isEmpty ? (request.meta?.requestID ?? "") : request.conversationID
            let bucket = Self.rolloutBucket(tenantID: input.tenant.id, agent: agent.agent, stickyKey: stickyKey)
            if bucket < percent * 100 {
                cohort = .canary
                version = rollout.canaryVersion
            }
        }

        let reason: String
        if hops > 0 {
            reason = "kill-switch→\(agent.agent)"
        } else {
            switch picked.basis {
            case .intent: reason = "intent:\(picked.intent)"
            default: reason = picked.basis.rawValue
            }
        }

        var fallbackAgent = ""
        if agent.fallbackAgent != agent.agent, byName[agent.fallbackAgent] != nil,
           input.rollouts[agent.fallbackAgent]?.killSwitch != true {
            fallbackAgent = agent.fallbackAgent
        }

        // A version with its own manifest entry runs that entry's provider and model.
        let configured = Self.entry(of: agent.agent, version: version, manifest: manifest) ?? agent
        return .routed(RoutingDecision(
            agent: agent.agent,
            agentVersion: version,
            provider: configured.provider.isEmpty ? Self.defaultProvider : configured.provider,
            model: configured.model,
            intent: picked.intent,
            cohort: cohort,
            reason: reason,
            basis: picked.basis,
            fallbackAgent: fallbackAgent,
            canaryPercent: canaryPercent
        ))
    }

    /// Whether `model` (not an agent name) lets the router choose: empty, an alias in `autoModelNames`, a name
    /// starting with one of `genericModelPrefixes`, or an OpenAI reasoning model ("o1", "o3-mini", …).
    public static func isGenericModelName(_ model: String) -> Bool {
        let name = model.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        if name.isEmpty || autoModelNames.contains(name) { return true }
        if genericModelPrefixes.contains(where: { name.hasPrefix($0) }) { return true }
        // "o1", "o3", "o4-mini", …: the letter o, digits, then nothing or a dash.
        let utf8 = Array(name.utf8)
        guard utf8.first == UInt8(ascii: "o") else { return false }
        let digits = utf8.dropFirst().prefix(while: { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        guard !digits.isEmpty else { return false }
        let rest = utf8.dropFirst(1 + digits.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "-")
    }

    /// Stable rollout bucket in `0..<bucketCount`: the first 8 bytes (big-endian) of
    /// SHA-256("<tenant>/<agent>/<sticky key>") modulo 10 000. Other services (eval) may use it to predict cohorts.
    public static func rolloutBucket(tenantID: String, agent: String, stickyKey: String) -> UInt64 {
        let digest = SHA256.hash("\(tenantID)/\(agent)/\(stickyKey)")
        let prefix = digest.prefix(8).reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        return prefix % bucketCount
    }

    /// The highest-priority intent rule matching the last user message; ties go to the earlier agent, then rule.
    static func matchIntent(_ candidates: [AgentManifest], request: ChatRequested)
        -> (agent: AgentManifest, rule: IntentRule)? {
        guard candidates.contains(where: { !$0.intents.isEmpty }),
              let message = request.messages.last(where: { $0.role == "user" })
        else { return nil }
        let text = IntentText(message.content)
        var best: (agent: AgentManifest, rule: IntentRule)?
        for agent in candidates {
            for rule in agent.intents where rule.matches(text) {
                // Strictly greater: on a tie the earlier agent (then the earlier rule) keeps the win.
                if let current = best, rule.priority <= current.rule.priority { continue }
                best = (agent, rule)
            }
        }
        return best
    }
}
