import Messaging
import Schemas
import ServiceKit
import Tenancy

/// One usage event as a ledger line, validated. Anything that can't be billed correctly is poison: it goes to
/// the dead-letter stream with the reason, bills nothing, and never holds up the events behind it.
public struct UsageLine: Sendable, Equatable {
    public var tenantID: String
    public var eventID: String
    public var requestID: String
    public var conversationID: String
    public var agent: String
    public var provider: String
    public var model: String
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var estimated: Bool
    public var occurredAtUnixNanos: Int64
    public var streamSequence: Int64
    /// The tenant's time zone (`Tenant.time_zone`; empty = UTC): which day and month the line counts toward.
    public var timeZone: String = ""

    /// More tokens than any single request can use: a corrupt or hostile count, never billed.
    public static let maxTokensPerRequest: Int64 = 10_000_000
    /// Longest provider, model, agent or id accepted.
    public static let maxNameLength = 256

    /// Validates `event`. `directory` (when given) must know the tenant.
    public init(_ event: UsageRecorded, context: EventContext, directory: TenantDirectory?) throws(PoisonMessage) {
        let meta = context.meta
        var timeZone = ""
        if let directory {
            guard let snapshot = directory.snapshot(tenant: meta.tenantID) else {
                throw PoisonMessage("usage for an unknown tenant")
            }
            timeZone = snapshot.tenant.timeZone
        }
        let prompt = Int64(event.promptTokens)
        let completion = Int64(event.completionTokens)
        guard prompt + completion > 0 else { throw PoisonMessage("usage without tokens") }
        guard prompt <= Self.maxTokensPerRequest, completion <= Self.maxTokensPerRequest else {
            throw PoisonMessage("implausible token count (more than \(Self.maxTokensPerRequest) per request)")
        }
        guard meta.occurredAtUnixNanos > 0 else { throw PoisonMessage("usage without a time") }
        for (name, value) in [("provider", event.provider), ("model", event.model)] where value.isEmpty {
            throw PoisonMessage("usage without a \(name)")
        }
        for value in [event.provider, event.model, event.agent, event.conversationID, meta.requestID, meta.eventID] {
            guard value.utf8.count <= Self.maxNameLength, !value.utf8.contains(0) else {
                throw PoisonMessage("usage with an over-long or NUL-containing name or id")
            }
        }
        tenantID = meta.tenantID
        eventID = meta.eventID
        requestID = meta.requestID
        conversationID = event.conversationID
        agent = event.agent
        provider = event.provider
        model = event.model
        promptTokens = prompt
        completionTokens = completion
        estimated = event.estimated
        occurredAtUnixNanos = meta.occurredAtUnixNanos
        streamSequence = Int64(clamping: context.delivery.streamSequence)
        self.timeZone = timeZone
    }
}
