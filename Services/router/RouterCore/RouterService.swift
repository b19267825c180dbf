import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Telemetry
import Tenancy

/// The router's consumer on the REQUESTS stream.
public enum RouterNames {
    public static let producer = "router"
    public static let consumer = ConsumerSpec(durable: "router-requests", ackWait: .seconds(10), maxDeliver: 5)
}

/// Handles one `ChatRequested`: decides the agent, then publishes `ChatRouted` to the agent's task subject and
/// the event log (plus the request itself to `evt.chat.requested`), or answers the gateway with a `ChatFailed`
/// when the request can't be routed. All publishes carry deterministic ids, so a redelivery is harmless.
public struct RouterHandler: Sendable {
    let jetStream: JetStream
    let directory: TenantDirectory
    let metrics: TelemetryMetrics
    let logger: Logger
    let policy = RoutingPolicy()

    public init(jetStream: JetStream, directory: TenantDirectory, metrics: TelemetryMetrics, logger: Logger) {
        self.jetStream = jetStream
        self.directory = directory
        self.metrics = metrics
        self.logger = logger
    }

    public func handle(_ delivery: JetStreamDelivery) async throws {
        // After a restart, don't reject tenants just because the KV mirror is still loading.
        if !directory.isSynced { try await directory.waitUntilSynced() }
        let request = try ChatRequested(protobuf: delivery.payload)
        guard let meta = request.meta, TenantID.isValid(meta.tenantID), !meta.eventID.isEmpty else {
            throw PoisonMessage("request without valid event metadata")
        }
        let tenant = meta.tenantID
        let headers = HopHeaders.propagate(from: delivery.headers)
        let outcome: RoutingOutcome
        if let snapshot = directory.snapshot(tenant: tenant) {
            outcome = policy.decide(RoutingInput(tenant: snapshot.tenant, manifest: snapshot.manifest,
                                                 rollouts: snapshot.rollouts, request: request))
        } else {
            outcome = .rejected(RoutingRejection(.tenantSuspended, httpStatus: 403,
                                                 message: "The tenant is not active."))
        }
        async let requestedEvent: Void = publishRequested(delivery.payload, meta: meta, headers: headers)
        switch outcome {
        case .routed(let decision):
            let routed = makeRouted(request, decision: decision, producer: RouterNames.producer,
                                    nowUnixNanos: EventClock.nowUnixNanos())
            let bytes = routed.protobufBytes()
            let eventID = routed.meta?.eventID ?? ""
            async let task = jetStream.publish(OutboundMessage(
                subject: Subjects.agentTask(agent: decision.agent), payload: bytes, headers: headers,
                messageID: "\(tenant):\(eventID)"))
            async let event = jetStream.publishEvent(.chatRouted, tenant: tenant, eventID: eventID,
                                                     payload: bytes, headers: headers)
            _ = try await (task, event, requestedEvent)
            metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.agent, decision.agent), (.outcome, "routed")])
                .increment()
            logger.debug("request routed", metadata: [
                LogKey.tenantID: "\(tenant)", LogKey.requestID: "\(meta.requestID)", LogKey.traceID: "\(meta.traceID)",
                "agent": "\(decision.agent)", "reason": "\(decision.reason)",
            ])
        case .rejected(let rejection):
            let failed = ChatFailed(
                meta: EventMeta(eventID: DerivedEventID.make(from: meta.eventID, kind: "failed"), tenantID: tenant,
                                occurredAtUnixNanos: EventClock.nowUnixNanos(), producer: RouterNames.producer,
                                schemaVersion: EventMeta.currentSchemaVersion, requestID: meta.requestID,
                                traceID: meta.traceID),
                conversationID: request.conversationID, errorCode: rejection.code.description,
                message: rejection.message, httpStatus: UInt32(rejection.httpStatus),
                retriable: rejection.isRetriable, hops: request.hops)
            let bytes = failed.protobufBytes()
            if let reply = headers[Headers.replyTo] ?? (request.replySubject.isEmpty ? nil : request.replySubject) {
                var replyHeaders = headers
                replyHeaders[Headers.eventType] = Subjects.EventKind.chatFailed.rawValue
                try? jetStream.connection.publish(reply, payload: bytes, headers: replyHeaders)
            }
            try await jetStream.publishEvent(.chatFailed, tenant: tenant, eventID: failed.meta?.eventID ?? "",
                                             payload: bytes, headers: headers)
            try await requestedEvent
            metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.agent, ""), (.outcome, "rejected")]).increment()
        }
    }

    private func publishRequested(_ payload: [UInt8], meta: EventMeta, headers: NATSHeaders) async throws {
        try await jetStream.publishEvent(.chatRequested, tenant: meta.tenantID, eventID: meta.eventID,
                                         payload: payload, headers: headers)
    }
}

/// Builds the router process: NATS, streams and its durable consumer, the KV mirror, the consume loop.
public func buildRouter(configuration: ServiceConfiguration, logger: Logger,
                        metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true) async throws -> ServiceGroup {
    let platform = try await ServicePlatform.connect(configuration: configuration, logger: logger, metrics: metrics)
    for stream in [StandardStreams.requests, StandardStreams.tasks, StandardStreams.events, StandardStreams.deadLetter] {
        try await platform.jetStream.ensureStream(stream)
    }
    try await platform.jetStream.ensureConsumer(stream: StreamNames.requests, RouterNames.consumer)
    let directory = TenantDirectory(logger: logger, verifier: configuration.mirrorVerifier)
    platform.health.register(name: "kv") { directory.isSynced ? .up : .down("tenant mirror not loaded") }
    let handler = RouterHandler(jetStream: platform.jetStream, directory: directory, metrics: metrics, logger: logger)
    let consumer = JetStreamConsumerService(
        jetStream: platform.jetStream, stream: StreamNames.requests, consumer: RouterNames.consumer,
        batchSize: 128, keepAlive: false, logger: logger, handler: handler.handle)
    return platform.serviceGroup([
        TenantDirectoryService(directory: directory, jetStream: platform.jetStream, logger: logger),
        consumer,
    ], signals: signals)
}
