import Messaging
import Schemas

/// Every subject of the platform, declared once (docs/adr/0002, docs/ARCHITECTURE.md).
/// Tenant ids passed here must already be validated (`TenantID.isValid`) at the edge.
public enum Subjects {
    public static func usage(tenant: String) -> String { "usage.\(tenant)" }
    public static let usageAll = "usage.*"
    /// Event log: `evt.<kind>.<tenant>`, e.g. `evt.chat.completed.demo-restaurant`.
    public static func event(_ kind: EventKind, tenant: String) -> String { "evt.\(kind.rawValue).\(tenant)" }
    /// Every event of one kind, for a consumer's filter: `evt.<kind>.*`.
    public static func eventAll(_ kind: EventKind) -> String { "evt.\(kind.rawValue).*" }
    public static let eventsAll = "evt.>"
    /// Dead letters (`dlq.<stream>.<consumer>`), written by the consume loop (`DeadLetter` in Messaging).
    public static func deadLetter(stream: String, consumer: String) -> String {
        DeadLetter.subject(stream: stream, consumer: consumer)
    }
    public static let deadLetterAll = DeadLetter.allSubjects
    /// Admin commands (core request/reply): `admin.<service>.<command>`.
    public static func admin(service: String, command: String) -> String { "admin.\(service).\(command)" }
    /// Billing's usage query for the gateways' `GET /v1/usage` (core request/reply; `UsageReportRequest` whose
    /// tenant the gateway took from the caller's API key, never from the caller).
    public static let billingUsageQuery = "billing.query.usage"
}

/// The kinds of event on the event log. The raw value is the subject token (`evt.<raw value>.<tenant>`); the
/// `Switchyard-Event-Type` header carries the protobuf full name of the payload (``protoName``), so an
/// outside consumer finds the message type in `Proto/` without a table (docs/adr/0002).
public enum EventKind: String, Sendable, CaseIterable {
    case chatRequested = "chat.requested"
    case chatRouted = "chat.routed"
    case chatCompleted = "chat.completed"
    case chatFailed = "chat.failed"
    case handoffRequested = "handoff.requested"
    case consentChecked = "consent.checked"
    case agentDecision = "agent.decision"
    case tenantChanged = "tenant.changed"
    case budgetExceeded = "budget.exceeded"
    case budgetWarning = "budget.warning"
    case auditRecorded = "audit.recorded"
    /// One case of an eval run (`EvalRequested`: a chat request, its run id and pinned version); only the eval
    /// service's NATS user may publish it, and only the router's eval durable reads it.
    case evalRequested = "eval.requested"
    case evalCompleted = "eval.completed"
    /// One change of a progressive rollout (`RolloutChanged`): started, stepped, rolled back, … — the audit trail
    /// of the eval service's rollout controller.
    case rolloutChanged = "rollout.changed"

    /// The payload's Swift type.
    public var messageType: any ProtoMessage.Type {
        switch self {
        case .chatRequested: ChatRequested.self
        case .chatRouted: ChatRouted.self
        case .chatCompleted: ChatCompleted.self
        case .chatFailed: ChatFailed.self
        case .handoffRequested: HandoffRequested.self
        case .consentChecked: ConsentChecked.self
        case .agentDecision: AgentDecision.self
        case .tenantChanged: TenantChanged.self
        case .budgetExceeded: BudgetExceeded.self
        case .budgetWarning: BudgetWarning.self
        case .auditRecorded: AuditRecorded.self
        case .evalRequested: EvalRequested.self
        case .evalCompleted: EvalCompleted.self
        case .rolloutChanged: RolloutChanged.self
        }
    }

    /// The `Switchyard-Event-Type` header value: the payload's protobuf full name.
    public var protoName: String { messageType.protoName }

    /// The kind whose payload has this protobuf full name.
    public init?(protoName: String) {
        guard let kind = Self.byProtoName[protoName] else { return nil }
        self = kind
    }

    private static let byProtoName: [String: EventKind] = Dictionary(
        uniqueKeysWithValues: allCases.map { ($0.protoName, $0) })
}

extension Subjects {
    /// Source compatibility: `Subjects.EventKind` reads as before.
    public typealias EventKind = Contracts.EventKind
}
