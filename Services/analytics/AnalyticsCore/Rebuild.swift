import Contracts
import Logging
import Messaging
import Storage

/// `switchyard analytics rebuild [--from T]`: replays the event log into fresh rollups for every minute from T on
/// (docs/adr/0015). In one transaction holding the rollup lock exclusively (live batches wait, nothing is lost):
/// 1. the rollups, error counts, histograms and conversations of minutes ≥ T are deleted, with their applied
///    sequences;
/// 2. a temporary durable replays the log from a little before T (events are stored a moment after they
///    occur) up to its last sequence when the lock was taken; events of minutes ≥ T are folded as the live
///    consumer folds them, earlier ones are left as they are;
/// 3. COMMIT. Live batches holding replayed events then find their sequences applied and change nothing; later
///    events fold as usual. A rebuild that fails rolls back and changes nothing.
/// Without `--from` it covers everything the log still holds: all minutes if the log starts at sequence 1,
/// otherwise the minutes after the oldest stored event (older rollups are kept — the log no longer has them).
public struct Rebuild: Sendable {
    let jetStream: JetStream
    let store: RollupStore
    let logger: Logger
    /// How far before T the replay starts.
    static let margin: Int64 = 15 * 60 * 1_000_000_000

    public struct Outcome: Sendable, Equatable {
        public var fromMinute: Int64?          // unix seconds; nil = every minute
        public var firstSequence: UInt64
        public var lastSequence: UInt64
        public var replayed: Int
        public var folded: Int
    }

    public func run(fromUnixNanos: Int64) async throws -> Outcome {
        try await store.prices.load()
        return try await store.pool.transaction { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock($1)", [.int64(RollupStore.writeLock)])
            let state = try await jetStream.streamState(StreamNames.events)
            let last = state.lastSequence
            var minute: Int64? = fromUnixNanos > 0 ? EventFact.minute(of: fromUnixNanos) : nil
            let start = fromUnixNanos > 0
                ? try await jetStream.firstSequence(storedSince: fromUnixNanos - Self.margin, stream: StreamNames.events)
                : state.firstSequence
            let durable = "analytics-rebuild-\(UInt32.random(in: 0...UInt32.max))"
            var outcome = Outcome(fromMinute: nil, firstSequence: start, lastSequence: last, replayed: 0, folded: 0)
            guard last >= start, last > 0 else {
                if let minute { try await Self.delete(from: minute, on: connection) }
                outcome.fromMinute = minute
                return outcome
            }
            try await jetStream.ensureConsumer(stream: StreamNames.events, ConsumerSpec(
                durable: durable, filterSubject: Subjects.eventsAll, ackWait: .seconds(120), maxDeliver: 1,
                maxAckPending: 100_000, start: .sequence(start)))
            do {
                let consumer = try await PullConsumer.bind(jetStream: jetStream, stream: StreamNames.events,
                                                           durable: durable)
                defer { consumer.stop() }
                var deleted = false
                var batch: [EventFact] = []
                var seen: UInt64 = start > 0 ? start - 1 : 0
                while seen < last {
                    guard let message = try await consumer.next(timeout: .seconds(2), batch: 512) else {
                        // Nothing more to deliver: the rest of the range is gone (deleted messages).
                        if try await jetStream.consumerState(stream: StreamNames.events, durable: durable).pending == 0 {
                            break
                        }
                        continue
                    }
                    let delivery = message.delivery
                    try? message.ack()
                    seen = delivery.streamSequence
                    guard delivery.streamSequence <= last else { break }
                    if !deleted {
                        // Without --from on a log that lost its oldest events: the minutes after the oldest one.
                        if fromUnixNanos <= 0 && state.firstSequence > 1 {
                            minute = EventFact.minute(of: delivery.storedAtUnixNanos) + 120
                        }
                        try await Self.delete(from: minute, on: connection)
                        deleted = true
                    }
                    outcome.replayed += 1
                    guard let fact = try? EventFact.from(delivery) else { continue }
                    if let minute, fact.minute < minute { continue }
                    batch.append(fact)
                    if batch.count >= 1024 {
                        outcome.folded += try await store.fold(batch, on: connection).folded
                        batch.removeAll(keepingCapacity: true)
                    }
                }
                outcome.folded += try await store.fold(batch, on: connection).folded
                if !deleted { try await Self.delete(from: minute, on: connection) }
            } catch {
                try? await jetStream.deleteConsumer(stream: StreamNames.events, durable: durable)
                throw error
            }
            try await jetStream.deleteConsumer(stream: StreamNames.events, durable: durable)
            outcome.fromMinute = minute
            logger.info("analytics rebuilt", metadata: [
                "from": "\(minute.map(String.init) ?? "all")", "first_sequence": "\(start)", "last_sequence": "\(last)",
                "replayed": "\(outcome.replayed)", "folded": "\(outcome.folded)",
            ])
            return outcome
        }
    }

    /// Deletes the rollups of minutes ≥ `minute` (all when nil) and their applied sequences.
    static func delete(from minute: Int64?, on connection: PostgresConnection) async throws {
        let bound: PostgresValue = .int64(minute ?? Int64(-62_135_596_800))  // 0001-01-01: everything
        for table in ["analytics_minutes", "analytics_errors", "analytics_latency", "analytics_applied"] {
            _ = try await connection.execute("DELETE FROM \(table) WHERE minute >= to_timestamp($1)", [bound])
        }
        _ = try await connection.execute("DELETE FROM analytics_conversations WHERE started >= to_timestamp($1)",
                                         [bound])
    }
}
