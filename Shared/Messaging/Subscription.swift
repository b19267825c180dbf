@preconcurrency import CNats

/// A core NATS subscription delivering copies of messages through an `AsyncStream`.
///
/// `@unchecked Sendable`: the wrapped `natsSubscription` is thread-safe in nats.c; the Swift state is
/// immutable after init.
public final class NATSSubscription: @unchecked Sendable {
    private let handle: OpaquePointer
    private let box: Unmanaged<Box>
    public let messages: AsyncStream<NATSMessage>

    final class Box: Sendable {
        let continuation: AsyncStream<NATSMessage>.Continuation
        init(_ continuation: AsyncStream<NATSMessage>.Continuation) { self.continuation = continuation }
    }

    init(connection: NATSConnection, subject: String, queue: String?) throws(NATSError) {
        let (stream, continuation) = AsyncStream<NATSMessage>.makeStream()
        let box = Unmanaged.passRetained(Box(continuation))
        var sub: OpaquePointer?
        let closure = UnsafeMutableRawPointer(box.toOpaque())
        let status: natsStatus
        if let queue {
            status = natsConnection_QueueSubscribe(&sub, connection.handle, subject, queue, Self.onMessage, closure)
        } else {
            status = natsConnection_Subscribe(&sub, connection.handle, subject, Self.onMessage, closure)
        }
        guard status == NATS_OK, let sub else {
            box.release()
            throw NATSError.fromStatus(status, code: .subscribeFailed, context: "subscribing")
        }
        natsSubscription_SetPendingLimits(sub, 1_000_000, 1 << 30)
        natsSubscription_SetOnCompleteCB(sub, Self.onComplete, closure)
        handle = sub
        self.box = box
        messages = stream
    }

    /// Stops delivery and finishes the `messages` stream.
    public func unsubscribe() {
        natsSubscription_Unsubscribe(handle)
    }

    deinit {
        natsSubscription_Unsubscribe(handle)
        natsSubscription_Destroy(handle)
    }

    private static let onMessage: natsMsgHandler = { _, _, msg, closure in
        guard let msg, let closure else { return }
        defer { natsMsg_Destroy(msg) }
        Unmanaged<Box>.fromOpaque(closure).takeUnretainedValue().continuation.yield(NATSMessage(copying: msg))
    }

    private static let onComplete: natsOnCompleteCB = { closure in
        guard let closure else { return }
        let box = Unmanaged<Box>.fromOpaque(closure)
        box.takeUnretainedValue().continuation.finish()
        box.release()
    }
}
