import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import Storage
import Synchronization
import Tenancy

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

    /// Runs the rebuild; `progress` sees the outcome so far after every folded chunk.
    public func run(fromUnixNanos: Int64, progress: @Sendable (Outcome) -> Void = { _ in }) async throws -> Outcome {
        try await store.prices.load()
        return try await store.pool.transaction { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock($1)", [.int64(RollupStore.writeLock)])
            let state = try await jetStream.streamState(StreamNames.events)
            let last = state.lastSequence
            var minute: Int64? = fromUnixNanos > 0 ? EventFact.minute(of: fromUnixNanos) : nil
            let start = fromUnixNanos > 0
                ? try await jetStream.firstSequence(storedSince: fromUnixNanos - Self.margin, stream: StreamNames.events)
                : state.firstSequence
            var outcome = Outcome(fromMinute: nil, firstSequence: start, lastSequence: last, replayed: 0, folded: 0)
            progress(outcome)
            guard last >= start, last > 0 else {
                if let minute { try await Self.delete(from: minute, on: connection) }
                outcome.fromMinute = minute
                return outcome
            }
            var deleted = false
            var batch: [EventFact] = []
            try await jetStream.readRange(stream: StreamNames.events, filterSubject: Subjects.eventsAll,
                                          start: .sequence(start), through: last,
                                          durablePrefix: "analytics-rebuild") { delivery in
                if !deleted {
                    // Without --from on a log that lost its oldest events: the minutes after the oldest one.
                    if fromUnixNanos <= 0 && state.firstSequence > 1 {
                        minute = EventFact.minute(of: delivery.storedAtUnixNanos) + 120
                    }
                    try await Self.delete(from: minute, on: connection)
                    deleted = true
                }
                outcome.replayed += 1
                guard let fact = try? EventFact.from(delivery) else { return }
                if let minute, fact.minute < minute { return }
                batch.append(fact)
                if batch.count >= 1024 {
                    let ids = try await store.seriesIDs(batch)
                    outcome.folded += try await store.fold(batch, series: ids, on: connection).folded
                    batch.removeAll(keepingCapacity: true)
                    progress(outcome)
                }
            }
            outcome.folded += try await store.fold(batch, series: try await store.seriesIDs(batch), on: connection).folded
            if !deleted { try await Self.delete(from: minute, on: connection) }
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
        // (Series are kept: their ids are stable, and cached by every replica.)
        for table in ["analytics_minutes", "analytics_errors", "analytics_latency", "analytics_applied"] {
            _ = try await connection.execute("DELETE FROM \(table) WHERE minute >= to_timestamp($1)", [bound])
        }
        _ = try await connection.execute("DELETE FROM analytics_conversations WHERE started >= to_timestamp($1)",
                                         [bound])
    }
}

/// Rebuilds as background jobs (`admin.analytics.rebuild` starts one, `rebuild-status` follows it): a rebuild of
/// a long log takes minutes, longer than an admin request may wait. One runs at a time; its progress and outcome
/// are in `analytics_rebuilds`, written every second by the replica running it.
public final class RebuildJobs: Sendable {
    let rebuild: Rebuild
    let pool: PostgresPool
    let logger: Logger
    /// A running rebuild whose heartbeat is older than this was abandoned.
    static let staleAfterSeconds = 30

    public init(rebuild: Rebuild, pool: PostgresPool, logger: Logger) {
        self.rebuild = rebuild
        self.pool = pool
        self.logger = logger
    }

    /// Starts a rebuild, or returns the one already running.
    public func start(fromUnixNanos: Int64, actor: String) async throws -> RebuildResponse {
        let (id, started) = try await pool.transaction { connection -> (Int64, Bool) in
            _ = try await connection.execute("LOCK TABLE analytics_rebuilds IN EXCLUSIVE MODE")
            _ = try await connection.execute("""
                UPDATE analytics_rebuilds SET state = 'failed', finished_at = now(),
                       failure = 'abandoned: the replica running it stopped; nothing was changed'
                WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
                """, [.int64(Int64(Self.staleAfterSeconds))])
            let running = try await connection.query("SELECT id FROM analytics_rebuilds WHERE state = 'running'")
            if let id = try running.first?.decode(Int64.self, at: 0) { return (id, false) }
            let rows = try await connection.query("""
                INSERT INTO analytics_rebuilds (requested_by, from_minute, state)
                VALUES ($1, CASE WHEN $2 > 0 THEN to_timestamp($2) END, 'running') RETURNING id
                """, [.text(actor), .int64(fromUnixNanos > 0 ? EventFact.minute(of: fromUnixNanos) : 0)])
            return (try rows[0].decode(Int64.self, at: 0), true)
        }
        if started {
            Task.detached { [self] in await execute(id: id, fromUnixNanos: fromUnixNanos) }
        }
        return try await status(id: id)
    }

    /// A rebuild's state (id 0: the latest), or nil when there is none.
    public func status(id: Int64) async throws -> RebuildResponse {
        let rows = try await pool.query("""
            SELECT id, requested_by, COALESCE(extract(epoch FROM from_minute)::bigint, 0),
                   CASE WHEN state = 'running' AND heartbeat_at < now() - make_interval(secs => $2) THEN 'failed'
                        ELSE state END,
                   first_sequence, last_sequence, replayed, folded,
                   CASE WHEN state = 'running' AND heartbeat_at < now() - make_interval(secs => $2)
                        THEN 'abandoned: the replica running it stopped; nothing was changed' ELSE failure END,
                   (extract(epoch FROM started_at) * 1e9)::bigint,
                   COALESCE((extract(epoch FROM finished_at) * 1e9)::bigint, 0)
            FROM analytics_rebuilds WHERE ($1 = 0 OR id = $1) ORDER BY id DESC LIMIT 1
            """, [.int64(id), .int64(Int64(Self.staleAfterSeconds))])
        guard let row = rows.first else { throw AdminFailure(.notFound, id == 0 ? "no rebuild yet" : "no rebuild \(id)") }
        return RebuildResponse(
            fromUnixNanos: try row.decode(Int64.self, at: 2) * 1_000_000_000,
            firstSequence: UInt64(try row.decode(Int64.self, at: 4)), lastSequence: UInt64(try row.decode(Int64.self, at: 5)),
            eventsReplayed: try row.decode(Int64.self, at: 6), eventsFolded: try row.decode(Int64.self, at: 7),
            id: try row.decode(Int64.self, at: 0), state: try row.decode(String.self, at: 3),
            failure: try row.decode(String.self, at: 8), startedAtUnixNanos: try row.decode(Int64.self, at: 9),
            finishedAtUnixNanos: try row.decode(Int64.self, at: 10), requestedBy: try row.decode(String.self, at: 1))
    }

    /// Runs rebuild `id`, writing its progress every second, then its outcome.
    func execute(id: Int64, fromUnixNanos: Int64) async {
        final class Latest: Sendable { let value = Mutex<Rebuild.Outcome?>(nil) }
        let latest = Latest()
        let pool = self.pool
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let progress = latest.value.withLock { $0 }
                _ = try? await pool.execute("""
                    UPDATE analytics_rebuilds SET heartbeat_at = now(), first_sequence = $2, last_sequence = $3,
                           replayed = $4, folded = $5
                    WHERE id = $1 AND state = 'running'
                    """, [.int64(id), .int64(Int64(clamping: progress?.firstSequence ?? 0)),
                          .int64(Int64(clamping: progress?.lastSequence ?? 0)),
                          .int64(Int64(progress?.replayed ?? 0)), .int64(Int64(progress?.folded ?? 0))])
            }
        }
        defer { heartbeat.cancel() }
        do {
            let outcome = try await rebuild.run(fromUnixNanos: fromUnixNanos) { progress in
                latest.value.withLock { $0 = progress }
            }
            heartbeat.cancel()
            _ = try await pool.execute("""
                UPDATE analytics_rebuilds SET state = 'done', finished_at = now(), heartbeat_at = now(),
                       first_sequence = $2, last_sequence = $3, replayed = $4, folded = $5,
                       from_minute = CASE WHEN $6 > -62135596800 THEN to_timestamp($6) END
                WHERE id = $1
                """, [.int64(id), .int64(Int64(clamping: outcome.firstSequence)),
                      .int64(Int64(clamping: outcome.lastSequence)), .int64(Int64(outcome.replayed)),
                      .int64(Int64(outcome.folded)), .int64(outcome.fromMinute ?? -62_135_596_800)])
        } catch {
            heartbeat.cancel()
            logger.error("analytics rebuild failed; nothing was changed", metadata: ["id": "\(id)", "error": "\(error)"])
            _ = try? await pool.execute("""
                UPDATE analytics_rebuilds SET state = 'failed', finished_at = now(), failure = $2 WHERE id = $1
                """, [.int64(id), .text(String("\(error)".prefix(500)))])
        }
    }
}
