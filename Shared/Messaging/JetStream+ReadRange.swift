extension JetStream {
    /// Reads a stream from `start` through sequence `last` (inclusive) in stream order, through a temporary durable
    /// (`<durablePrefix>-<random>`, one delivery per message, acked as read) that is deleted afterwards on every
    /// path. Messages deleted from the range are skipped: the read ends at `last`, or when the durable has nothing
    /// pending any more. Used by analytics' rebuild, backups and eval's replays.
    ///
    /// - Parameter body: called with each message up to `last`; a throw stops the read (the durable is deleted).
    public func readRange(stream: String, filterSubject: String? = nil, start: ConsumerSpec.StartPolicy,
                          through last: UInt64, durablePrefix: String,
                          _ body: (JetStreamDelivery) async throws -> Void) async throws {
        let durable = "\(durablePrefix)-\(UInt32.random(in: 0...UInt32.max))"
        try await ensureConsumer(stream: stream, ConsumerSpec(
            durable: durable, filterSubject: filterSubject, ackWait: .seconds(120), maxDeliver: 1,
            maxAckPending: 100_000, start: start))
        let consumer: PullConsumer
        do {
            consumer = try await PullConsumer.bind(jetStream: self, stream: stream, durable: durable)
        } catch {
            try? await deleteConsumer(stream: stream, durable: durable)
            throw error
        }
        do {
            try await read(consumer, stream: stream, durable: durable, through: last, body)
        } catch {
            consumer.stop()
            try? await deleteConsumer(stream: stream, durable: durable)
            throw error
        }
        consumer.stop()
        try await deleteConsumer(stream: stream, durable: durable)
    }

    /// The loop of ``readRange``. Keep the typed-throwing `PullConsumer.bind` out of the `do` that runs this loop:
    /// with both in one `do … catch`, the release build of Swift 6.3.1 crashed (signal 11 splitting the coroutine).
    private func read(_ consumer: PullConsumer, stream: String, durable: String, through last: UInt64,
                      _ body: (JetStreamDelivery) async throws -> Void) async throws {
        var seen: UInt64 = 0
        while seen < last {
            guard let message = try await consumer.next(timeout: .seconds(2), batch: 512) else {
                // Nothing more to deliver: the rest of the range is gone (deleted messages).
                if try await consumerState(stream: stream, durable: durable).pending == 0 { return }
                continue
            }
            let delivery = message.delivery
            try? message.ack()
            seen = delivery.streamSequence
            guard seen <= last else { return }
            try await body(delivery)
        }
    }
}
