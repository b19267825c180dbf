import Contracts
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Storage
import Telemetry
import Tenancy

/// Billing's half of budget enforcement (docs/adr/0014): it writes each budgeted tenant's settled spend of the
/// current day and month (in the tenant's time zone, UTC unless it has one) — read from the running totals, so always the ledger's figure — into the tenant's
/// KV `budgets` entry, and drops the holds of the requests it has just recorded.
///
/// - after every ledger batch, for the budgeted tenants in it (before the batch is acked, so a crash repeats
///   the step on redelivery);
/// - once a second for every budgeted tenant (``BudgetSyncService``): a tenant that just got a budget, a new
///   day or month, holds whose lease ran out.
public struct BudgetSettlement: Sendable {
    let book: BudgetBook
    let pool: PostgresPool
    let directory: TenantDirectory
    let logger: Logger

    public init(book: BudgetBook, pool: PostgresPool, directory: TenantDirectory, logger: Logger) {
        self.book = book
        self.pool = pool
        self.directory = directory
        self.logger = logger
    }

    /// After a committed batch: the spend figures of the batch's budgeted tenants, their settled requests'
    /// holds dropped, their request estimate from the costliest line recorded.
    func settle(_ lines: [UsageLine], outcome: Ledger.Outcome) async {
        let budgeted = directory.budgetedTenants()
        guard !budgeted.isEmpty else { return }
        var settled: [String: Set<String>] = [:]
        for line in lines where budgeted[line.tenantID] != nil {
            settled[line.tenantID, default: []].insert(line.requestID)
        }
        guard !settled.isEmpty else { return }
        await write(tenants: Array(settled.keys), settled: settled, observed: outcome.maxCostByTenant, exact: false)
    }

    /// Every budgeted tenant's figures; `exact` after a recompute, which may have lowered them.
    public func syncAll(exact: Bool = false) async {
        let tenants = Array(directory.budgetedTenants().keys)
        guard !tenants.isEmpty else { return }
        await write(tenants: tenants, settled: [:], observed: [:], exact: exact)
    }

    private func write(tenants: [String], settled: [String: Set<String>], observed: [String: Int64], exact: Bool) async {
        let now = EventClock.nowUnixNanos()
        var periods: [String: BudgetPeriods] = [:]
        for tenant in tenants {
            periods[tenant] = BudgetPeriods(unixNanos: now,
                                            timeZone: directory.snapshot(tenant: tenant)?.tenant.timeZone ?? "")
        }
        let spend: [String: (day: Int64, month: Int64)]
        do {
            spend = try await self.spend(of: periods)
        } catch {
            logger.warning("budget figures not read; the next pass retries", metadata: ["error": "\(error)"])
            return
        }
        for tenant in tenants {
            do {
                var observedMax = observed[tenant]
                if observedMax == nil, try await book.state(tenant: tenant)?.requestEstimateMicros ?? 0 == 0 {
                    observedMax = try await recentMaxCost(tenant: tenant)
                }
                let figures = spend[tenant] ?? (0, 0)
                let ids = settled[tenant] ?? []
                let periods = periods[tenant]!
                try await book.modify(tenant: tenant, replaceMalformed: true) { state -> (write: Bool, result: Void) in
                    var next = state ?? BudgetState()
                    next.settle(periods: periods, daySpent: figures.day, monthSpent: figures.month, settled: ids,
                                observedMaxCost: observedMax, exact: exact, nowUnixNanos: now)
                    // Skip the write when nothing but the timestamp would change.
                    var previous = state
                    previous?.settledAtUnixNanos = now
                    guard previous != next else { return (false, ()) }
                    state = next
                    return (true, ())
                }
            } catch {
                logger.warning("budget figures not written; the next pass retries", metadata: [
                    LogKey.tenantID: "\(tenant)", "error": "\(error)",
                ])
            }
        }
    }

    /// Settled spend per tenant of its current day and month (in its time zone), from the running day totals.
    func spend(of periods: [String: BudgetPeriods]) async throws -> [String: (day: Int64, month: Int64)] {
        var tenants = PostgresArrayLiteral(), days = PostgresArrayLiteral(), months = PostgresArrayLiteral()
        for (tenant, period) in periods {
            tenants.append(text: tenant)
            days.append(text: period.day)
            months.append(text: period.month + "-01")
        }
        let rows = try await pool.query("""
            SELECT t.tenant_id,
                   COALESCE(sum(b.cost_micros) FILTER (WHERE b.period_start = t.day), 0)::bigint AS day,
                   COALESCE(sum(b.cost_micros), 0)::bigint AS month
            FROM unnest($1::text[], $2::date[], $3::date[]) AS t (tenant_id, day, month)
            LEFT JOIN billing_totals b
              ON b.tenant_id = t.tenant_id AND b.period = 'day'
             AND b.period_start >= t.month AND b.period_start < t.month + interval '1 month'
            GROUP BY 1
            """, [.text(tenants.literal), .text(days.literal), .text(months.literal)])
        var result: [String: (day: Int64, month: Int64)] = [:]
        for row in rows {
            result[try row.decode(String.self, column: "tenant_id")] = (try row.decode(Int64.self, column: "day"),
                                                                        try row.decode(Int64.self, column: "month"))
        }
        return result
    }

    /// The costliest of the tenant's 50 most recent requests (nil without any): the starting estimate for a
    /// tenant whose budget was set after it had usage.
    func recentMaxCost(tenant: String) async throws -> Int64? {
        let rows = try await pool.query("""
            SELECT max(cost_micros)::bigint AS cost FROM (
                SELECT cost_micros FROM billing_ledger WHERE tenant_id = $1 ORDER BY occurred_at DESC LIMIT 50
            ) recent
            """, [.text(tenant)])
        return try rows.first?.decode(Int64?.self, column: "cost")
    }
}

/// Runs ``BudgetSettlement/syncAll(exact:)`` every `interval` until shutdown.
public struct BudgetSyncService: Service {
    let settlement: BudgetSettlement
    let interval: Duration

    public init(settlement: BudgetSettlement, interval: Duration = .seconds(1)) {
        self.settlement = settlement
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if settlement.directory.isSynced { await settlement.syncAll() }
            // A shutdown ends the wait at once (graceful shutdown is not cancellation).
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
