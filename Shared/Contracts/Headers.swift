import Messaging

/// NATS header names of the platform, declared once.
public enum Headers {
    /// JetStream de-duplication id, derived from tenant + event id (never from client input).
    public static let messageID = NATSHeaderName.messageID
    /// The gateway instance's reply subject for this request (see ``ReplySubjects``).
    public static let replyTo = "Switchyard-Reply-To"
    /// W3C trace context.
    public static let traceparent = "traceparent"
    public static let tracestate = "tracestate"
    /// The payload's protobuf full name, e.g. `switchyard.v1.ChatCompleted` (``EventKind/protoName``).
    public static let eventType = "Switchyard-Event-Type"

    /// Headers that travel with every hop of a request: trace context and the gateway's reply subject.
    public static let hop = [traceparent, tracestate, replyTo]
}

/// Headers that travel with every hop of a request: trace context and the gateway's reply subject.
public enum HopHeaders {
    public static func propagate(from headers: NATSHeaders) -> NATSHeaders {
        var result: NATSHeaders = [:]
        for key in Headers.hop {
            if let value = headers[key] { result[key] = value }
        }
        return result
    }
}
