import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import Storage
import Tenancy

/// The analytics service's admin commands (`admin.analytics.*`, `POST /admin/v1/analytics/*`): stats over any
/// window from the minute rollups, and rebuilds. Every command needs an admin token.
public struct AnalyticsAdmin: Sendable {
    let pool: PostgresPool
    let authenticator: AdminAuthenticator
    let rebuild: RebuildJobs?
    let logger: Logger

    public init(pool: PostgresPool, authenticator: AdminAuthenticator, rebuild: RebuildJobs?, logger: Logger) {
        self.pool = pool
        self.authenticator = authenticator
        self.rebuild = rebuild
        self.logger = logger
    }

    /// The groupings of a stats query and the rollup columns each groups by (fixed: never from the request).
    static let groupings: [String: [String]] = [
        "": [],
        "tenant": ["s.tenant_id"],
        "agent": ["s.agent"],
        "version": ["s.agent", "s.agent_version"],
        "cohort": ["s.agent", "s.rollout_cohort"],
        "channel": ["s.channel"],
        "package": ["s.package_name"],
        "hop": [],
    ]

    /// The most groups one answer carries.
    static let maxGroups = 5_000

    public func stats(_ request: StatsRequest) async throws(AdminFailure) -> StatsResponse {
        _ = try authenticator.actor(for: request)
        if request.platform {
            guard request.tenantID.isEmpty || TenantID.isValid(request.tenantID) else {
                throw AdminFailure(.invalidArgument, "tenant_id must match [a-z0-9][a-z0-9-]{0,62}")
            }
        } else {
            guard TenantID.isValid(request.tenantID) else {
                throw AdminFailure(.invalidArgument,
                                   "tenant_id must match [a-z0-9][a-z0-9-]{0,62} (or ask for platform figures)")
            }
        }
        guard let columns = Self.groupings[request.by] else {
            throw AdminFailure(.invalidArgument,
                               "by must be one of: tenant, agent, version, cohort, channel, package, hop (or empty)")
        }
        guard request.agent.utf8.count <= 128 else { throw AdminFailure(.invalidArgument, "agent is too long") }
        let until = request.untilUnixNanos == 0 ? EventClock.nowUnixNanos() : request.untilUnixNanos
        guard request.sinceUnixNanos >= 0, until > request.sinceUnixNanos else {
            throw AdminFailure(.invalidArgument, "since must be before until")
        }
        // Whole minutes: from the minute `since` falls in up to and including the minute `until` falls in.
        let first = EventFact.minute(of: request.sinceUnixNanos)
        let end = EventFact.minute(of: until) + 60
        do {
            // A platform query without a tenant covers every tenant ("" matches all).
            let rows = try await StatsQuery(pool: pool, tenant: request.tenantID, first: first, end: end, agent: request.agent,
                                            columns: columns, byHop: request.by == "hop",
                                            withConversations: request.by == "" || request.by == "tenant").run()
            guard rows.count <= Self.maxGroups else {
                throw AdminFailure(.invalidArgument, "more than \(Self.maxGroups) groups: narrow the query")
            }
            return StatsResponse(rows: rows, sinceUnixNanos: first * 1_000_000_000, untilUnixNanos: end * 1_000_000_000)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    public func rebuild(_ request: RebuildRequest) async throws(AdminFailure) -> RebuildResponse {
        let actor = try authenticator.actor(for: request)
        guard request.fromUnixNanos >= 0 else { throw AdminFailure(.invalidArgument, "from must be after 1970") }
        guard let rebuild else { throw AdminFailure(.unavailable, "this analytics replica cannot rebuild") }
        logger.info("analytics rebuild requested", metadata: ["actor": "\(actor)", "from": "\(request.fromUnixNanos)"])
        do {
            return try await rebuild.start(fromUnixNanos: request.fromUnixNanos, actor: actor)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    public func rebuildStatus(_ request: RebuildStatusRequest) async throws(AdminFailure) -> RebuildResponse {
        _ = try authenticator.actor(for: request)
        guard let rebuild else { throw AdminFailure(.unavailable, "this analytics replica cannot rebuild") }
        do {
            return try await rebuild.status(id: request.id)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    static func storageFailure(_ error: any Error) -> AdminFailure { .storage(error, service: "analytics") }
}

/// One stats query over the rollups: counters, failures per code, merged latency histograms and conversation
/// journeys, grouped by a fixed set of columns.
struct StatsQuery {
    let pool: PostgresPool
    let tenant: String          // "" = every tenant (platform query)
    let first: Int64            // minutes, unix seconds: [first, end)
    let end: Int64
    let agent: String
    let columns: [String]
    let byHop: Bool
    let withConversations: Bool

    private var filter: String {
        "($1 = '' OR s.tenant_id = $1) AND r.minute >= to_timestamp($2) AND r.minute < to_timestamp($3) AND ($4 = '' OR s.agent = $4)"
    }
    private var parameters: [PostgresValue] { [.text(tenant), .int64(first), .int64(end), .text(agent)] }
    private var select: String { columns.isEmpty ? "" : columns.joined(separator: ", ") + ", " }
    private var group: String { columns.isEmpty ? "" : "GROUP BY " + columns.joined(separator: ", ") }

    func run() async throws -> [StatsRow] {
        var rows: [[String]: StatsRow] = [:]
        var order: [[String]] = []
        func row(_ key: [String]) -> StatsRow {
            if let existing = rows[key] { return existing }
            order.append(key)
            var row = StatsRow()
            for (column, value) in zip(columns, key) {
                switch column {
                case "s.tenant_id": row.tenantID = value
                case "s.agent": row.agent = value
                case "s.agent_version": row.agentVersion = value
                case "s.rollout_cohort": row.rolloutCohort = value
                case "s.channel": row.channel = value
                case "s.package_name": row.packageName = value
                default: break
                }
            }
            if !tenant.isEmpty { row.tenantID = tenant }
            return row
        }
        let n = columns.count
        for record in try await pool.query("""
            SELECT \(select) sum(r.requests)::bigint, sum(r.completions)::bigint, sum(r.failures)::bigint,
                   sum(r.handoffs)::bigint, sum(r.consent_asked)::bigint, sum(r.consent_granted)::bigint,
                   sum(r.consent_denied)::bigint, sum(r.kb_answered)::bigint, sum(r.kb_no_answer)::bigint,
                   sum(r.prompt_tokens)::bigint, sum(r.completion_tokens)::bigint, sum(r.cost_micros)::bigint,
                   sum(r.unpriced_completions)::bigint
            FROM analytics_minutes r JOIN analytics_series s ON s.id = r.series_id WHERE \(filter) \(group)
            HAVING count(*) > 0
            ORDER BY \(columns.isEmpty ? "1" : columns.joined(separator: ", "))
            LIMIT \(AnalyticsAdmin.maxGroups + 1)
            """, parameters) {
            let key = try (0..<n).map { try record.decode(String.self, at: $0) }
            var value = row(key)
            let figures = try (n..<n + 13).map { try record.decode(Int64.self, at: $0) }
            value.requests = figures[0]
            value.completions = figures[1]
            value.failures = figures[2]
            value.handoffs = figures[3]
            value.consentAsked = figures[4]
            value.consentGranted = figures[5]
            value.consentDenied = figures[6]
            value.kbAnswered = figures[7]
            value.kbNoAnswer = figures[8]
            value.promptTokens = figures[9]
            value.completionTokens = figures[10]
            value.costMicros = figures[11]
            value.unpricedCompletions = figures[12]
            rows[key] = value
        }
        for record in try await pool.query("""
            SELECT \(select) error_code, sum(failures)::bigint
            FROM analytics_errors r JOIN analytics_series s ON s.id = r.series_id WHERE \(filter)
            GROUP BY \(select) error_code
            """, parameters) {
            let key = try (0..<n).map { try record.decode(String.self, at: $0) }
            var value = row(key)
            value.failuresByCode[try record.decode(String.self, at: n)] = try record.decode(Int64.self, at: n + 1)
            rows[key] = value
        }
        // Histograms: merged per group and hop by adding bucket counts, then read for percentiles.
        var histograms: [[String]: [String: [(bucket: Int, count: Int64)]]] = [:]
        for record in try await pool.query("""
            SELECT \(select) hop, bucket, sum(samples)::bigint
            FROM analytics_latency r JOIN analytics_series s ON s.id = r.series_id WHERE \(filter)
            GROUP BY \(select) hop, bucket
            """, parameters) {
            let key = try (0..<n).map { try record.decode(String.self, at: $0) }
            let hop = try record.decode(String.self, at: n)
            histograms[key, default: [:]][hop, default: []].append(
                (Int(try record.decode(Int32.self, at: n + 1)), try record.decode(Int64.self, at: n + 2)))
        }
        for (key, hops) in histograms {
            var value = row(key)
            value.latency = hops.keys.sorted(by: Self.hopOrder).map { hop in
                let buckets = hops[hop]!
                return LatencySummary(
                    hop: hop, count: buckets.reduce(0) { $0 + $1.count },
                    p50Micros: LatencyBuckets.quantile(0.50, of: buckets),
                    p95Micros: LatencyBuckets.quantile(0.95, of: buckets),
                    p99Micros: LatencyBuckets.quantile(0.99, of: buckets),
                    maxMicros: LatencyBuckets.quantile(1.0, of: buckets))
            }
            rows[key] = value
        }
        if withConversations {
            let tenantGrouped = columns == ["s.tenant_id"]
            for record in try await pool.query("""
                SELECT \(tenantGrouped ? "tenant_id, " : "") count(*)::bigint,
                       count(*) FILTER (WHERE answered)::bigint, count(*) FILTER (WHERE handed_off)::bigint,
                       count(*) FILTER (WHERE NOT answered AND NOT handed_off)::bigint
                FROM analytics_conversations
                WHERE ($1 = '' OR tenant_id = $1) AND started >= to_timestamp($2) AND started < to_timestamp($3)
                \(tenantGrouped ? "GROUP BY tenant_id" : "")
                """, [.text(tenant), .int64(first), .int64(end)]) {
                let key = tenantGrouped ? [try record.decode(String.self, at: 0)] : []
                let offset = key.count
                let conversations = try record.decode(Int64.self, at: offset)
                guard conversations > 0 else { continue }
                var value = row(key)
                value.conversations = conversations
                value.conversationsAnswered = try record.decode(Int64.self, at: offset + 1)
                value.conversationsHandedOff = try record.decode(Int64.self, at: offset + 2)
                value.conversationsAbandoned = try record.decode(Int64.self, at: offset + 3)
                rows[key] = value
            }
        }
        let sorted = order.sorted { $0.lexicographicallyPrecedes($1) }
        if byHop {
            // One row per hop (the whole window's distribution of that hop).
            guard let only = sorted.first.flatMap({ rows[$0] }) else { return [] }
            return only.latency.map { summary in
                var hopRow = StatsRow(tenantID: only.tenantID, hop: summary.hop)
                hopRow.latency = [summary]
                return hopRow
            }
        }
        return sorted.compactMap { rows[$0] }
    }

    /// Hops in path order (as stamped), `total` last.
    static func hopOrder(_ a: String, _ b: String) -> Bool {
        let rank = ["gateway.in→router": 0, "router→orchestrator": 1, "orchestrator→orchestrator.done": 2,
                    HopLatency.total: 9]
        return (rank[a] ?? 5, a) < (rank[b] ?? 5, b)
    }
}

/// Routes `admin.analytics.<command>` to ``AnalyticsAdmin``.
public struct AnalyticsAdminDispatcher: AdminCommandDispatcher {
    let admin: AnalyticsAdmin

    public init(admin: AnalyticsAdmin) { self.admin = admin }

    public var service: String { AnalyticsAdminCommand.service }
    public var commandNames: [String] { AnalyticsAdminCommand.allCases.map(\.rawValue) }

    public func handle(command name: String, body: [UInt8], wire: AdminWire, bearerToken: String?) async
        -> (error: AdminErrorCode?, body: [UInt8])?
    {
        guard let command = AnalyticsAdminCommand(rawValue: name) else { return nil }
        let a = admin
        switch command {
        case .stats:
            return await AdminCall.run(body, wire, bearerToken, StatsRequest.self) { r throws(AdminFailure) in
                try await a.stats(r)
            }
        case .rebuild:
            return await AdminCall.run(body, wire, bearerToken, RebuildRequest.self) { r throws(AdminFailure) in
                try await a.rebuild(r)
            }
        case .rebuildStatus:
            return await AdminCall.run(body, wire, bearerToken, RebuildStatusRequest.self) { r throws(AdminFailure) in
                try await a.rebuildStatus(r)
            }
        }
    }
}
