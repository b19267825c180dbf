import Messaging

/// A durable consumer: the stream it reads and its spec. Owned (created and updated) by the service that
/// consumes it; replicas of that service share it.
public struct ConsumerContract: Sendable, Equatable {
    public var stream: StreamContract
    public var spec: ConsumerSpec
    public var owner: ServiceName
    public var durable: String { spec.durable }

    public init(stream: StreamContract, _ spec: ConsumerSpec, owner: ServiceName) {
        self.stream = stream
        self.spec = spec
        self.owner = owner
    }
}

/// Every durable consumer of the platform. Work durables on the event log start at most
/// ``Consumers/replayWindow`` back when (re)created, so a recreated durable never replays the whole log; what
/// it does replay is harmless (idempotent effects, and work past its deadline is dropped, docs/adr/0011).
public enum Consumers {
    /// How far back a recreated work durable starts: longer than any request may wait (the gateway's timeout is
    /// at most 10 min).
    public static let replayWindow: Duration = .seconds(15 * 60)

    /// The router's consumer of chat requests (`evt.chat.requested.*`). AckWait is short because it is how long a
    /// request whose delivery was lost (a router killed, a nats-server restart) waits before it is redelivered; a
    /// live router keeps what it holds with in-progress acks (docs/adr/0016).
    public static let routerRequested = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "router-requested", filterSubject: Subjects.eventAll(.chatRequested),
                     ackWait: .seconds(2), maxDeliver: 5, maxAckPending: 10_000, start: .recent(replayWindow)),
        owner: .router)
    /// The router's consumer of eval runs' requests (`evt.eval.requested.*`): the only place a pinned agent version
    /// is honoured (docs/EVAL.md). Same delivery settings as ``routerRequested``.
    public static let routerEvalRequested = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "router-eval-requested", filterSubject: Subjects.eventAll(.evalRequested),
                     ackWait: .seconds(2), maxDeliver: 5, maxAckPending: 1_000, start: .recent(replayWindow)),
        owner: .router)
    /// The orchestrator's consumer of routed requests (`evt.chat.routed.*`). AckWait is how long a task whose
    /// orchestrator died waits before another replica gets it; a slow provider call is covered by the in-progress
    /// acks the consume loop sends every AckWait/2 while a task runs (docs/adr/0016; `SWITCHYARD_TASK_ACK_WAIT_MS`
    /// overrides it). MaxAckPending covers throughput × the slowest upstream (5,000 req/s × 4 s).
    public static let orchestratorRouted = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "orchestrator-routed", filterSubject: Subjects.eventAll(.chatRouted),
                     ackWait: .seconds(5), maxDeliver: 5, maxAckPending: 20_000, start: .recent(replayWindow)),
        owner: .orchestrator)
    /// The tenant service's consumer of `evt.chat.requested.*` (API key last use; idempotent, so a day back).
    public static let tenantKeyUsage = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "tenant-key-usage", filterSubject: Subjects.eventAll(.chatRequested),
                     ackWait: .seconds(30), maxDeliver: 5, start: .recent(.seconds(24 * 3600))),
        owner: .tenant)

    /// Billing's consumer of the usage log. It starts at the first record the stream holds: a recreated durable
    /// replays everything, which the ledger's (tenant, event id) key makes harmless, and nothing is ever skipped.
    public static let billingUsage = ConsumerContract(
        stream: Streams.usage,
        ConsumerSpec(durable: "billing-usage", filterSubject: Subjects.usageAll, ackWait: .seconds(30),
                     maxDeliver: 10, maxAckPending: 20_000, start: .all),
        owner: .billing)

    /// Analytics' consumers of the event log: one durable per kind it counts (`analytics-chat-routed` on
    /// `evt.chat.routed.*`, …), so the kinds it doesn't count — about half the log — are never delivered to it
    /// (nats-server 2.9 has one filter subject per durable). Each starts at the first event the stream holds: the
    /// rollups fold each stream sequence once (docs/adr/0015), so a recreated durable changes nothing.
    public static let analyticsKinds: [EventKind] = [.chatRouted, .chatCompleted, .chatFailed, .handoffRequested,
                                                     .consentChecked]
    public static let analytics: [ConsumerContract] = analyticsKinds.map { kind in
        ConsumerContract(
            stream: Streams.events,
            ConsumerSpec(durable: "analytics-" + kind.rawValue.replacingOccurrences(of: ".", with: "-"),
                         filterSubject: Subjects.eventAll(kind), ackWait: .seconds(30), maxDeliver: 10,
                         maxAckPending: 40_000, start: .all),
            owner: .analytics)
    }

    public static let all = [routerRequested, routerEvalRequested, orchestratorRouted, tenantKeyUsage, billingUsage] + analytics
}
