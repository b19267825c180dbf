import Contracts
import Logging
import Messaging
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Storage
import Telemetry
import Tenancy

/// Eval's own settings (the shared ones are in `ServiceConfiguration`).
public struct EvalConfiguration: Sendable {
    /// `SWITCHYARD_ADMIN_TOKENS`: `name:token` pairs for the admin commands; unset = every command is refused.
    public var adminTokens: [(name: String, token: String)]

    public init(adminTokens: [(name: String, token: String)] = []) {
        self.adminTokens = adminTokens
    }

    public init(environment: EnvironmentReader) throws(ConfigurationError) {
        adminTokens = try AdminAuthenticator.tokens(from: environment)
    }
}

/// Builds the eval process: NATS, PostgreSQL with its migrations, the tenancy mirror (suites name agents of the
/// tenant's manifest) and the admin commands (`admin.eval.*`): golden suites imported, listed and read back.
/// Runs, replays and rollouts build on these (issue 11, next slices).
public func buildEval(configuration: ServiceConfiguration, eval: EvalConfiguration = EvalConfiguration(),
                      logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(),
                      signals: Bool = true) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    let pool = try await builder.postgres { pool, logger in
        try await migrate(pool: pool, service: ServiceName.eval.rawValue, migrations: EvalSchema.migrations,
                          logger: logger)
    }
    let admin = EvalAdmin(pool: pool, authenticator: AdminAuthenticator(tokens: eval.adminTokens),
                          directory: builder.tenancyMirror(), logger: logger)
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: EvalAdminDispatcher(admin: admin),
                                 metrics: metrics, logger: logger))
    return builder.serviceGroup(signals: signals)
}
