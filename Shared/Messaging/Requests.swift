@preconcurrency import CNats
import Dispatch
import Synchronization

/// Multiplexes many concurrent requests over one wildcard inbox subscription (`<inbox>.*`), the way
/// JetStream async publish works, so `await`ing a reply never parks a thread.
final class RequestMultiplexer: Sendable {
    /// Strong reference for Swift; nats.c holds its own retained reference, released by `onComplete`.
    private let state: State
    private let prefix: String
    /// Raw `natsSubscription *`; accessed only under `state.lock`-free C calls that nats.c makes thread-safe.
    private let subscription: SendablePointer
    /// Expires overdue requests every `sweepInterval` (deadlines are honoured to within that interval).
    private let sweeper: SendableTimer
    static let sweepInterval: DispatchTimeInterval = .milliseconds(20)
    private let connection: SendablePointer

    final class State: Sendable {
        struct Waiter {
            let continuation: CheckedContinuation<NATSMessage, any Error>
            /// `DispatchTime.now().uptimeNanoseconds` after which the request times out.
            let deadline: UInt64
        }
        struct Pending {
            var next: UInt64 = 0
            var waiters: [UInt64: Waiter] = [:]
            var shutdown = false
        }
        let pending = Mutex(Pending())
        let prefixLength: Int
        init(prefixLength: Int) { self.prefixLength = prefixLength }

        func complete(token: UInt64, with result: Result<NATSMessage, NATSError>) {
            let waiter = pending.withLock { $0.waiters.removeValue(forKey: token) }
            waiter?.continuation.resume(with: result.mapError { $0 as any Error })
        }

        func failAll(_ error: NATSError) {
            let waiters = pending.withLock { state -> [Waiter] in
                state.shutdown = true
                defer { state.waiters.removeAll() }
                return Array(state.waiters.values)
            }
            for waiter in waiters { waiter.continuation.resume(throwing: error) }
        }

        /// Fails every request whose deadline has passed (run by one periodic timer, not a timer per request).
        func expire(now: UInt64) {
            let expired = pending.withLock { state -> [Waiter] in
                var expired: [Waiter] = []
                for (token, waiter) in state.waiters where waiter.deadline <= now {
                    expired.append(waiter)
                    state.waiters.removeValue(forKey: token)
                }
                return expired
            }
            for waiter in expired {
                waiter.continuation.resume(throwing: NATSError(.timeout, context: "waiting for a reply"))
            }
        }
    }

    init(connection: OpaquePointer, inboxPrefix: String = "_INBOX") throws(NATSError) {
        prefix = try uniqueInbox(prefix: inboxPrefix) + "."
        let state = State(prefixLength: prefix.utf8.count)
        let retained = Unmanaged.passRetained(state)
        var sub: OpaquePointer?
        let status = natsConnection_Subscribe(&sub, connection, prefix + "*", Self.onReply,
                                              UnsafeMutableRawPointer(retained.toOpaque()))
        guard status == NATS_OK, let sub else {
            retained.release()
            throw NATSError.fromStatus(status, code: .subscribeFailed, context: "subscribing to reply inbox")
        }
        // Replies must never be dropped as a slow consumer under load.
        natsSubscription_SetPendingLimits(sub, -1, -1)
        natsSubscription_SetOnCompleteCB(sub, Self.onComplete, UnsafeMutableRawPointer(retained.toOpaque()))
        self.state = state
        self.subscription = SendablePointer(sub)
        self.connection = SendablePointer(connection)
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "switchyard.messaging.request-sweeper"))
        timer.schedule(deadline: .now() + Self.sweepInterval, repeating: Self.sweepInterval, leeway: .milliseconds(5))
        timer.setEventHandler { [state] in state.expire(now: DispatchTime.now().uptimeNanoseconds) }
        timer.resume()
        self.sweeper = SendableTimer(timer)
    }

    func request(subject: String, headers: NATSHeaders, payload: [UInt8], timeout: Duration)
        async throws(NATSError) -> NATSMessage
    {
        let state = self.state
        let token: UInt64? = state.pending.withLock { pending in
            if pending.shutdown { return nil }
            pending.next &+= 1
            return pending.next
        }
        guard let token else { throw NATSError(.connectionClosed, context: "request after close") }
        let msg = try makeCMessage(subject: subject, reply: prefix + String(token), headers: headers,
                                   payload: payload)
        defer { natsMsg_Destroy(msg) }
        let connection = self.connection
        let messagePointer = SendablePointer(msg)
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                    let registered = state.pending.withLock { pending -> Bool in
                        if pending.shutdown { return false }
                        pending.waiters[token] = State.Waiter(
                            continuation: continuation,
                            deadline: DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0, timeout.nanoseconds)))
                        return true
                    }
                    guard registered else {
                        continuation.resume(throwing: NATSError(.connectionClosed, context: "request after close"))
                        return
                    }
                    let status = natsConnection_PublishMsg(connection.pointer, messagePointer.pointer)
                    if status != NATS_OK {
                        state.complete(token: token, with: .failure(
                            NATSError.fromStatus(status, code: .publishFailed, context: "publishing request")))
                        return
                    }
                }
            } onCancel: {
                state.complete(token: token, with: .failure(NATSError(.timeout, context: "request cancelled")))
            }
        } catch let error as NATSError {
            throw error
        } catch {
            throw NATSError(.timeout, context: "request cancelled")
        }
    }

    func shutdown() {
        let state = self.state
        let already = state.pending.withLock { $0.shutdown }
        if already { return }
        state.failAll(NATSError(.connectionClosed, context: "connection closed"))
        sweeper.timer.cancel()
        natsSubscription_Unsubscribe(subscription.pointer)
    }

    deinit {
        sweeper.timer.cancel()
        natsSubscription_Destroy(subscription.pointer)
    }

    private static let onReply: natsMsgHandler = { _, _, msg, closure in
        guard let msg, let closure else { return }
        defer { natsMsg_Destroy(msg) }
        let state = Unmanaged<State>.fromOpaque(closure).takeUnretainedValue()
        guard let subject = natsMsg_GetSubject(msg) else { return }
        // Parse the decimal token after the inbox prefix without allocating a String.
        var token: UInt64 = 0
        var index = state.prefixLength
        var digits = 0
        while true {
            let byte = UInt8(bitPattern: subject[index])
            if byte == 0 { break }
            guard byte >= 48, byte <= 57 else { return }
            token = token &* 10 &+ UInt64(byte - 48)
            index += 1
            digits += 1
        }
        guard digits > 0 else { return }
        if natsMsg_IsNoResponders(msg) {
            state.complete(token: token, with: .failure(NATSError(.noResponders, context: "no responders")))
        } else {
            state.complete(token: token, with: .success(NATSMessage(copying: msg)))
        }
    }

    private static let onComplete: natsOnCompleteCB = { closure in
        guard let closure else { return }
        Unmanaged<State>.fromOpaque(closure).release()
    }
}

/// `<prefix>.<nuid>`: a fresh inbox subject under the connection's inbox prefix.
func uniqueInbox(prefix: String) throws(NATSError) -> String {
    var inbox: UnsafeMutablePointer<natsInbox>?
    let status = natsInbox_Create(&inbox)
    guard status == NATS_OK, let inbox else {
        throw NATSError.fromStatus(status, code: .subscribeFailed, context: "creating inbox")
    }
    defer { natsInbox_Destroy(inbox) }
    // natsInbox_Create always yields `_INBOX.<nuid>`; swap in the connection's prefix.
    let created = String(cString: inbox)
    let unique = created.hasPrefix("_INBOX.") ? String(created.dropFirst("_INBOX.".count)) : created
    return prefix + "." + unique
}

/// A C pointer handed between threads. `@unchecked Sendable`: the pointee is a nats.c object whose API is
/// thread-safe (connections, subscriptions) or is used by one task at a time (messages during a publish).
struct SendablePointer: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}

/// A dispatch timer shared across threads. `@unchecked Sendable`: DispatchSource's API is thread-safe; we only
/// call `cancel()` on it after setup.
struct SendableTimer: @unchecked Sendable {
    let timer: any DispatchSourceTimer
    init(_ timer: any DispatchSourceTimer) { self.timer = timer }
}
