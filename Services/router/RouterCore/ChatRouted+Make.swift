import Schemas
import Security

/// Names the router stamps on the events it produces.
public enum RouterEvents {
    /// `HopStamp.hop` the router appends.
    public static let hopName = "router"

    /// Deterministic event id of the `ChatRouted` for a request: lower-case hex of the first 16 bytes of
    /// SHA-256("<request event id>:routed"). A redelivered request yields the same id, so JetStream's
    /// `Nats-Msg-Id` de-duplication drops the second publish.
    public static func routedEventID(forRequestEventID requestEventID: String) -> String {
        Hex.encode(SHA256.hash("\(requestEventID):routed").prefix(16))
    }
}

/// The `ChatRouted` event for `request` routed by `decision`: embeds the request, carries a new `EventMeta`
/// (tenant, request and trace id copied; deterministic event id; `occurredAt = nowUnixNanos`) and the request's
/// hops plus a router hop stamped at `nowUnixNanos`, and the tenant's package (a dimension of analytics).
public func makeRouted(_ request: ChatRequested, decision: RoutingDecision, producer: String,
                       nowUnixNanos: Int64, packageName: String = "") -> ChatRouted {
    let requestMeta = request.meta ?? EventMeta()
    let meta = EventMeta(
        eventID: RouterEvents.routedEventID(forRequestEventID: requestMeta.eventID),
        tenantID: requestMeta.tenantID,
        occurredAtUnixNanos: nowUnixNanos,
        producer: producer,
        schemaVersion: EventMeta.currentSchemaVersion,
        requestID: requestMeta.requestID,
        traceID: requestMeta.traceID,
        evalRunID: requestMeta.evalRunID
    )
    return ChatRouted(
        meta: meta,
        request: request,
        agent: decision.agent,
        agentVersion: decision.agentVersion,
        provider: decision.provider,
        model: decision.model,
        intent: decision.intent,
        rolloutCohort: decision.cohort.rawValue,
        reason: decision.reason,
        fallbackAgent: decision.fallbackAgent,
        hops: request.hops + [HopStamp(hop: RouterEvents.hopName, unixNanos: nowUnixNanos)],
        packageName: packageName,
        canaryPercent: decision.canaryPercent
    )
}
