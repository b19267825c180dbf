import Storage

/// Folds facts into the rollups exactly once per event-log sequence (docs/adr/0015): in one transaction, the
/// batch's sequences go into `analytics_applied` (`ON CONFLICT DO NOTHING RETURNING`), and only the facts whose
/// sequence was new are summed and upserted. A redelivery after a crash between COMMIT and ack, or a batch that
/// a rebuild already replayed, therefore changes nothing.
public struct RollupStore: Sendable {
    public let pool: PostgresPool
    public let prices: PriceBook
    let series = SeriesCache()

    /// The advisory lock: live batches take it shared, a rebuild exclusively while it replaces rollups.
    public static let writeLock: Int64 = 0x5359_414E_4C59  // "SYANLY"

    public init(pool: PostgresPool, prices: PriceBook) {
        self.pool = pool
        self.prices = prices
    }

    public struct Outcome: Sendable {
        /// Facts new to the rollups.
        public var folded: Int
        /// Facts whose sequence had been folded before.
        public var duplicates: Int
        /// New completions without a price.
        public var unpriced: Int
        /// The facts folded for the first time (for the log-derived metrics).
        public var fresh: [EventFact] = []
    }

    /// Folds `facts` in one transaction of its own. While a rebuild holds the lock, the batch waits without
    /// holding a pooled connection (it polls with `pg_try_advisory_xact_lock_shared`), so stats queries keep
    /// their connections.
    public func fold(_ facts: [EventFact]) async throws -> Outcome {
        guard !facts.isEmpty else { return Outcome(folded: 0, duplicates: 0, unpriced: 0) }
        try await prices.refreshIfStale()
        let ids = try await series.ids(for: Set(facts.map(\.dimensions)), pool: pool)
        var delay: Duration = .milliseconds(50)
        while true {
            let outcome: Outcome? = try await pool.transaction { connection in
                guard try await Self.tryLockShared(connection) else { return nil }
                return try await fold(facts, series: ids, on: connection)
            }
            if let outcome { return outcome }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
    }

    /// Takes the rollup lock shared for this transaction, unless a rebuild holds it.
    static func tryLockShared(_ connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_xact_lock_shared($1)", [.int64(writeLock)])
        return try rows.first?.decode(Bool.self, at: 0) == true
    }

    /// The series ids of `facts` (added when new), outside any rollup transaction.
    func seriesIDs(_ facts: [EventFact]) async throws -> [Dimensions: Int32] {
        try await series.ids(for: Set(facts.map(\.dimensions)), pool: pool)
    }

    /// Folds `facts` on `connection`, inside the caller's transaction (a rebuild's, which holds the lock).
    func fold(_ facts: [EventFact], series ids: [Dimensions: Int32], on connection: PostgresConnection) async throws
        -> Outcome
    {
        guard !facts.isEmpty else { return Outcome(folded: 0, duplicates: 0, unpriced: 0) }
        var sequences = PostgresArrayLiteral(), minutes = PostgresArrayLiteral()
        for fact in facts {
            sequences.append(number: Int64(fact.sequence))
            minutes.append(number: fact.minute)
        }
        let rows = try await connection.query("""
            INSERT INTO analytics_applied (seq, minute)
            SELECT seq, to_timestamp(minute_s) FROM unnest($1::bigint[], $2::bigint[]) AS i (seq, minute_s)
            ORDER BY seq
            ON CONFLICT (seq) DO NOTHING
            RETURNING seq
            """, [.text(sequences.literal), .text(minutes.literal)])
        var fresh = Set<UInt64>()
        fresh.reserveCapacity(rows.count)
        for row in rows { fresh.insert(UInt64(try row.decode(Int64.self, at: 0))) }
        let delta = RollupDelta(facts.lazy.filter { fresh.contains($0.sequence) }, series: ids, prices: prices)
        for (sql, parameters) in delta.statements {
            _ = try await connection.execute(sql, parameters)
        }
        return Outcome(folded: fresh.count, duplicates: facts.count - fresh.count, unpriced: delta.unpriced,
                       fresh: fresh.count == facts.count ? facts : facts.filter { fresh.contains($0.sequence) })
    }

    /// Forgets the applied sequences at or below the durable's ack floor: those are never delivered again (a
    /// rebuild deletes what it replays by minute, not by sequence). Returns how many rows went.
    public func prune(belowOrAt ackFloor: UInt64) async throws -> Int {
        guard ackFloor > 0 else { return 0 }
        return try await pool.transaction { connection in
            // Not while a rebuild runs (next time).
            guard try await Self.tryLockShared(connection) else { return 0 }
            return try await connection.execute("DELETE FROM analytics_applied WHERE seq <= $1",
                                                [.int64(Int64(clamping: ackFloor))])
        }
    }
}
