import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Synchronization
import Telemetry
import Tracing
import Tenancy

/// Runs the agent for one `ChatRouted` task: consent, history, provider with retries / circuit breaker /
/// fallback chain (or the built-in `local` knowledge-base agent), then answers the gateway and records
/// every decision on the event log. All ids derive from the request's event id, so a redelivered task
/// re-sends the answer but never double-counts usage.
public struct OrchestratorHandler: Sendable {
    let jetStream: JetStream
    let directory: TenantDirectory
    let store: OrchestratorStore
    let knowledge: KnowledgeCache
    let providers: ProviderClients
    let breakers: CircuitBreakers
    let configuration: OrchestratorConfiguration
    let metrics: TelemetryMetrics
    let logger: Logger
    /// The final answers sent lately, for gateways that ask again after a reconnect (``ReplyResendService``).
    let recentReplies: RecentReplies

    public init(jetStream: JetStream, directory: TenantDirectory, store: OrchestratorStore,
                knowledge: KnowledgeCache, providers: ProviderClients, breakers: CircuitBreakers,
                configuration: OrchestratorConfiguration, metrics: TelemetryMetrics, logger: Logger,
                recentReplies: RecentReplies = RecentReplies()) {
        self.recentReplies = recentReplies
        self.jetStream = jetStream
        self.directory = directory
        self.store = store
        self.knowledge = knowledge
        self.providers = providers
        self.breakers = breakers
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    /// The meta a task is validated by: the request's (ids of everything the orchestrator writes derive from it).
    public static func requestMeta(_ routed: ChatRouted) -> EventMeta? { routed.request?.meta }

    /// The typed consumer has already waited for the mirror, decoded the task and validated the request's meta.
    public func handle(_ routed: ChatRouted, _ event: EventContext) async throws {
        guard let request = routed.request else { throw PoisonMessage("task without a request") }
        let meta = event.meta
        let tenant = meta.tenantID
        let headers = event.hopHeaders
        let started = EventClock.nowUnixNanos()
        if StaleWork.isStale(deadlineUnixNanos: request.deadlineUnixNanos, nowUnixNanos: started) {
            // Replayed long after its deadline (a recreated durable): already answered 504, effects would double.
            metrics.counter(.agentErrorsTotal, [(.tenant, tenant), (.agent, routed.agent), (.outcome, "stale")])
                .increment()
            return
        }
        let clockStart = ContinuousClock.now
        let snapshot = directory.snapshot(tenant: tenant)
        // The routed version's own entry when the manifest lists the agent per version, else the agent's first.
        let agents = snapshot?.manifest?.agents ?? []
        let manifest = agents.first { $0.enabled && $0.agent == routed.agent && $0.version == routed.agentVersion }
            ?? agents.first { $0.agent == routed.agent }
        let reply = ReplyChannel(
            connection: jetStream.connection,
            subject: event.replySubject ?? (request.replySubject.isEmpty ? nil : request.replySubject),
            headers: headers, stream: request.stream, model: routed.agent, conversationID: request.conversationID,
            recent: recentReplies)
        // The orchestrator's span, child of the router's; each provider call is a child of it.
        let span = event.startSpan("orchestrator.run")
        defer { span.end() }
        span.attributes["switchyard.agent"] = routed.agent
        span.attributes["switchyard.agent_version"] = routed.agentVersion
        let context = TaskContext(routed: routed, request: request, meta: meta, headers: headers, reply: reply,
                                  hops: routed.hops + [HopStamp(hop: "orchestrator", unixNanos: started)],
                                  trace: span.context, tracer: event.tracer)
        let labels: [(MetricLabel, String)] = [(.tenant, tenant), (.agent, routed.agent)]
        metrics.counter(.agentRequestsTotal, labels + [(.package, snapshot?.tenant.packageName ?? "")]).increment()

        if request.deadlineUnixNanos > 0 && started > request.deadlineUnixNanos {
            try await fail(context, code: "deadline_exceeded", message: "The request's deadline passed before an agent ran.",
                           status: 504, attempts: [])
            return
        }

        // Consent: a tenant may require it before conversation data is stored.
        var keepHistory = !request.conversationID.isEmpty
        if snapshot?.tenant.consentPolicy == "required", !request.conversationID.isEmpty {
            switch try await checkConsent(context) {
            case .granted: break
            case .denied: keepHistory = false
            case .asked(let question):
                try await complete(context, run: AgentRun(content: question, provider: "consent", model: ""),
                                   keepHistory: false, prompt: request.messages, decision: "consent-asked",
                                   duration: ContinuousClock.now - clockStart)
                return
            }
        }

        var messages: [ChatMessage] = []
        if let prompt = manifest?.systemPrompt, !prompt.isEmpty { messages.append(ChatMessage(role: "system", content: prompt)) }
        if keepHistory, configuration.historyTurns > 0 {
            messages += try await store.history(tenant: tenant, conversation: request.conversationID,
                                                limit: configuration.historyTurns)
        }
        messages += request.messages

        let run = await runAgent(context, manifest: manifest, messages: messages)
        let duration = ContinuousClock.now - clockStart
        metrics.timer(.agentDecisionDurationSeconds, labels).recordNanoseconds(duration.nanosecondsValue)
        if let failure = run.failure {
            metrics.counter(.agentErrorsTotal, labels + [(.outcome, failure.code.name)]).increment()
            if failure.code == .unavailable && !run.deliveredTokens {
                // Nothing was generated: a clear, retriable 503, and nothing to bill.
                try await fail(context, code: "service_unavailable",
                               message: "The agent's knowledge base is unavailable; retry shortly.", status: 503,
                               attempts: run.attempts)
                return
            }
            let timeout = failure.code == .timeout
            try await fail(context, code: timeout ? "deadline_exceeded" : "upstream_error",
                           message: timeout ? "The agent's providers timed out." : "The agent's providers failed.",
                           status: timeout ? 504 : 502, attempts: run.attempts,
                           partial: run.deliveredTokens ? run : nil, prompt: messages)
            return
        }
        try await complete(context, run: run, keepHistory: keepHistory, prompt: messages,
                           decision: run.handoff == nil ? "answered" : "handoff", duration: duration)
    }

    struct TaskContext: Sendable {
        let routed: ChatRouted
        let request: ChatRequested
        let meta: EventMeta
        let headers: NATSHeaders
        let reply: ReplyChannel
        let hops: [HopStamp]
        /// The orchestrator's span (child of the router's): provider calls are its children.
        var trace: ServiceContext = .topLevel
        var tracer: any Tracer = W3CTracer()
        var tenant: String { meta.tenantID }

        func eventMeta(_ kind: String) -> EventMeta {
            EventMeta(eventID: DerivedEventID.make(from: meta.eventID, kind: kind), tenantID: meta.tenantID,
                      occurredAtUnixNanos: EventClock.nowUnixNanos(), producer: OrchestratorNames.producer,
                      schemaVersion: EventMeta.currentSchemaVersion, requestID: meta.requestID, traceID: meta.traceID,
                      evalRunID: meta.evalRunID)
        }
    }
}
