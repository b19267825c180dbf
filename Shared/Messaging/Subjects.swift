/// Every subject, stream, consumer and KV bucket name, declared once (see docs/adr/0002).
/// Tenant ids passed here must already be validated (`[a-z0-9][a-z0-9-]{0,62}`) at the edge.
public enum Subjects {
    public static func chatRequest(tenant: String) -> String { "chat.request.\(tenant)" }
    public static let chatRequestAll = "chat.request.*"
    public static func agentTask(agent: String) -> String { "agent.task.\(agent)" }
    public static let agentTaskAll = "agent.task.*"
    public static func usage(tenant: String) -> String { "usage.\(tenant)" }
    public static let usageAll = "usage.*"
    /// Event log: `evt.<kind>.<tenant>`, e.g. `evt.chat.completed.demo-restaurant`.
    public static func event(_ kind: EventKind, tenant: String) -> String { "evt.\(kind.rawValue).\(tenant)" }
    public static let eventsAll = "evt.>"
    public static func deadLetter(stream: String, consumer: String) -> String { "dlq.\(stream).\(consumer)" }
    public static let deadLetterAll = "dlq.>"
    /// Admin commands (core request/reply): `admin.<service>.<command>`.
    public static func admin(service: String, command: String) -> String { "admin.\(service).\(command)" }

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
        case evalCompleted = "eval.completed"
        case auditRecorded = "audit.recorded"
    }
}

public enum StreamNames {
    public static let requests = "REQUESTS"
    public static let tasks = "TASKS"
    public static let events = "EVENTS"
    public static let usage = "USAGE"
    public static let deadLetter = "DEADLETTER"
}

public enum BucketNames {
    public static let tenants = "tenants"
    public static let apiKeys = "apikeys"
    public static let budgets = "budgets"
}

public enum Headers {
    public static let messageID = "Nats-Msg-Id"
    public static let replyTo = "Switchyard-Reply-To"
    public static let traceparent = "traceparent"
    public static let tracestate = "tracestate"
    public static let eventType = "Switchyard-Event-Type"
}

/// The platform's streams as recommended by DESIGN.md; each owning service provisions its own at start.
public enum StandardStreams {
    public static let requests = StreamSpec(name: StreamNames.requests, subjects: [Subjects.chatRequestAll],
                                            retention: .workQueue, maxAge: .seconds(3600))
    public static let tasks = StreamSpec(name: StreamNames.tasks, subjects: [Subjects.agentTaskAll],
                                         retention: .workQueue, maxAge: .seconds(3600))
    public static let events = StreamSpec(name: StreamNames.events, subjects: [Subjects.eventsAll],
                                          retention: .limits, maxAge: .seconds(30 * 24 * 3600))
    public static let usage = StreamSpec(name: StreamNames.usage, subjects: [Subjects.usageAll],
                                         retention: .limits, maxAge: .seconds(400 * 24 * 3600),
                                         duplicateWindow: .seconds(600), denyDelete: true, denyPurge: true)
    public static let deadLetter = StreamSpec(name: StreamNames.deadLetter, subjects: [Subjects.deadLetterAll],
                                              retention: .limits, maxAge: .seconds(30 * 24 * 3600))
    public static let all = [requests, tasks, events, usage, deadLetter]
}
