@preconcurrency import CNats
import Foundation
import Logging

extension JetStream {
    /// A message stored in `stream` at `sequence` (`js_GetMsg`), or nil when it is gone.
    public func storedMessage(stream: String, sequence: UInt64) async throws(NATSError) -> NATSMessage? {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> NATSMessage? in
            var msg: OpaquePointer?
            var jsErr = jsErrCode(0)
            let status = js_GetMsg(&msg, ctx.pointer, stream, sequence, nil, &jsErr)
            if status == NATS_NOT_FOUND || jsErr == JSNoMessageFoundErr { return nil }
            guard status == NATS_OK, let msg else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "reading a stored message", jsErr: jsErr)
            }
            defer { natsMsg_Destroy(msg) }
            return NATSMessage(copying: msg)
        }
    }
}

/// Parks messages the server gave up on (docs/adr/0004, known gap 1). A message whose handler kills the process on
/// every delivery never reaches the consume loop's dead-letter path: each delivery ends with the process dying,
/// and after `MaxDeliver` the server stops delivering it and publishes
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`.
///
/// Those advisories are captured by the `ADVISORIES` stream, so one is never missed while every replica is down
/// (which is exactly when a crash loop ends), and read by a durable consume loop per consumer: it reads the
/// stored message and publishes it to the dead-letter stream with the usual headers and de-duplication id. The
/// message is kept and visible, and the ones behind it go on.
public enum MaxDeliveries {
    /// Keeps the max-deliveries advisories for a week.
    public static let stream = StreamSpec(name: "ADVISORIES", subjects: ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"],
                                          maxAge: .seconds(7 * 86_400))

    public static func subject(stream: String, consumer: String) -> String {
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.\(stream).\(consumer)"
    }

    /// The consume loop that parks `consumer`'s given-up messages (provisions the stream and its durable).
    public static func service(jetStream: JetStream, stream: String, consumer: String, logger: Logger,
                               onDeadLetter: (@Sendable (_ stream: String, _ consumer: String) -> Void)? = nil)
        async throws -> JetStreamConsumerService
    {
        try await jetStream.ensureStream(Self.stream)
        let spec = ConsumerSpec(durable: "maxdeliver-\(stream)-\(consumer)",
                                filterSubject: subject(stream: stream, consumer: consumer), maxDeliver: 10)
        try await jetStream.ensureConsumer(stream: Self.stream.name, spec)
        return JetStreamConsumerService(jetStream: jetStream, stream: Self.stream.name, consumer: spec, batchSize: 8,
                                        logger: logger) { delivery in
            if try await park(delivery.payload, stream: stream, consumer: consumer, jetStream: jetStream, logger: logger) {
                onDeadLetter?(stream, consumer)
            }
        }
    }

    /// The advisory's fields used here.
    struct Advisory: Decodable {
        var stream: String
        var consumer: String
        var streamSequence: UInt64
        var deliveries: Int

        enum CodingKeys: String, CodingKey {
            case stream, consumer, deliveries
            case streamSequence = "stream_seq"
        }
    }

    /// Dead-letters the message an advisory names (at least once: the dead-letter publish is de-duplicated by
    /// stream and sequence). An unreadable advisory is poison; a failed read or publish is retried.
    /// Parks the message the advisory names; false when it is already gone.
    @discardableResult
    static func park(_ payload: [UInt8], stream: String, consumer: String, jetStream: JetStream,
                     logger: Logger) async throws -> Bool {
        guard let advisory = try? JSONDecoder().decode(Advisory.self, from: Data(payload)),
              advisory.stream == stream, advisory.consumer == consumer else {
            throw PoisonMessage("unreadable max-deliveries advisory")
        }
        guard let stored = try await jetStream.storedMessage(stream: stream, sequence: advisory.streamSequence) else {
            return false  // already gone (aged out, or removed from a work queue)
        }
        let delivery = JetStreamDelivery(subject: stored.subject, payload: stored.payload, headers: stored.headers,
                                         stream: stream, consumer: consumer, streamSequence: advisory.streamSequence,
                                         deliveryCount: advisory.deliveries, storedAtUnixNanos: 0)
        try await jetStream.publish(DeadLetter.message(
            for: delivery, reason: "no outcome after \(advisory.deliveries) deliveries (the handler crashed or hung)"))
        logger.error("message dead-lettered after MaxDeliver without an outcome", metadata: [
            "stream": "\(stream)", "consumer": "\(consumer)", "stream.seq": "\(advisory.streamSequence)",
            "deliveries": "\(advisory.deliveries)",
        ])
        return true
    }
}
