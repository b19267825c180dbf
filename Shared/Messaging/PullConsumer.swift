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

/// Owns a fetched `natsMsg` until it is destroyed. `@unchecked Sendable`: the pointer is only used through
/// nats.c ack calls, which are thread-safe, and by one owner at a time (the `~Copyable` handle).
final class CMessageBox: @unchecked Sendable {
    let msg: OpaquePointer
    init(_ msg: OpaquePointer) { self.msg = msg }
    deinit { natsMsg_Destroy(msg) }
}

/// A received JetStream message and its ack handle. `~Copyable` with `consuming` settle operations, so a
/// message cannot be acked twice, or acked after a nak — the compiler refuses.
public struct JetStreamMessage: ~Copyable, Sendable {
    public let delivery: JetStreamDelivery
    let box: CMessageBox

    init(delivery: JetStreamDelivery, box: CMessageBox) {
        self.delivery = delivery
        self.box = box
    }

    /// Acknowledges: the effect is committed; the server will not redeliver.
    public consuming func ack() throws(NATSError) {
        try Self.check(natsMsg_Ack(box.msg, nil), "acking")
    }

    /// Negative ack: redeliver after `delay` (or at once).
    public consuming func nak(delay: Duration? = nil) throws(NATSError) {
        if let delay {
            try Self.check(natsMsg_NakWithDelay(box.msg, delay.milliseconds, nil), "nak with delay")
        } else {
            try Self.check(natsMsg_Nak(box.msg, nil), "nak")
        }
    }

    /// Terminates: never redeliver (after dead-lettering it, see `JetStreamConsumerService`).
    public consuming func term() throws(NATSError) {
        try Self.check(natsMsg_Term(box.msg, nil), "term")
    }

    /// Tells the server work is still going on, resetting the ack timer. May be called repeatedly.
    public func inProgress() throws(NATSError) {
        try Self.check(natsMsg_InProgress(box.msg, nil), "in progress")
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
    private let subscription: OpaquePointer
    private let lane: BlockingLane
    public let stream: String
    public let durable: String
    private let buffer = Mutex<[(JetStreamDelivery, CMessageBox)]>([])

    public init(jetStream: JetStream, stream: String, durable: String) throws(NATSError) {
        let arena = CStringArena()
        var subOptions = jsSubOptions()
        jsSubOptions_Init(&subOptions)
        subOptions.Stream = arena.string(stream)
        subOptions.Consumer = arena.string(durable)
        subOptions.ManualAck = true
        var sub: OpaquePointer?
        var jsErr = jsErrCode(0)
        let status = js_PullSubscribe(&sub, jetStream.context, nil, durable, nil, &subOptions, &jsErr)
        guard status == NATS_OK, let sub else {
            throw NATSError.fromStatus(status, code: .subscribeFailed, context: "binding pull consumer", jsErr: jsErr)
        }
        subscription = sub
        lane = BlockingLane(label: "pull.\(stream).\(durable)")
        self.stream = stream
        self.durable = durable
    }

    deinit {
        natsSubscription_Destroy(subscription)
    }

    /// Fetches up to `batch` messages, waiting at most `timeout` for the first. Returns an empty array on
    /// timeout. Runs the blocking fetch off the cooperative pool.
    func fetchBatch(_ batch: Int, timeout: Duration) async throws(NATSError) -> [(JetStreamDelivery, CMessageBox)] {
        let sub = SendablePointer(subscription)
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
                result.append(SendableFetched(delivery: delivery, box: CMessageBox(msg)))
            }
            natsMsgList_Destroy(&list)
            return result
        }
        return fetched.map { ($0.delivery, $0.box) }
    }

    /// The next message, or `nil` when none arrived within `timeout`.
    public func next(timeout: Duration, batch: Int = 64) async throws(NATSError) -> JetStreamMessage? {
        if let item = buffer.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
            return JetStreamMessage(delivery: item.0, box: item.1)
        }
        let fetched = try await fetchBatch(batch, timeout: timeout)
        guard let first = fetched.first else { return nil }
        buffer.withLock { $0.append(contentsOf: fetched.dropFirst()) }
        return JetStreamMessage(delivery: first.0, box: first.1)
    }

    /// Stops this subscription; the durable consumer stays on the server for other replicas.
    public func stop() {
        natsSubscription_Unsubscribe(subscription)
    }
}

struct SendableFetched: Sendable {
    let delivery: JetStreamDelivery
    let box: CMessageBox
}
