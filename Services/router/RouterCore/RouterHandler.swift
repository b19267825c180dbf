import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Telemetry
import Tenancy

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

    /// The typed consumer has already waited for the mirror, decoded the request and validated its meta.
    public func handle(_ request: ChatRequested, _ context: EventContext) async throws {
        let meta = context.meta
        let tenant = meta.tenantID
        let headers = context.hopHeaders
        if StaleWork.isStale(deadlineUnixNanos: request.deadlineUnixNanos, nowUnixNanos: EventClock.nowUnixNanos()) {
            metrics.counter(.chatRequestsTotal, [(.tenant, tenant), (.agent, ""), (.outcome, "stale")]).increment()
            return
        }
        let outcome: RoutingOutcome
        var packageName = ""
        if let snapshot = directory.snapshot(tenant: tenant) {
            packageName = snapshot.manifest?.packageName ?? snapshot.tenant.packageName
            outcome = policy.decide(RoutingInput(tenant: snapshot.tenant, manifest: snapshot.manifest,
                                                 rollouts: snapshot.rollouts, request: request))
        } else {
            outcome = .rejected(RoutingRejection(.tenantSuspended, httpStatus: 403,
                                                 message: "The tenant is not active."))
        }
        switch outcome {
        case .routed(let decision):
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
                                traceID: meta.traceID),
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
