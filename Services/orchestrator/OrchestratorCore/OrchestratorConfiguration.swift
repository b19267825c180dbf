import Foundation
import ServiceKit

/// Orchestrator settings beyond `ServiceConfiguration`, read from the environment in one place.
public struct OrchestratorConfiguration: Sendable {
    /// Operator-configured upstreams. `SWITCHYARD_OPENAI_BASE_URL` (+ `_API_KEY`) and
    /// `SWITCHYARD_ANTHROPIC_BASE_URL` (+ `_API_KEY`); unset = provider not available.
    public var endpoints: [ProviderEndpoint]
    /// `SWITCHYARD_FALLBACK_CHAIN`: comma-separated `provider[:model]` tried after the agent's own provider.
    /// Default `local` (the built-in knowledge-base agent always answers).
    public var fallbackChain: [ProviderTarget]
    /// `SWITCHYARD_PROVIDER_TIMEOUT_MS` per attempt (default 20000).
    public var providerTimeout: Duration
    /// `SWITCHYARD_PROVIDER_MAX_ATTEMPTS` per provider (default 3) with exponential backoff + jitter.
    public var retryPolicy: RetryPolicy
    /// `SWITCHYARD_BREAKER_FAILURES` consecutive failures open a provider's circuit (default 5) for
    /// `SWITCHYARD_BREAKER_OPEN_MS` (default 30000).
    public var breaker: CircuitBreaker.Configuration
    /// `SWITCHYARD_HISTORY_TURNS`: earlier messages loaded per conversation (default 20).
    public var historyTurns: Int
    /// `SWITCHYARD_TASK_ACK_WAIT_MS`: how long a task fetched by an orchestrator that died stays invisible
    /// before another replica gets it (default 5000; live replicas keep their tasks with in-progress acks every
    /// half of it, docs/adr/0016).
    public var taskAckWait: Duration
    /// `SWITCHYARD_KNOWLEDGE_CACHE_TTL_MS`: how long a tenant's knowledge index is reused before it is reloaded
    /// from PostgreSQL (default 5000). Knowledge edits invalidate it at once through `evt.tenant.changed`; the
    /// TTL only bounds staleness when such an event is missed.
    public var knowledgeCacheTTL: Duration

    public init(endpoints: [ProviderEndpoint] = [], fallbackChain: [ProviderTarget] = [ProviderTarget(provider: "local")],
                providerTimeout: Duration = .seconds(20), retryPolicy: RetryPolicy = RetryPolicy(),
                breaker: CircuitBreaker.Configuration = .init(), historyTurns: Int = 20,
                taskAckWait: Duration = .seconds(5), knowledgeCacheTTL: Duration = .seconds(5)) {
        self.endpoints = endpoints
        self.fallbackChain = fallbackChain
        self.providerTimeout = providerTimeout
        self.retryPolicy = retryPolicy
        self.breaker = breaker
        self.historyTurns = historyTurns
        self.taskAckWait = taskAckWait
        self.knowledgeCacheTTL = knowledgeCacheTTL
    }

    public init(environment: EnvironmentReader = EnvironmentReader()) throws(ConfigurationError) {
        let timeout = try environment.milliseconds("SWITCHYARD_PROVIDER_TIMEOUT_MS", default: .seconds(20),
                                                   range: 1...600_000)
        var endpoints: [ProviderEndpoint] = []
        for (name, kind) in [("OPENAI", ProviderEndpoint.Kind.openAI), ("ANTHROPIC", .anthropic)] {
            guard let url = try environment.httpURL("SWITCHYARD_\(name)_BASE_URL") else { continue }
            endpoints.append(ProviderEndpoint(name: kind.rawValue, kind: kind, baseURL: url,
                                              apiKey: environment.optional("SWITCHYARD_\(name)_API_KEY"),
                                              timeout: timeout))
        }
        var chain: [ProviderTarget] = []
        for spec in (environment.optional("SWITCHYARD_FALLBACK_CHAIN") ?? "local").split(separator: ",") {
            guard let target = ProviderTarget(parsing: spec.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_FALLBACK_CHAIN",
                                         expectation: "comma-separated provider[:model] entries")
            }
            chain.append(target)
        }
        self.init(
            endpoints: endpoints, fallbackChain: chain, providerTimeout: timeout,
            retryPolicy: RetryPolicy(maxAttempts: try environment.integer("SWITCHYARD_PROVIDER_MAX_ATTEMPTS", default: 3,
                                                                          range: 1...10)),
            breaker: .init(failureThreshold: try environment.integer("SWITCHYARD_BREAKER_FAILURES", default: 5,
                                                                     range: 1...1000),
                           openDuration: try environment.milliseconds("SWITCHYARD_BREAKER_OPEN_MS", default: .seconds(30),
                                                                      range: 1...3_600_000)),
            historyTurns: try environment.integer("SWITCHYARD_HISTORY_TURNS", default: 20, range: 0...200),
            taskAckWait: try environment.milliseconds("SWITCHYARD_TASK_ACK_WAIT_MS", default: .seconds(5),
                                                      range: 500...3_600_000),
            knowledgeCacheTTL: try environment.milliseconds("SWITCHYARD_KNOWLEDGE_CACHE_TTL_MS", default: .seconds(5),
                                                            range: 0...86_400_000))
    }
}
