import Logging
import Storage
import Synchronization

/// Writes usage lines into the ledger and the running totals — one statement per batch, so one round trip
/// and one transaction for hundreds of events:
/// - the lines arrive as thirteen array parameters, one per column, unnested into rows (nothing is spliced into
///   SQL, and the statement text is the same for every batch);
/// - each line's `day` is its date in the tenant's time zone (UTC unless the tenant has one);
/// - each is priced by the price of its provider and model in effect when the usage occurred (no price →
///   cost 0 and `unpriced`, so it shows up as such instead of silently billing nothing);
/// - `INSERT … ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING` yields only the lines that are new;
/// - the day totals (per tenant × agent × provider × model; a month is the sum of its days, view
///   `billing_month_totals`) and the per-conversation totals are increased from exactly those lines, in the same
///   statement.
///
/// A redelivered event (a crash between COMMIT and ack, a replay, a republish after the de-duplication
/// window) therefore changes nothing, and the totals always equal the sums over the ledger.
public struct Ledger: Sendable {
    public let pool: PostgresPool

    /// PostgreSQL's time zone names, loaded once: a tenant zone PostgreSQL doesn't know is billed in UTC (and
    /// logged) rather than failing every batch it is in.
    let zones = TimeZoneNames()

    public init(pool: PostgresPool) { self.pool = pool }

    /// What one batch did.
    public struct Outcome: Sendable, Equatable {
        /// Lines new to the ledger (the rest were already there).
        public var inserted: Int
        /// New lines without a price.
        public var unpriced: Int
        /// Cost of the new lines per tenant, in micro-units.
        public var spendByTenant: [String: Int64] = [:]
        /// The costliest new line per tenant (the budgets' request estimate, docs/adr/0014).
        public var maxCostByTenant: [String: Int64] = [:]
    }

    /// The advisory lock key (`pg_advisory_xact_lock`) that orders ledger batches against recomputes.
    public static let writeLock: Int64 = 0x5359_4249_4C4C  // "SYBILL"

    /// Records `lines` in one transaction.
    public func record(_ lines: [UsageLine]) async throws -> Outcome {
        guard !lines.isEmpty else { return Outcome(inserted: 0, unpriced: 0) }
        let known = try await zones.names(pool)
        var text = Array(repeating: PostgresArrayLiteral(), count: 7)
        var numbers = Array(repeating: PostgresArrayLiteral(), count: 4)
        var flags = PostgresArrayLiteral()
        var timeZones = PostgresArrayLiteral()
        for line in lines {
            timeZones.append(text: line.timeZone.isEmpty ? "UTC" : known.contains(line.timeZone) ? line.timeZone
                                : zones.unknown(line.timeZone))
            for (column, value) in [line.tenantID, line.eventID, line.requestID, line.conversationID, line.agent,
                                    line.provider, line.model].enumerated() {
                text[column].append(text: value)
            }
            for (column, value) in [line.promptTokens, line.completionTokens, line.occurredAtUnixNanos,
                                    line.streamSequence].enumerated() {
                numbers[column].append(number: value)
            }
            flags.append(flag: line.estimated)
        }
        let parameters: [PostgresValue] = text.map { .text($0.literal) } + numbers.prefix(2).map { .text($0.literal) }
            + [.text(flags.literal)] + numbers.suffix(2).map { .text($0.literal) } + [.text(timeZones.literal)]
        let rows = try await pool.transaction { connection in
            // Shared: batches run side by side; a recompute takes it exclusively while it rebuilds totals.
            _ = try await connection.query("SELECT pg_advisory_xact_lock_shared($1)", [.int64(Self.writeLock)])
            return try await connection.query(Self.statement, parameters)
        }
        var outcome = Outcome(inserted: 0, unpriced: 0)
        for row in rows {
            outcome.inserted += Int(try row.decode(Int64.self, column: "inserted"))
            outcome.unpriced += Int(try row.decode(Int64.self, column: "unpriced"))
            let tenant = try row.decode(String.self, column: "tenant_id")
            outcome.spendByTenant[tenant] = try row.decode(Int64.self, column: "spend")
            outcome.maxCostByTenant[tenant] = try row.decode(Int64.self, column: "max_cost")
        }
        return outcome
    }

    /// The statement: thirteen array parameters (one per column), so its text is the same for every batch and
    /// cheap to parse, whatever the batch size.
    static let statement = """
            WITH input (tenant_id, event_id, request_id, conversation_id, agent, provider, model, prompt_tokens,
                        completion_tokens, estimated, occurred_at_ns, stream_sequence, time_zone) AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                     $7::text[], $8::bigint[], $9::bigint[], $10::boolean[], $11::bigint[],
                                     $12::bigint[], $13::text[])
            ),
            timed AS (
                SELECT i.*, to_timestamp(i.occurred_at_ns::double precision / 1e9) AS occurred_at FROM input i
            ),
            priced AS (
                SELECT i.*, (i.occurred_at AT TIME ZONE i.time_zone)::date AS day, p.id AS price_id,
                       COALESCE((i.prompt_tokens * p.input_micros_per_million
                                 + i.completion_tokens * p.output_micros_per_million + 500000) / 1000000, 0) AS cost_micros,
                       p.id IS NULL AS unpriced
                FROM timed i
                LEFT JOIN LATERAL (
                    SELECT id, input_micros_per_million, output_micros_per_million
                    FROM billing_prices
                    WHERE provider = i.provider AND model = i.model
                      AND effective_from <= i.occurred_at
                    ORDER BY effective_from DESC
                    LIMIT 1
                ) p ON true
            ),
            inserted AS (
                INSERT INTO billing_ledger (tenant_id, event_id, request_id, conversation_id, agent, provider, model,
                                            prompt_tokens, completion_tokens, estimated, occurred_at, price_id,
                                            cost_micros, unpriced, stream_sequence, day)
                SELECT tenant_id, event_id, request_id, conversation_id, agent, provider, model, prompt_tokens,
                       completion_tokens, estimated, occurred_at, price_id, cost_micros, unpriced, stream_sequence, day
                FROM priced
                ON CONFLICT (tenant_id, event_id) DO NOTHING
                RETURNING tenant_id, conversation_id, agent, provider, model, prompt_tokens, completion_tokens,
                          estimated, occurred_at, cost_micros, unpriced, day
            ),
            totals AS (
                INSERT INTO billing_totals AS t (tenant_id, period, period_start, agent, provider, model, requests,
                                                 prompt_tokens, completion_tokens, cost_micros, unpriced_requests,
                                                 estimated_requests)
                SELECT n.tenant_id, 'day', n.day, n.agent, n.provider, n.model,
                       count(*), sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.cost_micros),
                       count(*) FILTER (WHERE n.unpriced), count(*) FILTER (WHERE n.estimated)
                FROM inserted n
                GROUP BY 1, 2, 3, 4, 5, 6
                ORDER BY 1, 2, 3, 4, 5, 6
                ON CONFLICT (tenant_id, period, period_start, agent, provider, model) DO UPDATE SET
                    requests = t.requests + EXCLUDED.requests,
                    prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens,
                    completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens,
                    cost_micros = t.cost_micros + EXCLUDED.cost_micros,
                    unpriced_requests = t.unpriced_requests + EXCLUDED.unpriced_requests,
                    estimated_requests = t.estimated_requests + EXCLUDED.estimated_requests
                RETURNING 1
            ),
            conversations AS (
                INSERT INTO billing_conversations AS c (tenant_id, conversation_id, requests, prompt_tokens,
                                                        completion_tokens, cost_micros, first_at, last_at)
                SELECT tenant_id, conversation_id, count(*), sum(prompt_tokens), sum(completion_tokens),
                       sum(cost_micros), min(occurred_at), max(occurred_at)
                FROM inserted
                WHERE conversation_id <> ''
                GROUP BY 1, 2
                ORDER BY 1, 2
                ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET
                    requests = c.requests + EXCLUDED.requests,
                    prompt_tokens = c.prompt_tokens + EXCLUDED.prompt_tokens,
                    completion_tokens = c.completion_tokens + EXCLUDED.completion_tokens,
                    cost_micros = c.cost_micros + EXCLUDED.cost_micros,
                    first_at = least(c.first_at, EXCLUDED.first_at),
                    last_at = greatest(c.last_at, EXCLUDED.last_at)
                RETURNING 1
            )
            SELECT tenant_id, count(*) AS inserted, count(*) FILTER (WHERE unpriced) AS unpriced,
                   sum(cost_micros)::bigint AS spend, max(cost_micros)::bigint AS max_cost
            FROM inserted
            GROUP BY tenant_id
            """
}

/// PostgreSQL's time zone names (`pg_timezone_names`), read once per process.
final class TimeZoneNames: Sendable {
    private let loaded = Mutex<Set<String>?>(nil)
    private let reported = Mutex<Set<String>>([])
    private let logger = Logger(label: "switchyard.billing.zones")

    func names(_ pool: PostgresPool) async throws -> Set<String> {
        if let names = loaded.withLock({ $0 }) { return names }
        let rows = try await pool.query("SELECT name FROM pg_timezone_names")
        let names = Set(try rows.map { try $0.decode(String.self, column: "name") })
        loaded.withLock { $0 = names }
        return names
    }

    /// The zone to use for a tenant zone PostgreSQL doesn't know: UTC, logged once per zone.
    func unknown(_ zone: String) -> String {
        let first = reported.withLock { $0.insert(zone).inserted }
        if first {
            logger.error("tenant time zone unknown to PostgreSQL; its usage counts in UTC days",
                         metadata: ["time_zone": "\(zone.prefix(64))"])
        }
        return "UTC"
    }
}
