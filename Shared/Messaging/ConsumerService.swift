@preconcurrency import CNats
import Logging
import ServiceLifecycle
import Synchronization

/// Errors a message handler can throw to say whether a redelivery may help.
public protocol ClassifiedError: Error {
    /// `true`: nak with backoff and try again; `false`: the message is poison — dead-letter it now.
    var isRetriable: Bool { get }
}

extension NATSError: ClassifiedError {}

/// A handler's verdict that a message can never be processed (malformed payload, unknown tenant, …).
public struct PoisonMessage: ClassifiedError, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var isRetriable: Bool { false }
    public var description: String { "poison message: \(reason)" }
}

/// Where poison and exhausted messages go: `dlq.<stream>.<consumer>` on the `DEADLETTER` stream, with the
/// original subject, sequence, delivery count and the failure reason in headers. Never loses the payload.
public enum DeadLetter {
    public static let subjectHeader = "Switchyard-Dlq-Subject"
    public static let sequenceHeader = "Switchyard-Dlq-Stream-Seq"
    public static let deliveriesHeader = "Switchyard-Dlq-Deliveries"
    public static let reasonHeader = "Switchyard-Dlq-Reason"

    /// `dlq.<stream>.<consumer>`: where a consumer's dead letters go.
    public static func subject(stream: String, consumer: String) -> String { "dlq.\(stream).\(consumer)" }
    /// Every dead-letter subject (the dead-letter stream's filter).
    public static let allSubjects = "dlq.>"

    static func message(for delivery: JetStreamDelivery, reason: String) -> OutboundMessage {
        var headers = delivery.headers
        headers.removeValue(forKey: NATSHeaderName.messageID)
        headers[subjectHeader] = delivery.subject
        headers[sequenceHeader] = String(delivery.streamSequence)
        headers[deliveriesHeader] = String(delivery.deliveryCount)
        headers[reasonHeader] = String(reason.prefix(512))
        return OutboundMessage(
            subject: subject(stream: delivery.stream, consumer: delivery.consumer),
            payload: delivery.payload, headers: headers,
            messageID: "dlq:\(delivery.stream):\(delivery.consumer):\(delivery.streamSequence)")
    }
}

/// A consume loop as a swift-service-lifecycle `Service`: a ``ContinuousPull`` on the durable (never more than
/// `maxInFlight` messages unsettled, each handed to its handler as soon as it arrives), one child task per
/// message, then the settlement: success → ack; retriable error → nak with the consumer's backoff; poison, or a
/// failure on the last allowed delivery → dead-letter, then term. Acks are one-way publishes. With `keepAlive`,
/// one ticker sends in-progress acks every AckWait/2 for every message still being handled, so a slow handler
/// isn't redelivered to another replica meanwhile. On graceful shutdown it stops pulling (late arrivals go
/// back at once), finishes the messages it holds and returns; when cancelled, handlers see the cancellation
/// and their messages are given back at once.
public struct JetStreamConsumerService: Service {
    public typealias Handler = @Sendable (JetStreamDelivery) async throws -> Void
    /// Handles a batch at once (e.g. one database transaction for all of it) and returns one outcome per
    /// delivery, in order: nil = done (acked), an error = settled like a handler error (nak with backoff, or
    /// dead letter when poison or on the last delivery). Throwing fails the whole batch with that error.
    public typealias BatchHandler = @Sendable ([JetStreamDelivery]) async throws -> [(any Error)?]

    enum Work: Sendable {
        case each(Handler)
        case batch(BatchHandler)
    }

    private let jetStream: JetStream
    private let stream: String
    private let spec: ConsumerSpec
    private let batchSize: Int
    private let maxInFlight: Int
    private let keepAlive: Bool
    private let expires: Duration
    private let work: Work
    /// Batch mode: how many batches run at once.
    private let concurrentBatches: Int
    private let logger: Logger
    /// Called once per message parked on the dead-letter stream (metrics), with its stream and consumer.
    public var onDeadLetter: (@Sendable (_ stream: String, _ consumer: String) -> Void)?

    /// - Parameters:
    ///   - batchSize: the most messages one pull request asks for.
    ///   - maxInFlight: the most messages held unsettled at once (default: twice `batchSize`); this replica's
    ///     share of the durable's MaxAckPending.
    ///   - keepAlive: send in-progress acks for handlers that run longer than AckWait/2 (fast handlers such as
    ///     the router's turn it off).
    ///   - expires: how long one pull request waits for messages on an idle stream.
    public init(jetStream: JetStream, stream: String, consumer spec: ConsumerSpec, batchSize: Int = 64,
                maxInFlight: Int? = nil, keepAlive: Bool = true, expires: Duration = .seconds(5), logger: Logger,
                handler: @escaping Handler) {
        self.init(jetStream: jetStream, stream: stream, spec: spec, batchSize: batchSize, maxInFlight: maxInFlight,
                  keepAlive: keepAlive, expires: expires, logger: logger, work: .each(handler), concurrentBatches: 1)
    }

    /// A consume loop whose handler takes what arrived together, up to `batchSize` deliveries at a time (fewer
    /// when the stream is quiet: nothing waits for a batch to fill). At most `concurrentBatches` batches run at
    /// once; what arrives meanwhile makes the next batch. `maxInFlight` (default: one batch more than can run,
    /// so a full batch can gather while the others run) bounds the deliveries held.
    public static func batches(jetStream: JetStream, stream: String, consumer spec: ConsumerSpec,
                               batchSize: Int = 256, concurrentBatches: Int = 2, maxInFlight: Int? = nil,
                               keepAlive: Bool = true, expires: Duration = .seconds(5), logger: Logger,
                               handler: @escaping BatchHandler) -> JetStreamConsumerService {
        let slots = max(1, concurrentBatches)
        return JetStreamConsumerService(jetStream: jetStream, stream: stream, spec: spec, batchSize: batchSize,
                                        maxInFlight: maxInFlight ?? (slots + 1) * max(1, batchSize),
                                        keepAlive: keepAlive, expires: expires, logger: logger, work: .batch(handler),
                                        concurrentBatches: slots)
    }

    private init(jetStream: JetStream, stream: String, spec: ConsumerSpec, batchSize: Int, maxInFlight: Int?,
                 keepAlive: Bool, expires: Duration, logger: Logger, work: Work, concurrentBatches: Int) {
        self.jetStream = jetStream
        self.stream = stream
        self.spec = spec
        self.batchSize = max(1, batchSize)
        self.maxInFlight = max(1, maxInFlight ?? 2 * batchSize)
        self.keepAlive = keepAlive
        self.expires = expires
        self.logger = logger
        self.work = work
        self.concurrentBatches = concurrentBatches
    }

    public func run() async throws {
        let pull = try await ContinuousPull.start(
            jetStream: jetStream, stream: stream, durable: spec.durable, maxInFlight: maxInFlight,
            maxBatch: batchSize, expires: expires, keepAliveInterval: keepAlive ? spec.ackWait / 2 : nil,
            logger: logger)
        // Cancelled: stop pulling before the handlers see the cancellation and give their messages back.
        await withTaskCancellationHandler {
            await consume(pull)
        } onCancel: {
            pull.stop()
        }
        // Cancelled before the loop took them: give them back at once.
        for item in pull.queue.removeAll() {
            let message = JetStreamMessage(delivery: item.delivery, box: item.box)
            try? message.nak()
        }
    }

    private func consume(_ pull: ContinuousPull) async {
        // Batch mode: at most `concurrentBatches` batches run at once. What arrives meanwhile waits here (kept
        // alive) and goes into the next batch when one finishes, so a busy stream makes few full batches rather
        // than many small ones (one transaction each, for billing; docs/adr/0013).
        let running = BatchSlots(concurrentBatches)
        var pending: [ContinuousPull.Item] = []
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await pull.runTicker() }
                while let arrived = await pull.queue.next() {
                    for item in arrived { pull.keepAlive(item.box) }
                    switch work {
                    case .each(let handler):
                        for item in arrived {
                            group.addTask {
                                await self.process(JetStreamMessage(delivery: item.delivery, box: item.box), handler)
                            }
                        }
                    case .batch(let handler):
                        pending += arrived
                        while !pending.isEmpty, running.acquire() {
                            let chunk = Array(pending.prefix(batchSize))
                            pending.removeFirst(chunk.count)
                            group.addTask {
                                await self.processBatch(chunk, handler)
                                running.release()
                                pull.queue.poke()
                            }
                        }
                    }
                }
                // Finished (drained after a graceful shutdown) or cancelled: stop pulling either way. Batch work
                // held back is handled when draining, given back when cancelled.
                pull.stop()
                if case .batch(let handler) = work {
                    if Task.isCancelled {
                        for item in pending { try? JetStreamMessage(delivery: item.delivery, box: item.box).nak() }
                    } else {
                        while !pending.isEmpty {
                            let chunk = Array(pending.prefix(batchSize))
                            pending.removeFirst(chunk.count)
                            group.addTask { await self.processBatch(chunk, handler) }
                        }
                    }
                    pending.removeAll()
                }
            }
        } onGracefulShutdown: {
            pull.stop()
        }
    }

    /// Runs the handler and settles the message exactly once.
    func process(_ message: consuming JetStreamMessage, _ handler: Handler) async {
        let failure: (any Error)?
        do {
            try await handler(message.delivery)
            failure = nil
        } catch {
            failure = error
        }
        await settle(message, failure)
    }

    /// Runs the batch handler, then settles every message of the batch by its outcome.
    func processBatch(_ items: [ContinuousPull.Item], _ handler: BatchHandler) async {
        var outcomes: [(any Error)?]
        do {
            outcomes = try await handler(items.map(\.delivery))
            if outcomes.count != items.count {
                logger.error("batch handler returned the wrong number of outcomes", metadata: [
                    "stream": "\(stream)", "deliveries": "\(items.count)", "outcomes": "\(outcomes.count)",
                ])
                outcomes = Array(repeating: NATSError(.invalidArgument, context: "batch outcome count mismatch"),
                                 count: items.count)
            }
        } catch {
            outcomes = Array(repeating: error, count: items.count)
        }
        for (item, outcome) in zip(items, outcomes) {
            await settle(JetStreamMessage(delivery: item.delivery, box: item.box), outcome)
        }
    }

    /// Settles a handled message exactly once: ack, nak (with backoff, or at once when cancelled), or dead letter.
    private func settle(_ message: consuming JetStreamMessage, _ failure: (any Error)?) async {
        let delivery = message.delivery
        guard let error = failure else {
            do {
                try message.ack()
            } catch {
                // The effect is committed; a redelivery will be deduplicated by the idempotent handler.
                logger.warning("ack failed", metadata: ["stream": "\(stream)", "error": "\(error)"])
            }
            return
        }
        let exhausted = delivery.deliveryCount >= spec.maxDeliver
        // Cancelled (forced shutdown, a failing sibling service): the message is not at fault — give it back at
        // once for another replica. On its last allowed delivery the server would never redeliver it, so it is
        // dead-lettered below like any other exhausted message (kept, not lost).
        if (error is CancellationError || Task.isCancelled) && !exhausted {
            do {
                try message.nak()
            } catch let nakError {
                logger.warning("nak failed", metadata: ["error": "\(nakError)"])
            }
            return
        }
        let retriable = (error as? any ClassifiedError)?.isRetriable ?? true
        if retriable && !exhausted {
            do {
                try message.nak(delay: spec.retryDelay(afterDelivery: delivery.deliveryCount))
            } catch let nakError {
                logger.warning("nak failed", metadata: ["error": "\(nakError)"])
            }
            return
        }
        await deadLetter(message, reason: "\(error)")
    }

    private func deadLetter(_ message: consuming JetStreamMessage, reason: String) async {
        let delivery = message.delivery
        do {
            try await jetStream.publish(DeadLetter.message(for: delivery, reason: reason))
        } catch {
            // Could not park it: keep it in the stream rather than lose it.
            logger.error("dead-letter publish failed", metadata: ["stream": "\(stream)", "error": "\(error)"])
            try? message.nak(delay: spec.retryDelay(afterDelivery: delivery.deliveryCount))
            return
        }
        onDeadLetter?(delivery.stream, delivery.consumer)
        logger.warning("message dead-lettered", metadata: [
            "stream": "\(stream)", "consumer": "\(spec.durable)",
            "stream.seq": "\(delivery.streamSequence)", "deliveries": "\(delivery.deliveryCount)",
        ])
        do {
            try message.term()
        } catch {
            logger.warning("term failed", metadata: ["error": "\(error)"])
        }
    }
}

/// How many batches may run at once (batch mode of ``JetStreamConsumerService``).
final class BatchSlots: Sendable {
    private let limit: Int
    private let running = Mutex(0)

    init(_ limit: Int) { self.limit = limit }

    /// Takes a slot if one is free.
    func acquire() -> Bool {
        running.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func release() { running.withLock { $0 -= 1 } }
}
