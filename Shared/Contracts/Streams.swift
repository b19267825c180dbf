import Messaging

/// A stream and the one service that owns it: the owner creates it and updates its configuration at start;
/// every other service only makes sure it exists (creating it from this contract when it does not, never
/// updating it), so two versions running side by side during a rolling deploy never flip its configuration
/// back and forth (docs/adr/0010).
public struct StreamContract: Sendable, Equatable {
    public var spec: StreamSpec
    public var owner: ServiceName
    public var name: String { spec.name }

    public init(_ spec: StreamSpec, owner: ServiceName) {
        self.spec = spec
        self.owner = owner
    }
}

public enum StreamNames {
    public static let events = "EVENTS"
    public static let usage = "USAGE"
    public static let deadLetter = "DEADLETTER"
}

/// The platform's streams (docs/ARCHITECTURE.md, "Subjects, streams and consumers"; docs/adr/0011).
public enum Streams {
    /// The event log: every decision, one message per fact. Its events are also the work items: the router's
    /// durable reads `evt.chat.requested.*`, the orchestrator's `evt.chat.routed.*` (docs/adr/0011). Bounded by
    /// age and size; the public contract for outside consumers.
    public static let events = StreamContract(
        StreamSpec(name: StreamNames.events, subjects: [Subjects.eventsAll], retention: .limits,
                   maxAge: .seconds(30 * 24 * 3600), maxBytes: 8 << 30),
        owner: .router)
    /// Usage records: long retention, no delete or purge, a wide de-duplication window (billing's ledger source).
    public static let usage = StreamContract(
        StreamSpec(name: StreamNames.usage, subjects: [Subjects.usageAll], retention: .limits,
                   maxAge: .seconds(400 * 24 * 3600), duplicateWindow: .seconds(600), denyDelete: true,
                   denyPurge: true),
        owner: .orchestrator)
    /// Poison and exhausted messages of every consumer (`dlq.<stream>.<consumer>`).
    public static let deadLetter = StreamContract(
        StreamSpec(name: StreamNames.deadLetter, subjects: [Subjects.deadLetterAll], retention: .limits,
                   maxAge: .seconds(30 * 24 * 3600)),
        owner: .router)

    public static let all = [events, usage, deadLetter]
}
