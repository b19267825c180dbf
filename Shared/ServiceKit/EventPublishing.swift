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

/// Headers that travel with every hop of a request: trace context and the gateway's reply subject.
public enum HopHeaders {
    public static func propagate(from headers: NATSHeaders) -> NATSHeaders {
        var result: NATSHeaders = [:]
        for key in [Headers.traceparent, Headers.tracestate, Headers.replyTo] {
            if let value = headers[key] { result[key] = value }
        }
        return result
    }
}

extension JetStream {
    /// Publishes an event to the event log (`evt.<kind>.<tenant>`), de-duplicated by `<tenant>:<event id>`.
    @discardableResult
    public func publishEvent(_ kind: Subjects.EventKind, tenant: String, eventID: String, payload: [UInt8],
                             headers: NATSHeaders = [:]) async throws(NATSError) -> PublishAck {
        var headers = headers
        headers[Headers.eventType] = kind.rawValue
        return try await publish(OutboundMessage(subject: Subjects.event(kind, tenant: tenant), payload: payload,
                                                 headers: headers, messageID: "\(tenant):\(eventID)"))
    }
}
