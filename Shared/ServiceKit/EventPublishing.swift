import Contracts
import Messaging
import Schemas
import Security

/// Deterministic ids for events produced *because of* a consumed message: a redelivered input yields the same
/// id, so `Nats-Msg-Id` de-duplication drops the second publish (docs/adr/0004).
public enum DerivedEventID {
    /// Lower-case hex of the first 16 bytes of SHA-256("<input event id>:<kind>").
    public static func make(from inputEventID: String, kind: String) -> String {
        Hex.encode(SHA256.hash("\(inputEventID):\(kind)").prefix(16))
    }
}

extension JetStream {
    /// Publishes an event to the event log (`evt.<kind>.<tenant>`), de-duplicated by `<tenant>:<event id>`, with
    /// the payload's protobuf full name in `Switchyard-Event-Type`.
    @discardableResult
    public func publishEvent(_ kind: EventKind, tenant: String, eventID: String, payload: [UInt8],
                             headers: NATSHeaders = [:]) async throws(NATSError) -> PublishAck {
        var headers = headers
        headers[Headers.eventType] = kind.protoName
        return try await publish(OutboundMessage(subject: Subjects.event(kind, tenant: tenant), payload: payload,
                                                 headers: headers, messageID: "\(tenant):\(eventID)"))
    }
}

extension NATSConnection {
    /// Publishes a reply (core NATS) typed by its payload's protobuf full name in `Switchyard-Event-Type`.
    public func publishReply<Message: ProtoMessage>(_ message: Message, to subject: String,
                                                   headers: NATSHeaders = [:]) throws(NATSError) {
        try publish(subject, payload: message.protobufBytes(), headers: Self.replyHeaders(headers, for: Message.self))
    }

    /// A reply's headers: the request's, typed by `Message`, without the reply-to (a reply is never answered).
    public static func replyHeaders<Message: ProtoMessage>(_ headers: NATSHeaders, for _: Message.Type) -> NATSHeaders {
        var headers = headers
        headers[Headers.eventType] = Message.protoName
        headers.removeValue(forKey: Headers.replyTo)
        return headers
    }
}

/// Work read again long after its deadline — a work durable recreated on the event log starts up to
/// `Consumers.replayWindow` back (docs/adr/0011). The client got its 504 long ago, and whatever the handler
/// published now would fall outside the event log's de-duplication window and be stored twice, so such work is
/// acked without effect. Work that is merely late (within the window) is still handled: the orchestrator
/// records it as failed with `deadline_exceeded`.
public enum StaleWork {
    /// Past its deadline by more than the event log's duplicate window.
    public static func isStale(deadlineUnixNanos: Int64, nowUnixNanos: Int64,
                               window: Duration = Streams.events.spec.duplicateWindow) -> Bool {
        deadlineUnixNanos > 0 && nowUnixNanos - deadlineUnixNanos > window.nanosecondsValue
    }
}
