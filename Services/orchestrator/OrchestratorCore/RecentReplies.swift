import Contracts
import Dispatch
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Synchronization
import Telemetry

/// The final answers (ChatCompleted / ChatFailed) this orchestrator sent lately, by reply subject, kept for a
/// short window so that a gateway whose NATS connection dropped can ask for the ones it may have missed: a core
/// NATS reply published while the gateway's subscription was gone is dropped by the server (docs/adr/0016).
/// Bounded by age and by count, oldest first out.
public final class RecentReplies: Sendable {
    struct Reply: Sendable {
        let payload: [UInt8]
        let headers: NATSHeaders
        /// When it was recorded (uptime nanoseconds).
        let at: UInt64
    }

    private struct State {
        var replies: [String: Reply] = [:]
        /// Reply subjects in the order they were recorded, with when; consumed from `head`.
        var order: [(subject: String, at: UInt64)] = []
        var head = 0
    }

    private let state = Mutex(State())
    private let window: UInt64
    private let capacity: Int

    /// - Parameters:
    ///   - window: how long an answer is kept (longer than a gateway takes to reconnect and ask).
    ///   - capacity: the most answers kept (memory: about capacity × an answer's size).
    public init(window: Duration = .seconds(15), capacity: Int = 8_192) {
        self.window = UInt64(max(0, window.nanosecondsValue))
        self.capacity = max(1, capacity)
    }

    func record(subject: String, payload: [UInt8], headers: NATSHeaders,
                now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        state.withLock { state in
            state.replies[subject] = Reply(payload: payload, headers: headers, at: now)
            state.order.append((subject, now))
            while state.head < state.order.count,
                  state.order.count - state.head > capacity || now &- state.order[state.head].at > window {
                drop(&state)
            }
            if state.head > 1_024 && state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
        }
    }

    func reply(subject: String, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Reply? {
        state.withLock { state in
            guard let reply = state.replies[subject], now &- reply.at <= window else { return nil }
            return reply
        }
    }

    var count: Int { state.withLock { $0.replies.count } }

    /// Drops the oldest record — and its answer, unless the same subject was recorded again since (a redelivered
    /// task answered twice).
    private func drop(_ state: inout State) {
        let oldest = state.order[state.head]
        if state.replies[oldest.subject]?.at == oldest.at { state.replies.removeValue(forKey: oldest.subject) }
        state.head += 1
    }
}

/// Answers gateways' resend requests (`_sy.resend.<gateway instance token>`, a ``ReplyResend`` with request ids):
/// every answer still in ``RecentReplies`` for that gateway's requests is published again to its reply subject.
/// Every orchestrator instance subscribes (no queue group): the one that answered a request resends it. Ids that
/// aren't plain tokens are ignored, so a resend only ever reaches a gateway's reply subject.
public struct ReplyResendService: Service {
    let connection: NATSConnection
    let replies: RecentReplies
    let metrics: TelemetryMetrics
    let logger: Logger

    public init(connection: NATSConnection, replies: RecentReplies, metrics: TelemetryMetrics, logger: Logger) {
        self.connection = connection
        self.replies = replies
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        let subscription = try connection.subscribe(ReplySubjects.resendRoot + ".*")
        try? await cancelWhenGracefulShutdown {
            for await message in subscription.messages {
                handle(message)
            }
        }
        subscription.unsubscribe()
    }

    func handle(_ message: NATSMessage) {
        guard let request = try? ReplyResend(protobuf: message.payload) else {
            metrics.counter(.replyResendsTotal, [(.outcome, "malformed")]).increment()
            return
        }
        let token = message.subject.split(separator: ".").last ?? ""
        var resent = 0
        for id in request.requestIds.prefix(ReplySubjects.maxResendIDsPerMessage) {
            guard let subject = ReplySubjects.gatewayReplySubject(instanceToken: token, requestID: id),
                  let reply = replies.reply(subject: subject) else { continue }
            do {
                try connection.publish(subject, payload: reply.payload, headers: reply.headers)
                resent += 1
            } catch {
                logger.warning("reply resend failed", metadata: ["error": "\(error)"])
            }
        }
        if resent > 0 {
            metrics.counter(.replyResendsTotal, [(.outcome, "resent")]).increment(by: resent)
            logger.info("answers sent again after a gateway reconnected", metadata: ["replies": "\(resent)"])
        }
    }
}
