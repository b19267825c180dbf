import Contracts
import Hummingbird
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Storage
import Telemetry
import Tenancy

/// Analytics' own settings (the shared ones are in `ServiceConfiguration`).
public struct AnalyticsConfiguration: Sendable {
    /// `SWITCHYARD_ADMIN_TOKENS`: `name:token` pairs for the admin commands; unset = every command is refused.
    public var adminTokens: [(name: String, token: String)]
    /// `SWITCHYARD_ANALYTICS_FAILPOINT_KILL_AFTER_COMMITS`: fault injection for the crash tests, unset in
    /// production (see ``CommitFailpoint``).
    public var killAfterCommits: Int?
    /// `SWITCHYARD_ANALYTICS_METRIC_TENANTS` (default 20): how many tenants, the top ones by traffic, keep their own
    /// `tenant` label on the log-derived metrics (``LogMetrics``); the rest are `other`.
    public var metricTenants: Int

    public init(adminTokens: [(name: String, token: String)] = [], killAfterCommits: Int? = nil, metricTenants: Int = 20) {
        self.adminTokens = adminTokens
        self.killAfterCommits = killAfterCommits
        self.metricTenants = metricTenants
    }

    public init(environment: EnvironmentReader) throws(ConfigurationError) {
        let name = "SWITCHYARD_ANALYTICS_FAILPOINT_KILL_AFTER_COMMITS"
        killAfterCommits = environment.optional(name) == nil
            ? nil : try environment.integer(name, default: 1, range: 1...1_000_000)
        adminTokens = try AdminAuthenticator.tokens(from: environment)
        metricTenants = try environment.integer("SWITCHYARD_ANALYTICS_METRIC_TENANTS", default: 20, range: 0...1_000)
    }
}

/// Builds the analytics process: NATS, PostgreSQL with its migrations, the batch consumer of the event log that
/// folds it into minute rollups (docs/adr/0015), the pruning of folded sequences, and the admin commands (stats,
/// rebuild) over NATS and HTTP.
public func buildAnalytics(configuration: ServiceConfiguration, analytics: AnalyticsConfiguration = AnalyticsConfiguration(),
                           logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
                           onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.events, Streams.deadLetter)
    let pool = try await builder.postgres { pool, logger in
        try await migrate(pool: pool, service: ServiceName.analytics.rawValue, migrations: AnalyticsSchema.migrations,
                          logger: logger)
    }
    builder.doctorMigrations(pool, service: ServiceName.analytics.rawValue, migrations: AnalyticsSchema.migrations)
    builder.doctor.add {
        analytics.adminTokens.isEmpty
            ? [Doctor.check(.warn, "secret SWITCHYARD_ADMIN_TOKENS", "not set: analytics's admin commands are refused")]
            : analytics.adminTokens.map { SecretHygiene.check("SWITCHYARD_ADMIN_TOKENS (\($0.name))", $0.token) }
    }
    let store = RollupStore(pool: pool, prices: PriceBook(pool: pool))
    let logMetrics = LogMetrics(metrics: metrics, limit: analytics.metricTenants)
    var ingest = EventIngest(store: store, metrics: metrics, logger: logger)
    ingest.logMetrics = logMetrics
    builder.add(LogMetricsRefresh(logMetrics: logMetrics, pool: pool, logger: logger))
    ingest.killAfterCommits = analytics.killAfterCommits.map(CommitFailpoint.init)
    for contract in Consumers.analytics {
        try await builder.consumeRawBatches(contract, batchSize: EventIngest.batchSize, concurrentBatches: 2,
                                            handler: ingest.handle)
    }
    builder.add(AppliedPruning(store: store, jetStream: builder.jetStream, logger: logger))
    let authenticator = AdminAuthenticator(tokens: analytics.adminTokens)
    let admin = AnalyticsAdmin(pool: pool, authenticator: authenticator,
                               rebuild: RebuildJobs(rebuild: Rebuild(jetStream: builder.jetStream, store: store,
                                                                     logger: logger), pool: pool, logger: logger),
                               logger: logger)
    let dispatcher = AnalyticsAdminDispatcher(admin: admin)
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: dispatcher, metrics: metrics,
                                 logger: logger))
    let router = Router(context: BasicRequestContext.self)
    AdminHTTPRoutes(dispatcher: dispatcher, metrics: metrics, logger: logger).add(to: router)
    Dashboard(pool: pool, authenticator: authenticator, logger: logger).add(to: router)
    builder.http(router, onServerRunning: onServerRunning)
    return builder.serviceGroup(signals: signals)
}

/// The event log → rollups step: facts from each delivery (undecodable → dead letter; kinds the rollups don't
/// count are acked as they are), folded in one transaction per batch; a PostgreSQL outage is ridden out by
/// retrying (the consume loop keeps the messages alive meanwhile).
public struct EventIngest: Sendable {
    /// Deliveries per batch (and per transaction).
    public static let batchSize = 2048

    let store: RollupStore
    let metrics: TelemetryMetrics
    let logger: Logger
    var retryBudget: Duration = .seconds(600)
    var killAfterCommits: CommitFailpoint?
    var logMetrics: LogMetrics?

    public init(store: RollupStore, metrics: TelemetryMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    public func handle(_ deliveries: [JetStreamDelivery]) async throws -> [(any Error)?] {
        var outcomes = [(any Error)?](repeating: nil, count: deliveries.count)
        var facts: [EventFact] = []
        facts.reserveCapacity(deliveries.count)
        var ignored = 0
        for (index, delivery) in deliveries.enumerated() {
            do throws(PoisonMessage) {
                if let fact = try EventFact.from(delivery) { facts.append(fact) } else { ignored += 1 }
            } catch {
                outcomes[index] = error
                metrics.counter(.analyticsEventsTotal, [(.outcome, "rejected")]).increment()
                logger.warning("event rejected", metadata: [
                    "subject": "\(delivery.subject.prefix(128))", "sequence": "\(delivery.streamSequence)",
                    "reason": "\(error.reason)",
                ])
            }
        }
        if ignored > 0 { metrics.counter(.analyticsEventsTotal, [(.outcome, "ignored")]).increment(by: ignored) }
        guard !facts.isEmpty else { return outcomes }
        let outcome = try await foldRetrying(facts)
        killAfterCommits?.committed()
        logMetrics?.record(outcome.fresh)
        metrics.counter(.analyticsEventsTotal, [(.outcome, "folded")]).increment(by: outcome.folded)
        if outcome.duplicates > 0 {
            metrics.counter(.analyticsEventsTotal, [(.outcome, "duplicate")]).increment(by: outcome.duplicates)
        }
        if let newest = facts.map(\.occurredAtUnixNanos).max() {
            metrics.gauge(.analyticsLagSeconds).record(max(0, Double(EventClock.nowUnixNanos() - newest) / 1e9))
        }
        return outcomes
    }

    func foldRetrying(_ facts: [EventFact]) async throws -> RollupStore.Outcome {
        try await retryingTransientDatabaseErrors(budget: retryBudget, onRetry: { error, delay in
            logger.warning("rollup write failed, retrying", metadata: [
                "error": "\(error)", "events": "\(facts.count)", "retry": "\(delay)",
            ])
        }) { try await store.fold(facts) }
    }
}

/// Recomputes the metrics' top tenants at start and every minute.
struct LogMetricsRefresh: Service {
    let logMetrics: LogMetrics
    let pool: PostgresPool
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await logMetrics.refreshTop(pool: pool)
            } catch {
                logger.notice("top tenants for metrics not refreshed; next try in 60 s", metadata: ["error": "\(error)"])
            }
            // A shutdown ends the wait at once (graceful shutdown is not cancellation).
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(60)) }
        }
    }
}

/// Every 30 s, forgets folded sequences that can no longer be delivered again, so `analytics_applied` holds only
/// what may still be redelivered: everything at or below the lowest bound of analytics' durables, where a
/// durable's bound is its ack floor — or, when it has nothing pending and nothing unacknowledged, the stream's
/// last sequence read before it (a kind that is rare or never occurs must not hold pruning back).
struct AppliedPruning: Service {
    let store: RollupStore
    let jetStream: JetStream
    let logger: Logger
    var interval: Duration = .seconds(30)

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            // A shutdown ends the wait at once (graceful shutdown is not cancellation).
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            do {
                let pruned = try await pruneOnce()
                if pruned > 0 { logger.debug("applied sequences pruned", metadata: ["rows": "\(pruned)"]) }
            } catch {
                logger.notice("pruning applied sequences failed; next try in \(interval)", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Prunes once; returns how many rows went.
    func pruneOnce() async throws -> Int {
        let last = try await jetStream.streamState(StreamNames.events).lastSequence
        var floor = UInt64.max
        for contract in Consumers.analytics {
            let state = try await jetStream.consumerState(stream: StreamNames.events, durable: contract.durable)
            floor = min(floor, state.pending == 0 && state.ackPending == 0 ? last : state.ackFloorStreamSequence)
        }
        return try await store.prune(belowOrAt: floor == .max ? 0 : floor)
    }
}
