import Contracts
import Hummingbird
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import Messaging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Storage
import Telemetry
import Tenancy

/// Builds the billing process: NATS, PostgreSQL with its migrations, the tenancy mirror (usage for an unknown
/// tenant is rejected) and the batch consumer of the usage log that feeds the ledger.
public func buildBilling(configuration: ServiceConfiguration, billing: BillingConfiguration = BillingConfiguration(),
                         logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
                         onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.usage, Streams.deadLetter)
    let pool = try await builder.postgres { pool, logger in
        try await migrate(pool: pool, service: ServiceName.billing.rawValue, migrations: BillingSchema.migrations,
                          logger: logger)
    }
    builder.doctorMigrations(pool, service: ServiceName.billing.rawValue, migrations: BillingSchema.migrations)
    builder.doctor.add {
        billing.adminTokens.isEmpty
            ? [Doctor.check(.warn, "secret SWITCHYARD_ADMIN_TOKENS", "not set: billing's admin commands are refused")]
            : billing.adminTokens.map { SecretHygiene.check("SWITCHYARD_ADMIN_TOKENS (\($0.name))", $0.token) }
    }
    let directory = builder.tenancyMirror()
    // Budgets (docs/adr/0014): the settled spend of budgeted tenants, written to KV `budgets` after every batch
    // and once a second.
    let settlement = BudgetSettlement(book: BudgetBook(bucket: try await builder.jetStream.keyValue(Budgets.bucket)),
                                      pool: pool, directory: directory, logger: logger)
    builder.add(BudgetSyncService(settlement: settlement))
    var ingest = UsageIngest(ledger: Ledger(pool: pool), directory: directory, metrics: metrics, logger: logger)
    ingest.budgets = settlement
    ingest.killAfterCommits = billing.killAfterCommits.map(CommitFailpoint.init)
    // Two ledger transactions at a time; the next batch gathers meanwhile (up to 3 × 512 deliveries held).
    try await builder.consumeBatches(Consumers.billingUsage, UsageRecorded.self, batchSize: UsageIngest.batchSize,
                                     concurrentBatches: 2, handler: ingest.handle)
    // Admin commands over NATS (`admin.billing.*`) and as JSON over HTTP (`POST /admin/v1/billing/*`).
    var admin = BillingAdmin(pool: pool, authenticator: AdminAuthenticator(tokens: billing.adminTokens), logger: logger)
    admin.afterRecompute = { await settlement.syncAll(exact: true) }
    admin.directory = directory
    let dispatcher = BillingAdminDispatcher(admin: admin)
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: dispatcher, metrics: metrics,
                                 logger: logger))
    builder.add(UsageQueryService.responder(connection: builder.connection, pool: pool, logger: logger))
    let router = Router(context: BasicRequestContext.self)
    AdminHTTPRoutes(dispatcher: dispatcher, metrics: metrics, logger: logger).add(to: router)
    builder.http(router, onServerRunning: onServerRunning)
    return builder.serviceGroup(signals: signals)
}

/// The usage log → ledger step: validate each event (poison → dead letter, never billed), leave eval runs' usage
/// out (the meta's `eval_run_id`), record the valid ones in one statement, and ride out a PostgreSQL outage by retrying (the consume loop keeps the messages
/// alive meanwhile) rather than dead-lettering billable usage.
public struct UsageIngest: Sendable {
    /// Events per ledger statement (and per transaction).
    public static let batchSize = 512

    let ledger: Ledger
    let directory: TenantDirectory?
    let metrics: TelemetryMetrics
    let logger: Logger
    /// How long a batch keeps retrying a database that is down before it is given back (nak).
    var retryBudget: Duration = .seconds(600)
    /// Budget settlement after each committed batch (nil: no budgets, e.g. the benchmark).
    var budgets: BudgetSettlement?
    /// Fault injection for the crash tests (``BillingConfiguration/killAfterCommits``).
    var killAfterCommits: CommitFailpoint?
    /// The bounded `tenant` label of the spend metric.
    let spendLabels = BoundedLabels(limit: 100)

    public init(ledger: Ledger, directory: TenantDirectory?, metrics: TelemetryMetrics, logger: Logger) {
        self.ledger = ledger
        self.directory = directory
        self.metrics = metrics
        self.logger = logger
    }

    public func handle(_ batch: [(UsageRecorded, EventContext)]) async throws -> [(any Error)?] {
        var outcomes = [(any Error)?](repeating: nil, count: batch.count)
        var lines: [UsageLine] = []
        lines.reserveCapacity(batch.count)
        var evalEvents = 0
        for (index, (event, context)) in batch.enumerated() {
            // An eval run's usage is the platform's, not the tenant's: never on an invoice (acked, counted).
            if !context.meta.evalRunID.isEmpty {
                evalEvents += 1
                continue
            }
            do throws(PoisonMessage) {
                lines.append(try UsageLine(event, context: context, directory: directory))
            } catch {
                outcomes[index] = error
                metrics.counter(.billingUsageEventsTotal, [(.outcome, "rejected")]).increment()
                logger.warning("usage event rejected", metadata: [
                    "tenant": "\(context.tenant)", "event.id": "\(context.meta.eventID)", "reason": "\(error.reason)",
                ])
            }
        }
        if evalEvents > 0 { metrics.counter(.billingUsageEventsTotal, [(.outcome, "eval")]).increment(by: evalEvents) }
        guard !lines.isEmpty else { return outcomes }
        let outcome = try await recordRetrying(lines)
        killAfterCommits?.committed()
        await budgets?.settle(lines, outcome: outcome)
        metrics.counter(.billingUsageEventsTotal, [(.outcome, "recorded")]).increment(by: outcome.inserted)
        metrics.counter(.billingUsageEventsTotal, [(.outcome, "duplicate")]).increment(by: lines.count - outcome.inserted)
        if outcome.unpriced > 0 {
            metrics.counter(.billingUsageEventsTotal, [(.outcome, "unpriced")]).increment(by: outcome.unpriced)
        }
        for (tenant, spend) in outcome.spendByTenant where spend > 0 {
            metrics.counter(.billingSpendMicrosTotal, [(.tenant, spendLabels.label(for: tenant))])
                .increment(by: Int(clamping: spend))
        }
        if let newest = lines.map(\.occurredAtUnixNanos).max() {
            let lag = Double(EventClock.nowUnixNanos() - newest) / 1e9
            metrics.gauge(.billingLedgerLagSeconds).record(max(0, lag))
        }
        return outcomes
    }

    /// Records the lines, retrying with backoff while PostgreSQL is unreachable or the transaction hit a
    /// transient error (deadlock, serialization), up to ``retryBudget``.
    func recordRetrying(_ lines: [UsageLine]) async throws -> Ledger.Outcome {
        try await retryingTransientDatabaseErrors(budget: retryBudget, onRetry: { error, delay in
            metrics.counter(.billingUsageEventsTotal, [(.outcome, "failed")]).increment(by: lines.count)
            logger.warning("ledger write failed, retrying", metadata: [
                "error": "\(error)", "events": "\(lines.count)", "retry": "\(delay)",
            ])
        }) { try await ledger.record(lines) }
    }
}

/// A bounded label set (metric cardinality): the first `limit` distinct values this process sees keep their own
/// label, every later one is reported as `other`. Per-tenant figures beyond that come from the ledger
/// (`switchyard usage`), not from metrics.
final class BoundedLabels: Sendable {
    private let limit: Int
    private let known = Mutex<Set<String>>([])

    init(limit: Int) { self.limit = limit }

    func label(for value: String) -> String {
        known.withLock { known in
            if known.contains(value) { return value }
            guard known.count < limit else { return "other" }
            known.insert(value)
            return value
        }
    }
}
