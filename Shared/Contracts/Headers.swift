import Messaging
import Schemas

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

/// How a reply on a gateway's reply subject is typed. Since ADR 0010 `Switchyard-Event-Type` carries the
/// protobuf full name; releases before it sent `chat.chunk` / `chat.failed`. Gateways accept both for one
/// release, so a rolling deploy that updates gateways first never mistakes an old orchestrator's chunk for
/// the final answer.
public enum ReplyType {
    static let legacyChunk = "chat.chunk"
    static let legacyFailure = "chat.failed"

    /// A `StreamChunk`.
    public static func isChunk(_ eventType: String?) -> Bool {
        eventType == StreamChunk.protoName || eventType == legacyChunk
    }

    /// A `ChatFailed`.
    public static func isFailure(_ eventType: String?) -> Bool {
        eventType == ChatFailed.protoName || eventType == legacyFailure
    }
}
