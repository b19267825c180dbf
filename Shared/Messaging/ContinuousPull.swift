@preconcurrency import CNats
import Dispatch
import Logging
import Synchronization

/// A durable consumer's messages as a continuous flow: the "consume" pattern of the NATS clients' simplified
/// JetStream API (NATS ADR-37), built on core NATS because nats.c 3.4 only has `Fetch`, whose waiting pull
/// request holds a partly filled batch until it fills or expires (see docs/adr/0012).
///
/// - One core subscription on a private inbox (`<inbox prefix>.<nuid>.*`); nats.c's thread for it copies each
///   message and hands it on at once (``DeliveryQueue``), so a message never waits for the rest of a batch.
/// - At most one pull request (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>` with `{"batch":n,"expires":ns}`)
///   outstanding, asking for no more than the free room: never more than `maxInFlight` messages unsettled here.
///   The next request goes out as soon as the previous one is filled or ends (a 408/409 status on its own reply
///   subject) and at least half a batch of room is free.
/// - Ack, nak, term and in-progress are one-way publishes to the message's `$JS.ACK…` reply subject.
/// - ``tick(now:)`` (run every ``tickInterval``) sends one in-progress ack per ``keepAliveInterval`` for every
///   message still being handled — one ticker for all of them instead of a timer per message — and writes off a
///   request whose end never came (a reconnect drops waiting requests server-side).
/// - ``stop()`` drains the subscription: the server stops delivering, late arrivals are nak'ed at once.
///
/// `@unchecked Sendable`: mutable state is behind `Mutex`es; the subscription pointer is immutable after
/// `start` and nats.c's subscription API is thread-safe.
final class ContinuousPull: @unchecked Sendable {
    struct Item: Sendable {
        let delivery: JetStreamDelivery
        let box: CMessageBox
    }

    let jetStream: JetStream
    let stream: String
    let durable: String
    let queue = DeliveryQueue()
    private let maxInFlight: Int
    private let maxBatch: Int
    private let expires: Duration
    private let keepAliveInterval: Duration?
    private let logger: Logger
    private let requestSubject: String
    private let inbox: String
    private var subscription: OpaquePointer?
    private let state = Mutex(State())
    /// Messages being handled, for the keep-alive ticker: box → when it was last kept alive.
    private let alive = Mutex<[ObjectIdentifier: (box: CMessageBox, since: UInt64)]>([:])

    static let tickInterval: Duration = .milliseconds(200)

    struct State {
        /// Delivered here and not yet acked, nak'ed or termed.
        var inFlight = 0
        /// The outstanding request's id (its reply subject's last token) and what it still owes.
        var requestID: UInt64 = 0
        var outstanding = false
        var owed = 0
        /// When the outstanding request is written off if its end never arrives (uptime nanoseconds), and the
        /// connection's reconnect count when it was sent.
        var writeOffAt: UInt64 = 0
        var reconnects = 0
        var stopping = false
        /// The drain's UNSUB has been processed by the server (see ``stop()``).
        var unsubscribed = false
        /// Naks waiting for `unsubscribed`.
        var heldNaks: [CMessageBox] = []
    }

    private init(jetStream: JetStream, stream: String, durable: String, maxInFlight: Int, maxBatch: Int,
                 expires: Duration, keepAliveInterval: Duration?, logger: Logger) throws(NATSError) {
        self.jetStream = jetStream
        self.stream = stream
        self.durable = durable
        self.maxInFlight = max(1, maxInFlight)
        self.maxBatch = max(1, min(maxBatch, maxInFlight))
        self.expires = expires
        self.keepAliveInterval = keepAliveInterval
        self.logger = logger
        self.requestSubject = "$JS.API.CONSUMER.MSG.NEXT.\(stream).\(durable)"
        self.inbox = try uniqueInbox(prefix: jetStream.connection.configuration.inboxPrefix)
    }

    /// Starts pulling from the durable `durable` of `stream`, which must exist (a clear error otherwise).
    static func start(jetStream: JetStream, stream: String, durable: String, maxInFlight: Int, maxBatch: Int,
                      expires: Duration, keepAliveInterval: Duration?, logger: Logger) async throws(NATSError)
        -> ContinuousPull
    {
        try await jetStream.requireConsumer(stream: stream, durable: durable)
        let pull = try ContinuousPull(jetStream: jetStream, stream: stream, durable: durable,
                                      maxInFlight: maxInFlight, maxBatch: maxBatch, expires: expires,
                                      keepAliveInterval: keepAliveInterval, logger: logger)
        try pull.subscribe()
        pull.pullIfRoom()
        return pull
    }

    private func subscribe() throws(NATSError) {
        let retained = Unmanaged.passRetained(self)
        let closure = UnsafeMutableRawPointer(retained.toOpaque())
        var sub: OpaquePointer?
        let status = natsConnection_Subscribe(&sub, jetStream.connection.handle, inbox + ".*", Self.onMessage, closure)
        guard status == NATS_OK, let sub else {
            retained.release()
            throw NATSError.fromStatus(status, code: .subscribeFailed, context: "subscribing to the pull inbox")
        }
        // The room in flight bounds what arrives; nats.c must never drop a delivery as a slow consumer.
        natsSubscription_SetPendingLimits(sub, -1, -1)
        natsSubscription_SetOnCompleteCB(sub, Self.onComplete, closure)
        subscription = sub
    }

    deinit {
        if let subscription { natsSubscription_Destroy(subscription) }
    }

    /// Stops pulling, without blocking the caller: no new pull request goes out, and the subscription is
    /// drained on a background thread (UNSUB, a flush round trip, then what already arrived is delivered and
    /// nak'ed for another replica), after which ``queue`` finishes. Messages already handed out are still
    /// settled by their holders. Idempotent; safe from a cancellation handler.
    ///
    /// Naks sent while stopping are held back until the server has processed the UNSUB: our own pull request
    /// may still be waiting there, and a nak'ed message redelivered to it would only bounce back to us and burn
    /// a delivery attempt. Acks and terms go out at once (they never cause a redelivery).
    func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first, let subscription else { return }
        let pointer = SendablePointer(subscription)
        DispatchQueue.global().async { [self] in
            // Returns after the UNSUB's flush round trip: from then on the server delivers nothing to this inbox.
            if natsSubscription_Drain(pointer.pointer) != NATS_OK {
                natsSubscription_Unsubscribe(pointer.pointer)
                queue.finish()
            }
            releaseHeldNaks()
        }
    }

    /// Sends the naks held back while the subscription was being drained.
    private func releaseHeldNaks() {
        let held = state.withLock { state -> [CMessageBox] in
            state.unsubscribed = true
            defer { state.heldNaks.removeAll() }
            return state.heldNaks
        }
        for box in held { _ = send(.nak(delay: nil), for: box, released: true) }
    }

    var isStopped: Bool { state.withLock { $0.stopping } }
    var inFlight: Int { state.withLock { $0.inFlight } }

    // MARK: pull requests

    /// Sends the next pull request if none is outstanding and at least half a batch of room is free.
    private func pullIfRoom() {
        let reconnects = jetStream.connection.reconnectCount
        let now = DispatchTime.now().uptimeNanoseconds
        let writeOff = now &+ UInt64((expires + .seconds(1)).nanoseconds)
        let request: (id: UInt64, batch: Int)? = state.withLock { state in
            guard !state.stopping, !state.outstanding else { return nil }
            let room = maxInFlight - state.inFlight
            guard room >= max(1, maxBatch / 2) else { return nil }
            state.requestID &+= 1
            state.outstanding = true
            state.owed = min(room, maxBatch)
            state.writeOffAt = writeOff
            state.reconnects = reconnects
            return (state.requestID, state.owed)
        }
        guard let request else { return }
        let body = Array("{\"batch\":\(request.batch),\"expires\":\(expires.nanoseconds)}".utf8)
        let status = body.withUnsafeBytes { bytes in
            natsConnection_PublishRequest(jetStream.connection.handle, requestSubject, "\(inbox).\(request.id)",
                                          bytes.baseAddress, Int32(bytes.count))
        }
        if status != NATS_OK {
            // Closed or out of reconnect buffer: `tick` tries again once the write-off time has passed.
            logger.warning("pull request failed", metadata: [
                "stream": "\(stream)", "consumer": "\(durable)",
                "nats.status": "\(String(cString: natsStatus_GetText(status)))",
            ])
        }
    }

    /// The outstanding request `id` has ended (filled, expired, or refused with a status).
    private func requestEnded(_ id: UInt64) {
        let ended = state.withLock { state -> Bool in
            guard state.outstanding, state.requestID == id else { return false }
            state.outstanding = false
            state.owed = 0
            return true
        }
        if ended { pullIfRoom() }
    }

    // MARK: settling

    func send(_ kind: AckKind, for box: CMessageBox) -> natsStatus {
        send(kind, for: box, released: false)
    }

    private func send(_ kind: AckKind, for box: CMessageBox, released: Bool) -> natsStatus {
        if case .nak(nil) = kind, !released {
            let held = state.withLock { state -> Bool in
                guard state.stopping && !state.unsubscribed else { return false }
                state.heldNaks.append(box)
                return true
            }
            if held { return NATS_OK }
        }
        let status: natsStatus
        if let reply = natsMsg_GetReply(box.msg) {
            let connection = jetStream.connection.handle
            switch kind {
            case .ack: status = Self.publish(connection, reply, Self.ackBody)
            case .nak(nil): status = Self.publish(connection, reply, Self.nakBody)
            case .nak(let delay?):
                status = Self.publish(connection, reply, Array("-NAK {\"delay\":\(delay.nanoseconds)}".utf8))
            case .term: status = Self.publish(connection, reply, Self.termBody)
            case .inProgress: status = Self.publish(connection, reply, Self.inProgressBody)
            }
        } else {
            status = NATS_INVALID_ARG
        }
        if kind.settles {
            alive.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(box)) }
            state.withLock { $0.inFlight -= 1 }
            pullIfRoom()
        }
        return status
    }

    private static let ackBody = Array("+ACK".utf8)
    private static let nakBody = Array("-NAK".utf8)
    private static let termBody = Array("+TERM".utf8)
    private static let inProgressBody = Array("+WPI".utf8)

    private static func publish(_ connection: OpaquePointer, _ subject: UnsafePointer<CChar>, _ body: [UInt8])
        -> natsStatus
    {
        body.withUnsafeBytes { natsConnection_Publish(connection, subject, $0.baseAddress, Int32($0.count)) }
    }

    /// Registers a message being handled for in-progress acks (when the consumer keeps messages alive).
    func keepAlive(_ box: CMessageBox) {
        guard keepAliveInterval != nil else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        alive.withLock { $0[ObjectIdentifier(box)] = (box, now) }
    }

    // MARK: the ticker

    /// One tick: in-progress acks for messages handled longer than the keep-alive interval since their last
    /// one, and a new request when the outstanding one was lost (reconnect) or never ended.
    func tick(now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        if let keepAliveInterval {
            let due = now &- UInt64(max(0, keepAliveInterval.nanoseconds))
            let boxes = alive.withLock { alive -> [CMessageBox] in
                var boxes: [CMessageBox] = []
                for (key, entry) in alive where entry.since <= due {
                    boxes.append(entry.box)
                    alive[key] = (entry.box, now)
                }
                return boxes
            }
            for box in boxes { _ = send(.inProgress, for: box) }
        }
        // A request whose end never came (a reconnect dropped it, or its status was lost) is written off.
        let reconnects = jetStream.connection.reconnectCount
        state.withLock { state in
            guard state.outstanding, !state.stopping else { return }
            guard state.reconnects != reconnects || now >= state.writeOffAt else { return }
            state.outstanding = false
            state.owed = 0
        }
        pullIfRoom()  // does nothing while a request is outstanding or the room is short
    }

    /// Ticks until the pull is stopped and nothing it delivered is still unsettled (or the task is cancelled).
    func runTicker() async {
        while !(isStopped && inFlight <= 0) {
            do {
                try await Task.sleep(for: Self.tickInterval)
            } catch {
                return
            }
            tick()
        }
    }

    // MARK: delivery (nats.c's thread for the subscription)

    private func received(_ msg: OpaquePointer) {
        guard let reply = natsMsg_GetReply(msg), reply.pointee != 0 else {
            // A status for one of our requests (408 expired, 409 …, 404) has no reply subject.
            defer { natsMsg_Destroy(msg) }
            statusReceived(msg)
            return
        }
        guard let meta = AckSubject(reply) else {
            natsMsg_Destroy(msg)
            return
        }
        let copy = NATSMessage(copying: msg)
        let box = CMessageBox(msg, pull: self)
        let delivery = JetStreamDelivery(
            subject: copy.subject, payload: copy.payload, headers: copy.headers, stream: stream, consumer: durable,
            streamSequence: meta.streamSequence, deliveryCount: meta.delivered, storedAtUnixNanos: meta.timestamp)
        let (stopping, filled) = state.withLock { state -> (Bool, Bool) in
            state.inFlight += 1
            var filled = false
            if state.outstanding {
                state.owed -= 1
                if state.owed <= 0 {
                    state.outstanding = false
                    filled = true
                }
            }
            return (state.stopping, filled)
        }
        if stopping {
            // Arrived while draining: straight back to the server for another replica.
            _ = box.markSettled()
            _ = send(.nak(delay: nil), for: box)
            return
        }
        queue.push(Item(delivery: delivery, box: box))
        if filled { pullIfRoom() }
    }

    private func statusReceived(_ msg: OpaquePointer) {
        var code: UnsafePointer<CChar>?
        guard natsMsgHeader_Get(msg, "Status", &code) == NATS_OK, let code else { return }
        let status = String(cString: code)
        if status == "100" { return }  // idle heartbeat / flow control: not requested, nothing to do
        guard let subject = natsMsg_GetSubject(msg) else { return }
        let name = String(cString: subject)
        guard name.hasPrefix(inbox + "."), let id = UInt64(name.dropFirst(inbox.count + 1)) else { return }
        if status == "409" {
            var description: UnsafePointer<CChar>?
            _ = natsMsgHeader_Get(msg, "Description", &description)
            logger.warning("pull request refused", metadata: [
                "stream": "\(stream)", "consumer": "\(durable)",
                "reason": "\(description.map { String(cString: $0) } ?? "409")",
            ])
        }
        requestEnded(id)
    }

    private static let onMessage: natsMsgHandler = { _, _, msg, closure in
        guard let msg, let closure else { return }
        Unmanaged<ContinuousPull>.fromOpaque(closure).takeUnretainedValue().received(msg)
    }

    /// After the drain (or a close): nothing more will be delivered.
    private static let onComplete: natsOnCompleteCB = { closure in
        guard let closure else { return }
        let pull = Unmanaged<ContinuousPull>.fromOpaque(closure)
        pull.takeUnretainedValue().queue.finish()
        pull.release()
    }
}

/// The metadata JetStream puts in a delivery's reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>`, or with domain
/// and account hash in front (`$JS.ACK.<domain>.<account hash>.<stream>…`, 11 or more tokens).
struct AckSubject {
    var delivered: Int
    var streamSequence: UInt64
    var timestamp: Int64

    init?(_ subject: UnsafePointer<CChar>) {
        // Each token's value if it is a decimal number, else nil.
        var tokens: [UInt64?] = []
        tokens.reserveCapacity(12)
        var value: UInt64 = 0
        var numeric = true
        var index = 0
        while true {
            let byte = UInt8(bitPattern: subject[index])
            if byte == UInt8(ascii: ".") || byte == 0 {
                tokens.append(numeric ? value : nil)
                value = 0
                numeric = true
                if byte == 0 { break }
            } else if byte >= 48 && byte <= 57 {
                value = value &* 10 &+ UInt64(byte - 48)
            } else {
                numeric = false
            }
            index += 1
        }
        // Token 0 is "$JS", 1 is "ACK"; the numbers start at 4 (short form) or 6 (with domain and hash).
        let first: Int
        if tokens.count == 9 {
            first = 4
        } else if tokens.count >= 11 {
            first = 6
        } else {
            return nil
        }
        guard let delivered = tokens[first], let sequence = tokens[first + 1], let stamp = tokens[first + 3]
        else { return nil }
        self.delivered = Int(delivered)
        self.streamSequence = sequence
        self.timestamp = Int64(bitPattern: stamp)
    }
}

/// Deliveries handed from nats.c's thread to one Swift consumer loop: ``next()`` returns everything queued at
/// once (a batch when the loop is busy), so a busy consumer costs no thread hop per message.
final class DeliveryQueue: Sendable {
    private struct Inner {
        var items: [ContinuousPull.Item] = []
        var waiter: CheckedContinuation<[ContinuousPull.Item]?, Never>?
        var finished = false
        var poked = false
    }
    private let inner = Mutex(Inner())

    func push(_ item: ContinuousPull.Item) {
        let waiter = inner.withLock { inner -> CheckedContinuation<[ContinuousPull.Item]?, Never>? in
            if let waiter = inner.waiter {
                inner.waiter = nil
                return waiter
            }
            inner.items.append(item)
            return nil
        }
        waiter?.resume(returning: [item])
    }

    /// No more pushes will come; a waiting or later ``next()`` returns what is left, then nil.
    func finish() {
        let waiter = inner.withLock { inner -> CheckedContinuation<[ContinuousPull.Item]?, Never>? in
            inner.finished = true
            defer { inner.waiter = nil }
            return inner.items.isEmpty ? inner.waiter : nil
        }
        waiter?.resume(returning: nil)
    }

    /// Wakes a waiting (or the next) ``next()`` with `[]` even though nothing arrived: the consumer has room
    /// again for work it held back.
    func poke() {
        let waiter = inner.withLock { inner -> CheckedContinuation<[ContinuousPull.Item]?, Never>? in
            if let waiter = inner.waiter {
                inner.waiter = nil
                return waiter
            }
            inner.poked = true
            return nil
        }
        waiter?.resume(returning: [])
    }

    /// Everything queued (at least one item); `[]` after a ``poke()``; nil once finished and empty, or when the
    /// task is cancelled.
    func next() async -> [ContinuousPull.Item]? {
        let ready = inner.withLock { inner -> [ContinuousPull.Item]?? in
            if !inner.items.isEmpty {
                defer { inner.items.removeAll(keepingCapacity: true) }
                return .some(inner.items)
            }
            if inner.poked {
                inner.poked = false
                return .some([])
            }
            return inner.finished ? .some(nil) : .none
        }
        if let ready { return ready }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[ContinuousPull.Item]?, Never>) in
                let immediate: [ContinuousPull.Item]?? = inner.withLock { inner in
                    if !inner.items.isEmpty {
                        defer { inner.items.removeAll(keepingCapacity: true) }
                        return .some(inner.items)
                    }
                    if inner.poked {
                        inner.poked = false
                        return .some([])
                    }
                    if inner.finished || Task.isCancelled { return .some(nil) }
                    inner.waiter = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = inner.withLock { inner in
                defer { inner.waiter = nil }
                return inner.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// What is still queued (after the loop stopped taking), for giving back.
    func removeAll() -> [ContinuousPull.Item] {
        inner.withLock { inner in
            defer { inner.items.removeAll() }
            return inner.items
        }
    }
}
