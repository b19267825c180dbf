import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization
import Telemetry
import Tenancy

public enum OrchestratorNames {
    public static let producer = "orchestrator"
    /// AckWait covers a slow provider: the consume loop also sends in-progress while a task runs.
    public static let consumer = ConsumerSpec(durable: "orchestrator-tasks", ackWait: .seconds(30), maxDeliver: 5)
    /// Event types on the gateway's reply subject (header `Switchyard-Event-Type`).
    public static let chunkEvent = "chat.chunk"
}

/// Per-tenant BM25 indexes over the knowledge base, reloaded from PostgreSQL at most every `ttl`.
public final class KnowledgeCache: Sendable {
    private let store: KnowledgeStore
    private let ttl: Duration
    private let cache = Mutex<[String: (index: KnowledgeIndex, loaded: ContinuousClock.Instant)]>([:])

    public init(store: KnowledgeStore, ttl: Duration = .seconds(5)) {
        self.store = store
        self.ttl = ttl
    }

    public func index(tenant: String) async throws -> KnowledgeIndex {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[tenant] }), now - cached.loaded < ttl { return cached.index }
        let index = KnowledgeIndex(entries: try await store.entries(tenant: tenant))
        cache.withLock { $0[tenant] = (index, now) }
        return index
    }

    /// Drops a tenant's index so the next request reloads it (after a knowledge-base change).
    public func invalidate(tenant: String) {
        _ = cache.withLock { $0.removeValue(forKey: tenant) }
    }
}

/// Invalidates `KnowledgeCache` entries when the tenant service reports a knowledge-base change
/// (`evt.tenant.changed.<tenant>`, change `knowledge` or `deleted`), so edits apply at once instead of after
/// the cache's TTL (which remains the fallback if an event is missed).
public struct KnowledgeInvalidationService: Service {
    let connection: NATSConnection
    let cache: KnowledgeCache
    let logger: Logger

    public init(connection: NATSConnection, cache: KnowledgeCache, logger: Logger) {
        self.connection = connection
        self.cache = cache
        self.logger = logger
    }

    public func run() async throws {
        let subscription = try connection.subscribe(Subjects.event(.tenantChanged, tenant: "*"))
        try? await cancelWhenGracefulShutdown {
            for await message in subscription.messages {
                guard let changed = try? TenantChanged(protobuf: message.payload),
                      let tenant = changed.meta?.tenantID, ["knowledge", "deleted"].contains(changed.change)
                else { continue }
                cache.invalidate(tenant: tenant)
            }
        }
        subscription.unsubscribe()
    }
}

/// Where a request's answer goes: the gateway instance's reply subject (core NATS), if the request has one.
final class ReplyChannel: Sendable {
    let connection: NATSConnection
    let subject: String?
    let headers: NATSHeaders
    let stream: Bool
    let model: String
    let conversationID: String
    let chunkIndex = Atomic<UInt32>(0)

    init(connection: NATSConnection, subject: String?, headers: NATSHeaders, stream: Bool, model: String,
         conversationID: String) {
        self.connection = connection
        self.subject = subject
        self.headers = headers
        self.stream = stream
        self.model = model
        self.conversationID = conversationID
    }

    func send(_ eventType: String, _ payload: [UInt8]) {
        guard let subject else { return }
        var headers = self.headers
        headers[Headers.eventType] = eventType
        headers.removeValue(forKey: Headers.replyTo)
        try? connection.publish(subject, payload: payload, headers: headers)
    }

    /// Streams a content delta (only for `stream: true` requests).
    func chunk(_ delta: String) {
        guard stream, !delta.isEmpty else { return }
        let index = chunkIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        send(OrchestratorNames.chunkEvent, StreamChunk(index: index, delta: delta, model: model,
                                                       conversationID: conversationID).protobufBytes())
    }
}

/// The result of running an agent on one task.
struct AgentRun: Sendable {
    var content = ""
    var finishReason = "stop"
    var providerUsage: ProviderUsage?
    var provider = ""
    var model = ""
    var attempts: [ProviderAttempt] = []
    var confidence = 1.0
    var handoff: HandoffReason?
    var failure: ProviderError?
    var deliveredTokens = false
}

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

    public init(jetStream: JetStream, directory: TenantDirectory, store: OrchestratorStore,
                knowledge: KnowledgeCache, providers: ProviderClients, breakers: CircuitBreakers,
                configuration: OrchestratorConfiguration, metrics: TelemetryMetrics, logger: Logger) {
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

    public func handle(_ delivery: JetStreamDelivery) async throws {
        if !directory.isSynced { try await directory.waitUntilSynced() }
        let routed = try ChatRouted(protobuf: delivery.payload)
        guard let request = routed.request, let meta = request.meta, TenantID.isValid(meta.tenantID),
              !meta.eventID.isEmpty else {
            throw PoisonMessage("task without a valid request")
        }
        let tenant = meta.tenantID
        let headers = HopHeaders.propagate(from: delivery.headers)
        let started = EventClock.nowUnixNanos()
        let clockStart = ContinuousClock.now
        let snapshot = directory.snapshot(tenant: tenant)
        let manifest = snapshot?.manifest?.agents.first { $0.agent == routed.agent }
        let reply = ReplyChannel(
            connection: jetStream.connection,
            subject: headers[Headers.replyTo] ?? (request.replySubject.isEmpty ? nil : request.replySubject),
            headers: headers, stream: request.stream, model: routed.agent, conversationID: request.conversationID)
        let context = TaskContext(routed: routed, request: request, meta: meta, headers: headers, reply: reply,
                                  hops: routed.hops + [HopStamp(hop: "orchestrator", unixNanos: started)])
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
        var tenant: String { meta.tenantID }

        func eventMeta(_ kind: String) -> EventMeta {
            EventMeta(eventID: DerivedEventID.make(from: meta.eventID, kind: kind), tenantID: meta.tenantID,
                      occurredAtUnixNanos: EventClock.nowUnixNanos(), producer: OrchestratorNames.producer,
                      schemaVersion: EventMeta.currentSchemaVersion, requestID: meta.requestID, traceID: meta.traceID)
        }
    }

    // MARK: running the agent

    func runAgent(_ context: TaskContext, manifest: AgentManifest?, messages: [ChatMessage]) async -> AgentRun {
        let routed = context.routed
        let primary = ProviderTarget(provider: routed.provider.isEmpty ? "local" : routed.provider, model: routed.model)
        let plan = FallbackPlan(primary: primary, fallbackChain: configuration.fallbackChain, breakers: breakers,
                                now: .now)
        var sequencer = FallbackSequencer(plan: plan, retryPolicy: configuration.retryPolicy)
        var run = AgentRun()
        var random = SystemRandomNumberGenerator()
        let delivered = Atomic<Bool>(false)
        let skipped = plan.skippedAttempts(at: EventClock.nowUnixNanos())
        while true {
            switch sequencer.step {
            case .succeeded:
                run.attempts = skipped + sequencer.attempts
                return run
            case .exhausted:
                run.attempts = skipped + sequencer.attempts
                if run.failure == nil {
                    run.failure = ProviderError(plan.targets.isEmpty ? .circuitOpen : .transport, reason: "no provider available")
                }
                return run
            case .call(let target, _, let after):
                if after > .zero { try? await Task.sleep(for: after) }
                let startedAt = EventClock.nowUnixNanos()
                if context.request.deadlineUnixNanos > 0 && startedAt >= context.request.deadlineUnixNanos {
                    run.failure = ProviderError(.timeout, reason: "deadline passed")
                    run.attempts = skipped + sequencer.attempts
                    return run
                }
                if target.provider == "local" {
                    let outcome = await runLocal(context, manifest: manifest, messages: messages)
                    run.content = outcome.content
                    run.confidence = outcome.confidence
                    run.handoff = outcome.handoff
                    run.provider = "local"
                    run.model = manifest?.model ?? "kb-retrieval"
                    run.failure = nil
                    sequencer.record(error: nil, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt("local", outcome: "ok", startedAt: startedAt)
                    streamLocal(outcome.content, reply: context.reply)
                    continue
                }
                guard breakers.allowRequest(provider: target.provider, now: .now) else {
                    let error = ProviderError(.circuitOpen)
                    run.failure = error
                    sequencer.record(error: error, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt(target.provider, outcome: "circuit-open", startedAt: startedAt)
                    continue
                }
                let call = ProviderCall(
                    model: target.model.isEmpty ? (manifest?.model ?? context.routed.model) : target.model,
                    messages: messages,
                    maxTokens: context.request.maxTokens > 0 ? Int(context.request.maxTokens) : nil,
                    temperature: context.request.temperature, stream: context.request.stream)
                let reply = context.reply
                do {
                    let response = try await providers.complete(provider: target.provider, call: call) { delta in
                        delivered.store(true, ordering: .relaxed)
                        reply.chunk(delta)
                    }
                    breakers.record(provider: target.provider, success: true, now: .now)
                    run.content = response.content
                    run.finishReason = response.finishReason ?? "stop"
                    run.providerUsage = response.usage
                    run.provider = target.provider
                    run.model = call.model
                    run.failure = nil
                    sequencer.record(error: nil, httpStatus: 200, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt(target.provider, outcome: "ok", startedAt: startedAt)
                } catch {
                    breakers.record(provider: target.provider, success: false, now: .now)
                    recordAttempt(target.provider, outcome: error.code.name, startedAt: startedAt)
                    logger.warning("provider attempt failed", metadata: [
                        LogKey.tenantID: "\(context.tenant)", LogKey.requestID: "\(context.meta.requestID)",
                        "provider": "\(target.provider)", "error": "\(error)",
                    ])
                    run.failure = error
                    if delivered.load(ordering: .relaxed) {
                        // Tokens already reached the client: a fallback would garble the answer.
                        sequencer.record(error: error, httpStatus: error.code.httpStatus, startedAtUnixNanos: startedAt,
                                         endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                        run.deliveredTokens = true
                        run.attempts = skipped + sequencer.attempts
                        return run
                    }
                    sequencer.record(error: error, httpStatus: error.code.httpStatus, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                }
            }
        }
    }

    private func recordAttempt(_ provider: String, outcome: String, startedAt: Int64) {
        metrics.counter(.providerAttemptsTotal, [(.provider, provider), (.outcome, outcome)]).increment()
        metrics.timer(.providerLatencySeconds, [(.provider, provider)])
            .recordNanoseconds(EventClock.nowUnixNanos() - startedAt)
    }

    func runLocal(_ context: TaskContext, manifest: AgentManifest?, messages: [ChatMessage]) async -> LocalAnswer {
        let index: KnowledgeIndex
        do {
            index = try await knowledge.index(tenant: context.tenant)
        } catch {
            logger.error("knowledge base unavailable", metadata: [LogKey.tenantID: "\(context.tenant)", "error": "\(error)"])
            index = KnowledgeIndex(entries: [])
        }
        let threshold = (manifest?.handoffThreshold ?? 0) > 0 ? manifest!.handoffThreshold : LocalAgent.defaultHandoffThreshold
        return LocalAgent().answer(messages: messages, index: index, handoffThreshold: threshold)
    }

    /// The local agent answers at once; for `stream: true` it still arrives as a few chunks.
    private func streamLocal(_ content: String, reply: ReplyChannel) {
        guard reply.stream else { return }
        var piece = ""
        var words = 0
        for character in content {
            piece.append(character)
            if character == " " {
                words += 1
                if words == 8 {
                    reply.chunk(piece)
                    piece = ""
                    words = 0
                }
            }
        }
        reply.chunk(piece)
    }

    // MARK: consent

    enum ConsentOutcome: Sendable { case granted, denied, asked(String) }

    func checkConsent(_ context: TaskContext) async throws -> ConsentOutcome {
        let tenant = context.tenant
        let conversation = context.request.conversationID
        let last = context.request.messages.last(where: { $0.role == "user" })?.content ?? ""
        var outcome: ConsentOutcome
        var outcomeName: String
        if let granted = try await store.consent(tenant: tenant, conversation: conversation) {
            outcome = granted ? .granted : .denied
            outcomeName = granted ? "granted" : "denied"
        } else if let answer = ConsentPhrases.answer(last) {
            try await store.recordConsent(tenant: tenant, conversation: conversation, granted: answer)
            outcome = answer ? .granted : .denied
            outcomeName = answer ? "granted-now" : "denied-now"
        } else {
            outcome = .asked(ConsentPhrases.question(for: last))
            outcomeName = "asked"
        }
        let granted: Bool
        if case .granted = outcome { granted = true } else { granted = false }
        metrics.counter(.agentConsentChecksTotal, [(.tenant, tenant), (.outcome, outcomeName)]).increment()
        let event = ConsentChecked(meta: context.eventMeta("consent"), conversationID: conversation, required: true,
                                   granted: granted, policy: "required", outcome: outcomeName)
        try await jetStream.publishEvent(.consentChecked, tenant: tenant, eventID: event.meta!.eventID,
                                         payload: event.protobufBytes(), headers: context.headers)
        if case .granted = outcome, outcomeName == "granted-now" {
            // The user's "yes" is not itself a question: acknowledge it.
            return .asked(ConsentPhrases.thanks(for: last))
        }
        return outcome
    }

    // MARK: results

    func complete(_ context: TaskContext, run: AgentRun, keepHistory: Bool, prompt: [ChatMessage],
                  decision: String, duration: Duration) async throws {
        let tenant = context.tenant
        let usage = TokenEstimator.usage(reported: run.providerUsage, prompt: prompt, completion: run.content)
        let schemaUsage = Usage(promptTokens: UInt32(clamping: usage.promptTokens),
                                completionTokens: UInt32(clamping: usage.completionTokens),
                                totalTokens: UInt32(clamping: usage.totalTokens))
        let completed = ChatCompleted(
            meta: context.eventMeta("completed"), conversationID: context.request.conversationID,
            agent: context.routed.agent, agentVersion: context.routed.agentVersion, model: run.model,
            provider: run.provider, content: run.content, finishReason: run.finishReason, usage: schemaUsage,
            hops: context.hops + [HopStamp(hop: "orchestrator.done", unixNanos: EventClock.nowUnixNanos())],
            attempts: run.attempts, handedOff: run.handoff != nil)
        let bytes = completed.protobufBytes()
        // The client first: then the durable record.
        context.reply.send(Subjects.EventKind.chatCompleted.rawValue, bytes)
        let usageEvent = UsageRecorded(
            meta: context.eventMeta("usage"), conversationID: context.request.conversationID,
            agent: context.routed.agent, provider: run.provider, model: run.model,
            promptTokens: UInt32(clamping: usage.promptTokens), completionTokens: UInt32(clamping: usage.completionTokens),
            estimated: usage.estimated)
        let decisionEvent = AgentDecision(
            meta: context.eventMeta("decision"), agent: context.routed.agent, agentVersion: context.routed.agentVersion,
            decision: decision, confidence: run.confidence, reason: run.handoff?.rawValue ?? decision,
            durationNanos: duration.nanosecondsValue, conversationID: context.request.conversationID)
        async let completedAck = jetStream.publishEvent(.chatCompleted, tenant: tenant, eventID: completed.meta!.eventID,
                                                        payload: bytes, headers: context.headers)
        async let usageAck = jetStream.publish(OutboundMessage(
            subject: Subjects.usage(tenant: tenant), payload: usageEvent.protobufBytes(), headers: context.headers,
            messageID: "\(tenant):\(usageEvent.meta!.eventID)"))
        async let decisionAck = jetStream.publishEvent(.agentDecision, tenant: tenant, eventID: decisionEvent.meta!.eventID,
                                                       payload: decisionEvent.protobufBytes(), headers: context.headers)
        if let handoff = run.handoff {
            let event = HandoffRequested(meta: context.eventMeta("handoff"), conversationID: context.request.conversationID,
                                         agent: context.routed.agent, reason: handoff.rawValue, confidence: run.confidence)
            try await jetStream.publishEvent(.handoffRequested, tenant: tenant, eventID: event.meta!.eventID,
                                             payload: event.protobufBytes(), headers: context.headers)
            metrics.counter(.agentHandoffsTotal, [(.tenant, tenant), (.agent, context.routed.agent), (.outcome, handoff.rawValue)])
                .increment()
        }
        _ = try await (completedAck, usageAck, decisionAck)
        if keepHistory, let user = context.request.messages.last(where: { $0.role == "user" }) {
            try await store.recordTurn(tenant: tenant, conversation: context.request.conversationID,
                                       requestID: context.meta.requestID, user: user.content, assistant: run.content,
                                       agent: context.routed.agent)
        }
        metrics.counter(.chatCompletionsTotal, [(.tenant, tenant), (.agent, context.routed.agent),
                                                (.outcome, run.handoff == nil ? "answered" : "handoff")]).increment()
    }

    func fail(_ context: TaskContext, code: String, message: String, status: Int, attempts: [ProviderAttempt],
              partial: AgentRun? = nil, prompt: [ChatMessage] = []) async throws {
        let failed = ChatFailed(
            meta: context.eventMeta("failed"), conversationID: context.request.conversationID,
            agent: context.routed.agent, errorCode: code, message: message, httpStatus: UInt32(status),
            retriable: true, hops: context.hops, attempts: attempts)
        let bytes = failed.protobufBytes()
        context.reply.send(Subjects.EventKind.chatFailed.rawValue, bytes)
        try await jetStream.publishEvent(.chatFailed, tenant: context.tenant, eventID: failed.meta!.eventID,
                                         payload: bytes, headers: context.headers)
        if let partial {
            // What was generated before the failure reached the client: it is still metered.
            let usage = TokenEstimator.usage(reported: nil, prompt: prompt, completion: partial.content)
            let event = UsageRecorded(
                meta: context.eventMeta("usage"), conversationID: context.request.conversationID,
                agent: context.routed.agent, provider: partial.provider, model: partial.model,
                promptTokens: UInt32(clamping: usage.promptTokens), completionTokens: UInt32(clamping: usage.completionTokens),
                estimated: true)
            try await jetStream.publish(OutboundMessage(
                subject: Subjects.usage(tenant: context.tenant), payload: event.protobufBytes(), headers: context.headers,
                messageID: "\(context.tenant):\(event.meta!.eventID)"))
        }
        metrics.counter(.chatCompletionsTotal, [(.tenant, context.tenant), (.agent, context.routed.agent),
                                                (.outcome, "failed")]).increment()
    }
}

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

/// Builds the orchestrator process: NATS + streams + consumer, PostgreSQL + migrations, KV mirror, providers.
public func buildOrchestrator(configuration: ServiceConfiguration, orchestrator: OrchestratorConfiguration,
                              logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(),
                              signals: Bool = true) async throws -> ServiceGroup {
    let platform = try await ServicePlatform.connect(configuration: configuration, logger: logger, metrics: metrics)
    for stream in [StandardStreams.tasks, StandardStreams.events, StandardStreams.usage, StandardStreams.deadLetter] {
        try await platform.jetStream.ensureStream(stream)
    }
    var consumerSpec = OrchestratorNames.consumer
    consumerSpec.ackWait = orchestrator.taskAckWait
    try await platform.jetStream.ensureConsumer(stream: StreamNames.tasks, consumerSpec)
    let pool = try PostgresPool(configuration: configuration.postgresConfiguration, logger: logger)
    platform.health.register(PostgresHealthCheck(pool: pool))
    let store = OrchestratorStore(pool: pool)
    try await store.migrate(logger: logger)
    let knowledgeStore = KnowledgeStore(pool: pool)
    try await knowledgeStore.migrate(logger: logger)
    let directory = TenantDirectory(logger: logger, verifier: configuration.mirrorVerifier)
    platform.health.register(name: "kv") { directory.isSynced ? .up : .down("tenant mirror not loaded") }
    let providers = ProviderClients(endpoints: orchestrator.endpoints)
    let knowledgeCache = KnowledgeCache(store: knowledgeStore)
    let handler = OrchestratorHandler(
        jetStream: platform.jetStream, directory: directory, store: store, knowledge: knowledgeCache,
        providers: providers, breakers: CircuitBreakers(configuration: orchestrator.breaker),
        configuration: orchestrator, metrics: metrics, logger: logger)
    let consumer = JetStreamConsumerService(
        jetStream: platform.jetStream, stream: StreamNames.tasks, consumer: consumerSpec,
        batchSize: 64, logger: logger, handler: handler.handle)
    return platform.serviceGroup([
        ClosingService { await providers.shutdown(); await pool.close() },
        TenantDirectoryService(directory: directory, jetStream: platform.jetStream, logger: logger),
        KnowledgeInvalidationService(connection: platform.connection, cache: knowledgeCache, logger: logger),
        consumer,
    ], signals: signals)
}
