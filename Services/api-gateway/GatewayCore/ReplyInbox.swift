import Contracts
import Logging
import Messaging
import ServiceLifecycle
import Synchronization

/// This gateway instance's reply subject: `_sy.gw.<instance>.<request id>`. The orchestrator publishes a
/// request's answer (or its stream chunks) there; the inbox routes each message to the waiting HTTP handler.
/// One wildcard subscription per instance, so replies never cross replicas.
public final class ReplyInbox: Sendable {
    public let prefix: String
    private struct Waiter {
        let continuation: AsyncStream<NATSMessage>.Continuation
        let deadline: ContinuousClock.Instant
    }
    private let waiters = Mutex<[String: Waiter]>([:])
    private let subscription: NATSSubscription

    public init(connection: NATSConnection, instanceID: String) throws {
        prefix = ReplySubjects.gatewayPrefix(instanceID: instanceID)
        subscription = try connection.subscribe(prefix + "*")
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

/// Runs the inbox's dispatch loop as part of the gateway's service group.
public struct ReplyInboxService: Service {
    let inbox: ReplyInbox
    public init(inbox: ReplyInbox) { self.inbox = inbox }
    public func run() async throws {
        let inbox = self.inbox
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // Deadline sweep every 10 ms: a request's 504 comes at most that late.
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: .milliseconds(10))
                    inbox.expire(now: .now)
                }
            }
            await inbox.dispatch()
            group.cancelAll()
        }
        inbox.stop()
    }
}
