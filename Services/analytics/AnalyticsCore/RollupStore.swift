import Storage

/// Folds facts into the rollups exactly once per event-log sequence (docs/adr/0015): in one transaction, the
/// batch's sequences are checked against the ledger `analytics_applied` and recorded there (one row per kind and
/// minute of the batch, its sequences as an array), and only the facts whose sequence was new are summed and
/// upserted. A redelivery after a crash between COMMIT and ack, or a batch that a rebuild already replayed,
/// therefore changes nothing. Batches of one kind take that kind's advisory lock first, so two batches holding
/// the same sequence (a redelivery while the first is still being folded) cannot both find it new.
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
        // The ledger rows this batch adds: per kind and minute, its new sequences (sorted) and their range.
        struct LedgerKey: Hashable { var kind: String; var minute: Int64 }
        let kinds = Set(facts.map(\.kind.ledgerName))
        for (index, kind) in EventFact.Kind.ledgerNames.enumerated() where kinds.contains(kind) {
            _ = try await connection.query("SELECT pg_advisory_xact_lock($1)", [.int64(Self.writeLock &+ Int64(index) &+ 1)])
        }
        var low = UInt64.max, high: UInt64 = 0
        for fact in facts { low = min(low, fact.sequence); high = max(high, fact.sequence) }
        var kindList = PostgresArrayLiteral()
        for kind in kinds.sorted() { kindList.append(text: kind) }
        // Sequences already applied: those of ledger rows of the same kinds whose range overlaps the batch's (none,
        // unless this is a redelivery or a replay). Rows of kind `any` come from the ledger before it had kinds.
        let applied = try await connection.query("""
            SELECT s FROM analytics_applied a CROSS JOIN LATERAL unnest(a.seqs) AS s
            WHERE (a.kind = ANY($1::text[]) OR a.kind = 'any') AND a.last_seq >= $2 AND a.first_seq <= $3
              AND s BETWEEN $2 AND $3
            """, [.text(kindList.literal), .int64(Int64(clamping: low)), .int64(Int64(clamping: high))])
        var seen = Set<UInt64>()
        for row in applied { seen.insert(UInt64(try row.decode(Int64.self, at: 0))) }
        // The facts new to the rollups, in one pass: not applied before, and a sequence twice in this batch (a
        // replay's chunk and a redelivery cannot, but be safe) counts once and is recorded once.
        var fresh: [EventFact] = []
        fresh.reserveCapacity(facts.count)
        var newSequences: [LedgerKey: [UInt64]] = [:]
        for fact in facts where seen.insert(fact.sequence).inserted {
            fresh.append(fact)
            newSequences[LedgerKey(kind: fact.kind.ledgerName, minute: fact.minute), default: []].append(fact.sequence)
        }
        var ledgerKinds = PostgresArrayLiteral(), ledgerMinutes = PostgresArrayLiteral()
        var ledgerFirst = PostgresArrayLiteral(), ledgerLast = PostgresArrayLiteral(), ledgerSeqs = PostgresArrayLiteral()
        for (key, sequences) in newSequences {
            let new = sequences.sorted()
            guard let first = new.first, let last = new.last else { continue }
            var seqs = PostgresArrayLiteral()
            for sequence in new { seqs.append(number: Int64(clamping: sequence)) }
            ledgerKinds.append(text: key.kind)
            ledgerMinutes.append(number: key.minute)
            ledgerFirst.append(number: Int64(clamping: first))
            ledgerLast.append(number: Int64(clamping: last))
            ledgerSeqs.append(text: seqs.literal)
        }
        if !newSequences.isEmpty {
            _ = try await connection.execute("""
                INSERT INTO analytics_applied (kind, minute, first_seq, last_seq, seqs)
                SELECT kind, to_timestamp(minute_s), first_seq, last_seq, seqs::bigint[]
                FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
                     AS i (kind, minute_s, first_seq, last_seq, seqs)
                """, [.text(ledgerKinds.literal), .text(ledgerMinutes.literal), .text(ledgerFirst.literal),
                      .text(ledgerLast.literal), .text(ledgerSeqs.literal)])
        }
        let delta = RollupDelta(fresh, series: ids, prices: prices)
        for (sql, parameters) in delta.statements {
            _ = try await connection.execute(sql, parameters)
        }
        return Outcome(folded: fresh.count, duplicates: facts.count - fresh.count, unpriced: delta.unpriced,
                       fresh: fresh)
    }

    /// Forgets the ledger rows whose sequences are all at or below the durables' ack floor: those are never
    /// delivered again (a rebuild deletes what it replays by minute, not by sequence). Returns how many sequences
    /// went.
    public func prune(belowOrAt ackFloor: UInt64) async throws -> Int {
        guard ackFloor > 0 else { return 0 }
        return try await pool.transaction { connection in
            // Not while a rebuild runs (next time).
            guard try await Self.tryLockShared(connection) else { return 0 }
            let rows = try await connection.query("""
                WITH gone AS (DELETE FROM analytics_applied WHERE last_seq <= $1 RETURNING cardinality(seqs) AS n)
                SELECT coalesce(sum(n), 0)::bigint FROM gone
                """, [.int64(Int64(clamping: ackFloor))])
            return Int(try rows.first?.decode(Int64.self, at: 0) ?? 0)
        }
    }
}
