import Contracts
import KnowledgeBase
import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Telemetry
import Tenancy

/// Builds the orchestrator process: NATS + streams + consumer, PostgreSQL + migrations, KV mirror, providers.
public func buildOrchestrator(configuration: ServiceConfiguration, orchestrator: OrchestratorConfiguration,
                              logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(),
                              signals: Bool = true) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.events, Streams.usage, Streams.deadLetter)
    let pool = try await builder.postgres { pool, logger in
        try await OrchestratorStore(pool: pool).migrate(logger: logger)
        try await KnowledgeStore(pool: pool).migrate(logger: logger)
    }
    builder.doctorMigrations(pool, service: "orchestrator", migrations: OrchestratorStore.migrations)
    builder.doctorMigrations(pool, service: "knowledge", migrations: KnowledgeStore.migrations)
    let providers = ProviderClients(endpoints: orchestrator.endpoints)
    builder.onShutdown { await providers.shutdown() }
    builder.doctor.add { await providers.doctorChecks() }
    let knowledge = KnowledgeCache(store: KnowledgeStore(pool: pool), ttl: orchestrator.knowledgeCacheTTL)
    let handler = OrchestratorHandler(
        jetStream: builder.jetStream, directory: builder.tenancyMirror(), store: OrchestratorStore(pool: pool),
        knowledge: knowledge, providers: providers, breakers: CircuitBreakers(configuration: orchestrator.breaker),
        configuration: orchestrator, metrics: metrics, logger: logger)
    builder.add(KnowledgeInvalidationService(connection: builder.connection, cache: knowledge, logger: logger))
    builder.add(ReplyResendService(connection: builder.connection, replies: handler.recentReplies, metrics: metrics,
                                   logger: logger))
    var tasks = Consumers.orchestratorRouted.spec
    tasks.ackWait = orchestrator.taskAckWait
    try await builder.consume(Consumers.orchestratorRouted, ChatRouted.self, spec: tasks, batchSize: 128, maxInFlight: 1024,
                              meta: OrchestratorHandler.requestMeta, handler: handler.handle)
    return builder.serviceGroup(signals: signals)
}
