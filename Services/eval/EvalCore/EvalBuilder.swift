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
    /// `SWITCHYARD_ROLLOUT_ADMIN_TOKEN`: the admin token the rollout controller presents to the tenant service
    /// (`set-rollout`) and to analytics (`stats`); one of their `SWITCHYARD_ADMIN_TOKENS`. Unset: no rollouts.
    public var rolloutToken: String?
    /// `SWITCHYARD_ROLLOUT_LEASE_MS` (default 15000): how long a replica's lease on a rollout lasts unrenewed —
    /// the longest a rollout waits for another replica after its driver died.
    public var rolloutLease: Duration
    /// `SWITCHYARD_ROLLOUT_TICK_MS` (default 1000): how often the controller looks at its rollouts.
    public var rolloutTick: Duration
    /// `SWITCHYARD_EVAL_JUDGE_*`: the optional LLM judge (nil: off).
    public var judge: JudgeConfiguration?
    /// `SWITCHYARD_EVAL_MAX_RUNS_PER_TENANT` (default 4): how many runs and replays a tenant may have in progress at
    /// once, across every eval replica, before `run-start` and `replay-start` are refused (a rollout's own
    /// pre-step runs are never refused, but count).
    public var maxRunsPerTenant: Int

    public init(adminTokens: [(name: String, token: String)] = [], rolloutToken: String? = nil,
                rolloutLease: Duration = .seconds(15), rolloutTick: Duration = .seconds(1),
                judge: JudgeConfiguration? = nil, maxRunsPerTenant: Int = EvalRunner.defaultMaxRunsPerTenant) {
        self.adminTokens = adminTokens
        self.maxRunsPerTenant = maxRunsPerTenant
        self.judge = judge
        self.rolloutToken = rolloutToken
        self.rolloutLease = rolloutLease
        self.rolloutTick = rolloutTick
    }

    public init(environment: EnvironmentReader) throws(ConfigurationError) {
        adminTokens = try AdminAuthenticator.tokens(from: environment)
        judge = try JudgeConfiguration(environment: environment)
        maxRunsPerTenant = try environment.integer("SWITCHYARD_EVAL_MAX_RUNS_PER_TENANT",
                                                   default: EvalRunner.defaultMaxRunsPerTenant, range: 1...1_000)
        rolloutToken = environment.optional("SWITCHYARD_ROLLOUT_ADMIN_TOKEN").flatMap { $0.isEmpty ? nil : $0 }
        rolloutLease = try environment.milliseconds("SWITCHYARD_ROLLOUT_LEASE_MS", default: .seconds(15),
                                                    range: 500...600_000)
        rolloutTick = try environment.milliseconds("SWITCHYARD_ROLLOUT_TICK_MS", default: .seconds(1), range: 50...60_000)
        if rolloutTick * 2 > rolloutLease {
            throw ConfigurationError(code: .outOfRange, variable: "SWITCHYARD_ROLLOUT_TICK_MS",
                                     expectation: "at most half of SWITCHYARD_ROLLOUT_LEASE_MS (a lease is renewed every tick)")
        }
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
    builder.doctor.add {
        guard let token = eval.rolloutToken else {
            return [Doctor.check(.warn, "secret SWITCHYARD_ROLLOUT_ADMIN_TOKEN", "not set: rollouts are refused")]
        }
        return [SecretHygiene.check("SWITCHYARD_ROLLOUT_ADMIN_TOKEN", token)]
    }
    try await builder.streams(Streams.events, Streams.deadLetter)
    // Answers to the cases of runs come back like a gateway's (a reply inbox per instance, resends after a
    // reconnect).
    let inbox = try ReplyInbox(connection: builder.connection, instanceID: "eval-" + configuration.instanceID)
    builder.add(ReplyInboxService(inbox: inbox))
    let runner = EvalRunner(pool: pool, jetStream: builder.jetStream, inbox: inbox, metrics: metrics, logger: logger,
                            judge: eval.judge.map { Judge(configuration: $0) }, maxRunsPerTenant: eval.maxRunsPerTenant)
    builder.add(EvalRunnerService(runner: runner))
    let directory = builder.tenancyMirror()
    // The controller's admin calls (set-rollout, stats) go out on this process's connection as the eval user.
    let client = eval.rolloutToken.map {
        AdminClient(connection: builder.connection, token: $0, actor: "rollout-controller/\(configuration.instanceID)",
                    timeout: .seconds(5))
    }
    let rollouts = RolloutController(pool: pool, runner: runner, jetStream: builder.jetStream, directory: directory,
                                     client: client, instance: configuration.instanceID, lease: eval.rolloutLease,
                                     tick: eval.rolloutTick, logger: logger)
    builder.add(RolloutControllerService(controller: rollouts))
    let admin = EvalAdmin(pool: pool, authenticator: AdminAuthenticator(tokens: eval.adminTokens),
                          directory: directory, logger: logger, runner: runner, rollouts: rollouts)
    builder.add(AdminNATSService(connection: builder.connection, dispatcher: EvalAdminDispatcher(admin: admin),
                                 metrics: metrics, logger: logger))
    return builder.serviceGroup(signals: signals)
}
