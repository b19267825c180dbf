import Contracts
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Synchronization

/// This instance's reply subject: `_sy.gw.<instance>.<request id>` (gateways; the eval service has one too). The
/// orchestrator publishes a request's answer (or its stream chunks) there; the inbox routes each message to the
/// waiting handler. One wildcard subscription per instance, so replies never cross replicas.
///
/// A reply published while this instance's connection was away (a nats-server restart, a network blip) is
/// dropped by the server — core NATS keeps nothing. So after every reconnect the inbox asks the orchestrators
/// to send the answers of its waiting requests again (``ReplyResend`` on `_sy.resend.<instance>`, right away and
/// again 1, 3, 6, 10, 15, 20, 30, 45 and 60 s later for orchestrators that reconnect after it — a client's reconnect
/// backoff grows with the attempts of a long outage, and a loaded machine is slow; each asks only for the requests
/// still waiting); duplicates find no waiter and are dropped
/// (docs/adr/0016).
public final class ReplyInbox: Sendable {
    public let prefix: String
    let connection: NATSConnection
    let resendSubject: String
    private struct Waiter {
        let continuation: AsyncStream<NATSMessage>.Continuation
        let deadline: ContinuousClock.Instant
    }
    private let waiters = Mutex<[String: Waiter]>([:])
    private let subscription: NATSSubscription

    public init(connection: NATSConnection, instanceID: String) throws {
        self.connection = connection
        prefix = ReplySubjects.gatewayPrefix(instanceID: instanceID)
        resendSubject = ReplySubjects.resendSubject(instanceID: instanceID)
        subscription = try connection.subscribe(prefix + "*")
    }

    /// When resend requests go out after a reconnect (from the moment it is noticed).
    static let resendDelays: [Duration] = [.zero, .seconds(1), .seconds(3), .seconds(6), .seconds(10), .seconds(15),
                                           .seconds(20), .seconds(30), .seconds(45), .seconds(60)]

    /// Asks the orchestrators for the answers of every request still waiting; returns how many ids were asked for.
    @discardableResult
    func requestResend() -> Int {
        let ids = waiters.withLock { Array($0.keys) }
        var start = 0
        while start < ids.count {
            let end = min(start + ReplySubjects.maxResendIDsPerMessage, ids.count)
            let request = ReplyResend(requestIds: Array(ids[start..<end]))
            try? connection.publish(resendSubject, payload: request.protobufBytes(),
                                    headers: [Headers.eventType: ReplyResend.protoName])
            start = end
        }
        return ids.count
    }

    public func subject(for requestID: String) -> String { prefix + requestID }

    /// Registers interest in a request's replies; call before publishing the request. The stream finishes at
    /// `deadline` (checked by one sweep per inbox, not a timer per request) or on `unregister`.
    public func register(_ requestID: String, deadline: ContinuousClock.Instant) -> AsyncStream<NATSMessage> {
        let (stream, continuation) = AsyncStream<NATSMessage>.makeStream(bufferingPolicy: .unbounded)
        waiters.withLock { $0[requestID] = Waiter(continuation: continuation, deadline: deadline) }
        return stream
    }

    public func unregister(_ requestID: String) {
        let waiter = waiters.withLock { $0.removeValue(forKey: requestID) }
        waiter?.continuation.finish()
    }

    /// Finishes the reply streams of requests whose deadline passed.
    func expire(now: ContinuousClock.Instant) {
        let expired = waiters.withLock { waiters -> [Waiter] in
            var expired: [Waiter] = []
            for (id, waiter) in waiters where waiter.deadline <= now {
                expired.append(waiter)
                waiters.removeValue(forKey: id)
            }
            return expired
        }
        for waiter in expired { waiter.continuation.finish() }
    }

    var pending: Int { waiters.withLock { $0.count } }

    /// Dispatches replies until graceful shutdown. Replies for requests nobody waits for any more (client
    /// gone, deadline passed) are dropped: their effects (usage, events) are recorded by the orchestrator.
    func dispatch() async {
        let prefixLength = prefix.utf8.count
        for await message in subscription.messages.cancelOnGracefulShutdown() {
            let requestID = String(message.subject.utf8.dropFirst(prefixLength))!
            let waiter = waiters.withLock { $0[requestID] }
            waiter?.continuation.yield(message)
        }
    }

    func stop() { subscription.unsubscribe() }
}

/// Runs the inbox's dispatch loop as part of its service's group (the gateway's, the eval service's).
public struct ReplyInboxService: Service {
    let inbox: ReplyInbox
    public init(inbox: ReplyInbox) { self.inbox = inbox }
    public func run() async throws {
        let inbox = self.inbox
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // Deadline sweep every 10 ms: a request's 504 comes at most that late. The same loop notices a
                // reconnect and sends the resend requests.
                var reconnects = inbox.connection.reconnectCount
                var resendAt: [ContinuousClock.Instant] = []
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: .milliseconds(10))
                    let now = ContinuousClock.now
                    inbox.expire(now: now)
                    let count = inbox.connection.reconnectCount
                    if count != reconnects {
                        reconnects = count
                        resendAt = ReplyInbox.resendDelays.map { now + $0 }
                    }
                    while let first = resendAt.first, first <= now, inbox.connection.isConnected {
                        resendAt.removeFirst()
                        inbox.requestResend()
                    }
                }
            }
            await inbox.dispatch()
            group.cancelAll()
        }
        inbox.stop()
    }
}
