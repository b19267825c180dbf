import Contracts
import Messaging
import Schemas
import ServiceKit
import Synchronization

/// Where a request's answer goes: the gateway instance's reply subject (core NATS), if the request has one.
final class ReplyChannel: Sendable {
    let connection: NATSConnection
    let subject: String?
    let headers: NATSHeaders
    let stream: Bool
    let model: String
    let conversationID: String
    let chunkIndex = Atomic<UInt32>(0)
    /// Where final answers are kept for a gateway that asks for them again after a reconnect.
    let recent: RecentReplies?

    init(connection: NATSConnection, subject: String?, headers: NATSHeaders, stream: Bool, model: String,
         conversationID: String, recent: RecentReplies? = nil) {
        self.connection = connection
        self.subject = subject
        self.headers = headers
        self.stream = stream
        self.model = model
        self.conversationID = conversationID
        self.recent = recent
    }

    /// Sends a reply typed by its payload (`Switchyard-Event-Type` = the protobuf full name); fire and forget:
    /// the durable record is the event log, and a gateway that went away no longer listens.
    func send<Message: ProtoMessage>(_ message: Message) {
        guard let subject else { return }
        try? connection.publishReply(message, to: subject, headers: headers)
    }

    /// Sends the final answer (ChatCompleted or ChatFailed) and keeps it in ``recent`` — recorded before it is
    /// published, so a resend request that races the publish still finds it.
    func sendFinal<Message: ProtoMessage>(_ message: Message) {
        guard let subject else { return }
        let headers = NATSConnection.replyHeaders(self.headers, for: Message.self)
        let payload = message.protobufBytes()
        recent?.record(subject: subject, payload: payload, headers: headers)
        try? connection.publish(subject, payload: payload, headers: headers)
    }

    /// Streams a content delta (only for `stream: true` requests).
    func chunk(_ delta: String) {
        guard stream, !delta.isEmpty else { return }
        let index = chunkIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        send(StreamChunk(index: index, delta: delta, model: model, conversationID: conversationID))
    }
}
