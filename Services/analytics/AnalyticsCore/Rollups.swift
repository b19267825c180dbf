import Storage

/// One batch's contribution to the rollups, summed per row in memory so that each table gets one upsert per
/// batch with one row per key (the batch's facts in any order give the same sums).
struct RollupDelta {
    struct MinuteKey: Hashable {
        var dimensions: Dimensions
        var minute: Int64
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

    init(_ facts: some Sequence<EventFact>, prices: PriceBook) {
        for fact in facts { add(fact, prices: prices) }
    }

    mutating func add(_ fact: EventFact, prices: PriceBook) {
        let key = MinuteKey(dimensions: fact.dimensions, minute: fact.minute)
        var row = counters[key] ?? Counters()
        var journey = fact.conversation.isEmpty ? nil
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
            for (key, row) in counters.sorted(by: { Self.order($0.key, $1.key) }) {
                keys.append(key)
                for (index, value) in row.columns.enumerated() { columns[index].append(number: value) }
            }
            result.append((Self.minutesUpsert, keys.parameters + columns.map { .text($0.literal) }))
        }
        if !errors.isEmpty {
            var keys = KeyColumns()
            var codes = PostgresArrayLiteral(), counts = PostgresArrayLiteral()
            for (key, count) in errors.sorted(by: { ($0.key.code, 0) < ($1.key.code, 0) || ($0.key.code == $1.key.code
                                                    && Self.order($0.key.key, $1.key.key)) }) {
                keys.append(key.key)
                codes.append(text: key.code)
                counts.append(number: count)
            }
            result.append((Self.errorsUpsert, keys.parameters + [.text(codes.literal), .text(counts.literal)]))
        }
        if !latency.isEmpty {
            var keys = KeyColumns()
            var hops = PostgresArrayLiteral(), buckets = PostgresArrayLiteral(), counts = PostgresArrayLiteral()
            for (key, count) in latency.sorted(by: { a, b in
                if a.key.hop != b.key.hop { return a.key.hop < b.key.hop }
                if a.key.bucket != b.key.bucket { return a.key.bucket < b.key.bucket }
                return Self.order(a.key.key, b.key.key)
            }) {
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
            for (key, journey) in journeys.sorted(by: { ($0.key.tenant, $0.key.conversation)
                                                        < ($1.key.tenant, $1.key.conversation) }) {
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

    static func order(_ a: MinuteKey, _ b: MinuteKey) -> Bool {
        let x = a.dimensions, y = b.dimensions
        return (x.tenant, a.minute, x.agent, x.version, x.cohort, x.channel)
            < (y.tenant, b.minute, y.agent, y.version, y.cohort, y.channel)
            || ((x.tenant, a.minute, x.agent, x.version, x.cohort, x.channel)
                == (y.tenant, b.minute, y.agent, y.version, y.cohort, y.channel) && x.package < y.package)
    }

    /// The seven key columns as array parameters $1…$7 (minute as unix seconds).
    struct KeyColumns {
        var columns = Array(repeating: PostgresArrayLiteral(), count: 7)

        mutating func append(_ key: MinuteKey) {
            let d = key.dimensions
            columns[0].append(text: d.tenant)
            columns[1].append(number: key.minute)
            columns[2].append(text: d.agent)
            columns[3].append(text: d.version)
            columns[4].append(text: d.cohort)
            columns[5].append(text: d.channel)
            columns[6].append(text: d.package)
        }

        var parameters: [PostgresValue] { columns.map { .text($0.literal) } }
    }

    static let keyInput = """
        $1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]
        """
    static let keySelect = """
        tenant_id, to_timestamp(minute_s), agent, agent_version, rollout_cohort, channel, package_name
        """
    static let keyColumns = "tenant_id, minute, agent, agent_version, rollout_cohort, channel, package_name"

    static let minutesUpsert = """
        INSERT INTO analytics_minutes AS m (\(keyColumns), requests, completions, failures, handoffs, consent_asked,
                                            consent_granted, consent_denied, kb_answered, kb_no_answer, prompt_tokens,
                                            completion_tokens, cost_micros, unpriced_completions)
        SELECT \(keySelect), requests, completions, failures, handoffs, consent_asked, consent_granted,
               consent_denied, kb_answered, kb_no_answer, prompt_tokens, completion_tokens, cost_micros, unpriced
        FROM unnest(\(keyInput), $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                    $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
                    $19::bigint[], $20::bigint[])
             AS i (tenant_id, minute_s, agent, agent_version, rollout_cohort, channel, package_name, requests,
                   completions, failures, handoffs, consent_asked, consent_granted, consent_denied, kb_answered,
                   kb_no_answer, prompt_tokens, completion_tokens, cost_micros, unpriced)
        ON CONFLICT (\(keyColumns)) DO UPDATE SET
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
        INSERT INTO analytics_errors AS e (\(keyColumns), error_code, failures)
        SELECT \(keySelect), error_code, failures
        FROM unnest(\(keyInput), $8::text[], $9::bigint[])
             AS i (tenant_id, minute_s, agent, agent_version, rollout_cohort, channel, package_name, error_code, failures)
        ON CONFLICT (\(keyColumns), error_code) DO UPDATE SET failures = e.failures + EXCLUDED.failures
        """

    static let latencyUpsert = """
        INSERT INTO analytics_latency AS l (\(keyColumns), hop, bucket, samples)
        SELECT \(keySelect), hop, bucket, samples
        FROM unnest(\(keyInput), $8::text[], $9::integer[], $10::bigint[])
             AS i (tenant_id, minute_s, agent, agent_version, rollout_cohort, channel, package_name, hop, bucket, samples)
        ON CONFLICT (\(keyColumns), hop, bucket) DO UPDATE SET samples = l.samples + EXCLUDED.samples
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
        """
}
