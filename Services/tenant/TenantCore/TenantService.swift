import Foundation
import Hummingbird
import Logging
import Messaging
import Security
import ServiceKit
import ServiceLifecycle
import Storage
import Telemetry
import Tenancy

/// Tenant-service settings beyond `ServiceConfiguration`.
public struct TenantConfiguration: Sendable {
    /// `SWITCHYARD_ADMIN_TOKENS`: `name:token` pairs (comma-separated) accepted for admin commands.
    public var adminTokens: [(name: String, token: String)]
    /// `SWITCHYARD_KEY_PEPPER` (hex, ≥ 16 bytes): must equal the gateways' pepper.
    public var keyPepper: [UInt8]?
    /// `SWITCHYARD_MIRROR_SIGNING_KEY` (32-byte Ed25519 seed, hex): signs every KV mirror value; readers get
    /// the public key as `SWITCHYARD_MIRROR_PUBLIC_KEY` (docs/adr/0009).
    public var mirrorSigningKey: Ed25519.SigningKey?

    public init(adminTokens: [(name: String, token: String)], keyPepper: [UInt8]? = nil,
                mirrorSigningKey: Ed25519.SigningKey? = nil) {
        self.adminTokens = adminTokens
        self.keyPepper = keyPepper
        self.mirrorSigningKey = mirrorSigningKey
    }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) {
        let raw = environment["SWITCHYARD_ADMIN_TOKENS"] ?? ""
        let tokens: [(name: String, token: String)]
        do {
            tokens = try AdminAuthenticator.parse(raw)
        } catch {
            throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_ADMIN_TOKENS",
                                     expectation: "name:token pairs; names [a-z0-9-], tokens of 16+ characters")
        }
        guard !tokens.isEmpty else {
            throw ConfigurationError(code: .empty, variable: "SWITCHYARD_ADMIN_TOKENS",
                                     expectation: "at least one name:token pair (admin commands need a credential)")
        }
        var pepper: [UInt8]?
        if let raw = environment["SWITCHYARD_KEY_PEPPER"], !raw.isEmpty {
            guard let bytes = Hex.decode(raw), bytes.count >= 16 else {
                throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_KEY_PEPPER",
                                         expectation: "at least 16 bytes, hex-encoded")
            }
            pepper = bytes
        }
        var signingKey: Ed25519.SigningKey?
        if let raw = environment["SWITCHYARD_MIRROR_SIGNING_KEY"], !raw.isEmpty {
            guard let seed = Hex.decode(raw), let key = Ed25519.SigningKey(seed: seed) else {
                throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_MIRROR_SIGNING_KEY",
                                         expectation: "a 32-byte Ed25519 private key (seed), hex-encoded")
            }
            signingKey = key
        }
        self.init(adminTokens: tokens, keyPepper: pepper, mirrorSigningKey: signingKey)
    }
}

/// Builds the tenant service: migrations, the KV mirror rebuilt from PostgreSQL, admin commands over NATS
/// (queue group) and HTTP, the outbox sweep.
public func buildTenantService(
    configuration: ServiceConfiguration, tenant: TenantConfiguration, logger: Logger,
    metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> ServiceGroup {
    let platform = try await ServicePlatform.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await platform.jetStream.ensureStream(StandardStreams.events)
    try await platform.jetStream.ensureStream(StandardStreams.deadLetter)
    try await platform.jetStream.ensureConsumer(stream: StreamNames.events, KeyUsageRecorder.consumer)
    let pool = try PostgresPool(configuration: configuration.postgresConfiguration, logger: logger)
    platform.health.register(PostgresHealthCheck(pool: pool))
    try await TenantStore.migrate(pool: pool, logger: logger)
    let mirror = try await TenantMirror(jetStream: platform.jetStream, signer: tenant.mirrorSigningKey, logger: logger)
    if tenant.mirrorSigningKey == nil {
        logger.warning("SWITCHYARD_MIRROR_SIGNING_KEY is not set: the KV mirror is unsigned (docs/adr/0009)")
    }
    // PostgreSQL is the source of truth: whatever the KV buckets hold (wiped, stale, tampered) is repaired
    // before this replica serves commands.
    let repaired = try await mirror.rebuild(pool: pool)
    logger.info("kv mirror checked against postgres", metadata: ["kv.writes": "\(repaired)"])
    let outbox = Outbox(pool: pool, jetStream: platform.jetStream, logger: logger)
    let admin = TenantAdmin(
        pool: pool, mirror: mirror, outbox: outbox, authenticator: AdminAuthenticator(tokens: tenant.adminTokens),
        pepper: tenant.keyPepper, metrics: metrics, logger: logger)
    let dispatcher = AdminDispatcher(admin: admin)
    let router = Router(context: BasicRequestContext.self)
    AdminHTTPRoutes(dispatcher: dispatcher, metrics: metrics, logger: logger).add(to: router)
    let app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort),
                             serverName: "switchyard-tenant"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
        logger: logger)
    return platform.serviceGroup([
        ClosingService { await pool.close() },
        AdminNATSService(connection: platform.connection, dispatcher: dispatcher, metrics: metrics, logger: logger),
        OutboxSweepService(outbox: outbox),
        MirrorGuardService(mirror: mirror, pool: pool, logger: logger),
        JetStreamConsumerService(
            jetStream: platform.jetStream, stream: StreamNames.events, consumer: KeyUsageRecorder.consumer,
            batchSize: 512, keepAlive: false, logger: logger, handler: KeyUsageRecorder(pool: pool).handle),
        app,
    ], signals: signals)
}
