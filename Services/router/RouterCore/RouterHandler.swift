import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Telemetry
import Tenancy
import Tracing

/// The router's names on the event log.
public enum RouterNames {
    public static let producer = ServiceName.router.rawValue
}

/// Handles one `ChatRequested` (an `evt.chat.requested` event, which is also the router's work item): decides the
/// agent, then publishes one `ChatRouted` event — the orchestrator's work item — or answers the gateway with a
/// `ChatFailed` when the request can't be routed. All publishes carry deterministic ids, so a redelivery is
/// harmless; a request replayed long after its deadline (a recreated durable) is dropped (docs/adr/0011).
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

    /// The typed consumer has already waited for the mirror, decoded the request and validated its meta. A
    /// tenant's request never carries an eval run id onward (only ``handleEval(_:_:)`` sets one).
    public func handle(_ request: ChatRequested, _ context: EventContext) async throws {
        var request = request
        if request.meta?.evalRunID.isEmpty == false { request.meta?.evalRunID = "" }
        try await route(request, context, pinnedVersion: nil)
    }

    /// One case of an eval run (`evt.eval.requested`, which only the eval service may publish): routed like a
    /// tenant's request to the agent `request.model` names, on the pinned version, with the run id in the meta
    /// of everything that follows, so billing and the tenant's analytics leave it out.
    public func handleEval(_ eval: EvalRequested, _ context: EventContext) async throws {
        guard var request = eval.request, !context.meta.evalRunID.isEmpty, !eval.pinnedAgentVersion.isEmpty,
              request.meta?.tenantID == context.meta.tenantID, request.meta?.eventID.isEmpty == false
        else { throw PoisonMessage("eval request without a run id, a pinned version or its tenant's request") }
        request.meta?.evalRunID = context.meta.evalRunID
        try await route(request, context, pinnedVersion: eval.pinnedAgentVersion)
    }

    func route(_ request: ChatRequested, _ context: EventContext, pinnedVersion: String?) async throws {
        let meta = request.meta ?? context.meta
        let tenant = meta.tenantID
        // The router's span, child of the gateway's; the orchestrator's span becomes its child.
        let span = context.startSpan("router.route")
        defer { span.end() }
        span.attributes["switchyard.tenant"] = tenant
        let headers = context.headers(continuing: span)
        if StaleWork.isStale(deadlineUnixNanos: request.deadlineUnixNanos, nowUnixNanos: EventClock.nowUnixNanos()) {
            metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.agent, ""), (.outcome, "stale")]).increment()
            return
        }
        let outcome: RoutingOutcome
        var packageName = ""
        if let snapshot = directory.snapshot(tenant: tenant) {
            packageName = snapshot.manifest?.packageName ?? snapshot.tenant.packageName
            outcome = policy.decide(RoutingInput(tenant: snapshot.tenant, manifest: snapshot.manifest,
                                                 rollouts: snapshot.rollouts, request: request,
                                                 pinnedVersion: pinnedVersion))
        } else {
            outcome = .rejected(RoutingRejection(.tenantSuspended, httpStatus: 403,
                                                 message: "The tenant is not active."))
        }
        switch outcome {
        case .routed(let decision):
            span.attributes["switchyard.agent"] = decision.agent
            span.attributes["switchyard.agent_version"] = decision.agentVersion
            let routed = makeRouted(request, decision: decision, producer: RouterNames.producer,
                                    nowUnixNanos: EventClock.nowUnixNanos(), packageName: packageName)
            let bytes = routed.protobufBytes()
            let eventID = routed.meta?.eventID ?? ""
            try await jetStream.publishEvent(.chatRouted, tenant: tenant, eventID: eventID, payload: bytes,
                                             headers: headers)
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
                                traceID: meta.traceID, evalRunID: meta.evalRunID),
                conversationID: request.conversationID, errorCode: rejection.code.description,
                message: rejection.message, httpStatus: UInt32(rejection.httpStatus),
                retriable: rejection.isRetriable, hops: request.hops, channel: request.channel,
                packageName: packageName)
            let bytes = failed.protobufBytes()
            if let reply = context.replySubject ?? (request.replySubject.isEmpty ? nil : request.replySubject) {
                try? jetStream.connection.publishReply(failed, to: reply, headers: headers)
            }
            try await jetStream.publishEvent(.chatFailed, tenant: tenant, eventID: failed.meta?.eventID ?? "",
                                             payload: bytes, headers: headers)
            metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.agent, ""), (.outcome, "rejected")]).increment()
        }
    }
}
