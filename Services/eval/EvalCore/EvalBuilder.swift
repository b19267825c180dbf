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
/// tenant's manifest), the runner with its reply inbox, and the admin commands (`admin.eval.*`): golden suites
/// imported, listed and read back; runs started, followed and listed. Replays and rollouts build on these.
public func buildEval(configuration: ServiceConfiguration, eval: EvalConfiguration = EvalConfiguration(),
                      logger: Logger, metrics: TelemetryMetrics = TelemetryMetrics(),
                      signals: Bool = true) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    let pool = try await builder.postgres { pool, logger in
        try await migrate(pool: pool, service: ServiceName.eval.rawValue, migrations: EvalSchema.migrations,
                          logger: logger)
    }
    builder.doctorMigrations(pool, service: ServiceName.eval.rawValue, migrations: EvalSchema.migrations)
    builder.doctor.add {
        eval.adminTokens.isEmpty
            ? [Doctor.check(.warn, "secret SWITCHYARD_ADMIN_TOKENS", "not set: eval's admin commands are refused")]
            : eval.adminTokens.map { SecretHygiene.check("SWITCHYARD_ADMIN_TOKENS (\($0.name))", $0.token) }
    }
    try await builder.streams(Streams.events, Streams.deadLetter)
    // Answers to the cases of runs come back like a gateway's (a reply inbox per instance, resends after a
    // reconnect).
    let inbox = try ReplyInbox(connection: builder.connection, instanceID: "eval-" + configuration.instanceID)
    builder.add(ReplyInboxService(inbox: inbox))
    let runner = EvalRunner(pool: pool, jetStream: builder.jetStream, inbox: inbox, metrics: metrics, logger: logger)
    builder.add(EvalRunnerService(runner: runner))
    let admin = EvalAdmin(pool: pool, authenticator: AdminAuthenticator(tokens: eval.adminTokens),
                          directory: builder.tenancyMirror(), logger: logger, runner: runner)
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: EvalAdminDispatcher(admin: admin),
                                 metrics: metrics, logger: logger))
    return builder.serviceGroup(signals: signals)
}
