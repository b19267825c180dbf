import Contracts
import Messaging
import Schemas

/// The dimensions of a rollup row: who, which agent version and cohort, through which channel and package.
public struct Dimensions: Hashable, Sendable {
    public var tenant: String
    public var agent: String
    public var version: String
    public var cohort: String
    public var channel: String
    public var package: String

    public init(tenant: String, agent: String = "", version: String = "", cohort: String = "", channel: String = "",
                package: String = "") {
        self.tenant = tenant
        self.agent = agent
        self.version = version
        self.cohort = cohort
        self.channel = channel
        self.package = package
    }
}

/// What one event on the log contributes to the rollups. Each counted event carries its request's dimensions
/// (the producers copy them from the `ChatRouted`), so every event is folded on its own, without joins, and
/// any subset of the log folds to the same figures whatever order it arrives in.
public struct EventFact: Sendable {
    public enum Kind: Sendable {
        /// A routed request (`evt.chat.routed`): counts as a request and starts (or continues) a conversation.
        case routed
        /// An answer (`evt.chat.completed`).
        case completed(provider: String, model: String, promptTokens: Int64, completionTokens: Int64, handedOff: Bool)
        /// A failure (`evt.chat.failed`); one the router produced (never routed) also counts as a request.
        case failed(code: String, unrouted: Bool)
        case handoff
        case consent(outcome: String)

        /// The event kind as the applied-sequences ledger names it (one durable per kind delivers it live).
        var ledgerName: String {
            switch self {
            case .routed: "chat.routed"
            case .completed: "chat.completed"
            case .failed: "chat.failed"
            case .handoff: "handoff.requested"
            case .consent: "consent.checked"
            }
        }

        /// Every ledger name, in the order their advisory locks are taken.
        static let ledgerNames = ["chat.routed", "chat.completed", "chat.failed", "handoff.requested", "consent.checked"]
    }

    public var sequence: UInt64
    /// Start of the minute the event occurred in (producer clock), unix seconds.
    public var minute: Int64
    public var occurredAtUnixNanos: Int64
    public var dimensions: Dimensions
    public var conversation: String
    public var kind: Kind
    /// Hop → latency in microseconds (completions and failures that carry hop stamps).
    public var latencies: [(hop: String, micros: Int64)] = []

    /// The minute (unix seconds) containing `unixNanos`.
    public static func minute(of unixNanos: Int64) -> Int64 {
        let seconds = unixNanos >= 0 ? unixNanos / 1_000_000_000 : (unixNanos - 999_999_999) / 1_000_000_000
        return seconds - ((seconds % 60) + 60) % 60
    }

    /// The fact of one delivery from the event log; nil for kinds analytics doesn't count (requests are counted
    /// once routed; decisions, tenant, budget and audit events carry nothing for the rollups) and for eval runs'
    /// events.
    /// - Throws: ``PoisonMessage`` for an undecodable payload or invalid metadata (dead-lettered, never folded).
    public static func from(_ delivery: JetStreamDelivery) throws(PoisonMessage) -> EventFact? {
        guard let kind = kind(ofSubject: delivery.subject) else { return nil }
        do {
            switch kind {
            case .chatRouted:
                let event = try ChatRouted(protobuf: delivery.payload)
                let request = event.request ?? ChatRequested()
                return try fact(delivery, event.meta, Dimensions(
                    tenant: "", agent: event.agent, version: event.agentVersion, cohort: event.rolloutCohort,
                    channel: request.channel, package: event.packageName), request.conversationID, .routed)
            case .chatCompleted:
                let event = try ChatCompleted(protobuf: delivery.payload)
                let usage = event.usage ?? Usage()
                guard var fact = try fact(delivery, event.meta, Dimensions(
                    tenant: "", agent: event.agent, version: event.agentVersion, cohort: event.rolloutCohort,
                    channel: event.channel, package: event.packageName), event.conversationID,
                    .completed(provider: event.provider, model: event.model, promptTokens: Int64(usage.promptTokens),
                               completionTokens: Int64(usage.completionTokens), handedOff: event.handedOff))
                else { return nil }
                fact.latencies = HopLatency.segments(event.hops)
                return fact
            case .chatFailed:
                let event = try ChatFailed(protobuf: delivery.payload)
                let unrouted = event.meta?.producer == "router" || event.agent.isEmpty
                guard var fact = try fact(delivery, event.meta, Dimensions(
                    tenant: "", agent: event.agent, version: event.agentVersion, cohort: event.rolloutCohort,
                    channel: event.channel, package: event.packageName), event.conversationID,
                    .failed(code: event.errorCode.isEmpty ? "unknown" : String(event.errorCode.prefix(64)),
                            unrouted: unrouted))
                else { return nil }
                fact.latencies = HopLatency.segments(event.hops)
                return fact
            case .handoffRequested:
                let event = try HandoffRequested(protobuf: delivery.payload)
                return try fact(delivery, event.meta, Dimensions(
                    tenant: "", agent: event.agent, version: event.agentVersion, cohort: event.rolloutCohort,
                    channel: event.channel, package: event.packageName), event.conversationID, .handoff)
            case .consentChecked:
                let event = try ConsentChecked(protobuf: delivery.payload)
                return try fact(delivery, event.meta, Dimensions(
                    tenant: "", agent: event.agent, version: event.agentVersion, cohort: event.rolloutCohort,
                    channel: event.channel, package: event.packageName), event.conversationID,
                    .consent(outcome: event.outcome))
            default:
                return nil
            }
        } catch let error as PoisonMessage {
            throw error
        } catch {
            throw PoisonMessage("undecodable \(kind.rawValue) event: \(error)")
        }
    }

    /// `evt.<kind>.<tenant>` → kind (the kind itself contains dots).
    static func kind(ofSubject subject: String) -> EventKind? {
        // On the UTF-8 view: Character-wise searching was a twentieth of the fold's CPU.
        let bytes = subject.utf8
        guard bytes.starts(with: "evt.".utf8), let lastDot = bytes.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        let start = bytes.index(bytes.startIndex, offsetBy: 4)
        guard start < lastDot else { return nil }
        return EventKind(rawValue: String(subject[start..<lastDot]))
    }

    /// nil for an eval run's event: eval traffic is never part of a tenant's figures (the eval service keeps its
    /// own results).
    private static func fact(_ delivery: JetStreamDelivery, _ meta: EventMeta?, _ dimensions: Dimensions,
                             _ conversation: String, _ kind: Kind) throws(PoisonMessage) -> EventFact? {
        guard let meta, TenantID.isValid(meta.tenantID), !meta.eventID.isEmpty, meta.occurredAtUnixNanos > 0,
              delivery.subject.hasSuffix("." + meta.tenantID) else {
            throw PoisonMessage("event without valid metadata (tenant, event id, time) for its subject")
        }
        guard meta.evalRunID.isEmpty else { return nil }
        var dimensions = dimensions
        dimensions.tenant = meta.tenantID
        // Dimensions become primary-key columns: bounded length (they come from manifests and the gateway).
        dimensions.agent = String(dimensions.agent.prefix(128))
        dimensions.version = String(dimensions.version.prefix(64))
        dimensions.cohort = String(dimensions.cohort.prefix(16))
        dimensions.channel = String(dimensions.channel.prefix(64))
        dimensions.package = String(dimensions.package.prefix(64))
        return EventFact(sequence: delivery.streamSequence, minute: minute(of: meta.occurredAtUnixNanos),
                         occurredAtUnixNanos: meta.occurredAtUnixNanos, dimensions: dimensions,
                         conversation: String(conversation.prefix(256)), kind: kind)
    }
}

/// Per-hop latency from the hop stamps an event carries (`gateway.in`, `router`, `orchestrator`,
/// `orchestrator.done`): one segment per consecutive pair, named `<from>→<to>`, plus `total` (first to last).
public enum HopLatency {
    public static let total = "total"

    public static func segments(_ hops: [HopStamp]) -> [(hop: String, micros: Int64)] {
        guard hops.count >= 2 else { return [] }
        var result: [(hop: String, micros: Int64)] = []
        result.reserveCapacity(hops.count)
        for index in 1..<hops.count {
            let from = hops[index - 1], to = hops[index]
            result.append((name(from.hop, to.hop), max(0, (to.unixNanos - from.unixNanos) / 1000)))
        }
        result.append((total, max(0, (hops[hops.count - 1].unixNanos - hops[0].unixNanos) / 1000)))
        return result
    }

    /// The chat path's own segments, shared rather than built per event.
    static let known: [String: [String: String]] = {
        var known: [String: [String: String]] = [:]
        for (from, to) in [("gateway.in", "router"), ("router", "orchestrator"), ("orchestrator", "orchestrator.done")] {
            known[from, default: [:]][to] = "\(from)→\(to)"
        }
        return known
    }()

    /// `<from>→<to>`, at most 96 characters.
    static func name(_ from: String, _ to: String) -> String {
        if let name = known[from]?[to] { return name }
        return String("\(from)→\(to)".prefix(96))
    }
}
