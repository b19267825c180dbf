import Contracts
import Foundation
import Hummingbird
import HTTPTypes
import Logging
import Messaging
import NIOCore
import Schemas
import Security
import ServiceKit
import Telemetry
import Tenancy
import Tracing

/// The OpenAI-compatible HTTP API: authenticates, limits, publishes `ChatRequested` and waits for the
/// orchestrator's answer on this instance's reply subject.
public struct ChatGateway: Sendable {
    let jetStream: JetStream
    let directory: TenantDirectory
    let inbox: ReplyInbox
    let validator: RequestValidator
    let verifier: APIKeyVerifier
    let limiter: RateLimiterRegistry
    let budgets: BudgetGate
    let configuration: GatewayConfiguration
    let metrics: TelemetryMetrics
    let tracer: any Tracer
    let logger: Logger

    public init(jetStream: JetStream, directory: TenantDirectory, inbox: ReplyInbox, limiter: RateLimiterRegistry,
                budgets: BudgetBook, configuration: GatewayConfiguration, metrics: TelemetryMetrics,
                tracer: any Tracer = W3CTracer(), logger: Logger) {
        self.jetStream = jetStream
        self.directory = directory
        self.inbox = inbox
        self.validator = RequestValidator(limits: configuration.limits)
        self.verifier = APIKeyVerifier(pepper: configuration.keyPepper)
        self.limiter = limiter
        self.budgets = BudgetGate(book: budgets, jetStream: jetStream, lease: configuration.budgetHoldLease,
                                  metrics: metrics, logger: logger)
        self.configuration = configuration
        self.metrics = metrics
        self.tracer = tracer
        self.logger = logger
    }

    public func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.post("/v1/chat/completions") { request, _ in
            await self.chatCompletions(request)
        }
        // The other methods on the chat path: 405 in OpenAI's error shape, with `Allow`, rather than a 404.
        for method in [HTTPRequest.Method.get, .put, .delete, .patch] {
            router.on("/v1/chat/completions", method: method) { request, _ in
                var response = Self.errorResponse(.methodNotAllowed(request.method.rawValue, path: "/v1/chat/completions",
                                                                    allowed: "POST"), requestID: nil)
                response.headers[.allow] = "POST"
                return response
            }
        }
        router.get("/v1/models") { request, _ in
            if let unavailable = await self.waitForDirectory() { return unavailable }
            return self.models(request)
        }
        router.get("/v1/usage") { request, _ in
            if let unavailable = await self.waitForDirectory() { return unavailable }
            return await self.usage(request)
        }
    }

    /// Right after start the KV mirror may still be loading: wait for it (bounded) rather than answering a
    /// valid key with 401; if it doesn't load, 503 (retriable). `/ready` stays 503 meanwhile, so a load
    /// balancer doesn't send traffic here in the first place.
    func waitForDirectory() async -> Response? {
        guard !directory.isSynced else { return nil }
        do {
            try await directory.waitUntilSynced(timeout: .seconds(5))
            return nil
        } catch {
            return Self.errorResponse(.serviceUnavailable("The gateway is starting; retry shortly.", retryAfterSeconds: 1),
                                      requestID: nil)
        }
    }

    // MARK: authentication

    func authenticate(_ request: Request) -> Result<(AuthContext, TenantSnapshot), GatewayError> {
        let parsed: ParsedKey
        switch APIKeyParser.parse(authorizationHeader: request.headers[.authorization]) {
        case .success(let value): parsed = value
        case .failure(let error): return .failure(error)
        }
        let record = directory.apiKey(lookup: APIKeyFormat.kvKey(lookupID: parsed.lookupID))
        let snapshot = record.flatMap { directory.snapshot(tenant: $0.tenantID) }
        switch verifier.verify(parsed, record: record, tenant: snapshot?.tenant, nowUnixNanos: EventClock.nowUnixNanos()) {
        case .success(let auth): return .success((auth, snapshot!))
        case .failure(let error): return .failure(error)
        }
    }

    func models(_ request: Request) -> Response {
        switch authenticate(request) {
        case .failure(let error): return Self.errorResponse(error, requestID: nil)
        case .success(let (_, snapshot)):
            let names = snapshot.manifest?.agents.filter(\.enabled).map(\.agent) ?? []
            let created = (snapshot.tenant.createdAtUnixNanos / 1_000_000_000)
            return Self.json(.ok, OpenAIResponse.modelList(agentNames: names, createdUnixSeconds: created), requestID: nil)
        }
    }

    // MARK: chat completions

    func chatCompletions(_ request: Request) async -> Response {
        let clock = ContinuousClock.now
        let requestID = EventID.random()
        if let unavailable = await waitForDirectory() { return unavailable }
        let (auth, snapshot): (AuthContext, TenantSnapshot)
        switch authenticate(request) {
        case .failure(let error): return Self.errorResponse(error, requestID: requestID)
        case .success(let value): (auth, snapshot) = value
        }
        // Limits come from the plan: without one (KV entry missing or being repaired) fail closed, retriable.
        guard snapshot.plan != nil else {
            return Self.errorResponse(.serviceUnavailable("The account's plan is not available; retry shortly.",
                                                          retryAfterSeconds: 1), requestID: requestID)
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.limits.maxBodyBytes)
        } catch {
            return Self.errorResponse(.requestTooLarge(limitBytes: configuration.limits.maxBodyBytes), requestID: requestID)
        }
        let validated: ValidatedChatRequest
        switch validator.validate(body: body.readableBytesView,
                                  conversationIDHeader: request.headers[HTTPField.Name(RequestValidator.conversationIDHeader)!],
                                  plan: snapshot.plan) {
        case .failure(let error): return Self.errorResponse(error, requestID: requestID)
        case .success(let value): validated = value
        }
        let now = EventClock.nowUnixNanos()
        let limit = snapshot.plan.map(RateLimit.init(plan:)) ?? RateLimit(requestsPerMinute: 0, tokensPerMinute: 0)
        let charged = UInt32(clamping: validated.upfrontTokenEstimate)
        let decision = limiter.acquire(key: auth.keyID, limit: limit, estimatedTokens: charged, nowNanos: now)
        if let error = decision.error { return Self.errorResponse(error, requestID: requestID) }
        // Budgets: admitted requests hold the tenant's request estimate until billing has priced them.
        let limits = snapshot.plan.map(BudgetLimits.init(plan:)) ?? BudgetLimits(dailyMicros: 0, monthlyMicros: 0)
        if limits.isLimited,
           let error = await budgets.admit(tenant: auth.tenantID, requestID: requestID, limits: limits,
                                           timeZone: snapshot.tenant.timeZone)
        {
            limiter.refund(key: auth.keyID, tokens: charged, nowNanos: EventClock.nowUnixNanos())
            return Self.errorResponse(error, requestID: requestID)
        }

        // Trace context: continue the caller's trace if it sent one.
        var incoming: [String: String] = [:]
        if let parent = request.headers[HTTPField.Name("traceparent")!] { incoming[Headers.traceparent] = parent }
        if let state = request.headers[HTTPField.Name("tracestate")!] { incoming[Headers.tracestate] = state }
        var parentContext = ServiceContext.topLevel
        tracer.extract(incoming, into: &parentContext, using: DictionaryExtractor())
        let span = tracer.startSpan("chat.completions", context: parentContext, ofKind: .server)
        // The span lasts as long as the answer: a stream's ends when its body has been written (streamResponse).
        var spanEndsWithBody = false
        defer { if !spanEndsWithBody { span.end() } }
        var headers: NATSHeaders = [:]
        tracer.inject(span.context, into: &headers, using: DictionaryInjector())
        let replySubject = inbox.subject(for: requestID)
        headers[Headers.replyTo] = replySubject

        let deadline = now + configuration.requestTimeout.nanosecondsValue
        let chat = makeChatRequested(validated, tenantID: auth.tenantID, apiKeyID: auth.keyID, requestID: requestID,
                                     traceID: span.context.currentTraceID ?? "", replySubject: replySubject,
                                     deadlineUnixNanos: deadline, now: now)
        let replies = inbox.register(requestID, deadline: clock + configuration.requestTimeout)
        do {
            // The request is an event on the log, and the router's work item at the same time (docs/adr/0011).
            // Retried at most for the stream's duplicate window (less a margin), where a copy is stored once.
            let window = Streams.events.spec.duplicateWindow - .seconds(30)
            try await publishRequest(chat, tenant: auth.tenantID, requestID: requestID, headers: headers,
                                     until: min(clock + configuration.requestTimeout - .seconds(1), clock + window))
        } catch {
            inbox.unregister(requestID)
            logger.error("request publish failed", metadata: [LogKey.tenantID: "\(auth.tenantID)",
                                                              LogKey.requestID: "\(requestID)", "error": "\(error.last)",
                                                              "maybe_stored": "\(error.maybeStored)"])
            if !error.maybeStored {
                limiter.refund(key: auth.keyID, tokens: charged, nowNanos: EventClock.nowUnixNanos())
                if limits.isLimited { await budgets.release(tenant: auth.tenantID, requestID: requestID) }
                return Self.errorResponse(.serviceUnavailable(), requestID: requestID)
            }
            // JetStream may have stored one of the attempts (an ack lost in a leader election): the client gets the
            // same 504 as any request that outlives its deadline, and the rate limit and budget hold stay, because the
            // request may still run and be billed (the orchestrator checks the deadline before each provider attempt).
            return Self.errorResponse(.deadlineExceeded(), requestID: requestID)
        }
        metrics.counter(.chatRequestsTotal, [(.tenant, auth.tenantID), (.outcome, "accepted")]).increment()
        let context = Exchange(requestID: requestID, tenant: auth.tenantID, keyID: auth.keyID, model: validated.model,
                               charged: charged, started: clock, includeUsage: validated.includeUsage,
                               timeout: configuration.requestTimeout, budgeted: limits.isLimited)
        if validated.stream {
            spanEndsWithBody = true
            return streamResponse(replies, context: context, span: span)
        }
        defer { inbox.unregister(requestID) }
        guard let message = await Self.firstFinal(replies) else {
            return Self.errorResponse(.deadlineExceeded(), requestID: requestID)
        }
        return finalResponse(message, context: context)
    }

    /// Publishes a request. A timeout leaves its fate unknown — JetStream may have stored it and lost the ack, as in
    /// a leader election of a clustered stream, which takes seconds — and "no responders" or JetStream's 503 mean
    /// the stream has no leader yet; so it is published again with the same message id (stored at most once) until
    /// it is acknowledged or `until` passes: the election costs latency, not a refusal. Anything else is final.
    /// Backoff between attempts doubles from 100 ms to 1 s, with jitter, so a cluster electing leaders is not
    /// flooded. The failure says whether any attempt may have been stored (a timeout or a lost connection).
    func publishRequest(_ chat: ChatRequested, tenant: String, requestID: String, headers: NATSHeaders,
                        until: ContinuousClock.Instant) async throws(PublishFailure) {
        let payload = chat.protobufBytes()
        let eventID = chat.meta?.eventID ?? requestID
        var maybeStored = false
        var delay = Duration.milliseconds(100)
        while true {
            do {
                try await jetStream.publishEvent(.chatRequested, tenant: tenant, eventID: eventID, payload: payload,
                                                 headers: headers)
                return
            } catch {
                if !Self.definitelyNotStored(error) { maybeStored = true }
                guard Self.worthRetrying(error), ContinuousClock.now + delay < until, !Task.isCancelled else {
                    throw PublishFailure(last: error, maybeStored: maybeStored)
                }
                metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.outcome, "publish_retried")]).increment()
                try? await Task.sleep(for: delay * Double.random(in: 0.5...1.0))
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    /// Why a request could not be published: the last error, and whether an earlier attempt may have been stored.
    struct PublishFailure: Error {
        let last: NATSError
        let maybeStored: Bool
    }

    /// Failures that pass once the stream has a leader again or the connection is back.
    static func worthRetrying(_ error: NATSError) -> Bool {
        switch error.code {
        case .timeout, .connectionFailed, .noResponders: true
        case .jetStream: error.status == "503" || error.status == "no responders"
        default: false
        }
    }

    /// Whether a failed publish certainly stored nothing: no stream answered, JetStream refused it, or it was never
    /// sent.
    static func definitelyNotStored(_ error: NATSError) -> Bool {
        [.noResponders, .jetStream, .invalidArgument, .publishFailed].contains(error.code)
    }

}
