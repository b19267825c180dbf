import Storage
import Synchronization

/// One batch's contribution to the rollups, summed per row in memory so that each table gets one upsert per
/// batch with one row per key (the batch's facts in any order give the same sums).
struct RollupDelta {
    struct MinuteKey: Hashable, Comparable {
        var series: Int32
        var minute: Int64

        static func < (a: MinuteKey, b: MinuteKey) -> Bool { (a.series, a.minute) < (b.series, b.minute) }
    }

    struct Counters {
        var requests: Int64 = 0
        var completions: Int64 = 0
        var failures: Int64 = 0
        var handoffs: Int64 = 0
        var consentAsked: Int64 = 0
        var consentGranted: Int64 = 0
        var consentDenied: Int64 = 0
        var kbAnswered: Int64 = 0
        var kbNoAnswer: Int64 = 0
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var costMicros: Int64 = 0
        var unpriced: Int64 = 0

        var columns: [Int64] {
            [requests, completions, failures, handoffs, consentAsked, consentGranted, consentDenied, kbAnswered,
             kbNoAnswer, promptTokens, completionTokens, costMicros, unpriced]
        }
    }

    struct ErrorKey: Hashable {
        var key: MinuteKey
        var code: String
    }

    struct LatencyKey: Hashable {
        var key: MinuteKey
        var hop: String
        var bucket: Int
    }

    struct ConversationKey: Hashable {
        var tenant: String
        var conversation: String

        /// FNV-1a over tenant, a NUL and conversation: the same in every process (Swift's `Hasher` is seeded).
        var order: UInt64 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in tenant.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            hash = (hash ^ 0) &* 0x100_0000_01b3
            for byte in conversation.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return hash
        }
    }

    struct Journey {
        var started: Int64
        var answered = false
        var handedOff = false
    }

    var counters: [MinuteKey: Counters] = [:]
    var errors: [ErrorKey: Int64] = [:]
    var latency: [LatencyKey: Int64] = [:]
    var journeys: [ConversationKey: Journey] = [:]
    var unpriced = 0

    /// Sums `facts`; `series` has the id of every fact's dimensions.
    init(_ facts: some Collection<EventFact>, series: [Dimensions: Int32], prices: PriceBook) {
        // Room for a batch without rehashing (resizing the tables was a fortieth of the fold's CPU).
        counters.reserveCapacity(facts.count)
        latency.reserveCapacity(facts.count * 4)
        journeys.reserveCapacity(facts.count)
        for fact in facts { add(fact, series: series[fact.dimensions]!, prices: prices) }
    }

    mutating func add(_ fact: EventFact, series: Int32, prices: PriceBook) {
        let key = MinuteKey(series: series, minute: fact.minute)
        var row = counters[key] ?? Counters()
        // Journeys: a routed request (or one the router failed) starts one, an answer or a handoff marks it; consent
        // checks and failures after routing happen after the routed event and change nothing in it.
        let journeyEvent: Bool = switch fact.kind {
        case .routed, .completed, .handoff: true
        case .failed(_, let unrouted): unrouted
        case .consent: false
        }
        var journey = fact.conversation.isEmpty || !journeyEvent ? nil
            : journeys[ConversationKey(tenant: fact.dimensions.tenant, conversation: fact.conversation)]
                ?? Journey(started: fact.minute)
        if let started = journey?.started { journey?.started = min(started, fact.minute) }
        switch fact.kind {
        case .routed:
            row.requests += 1
        case let .completed(provider, model, promptTokens, completionTokens, handedOff):
            row.completions += 1
            row.promptTokens += promptTokens
            row.completionTokens += completionTokens
            if let cost = prices.cost(provider: provider, model: model, atUnixNanos: fact.occurredAtUnixNanos,
                                      promptTokens: promptTokens, completionTokens: completionTokens) {
                row.costMicros += cost
            } else {
                row.unpriced += 1
                unpriced += 1
            }
            if provider == "local" {
                if handedOff { row.kbNoAnswer += 1 } else { row.kbAnswered += 1 }
            }
            if !handedOff { journey?.answered = true }
        case let .failed(code, unrouted):
            row.failures += 1
            if unrouted { row.requests += 1 }
            errors[ErrorKey(key: key, code: code), default: 0] += 1
        case .handoff:
            row.handoffs += 1
            journey?.handedOff = true
        case let .consent(outcome):
            switch outcome {
            case "asked": row.consentAsked += 1
            case "granted", "granted-now": row.consentGranted += 1
            case "denied", "denied-now": row.consentDenied += 1
            default: break
            }
        }
        counters[key] = row
        for (hop, micros) in fact.latencies {
            latency[LatencyKey(key: key, hop: hop, bucket: LatencyBuckets.index(micros: micros)), default: 0] += 1
        }
        if let journey {
            journeys[ConversationKey(tenant: fact.dimensions.tenant, conversation: fact.conversation)] = journey
        }
    }

    /// The upserts, each with its array parameters (keys sorted, so concurrent batches lock rows in one order).
    var statements: [(sql: String, parameters: [PostgresValue])] {
        var result: [(String, [PostgresValue])] = []
        if !counters.isEmpty {
            var keys = KeyColumns()
            var columns = Array(repeating: PostgresArrayLiteral(), count: 13)
            for (key, row) in counters.sorted(by: { $0.key < $1.key }) {
                keys.append(key)
                for (index, value) in row.columns.enumerated() { columns[index].append(number: value) }
            }
            result.append((Self.minutesUpsert, keys.parameters + columns.map { .text($0.literal) }))
        }
        if !errors.isEmpty {
            var keys = KeyColumns()
            var codes = PostgresArrayLiteral(), counts = PostgresArrayLiteral()
            for (key, count) in errors.sorted(by: { ($0.key.key, $0.key.code) < ($1.key.key, $1.key.code) }) {
                keys.append(key.key)
                codes.append(text: key.code)
                counts.append(number: count)
            }
            result.append((Self.errorsUpsert, keys.parameters + [.text(codes.literal), .text(counts.literal)]))
        }
        if !latency.isEmpty {
            var keys = KeyColumns()
            var hops = PostgresArrayLiteral(), buckets = PostgresArrayLiteral(), counts = PostgresArrayLiteral()
            for (key, count) in latency.sorted(by: { ($0.key.key, $0.key.hop, $0.key.bucket) < ($1.key.key, $1.key.hop, $1.key.bucket) }) {
                keys.append(key.key)
                hops.append(text: key.hop)
                buckets.append(number: Int64(key.bucket))
                counts.append(number: count)
            }
            result.append((Self.latencyUpsert, keys.parameters + [.text(hops.literal), .text(buckets.literal),
                                                                   .text(counts.literal)]))
        }
        if !journeys.isEmpty {
            var tenants = PostgresArrayLiteral(), conversations = PostgresArrayLiteral()
            var started = PostgresArrayLiteral(), answered = PostgresArrayLiteral(), handedOff = PostgresArrayLiteral()
            // Any fixed order keeps concurrent batches from locking rows in opposite orders: a stable 64-bit hash
            // of the key, then its bytes (comparing the strings themselves took a twentieth of the fold's CPU).
            let ordered = journeys.map { (order: $0.key.order, key: $0.key, journey: $0.value) }.sorted { a, b in
                if a.order != b.order { return a.order < b.order }
                return a.key.tenant == b.key.tenant
                    ? a.key.conversation.utf8.lexicographicallyPrecedes(b.key.conversation.utf8)
                    : a.key.tenant.utf8.lexicographicallyPrecedes(b.key.tenant.utf8)
            }
            for (_, key, journey) in ordered {
                tenants.append(text: key.tenant)
                conversations.append(text: key.conversation)
                started.append(number: journey.started)
                answered.append(flag: journey.answered)
                handedOff.append(flag: journey.handedOff)
            }
            result.append((Self.conversationsUpsert, [tenants, conversations, started, answered, handedOff]
                            .map { .text($0.literal) }))
        }
        return result
    }

    /// The two key columns as array parameters $1, $2 (minute as unix seconds).
    struct KeyColumns {
        var series = PostgresArrayLiteral()
        var minutes = PostgresArrayLiteral()

        mutating func append(_ key: MinuteKey) {
            series.append(number: Int64(key.series))
            minutes.append(number: key.minute)
        }

        var parameters: [PostgresValue] { [.text(series.literal), .text(minutes.literal)] }
    }

    static let minutesUpsert = """
        INSERT INTO analytics_minutes AS m (series_id, minute, requests, completions, failures, handoffs, consent_asked,
                                            consent_granted, consent_denied, kb_answered, kb_no_answer, prompt_tokens,
                                            completion_tokens, cost_micros, unpriced_completions)
        SELECT series_id, to_timestamp(minute_s), requests, completions, failures, handoffs, consent_asked,
               consent_granted, consent_denied, kb_answered, kb_no_answer, prompt_tokens, completion_tokens,
               cost_micros, unpriced
        FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                    $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                    $13::bigint[], $14::bigint[], $15::bigint[])
             AS i (series_id, minute_s, requests, completions, failures, handoffs, consent_asked, consent_granted,
                   consent_denied, kb_answered, kb_no_answer, prompt_tokens, completion_tokens, cost_micros, unpriced)
        ON CONFLICT (series_id, minute) DO UPDATE SET
            requests = m.requests + EXCLUDED.requests,
            completions = m.completions + EXCLUDED.completions,
            failures = m.failures + EXCLUDED.failures,
            handoffs = m.handoffs + EXCLUDED.handoffs,
            consent_asked = m.consent_asked + EXCLUDED.consent_asked,
            consent_granted = m.consent_granted + EXCLUDED.consent_granted,
            consent_denied = m.consent_denied + EXCLUDED.consent_denied,
            kb_answered = m.kb_answered + EXCLUDED.kb_answered,
            kb_no_answer = m.kb_no_answer + EXCLUDED.kb_no_answer,
            prompt_tokens = m.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = m.completion_tokens + EXCLUDED.completion_tokens,
            cost_micros = m.cost_micros + EXCLUDED.cost_micros,
            unpriced_completions = m.unpriced_completions + EXCLUDED.unpriced_completions
        """

    static let errorsUpsert = """
        INSERT INTO analytics_errors AS e (series_id, minute, error_code, failures)
        SELECT series_id, to_timestamp(minute_s), error_code, failures
        FROM unnest($1::integer[], $2::bigint[], $3::text[], $4::bigint[]) AS i (series_id, minute_s, error_code, failures)
        ON CONFLICT (series_id, minute, error_code) DO UPDATE SET failures = e.failures + EXCLUDED.failures
        """

    static let latencyUpsert = """
        INSERT INTO analytics_latency AS l (series_id, minute, hop, bucket, samples)
        SELECT series_id, to_timestamp(minute_s), hop, bucket, samples
        FROM unnest($1::integer[], $2::bigint[], $3::text[], $4::integer[], $5::bigint[])
             AS i (series_id, minute_s, hop, bucket, samples)
        ON CONFLICT (series_id, minute, hop, bucket) DO UPDATE SET samples = l.samples + EXCLUDED.samples
        """

    static let conversationsUpsert = """
        INSERT INTO analytics_conversations AS c (tenant_id, conversation_id, started, answered, handed_off)
        SELECT tenant_id, conversation_id, to_timestamp(started_s), answered, handed_off
        FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[], $5::boolean[])
             AS i (tenant_id, conversation_id, started_s, answered, handed_off)
        ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET
            started = least(c.started, EXCLUDED.started),
            answered = c.answered OR EXCLUDED.answered,
            handed_off = c.handed_off OR EXCLUDED.handed_off
        WHERE EXCLUDED.started < c.started OR (EXCLUDED.answered AND NOT c.answered)
           OR (EXCLUDED.handed_off AND NOT c.handed_off)
        """
}

/// The ids of series (dimension combinations), numbered once in `analytics_series` and never deleted, so an id
/// cached here stays valid; a series not yet known is added before the batch that needs it.
final class SeriesCache: Sendable {
    private let known = Mutex<[Dimensions: Int32]>([:])

    /// The ids of `dimensions`, adding the series that don't exist yet (outside any rollup transaction).
    func ids(for dimensions: Set<Dimensions>, pool: PostgresPool) async throws -> [Dimensions: Int32] {
        var result: [Dimensions: Int32] = [:]
        var missing: [Dimensions] = []
        known.withLock { known in
            for d in dimensions {
                if let id = known[d] { result[d] = id } else { missing.append(d) }
            }
        }
        guard !missing.isEmpty else { return result }
        var columns = Array(repeating: PostgresArrayLiteral(), count: 6)
        for d in missing.sorted(by: { ($0.tenant, $0.agent, $0.version, $0.cohort, $0.channel, $0.package)
                                      < ($1.tenant, $1.agent, $1.version, $1.cohort, $1.channel, $1.package) }) {
            for (index, value) in [d.tenant, d.agent, d.version, d.cohort, d.channel, d.package].enumerated() {
                columns[index].append(text: value)
            }
        }
        let parameters = columns.map { PostgresValue.text($0.literal) }
        _ = try await pool.execute("""
            INSERT INTO analytics_series (tenant_id, agent, agent_version, rollout_cohort, channel, package_name)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
            ON CONFLICT DO NOTHING
            """, parameters)
        let rows = try await pool.query("""
            SELECT s.id, s.tenant_id, s.agent, s.agent_version, s.rollout_cohort, s.channel, s.package_name
            FROM analytics_series s
            JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 AS i (tenant_id, agent, agent_version, rollout_cohort, channel, package_name)
              USING (tenant_id, agent, agent_version, rollout_cohort, channel, package_name)
            """, parameters)
        var found: [Dimensions: Int32] = [:]
        for row in rows {
            let d = Dimensions(tenant: try row.decode(String.self, at: 1), agent: try row.decode(String.self, at: 2),
                               version: try row.decode(String.self, at: 3), cohort: try row.decode(String.self, at: 4),
                               channel: try row.decode(String.self, at: 5), package: try row.decode(String.self, at: 6))
            found[d] = try row.decode(Int32.self, at: 0)
        }
        guard found.count == missing.count else {
            throw PostgresError(code: .unexpectedResult,
                                message: "analytics series lookup returned \(found.count) of \(missing.count)")
        }
        known.withLock { $0.merge(found) { current, _ in current } }
        return result.merging(found) { current, _ in current }
    }
}
