import Contracts
import Hummingbird
import KnowledgeBase
import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Telemetry
import Tenancy

/// Builds the tenant service: migrations, the KV mirror rebuilt from PostgreSQL, admin commands over NATS
/// (queue group) and HTTP, the outbox sweep, the mirror guard and the key-usage consumer.
public func buildTenantService(
    configuration: ServiceConfiguration, tenant: TenantConfiguration, logger: Logger,
    metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.events, Streams.deadLetter)
    let pool = try await builder.postgres { pool, logger in try await TenantStore.migrate(pool: pool, logger: logger) }
    builder.doctorMigrations(pool, service: TenantStore.migrationService, migrations: TenantStore.migrations)
    builder.doctor.add {
        tenant.adminTokens.map { SecretHygiene.check("SWITCHYARD_ADMIN_TOKENS (\($0.name))", $0.token) }
            + [SecretHygiene.check("SWITCHYARD_KEY_PEPPER", bytes: tenant.keyPepper,
                                   unset: "API key hashes are plain SHA-256; set the same pepper on tenant and gateways"),
               SecretHygiene.check("SWITCHYARD_MIRROR_SIGNING_KEY", bytes: tenant.mirrorSigningKey?.publicKey,
                                   minimumBytes: 32, unset: "the tenancy KV mirror is unsigned (docs/adr/0009)")]
    }
    let mirror = try await TenantMirror(jetStream: builder.jetStream, signer: tenant.mirrorSigningKey, logger: logger)
    if tenant.mirrorSigningKey == nil {
        logger.warning("SWITCHYARD_MIRROR_SIGNING_KEY is not set: the KV mirror is unsigned (docs/adr/0009)")
    }
    // PostgreSQL is the source of truth: whatever the KV buckets hold (wiped, stale, tampered) is repaired
    // before this replica serves commands.
    let repaired = try await mirror.rebuild(pool: pool)
    logger.info("kv mirror checked against postgres", metadata: ["kv.writes": "\(repaired)"])
    let outbox = Outbox(pool: pool, jetStream: builder.jetStream, logger: logger)
    let authenticator = AdminAuthenticator(tokens: tenant.adminTokens)
    let dispatcher = AdminDispatcher(
        admin: TenantAdmin(pool: pool, mirror: mirror, outbox: outbox, authenticator: authenticator,
                           pepper: tenant.keyPepper, metrics: metrics, logger: logger),
        doctor: PlatformDoctor(authenticator: authenticator, jetStream: builder.jetStream, pool: pool,
                               expectedReplicas: configuration.streamReplicas, logger: logger))
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: dispatcher, metrics: metrics, logger: logger))
    builder.add(OutboxSweepService(outbox: outbox))
    builder.add(MirrorGuardService(mirror: mirror, pool: pool, logger: logger))
    try await builder.consume(Consumers.tenantKeyUsage, ChatRequested.self, batchSize: 512, keepAlive: false,
                              handler: KeyUsageRecorder(pool: pool).handle)
    let router = Router(context: BasicRequestContext.self)
    AdminHTTPRoutes(dispatcher: dispatcher, metrics: metrics, logger: logger).add(to: router)
    builder.http(router, serverName: "switchyard-tenant", onServerRunning: onServerRunning)
    return builder.serviceGroup(signals: signals)
}
