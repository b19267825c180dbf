import Foundation
import Hummingbird
import HTTPTypes
import Security
import Logging
import Messaging
import NIOCore
import Schemas
import ServiceKit
import ServiceLifecycle
import Telemetry
import Tenancy
import Tracing

/// Gateway settings beyond `ServiceConfiguration`.
public struct GatewayConfiguration: Sendable {
    /// Request body, message, token limits.
    public var limits: GatewayLimits
    /// How long a client waits for an answer before a 504 (`SWITCHYARD_REQUEST_TIMEOUT_MS`, default 30000).
    public var requestTimeout: Duration
    /// HMAC pepper for API key hashes (`SWITCHYARD_KEY_PEPPER`, hex; unset = plain SHA-256).
    public var keyPepper: [UInt8]?

    public init(limits: GatewayLimits = GatewayLimits(), requestTimeout: Duration = .seconds(30), keyPepper: [UInt8]? = nil) {
        self.limits = limits
        self.requestTimeout = requestTimeout
        self.keyPepper = keyPepper
    }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) {
        var timeout = Duration.seconds(30)
        if let raw = environment["SWITCHYARD_REQUEST_TIMEOUT_MS"], !raw.isEmpty {
            guard let ms = Int(raw), (1...600_000).contains(ms) else {
                throw ConfigurationError(code: .outOfRange, variable: "SWITCHYARD_REQUEST_TIMEOUT_MS",
                                         expectation: "milliseconds in 1...600000")
            }
            timeout = .milliseconds(ms)
        }
        var pepper: [UInt8]?
        if let raw = environment["SWITCHYARD_KEY_PEPPER"], !raw.isEmpty {
            guard let bytes = Hex.decode(raw), bytes.count >= 16 else {
                throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_KEY_PEPPER",
                                         expectation: "at least 16 bytes, hex-encoded")
            }
            pepper = bytes
        }
        self.init(requestTimeout: timeout, keyPepper: pepper)
    }
}

/// The OpenAI-compatible HTTP API: authenticates, limits, publishes `ChatRequested` and waits for the
/// orchestrator's answer on this instance's reply subject.
public struct ChatGateway: Sendable {
    let jetStream: JetStream
    let directory: TenantDirectory
    let inbox: ReplyInbox
    let validator: RequestValidator
    let verifier: APIKeyVerifier
    let limiter: RateLimiterRegistry
    let configuration: GatewayConfiguration
    let metrics: TelemetryMetrics
    let tracer: W3CTracer
    let logger: Logger

    public init(jetStream: JetStream, directory: TenantDirectory, inbox: ReplyInbox, limiter: RateLimiterRegistry,
                configuration: GatewayConfiguration, metrics: TelemetryMetrics, logger: Logger) {
        self.jetStream = jetStream
        self.directory = directory
        self.inbox = inbox
        self.validator = RequestValidator(limits: configuration.limits)
        self.verifier = APIKeyVerifier(pepper: configuration.keyPepper)
        self.limiter = limiter
        self.configuration = configuration
        self.metrics = metrics
        self.tracer = W3CTracer()
        self.logger = logger
    }

    public func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.post("/v1/chat/completions") { request, _ in
            await self.chatCompletions(request)
        }
        router.get("/v1/models") { request, _ in
            if let unavailable = await self.waitForDirectory() { return unavailable }
            return self.models(request)
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

        // Trace context: continue the caller's trace if it sent one.
        var incoming: [String: String] = [:]
        if let parent = request.headers[HTTPField.Name("traceparent")!] { incoming[Headers.traceparent] = parent }
        if let state = request.headers[HTTPField.Name("tracestate")!] { incoming[Headers.tracestate] = state }
        var parentContext = ServiceContext.topLevel
        tracer.extract(incoming, into: &parentContext, using: DictionaryExtractor())
        let span = tracer.startSpan("chat.completions", context: parentContext, ofKind: .server)
        defer { span.end() }
        var headers: NATSHeaders = [:]
        tracer.inject(span.context, into: &headers, using: DictionaryInjector())
        let replySubject = inbox.subject(for: requestID)
        headers[Headers.replyTo] = replySubject

        let deadline = now + configuration.requestTimeout.nanosecondsValue
        let chat = makeChatRequested(validated, tenantID: auth.tenantID, apiKeyID: auth.keyID, requestID: requestID,
                                     traceID: span.context.traceID ?? "", replySubject: replySubject,
                                     deadlineUnixNanos: deadline, now: now)
        let replies = inbox.register(requestID, deadline: clock + configuration.requestTimeout)
        do {
            try await jetStream.publish(OutboundMessage(
                subject: Subjects.chatRequest(tenant: auth.tenantID), payload: chat.protobufBytes(), headers: headers,
                messageID: "\(auth.tenantID):\(chat.meta?.eventID ?? requestID)"))
        } catch {
            inbox.unregister(requestID)
            limiter.refund(key: auth.keyID, tokens: charged, nowNanos: EventClock.nowUnixNanos())
            logger.error("request publish failed", metadata: [LogKey.tenantID: "\(auth.tenantID)",
                                                              LogKey.requestID: "\(requestID)", "error": "\(error)"])
            return Self.errorResponse(.serviceUnavailable(), requestID: requestID)
        }
        metrics.counter(.chatRequestsTotal, [(.tenant, auth.tenantID), (.outcome, "accepted")]).increment()
        let context = Exchange(requestID: requestID, tenant: auth.tenantID, keyID: auth.keyID, model: validated.model,
                               charged: charged, started: clock, includeUsage: validated.includeUsage,
                               timeout: configuration.requestTimeout)
        if validated.stream {
            return streamResponse(replies, context: context)
        }
        defer { inbox.unregister(requestID) }
        guard let message = await Self.firstFinal(replies) else {
            return Self.errorResponse(.deadlineExceeded(), requestID: requestID)
        }
        return finalResponse(message, context: context)
    }

    struct Exchange: Sendable {
        let requestID: String
        let tenant: String
        let keyID: String
        let model: String
        let charged: UInt32
        let started: ContinuousClock.Instant
        let includeUsage: Bool
        let timeout: Duration
    }

    /// The first completed/failed reply, or nil when the inbox ends the stream at the deadline.
    static func firstFinal(_ replies: AsyncStream<NATSMessage>) async -> NATSMessage? {
        for await message in replies where message.headers[Headers.eventType] != OrchestratorEvent.chunk {
            return message
        }
        return nil
    }

    func finalResponse(_ message: NATSMessage, context: Exchange) -> Response {
        if message.headers[Headers.eventType] == Subjects.EventKind.chatFailed.rawValue {
            guard let failed = try? ChatFailed(protobuf: message.payload) else {
                return Self.errorResponse(.upstreamError(), requestID: context.requestID)
            }
            limiter.refund(key: context.keyID, tokens: context.charged, nowNanos: EventClock.nowUnixNanos())
            return Self.errorResponse(GatewayError(failed: failed), requestID: context.requestID)
        }
        guard let completed = try? ChatCompleted(protobuf: message.payload) else {
            return Self.errorResponse(.upstreamError(), requestID: context.requestID)
        }
        reconcile(completed, context: context)
        let body = OpenAIResponse.chatCompletion(completed, requestID: context.requestID,
                                                 model: completed.agent.isEmpty ? context.model : completed.agent,
                                                 createdUnixSeconds: EventClock.nowUnixNanos() / 1_000_000_000)
        var response = Self.json(.ok, body, requestID: context.requestID)
        response.headers[HTTPField.Name("x-switchyard-overhead-ms")!] = Self.overheadMilliseconds(completed, context: context)
        return response
    }

    private func reconcile(_ completed: ChatCompleted, context: Exchange) {
        let actual = completed.usage?.totalTokens ?? 0
        limiter.reconcile(key: context.keyID, charged: context.charged, actual: actual, nowNanos: EventClock.nowUnixNanos())
        metrics.counter(.chatCompletionsTotal, [(.tenant, context.tenant), (.agent, completed.agent),
                                                (.outcome, completed.handedOff ? "handoff" : "answered")]).increment()
    }

    /// Platform overhead: the whole request minus the time spent inside upstream providers.
    static func overheadMilliseconds(_ completed: ChatCompleted, context: Exchange) -> String {
        let total = ContinuousClock.now - context.started
        let providerNanos = completed.attempts.reduce(Int64(0)) {
            $0 + max(0, $1.endedAtUnixNanos - $1.startedAtUnixNanos)
        }
        let local = completed.provider == "local" || completed.provider == "consent"
        let overhead = Double(total.nanosecondsValue - (local ? 0 : providerNanos)) / 1_000_000
        return String(format: "%.3f", max(0, overhead))
    }

    func streamResponse(_ replies: AsyncStream<NATSMessage>, context: Exchange) -> Response {
        let encoder = ChatCompletionStreamEncoder(requestID: context.requestID, model: context.model,
                                                  createdUnixSeconds: EventClock.nowUnixNanos() / 1_000_000_000,
                                                  includeUsage: context.includeUsage)
        let inbox = self.inbox
        let body = ResponseBody { writer in
            defer { inbox.unregister(context.requestID) }
            try await writer.write(ByteBuffer(bytes: encoder.roleChunk()))
            // The inbox ends the reply stream at the deadline, which ends this loop with no outcome.
            var outcome: NATSMessage?
            for await message in replies {
                if message.headers[Headers.eventType] == OrchestratorEvent.chunk {
                    guard let chunk = try? StreamChunk(protobuf: message.payload) else { continue }
                    // A client that went away stops the writes, not the recording of usage.
                    try? await writer.write(ByteBuffer(bytes: encoder.contentChunk(chunk.delta)))
                } else {
                    outcome = message
                    break
                }
            }
            guard let outcome else {
                try await writer.write(ByteBuffer(bytes: GatewayError.deadlineExceeded().sseEvent))
                try await writer.write(ByteBuffer(bytes: ChatCompletionStreamEncoder.done))
                try await writer.finish(nil)
                return
            }
            if outcome.headers[Headers.eventType] == Subjects.EventKind.chatFailed.rawValue {
                let error = (try? ChatFailed(protobuf: outcome.payload)).map(GatewayError.init(failed:)) ?? .upstreamError()
                self.limiter.refund(key: context.keyID, tokens: context.charged, nowNanos: EventClock.nowUnixNanos())
                try await writer.write(ByteBuffer(bytes: error.sseEvent))
            } else if let completed = try? ChatCompleted(protobuf: outcome.payload) {
                self.reconcile(completed, context: context)
                try await writer.write(ByteBuffer(bytes: encoder.finishChunk(
                    finishReason: completed.finishReason.isEmpty ? "stop" : completed.finishReason)))
                if context.includeUsage, let usage = completed.usage {
                    try await writer.write(ByteBuffer(bytes: encoder.usageChunk(usage)))
                }
            }
            try await writer.write(ByteBuffer(bytes: ChatCompletionStreamEncoder.done))
            try await writer.finish(nil)
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("x-switchyard-request-id")!] = context.requestID
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: responses

    static func json(_ status: HTTPResponse.Status, _ body: [UInt8], requestID: String?) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let requestID { headers[HTTPField.Name("x-switchyard-request-id")!] = requestID }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func errorResponse(_ error: GatewayError, requestID: String?) -> Response {
        var response = json(HTTPResponse.Status(code: error.status), error.body, requestID: requestID)
        if let retry = error.retryAfterSeconds { response.headers[.retryAfter] = String(retry) }
        return response
    }
}

/// The reply-subject event type the orchestrator uses for stream chunks.
public enum OrchestratorEvent {
    public static let chunk = "chat.chunk"
}

/// Builds the gateway process: NATS, the REQUESTS stream, the KV mirror, the reply inbox, the HTTP server.
public func buildGateway(configuration: ServiceConfiguration, gateway: GatewayConfiguration, logger: Logger,
                         metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
                         onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> ServiceGroup {
    let platform = try await ServicePlatform.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await platform.jetStream.ensureStream(StandardStreams.requests)
    let directory = TenantDirectory(logger: logger, verifier: configuration.mirrorVerifier)
    platform.health.register(name: "kv") { directory.isSynced ? .up : .down("tenant mirror not loaded") }
    let inbox = try ReplyInbox(connection: platform.connection, instanceID: configuration.instanceID)
    let limiter = RateLimiterRegistry()
    let chat = ChatGateway(jetStream: platform.jetStream, directory: directory, inbox: inbox,
                           limiter: limiter, configuration: gateway, metrics: metrics, logger: logger)
    let router = Router(context: BasicRequestContext.self)
    chat.addRoutes(to: router)  // ops routes (/health, /metrics) stay on the ops port, off the public API
    let app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort),
                             serverName: "switchyard-gateway"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
        logger: logger)
    return platform.serviceGroup([
        TenantDirectoryService(directory: directory, jetStream: platform.jetStream, logger: logger),
        ReplyInboxService(inbox: inbox),
        ReplicaHeartbeatService(connection: platform.connection, instanceID: configuration.instanceID,
                                limiter: limiter, logger: logger),
        app,
    ], signals: signals)
}

