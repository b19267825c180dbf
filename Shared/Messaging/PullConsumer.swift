@preconcurrency import CNats
import Logging
import Synchronization

/// A message delivered by a JetStream consumer, copied into Swift memory.
public struct JetStreamDelivery: Sendable {
    public var subject: String
    public var payload: [UInt8]
    public var headers: NATSHeaders
    public var stream: String
    public var consumer: String
    public var streamSequence: UInt64
    /// 1 on first delivery, then 2, 3, … on redeliveries.
    public var deliveryCount: Int
    /// When the server stored it (unix nanoseconds).
    public var storedAtUnixNanos: Int64
}

/// How a received message is settled (or kept alive).
enum AckKind: Sendable {
    case ack
    case nak(delay: Duration?)
    case term
    case inProgress

    /// Ack, nak and term end the server's wait for this delivery; an in-progress ack does not.
    var settles: Bool {
        if case .inProgress = self { return false }
        return true
    }
}

/// Owns a received `natsMsg` until it is destroyed, and what it is settled through: the pull subscription it
/// was fetched on (nats.c's ack calls), or the ``ContinuousPull`` it was delivered by (a publish to its
/// `$JS.ACK…` reply subject). Settling is recorded here, so a handle dropped unsettled is noticed.
///
/// `@unchecked Sendable`: the pointer is only read (reply subject) and passed to thread-safe nats.c calls, by
/// one owner at a time (the `~Copyable` ``JetStreamMessage``); the settled flag is atomic.
final class CMessageBox: @unchecked Sendable {
    enum Origin {
        case fetched(PullSubscriptionHandle)
        case pulled(ContinuousPull)
    }

    let msg: OpaquePointer
    let origin: Origin
    private let settledFlag = Atomic<Bool>(false)

    init(_ msg: OpaquePointer, subscription: PullSubscriptionHandle) {
        self.msg = msg
        self.origin = .fetched(subscription)
    }

    init(_ msg: OpaquePointer, pull: ContinuousPull) {
        self.msg = msg
        self.origin = .pulled(pull)
    }

    deinit { natsMsg_Destroy(msg) }

    var counters: HandleCounters {
        switch origin {
        case .fetched(let subscription): subscription.jetStream.counters
        case .pulled(let pull): pull.jetStream.counters
        }
    }

    /// Marks the message settled; false if it already was.
    func markSettled() -> Bool { !settledFlag.exchange(true, ordering: .acquiringAndReleasing) }

    func send(_ kind: AckKind) -> natsStatus {
        switch origin {
        case .fetched:
            switch kind {
            case .ack: return natsMsg_Ack(msg, nil)
            case .nak(let delay?): return natsMsg_NakWithDelay(msg, delay.milliseconds, nil)
            case .nak(nil): return natsMsg_Nak(msg, nil)
            case .term: return natsMsg_Term(msg, nil)
            case .inProgress: return natsMsg_InProgress(msg, nil)
            }
        case .pulled(let pull):
            return pull.send(kind, for: self)
        }
    }
}

/// A received JetStream message and its ack handle. `~Copyable` with `consuming` settle operations, so a
/// message cannot be acked twice, or acked after a nak — the compiler refuses. A handle dropped without being
/// settled is caught in `deinit`: it is nak'ed (redelivered at once instead of after AckWait) and counted in
/// ``JetStream/handleCounts``.
public struct JetStreamMessage: ~Copyable, Sendable {
    public let delivery: JetStreamDelivery
    let box: CMessageBox

    init(delivery: JetStreamDelivery, box: CMessageBox) {
        self.delivery = delivery
        self.box = box
    }

    deinit {
        if box.markSettled() {
            box.counters.droppedUnsettled.add(1, ordering: .relaxed)
            _ = box.send(.nak(delay: nil))
        }
    }

    /// Acknowledges: the effect is committed; the server will not redeliver.
    public consuming func ack() throws(NATSError) {
        _ = box.markSettled()
        try Self.check(box.send(.ack), "acking")
    }

    /// Negative ack: redeliver after `delay` (or at once).
    public consuming func nak(delay: Duration? = nil) throws(NATSError) {
        _ = box.markSettled()
        try Self.check(box.send(.nak(delay: delay)), delay == nil ? "nak" : "nak with delay")
    }

    /// Terminates: never redeliver (after dead-lettering it, see `JetStreamConsumerService`).
    public consuming func term() throws(NATSError) {
        _ = box.markSettled()
        try Self.check(box.send(.term), "term")
    }

    /// Tells the server work is still going on, resetting the ack timer. May be called repeatedly.
    public func inProgress() throws(NATSError) {
        try Self.check(box.send(.inProgress), "in progress")
    }

    private static func check(_ status: natsStatus, _ what: String) throws(NATSError) {
        if status != NATS_OK { throw NATSError.fromStatus(status, code: .ackFailed, context: what) }
    }
}

/// A pull subscription bound to an existing durable consumer (never created implicitly, see ADR-0002).
///
/// `@unchecked Sendable`: the subscription handle is used for fetching from one lane (serial queue) only;
/// the buffer is behind a `Mutex`.
public final class PullConsumer: @unchecked Sendable {
    private let lane: BlockingLane
    public let stream: String
    public let durable: String
    /// Fetched but not yet handed out by `next`; `nil` once stopped (late fetches are nak'ed, not buffered).
    private let buffer = Mutex<[(JetStreamDelivery, CMessageBox)]?>([])

    private let handle: PullSubscriptionHandle

    private init(subscription: OpaquePointer, jetStream: JetStream, stream: String, durable: String) {
        self.handle = PullSubscriptionHandle(subscription, jetStream: jetStream)
        self.lane = BlockingLane(label: "pull.\(stream).\(durable)")
        self.stream = stream
        self.durable = durable
    }

    /// Binds to the durable `durable` of `stream` (it must exist). The bind is a round trip to the server and
    /// runs off the cooperative pool.
    public static func bind(jetStream: JetStream, stream: String, durable: String) async throws(NATSError)
        -> PullConsumer
    {
        let context = SendablePointer(jetStream.context)
        let subscription = try await jetStream.connection.lane.run { () throws(NATSError) -> SendablePointer in
            let arena = CStringArena()
            var subOptions = jsSubOptions()
            jsSubOptions_Init(&subOptions)
            subOptions.Stream = arena.string(stream)
            subOptions.Consumer = arena.string(durable)
            subOptions.ManualAck = true
            var sub: OpaquePointer?
            var jsErr = jsErrCode(0)
            let status = js_PullSubscribe(&sub, context.pointer, nil, durable, nil, &subOptions, &jsErr)
            guard status == NATS_OK, let sub else {
                throw NATSError.fromStatus(status, code: .subscribeFailed, context: "binding pull consumer",
                                           jsErr: jsErr)
            }
            return SendablePointer(sub)
        }
        return PullConsumer(subscription: subscription.pointer, jetStream: jetStream, stream: stream,
                            durable: durable)
    }

    /// Fetches up to `batch` messages, waiting at most `timeout` for the first. Returns an empty array on
    /// timeout. Runs the blocking fetch off the cooperative pool.
    func fetchBatch(_ batch: Int, timeout: Duration) async throws(NATSError) -> [(JetStreamDelivery, CMessageBox)] {
        let sub = SendablePointer(handle.pointer)
        let handle = self.handle
        let millis = max(timeout.milliseconds, 1)
        let stream = self.stream
        let durable = self.durable
        let fetched = try await lane.run { () throws(NATSError) -> [SendableFetched] in
            var list = natsMsgList()
            var jsErr = jsErrCode(0)
            let status = natsSubscription_Fetch(&list, sub.pointer, Int32(batch), millis, &jsErr)
            if status == NATS_TIMEOUT { return [] }
            if status != NATS_OK {
                throw NATSError.fromStatus(status, code: .jetStream, context: "fetching", jsErr: jsErr)
            }
            var result: [SendableFetched] = []
            result.reserveCapacity(Int(list.Count))
            for index in 0..<Int(list.Count) {
                guard let msg = list.Msgs[index] else { continue }
                list.Msgs[index] = nil  // we take ownership; natsMsgList_Destroy skips nil entries
                let copy = NATSMessage(copying: msg)
                var meta: UnsafeMutablePointer<jsMsgMetaData>?
                var sequence: UInt64 = 0
                var delivered = 1
                var stamp: Int64 = 0
                if natsMsg_GetMetaData(&meta, msg) == NATS_OK, let meta {
                    sequence = meta.pointee.Sequence.Stream
                    delivered = Int(meta.pointee.NumDelivered)
                    stamp = meta.pointee.Timestamp
                    jsMsgMetaData_Destroy(meta)
                }
                let delivery = JetStreamDelivery(
                    subject: copy.subject, payload: copy.payload, headers: copy.headers, stream: stream,
                    consumer: durable, streamSequence: sequence, deliveryCount: delivered,
                    storedAtUnixNanos: stamp)
                result.append(SendableFetched(delivery: delivery, box: CMessageBox(msg, subscription: handle)))
            }
            natsMsgList_Destroy(&list)
            return result
        }
        return fetched.map { ($0.delivery, $0.box) }
    }

    /// The next message, or `nil` when none arrived within `timeout`.
    public func next(timeout: Duration, batch: Int = 64) async throws(NATSError) -> JetStreamMessage? {
        if let item = buffer.withLock({ buffer -> (JetStreamDelivery, CMessageBox)? in
            guard let first = buffer?.first else { return nil }
            buffer?.removeFirst()
            return first
        }) {
            return JetStreamMessage(delivery: item.0, box: item.1)
        }
        let fetched = try await fetchBatch(batch, timeout: timeout)
        guard let first = fetched.first else { return nil }
        let rest = Array(fetched.dropFirst())
        let stopped = buffer.withLock { buffer -> Bool in
            guard buffer != nil else { return true }
            buffer?.append(contentsOf: rest)
            return false
        }
        if stopped { Self.nak(rest) }
        return JetStreamMessage(delivery: first.0, box: first.1)
    }

    /// Gives messages back to the server at once (another replica gets them without waiting for AckWait).
    private static func nak(_ items: [(JetStreamDelivery, CMessageBox)]) {
        for (delivery, box) in items {
            let message = JetStreamMessage(delivery: delivery, box: box)
            try? message.nak()
        }
    }

    /// Stops this subscription; the durable consumer stays on the server for other replicas. Messages fetched
    /// but not yet handed out by ``next(timeout:batch:)`` are nak'ed, so another replica gets them at once.
    public func stop() {
        Self.nak(buffer.withLock { buffer in
            defer { buffer = nil }
            return buffer ?? []
        })
        natsSubscription_Unsubscribe(handle.pointer)
    }

    deinit {
        // Dropped without `stop()`: whatever is still buffered goes back to the server too.
        Self.nak(buffer.withLock { $0 ?? [] })
    }
}

/// Owns a nats.c pull subscription: destroyed when the consumer and every message fetched through it are gone.
/// Keeps the JetStream context (and through it the connection) alive meanwhile.
///
/// `@unchecked Sendable`: immutable; nats.c subscriptions are thread-safe for acks and unsubscribe.
final class PullSubscriptionHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let jetStream: JetStream

    init(_ pointer: OpaquePointer, jetStream: JetStream) {
        self.pointer = pointer
        self.jetStream = jetStream
        jetStream.counters.pullSubscriptions.add(1, ordering: .relaxed)
    }

    deinit {
        natsSubscription_Destroy(pointer)
        jetStream.counters.pullSubscriptions.subtract(1, ordering: .relaxed)
    }
}

struct SendableFetched: Sendable {
    let delivery: JetStreamDelivery
    let box: CMessageBox
}
