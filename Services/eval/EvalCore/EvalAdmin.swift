import Contracts
import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import Storage
import Tenancy

/// The eval service's tables. `eval_suites`: one row per (tenant, agent, suite name): the file as imported (so
/// an operator can read it back) and the parsed suite (protobuf), replaced whole on re-import. `eval_audit`: who
/// imported or ran what, when. `eval_runs`: a run's progress and totals (`summary`: the finished `EvalRun`);
/// `eval_case_results`: each case's `EvalCaseResult` as it arrives.
public enum EvalSchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "golden suites and their audit", sql: """
            CREATE TABLE eval_suites (
                tenant_id   text        NOT NULL,
                agent       text        NOT NULL,
                name        text        NOT NULL,
                description text        NOT NULL,
                cases       integer     NOT NULL,
                source      text        NOT NULL,
                suite       bytea       NOT NULL,
                updated_at  timestamptz NOT NULL DEFAULT now(),
                updated_by  text        NOT NULL,
                PRIMARY KEY (tenant_id, agent, name)
            );
            CREATE TABLE eval_audit (
                id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at        timestamptz NOT NULL DEFAULT now(),
                actor     text        NOT NULL,
                action    text        NOT NULL,
                tenant_id text        NOT NULL,
                target    text        NOT NULL,
                detail    text        NOT NULL
            );
            """),
        Migration(version: 2, name: "eval runs and their case results", sql: """
            CREATE TABLE eval_runs (
                run_id        text        PRIMARY KEY,
                tenant_id     text        NOT NULL,
                agent         text        NOT NULL,
                agent_version text        NOT NULL,
                suite         text        NOT NULL,
                status        text        NOT NULL,
                cases_total   integer     NOT NULL,
                cases_done    integer     NOT NULL DEFAULT 0,
                cases_passed  integer     NOT NULL DEFAULT 0,
                score         double precision NOT NULL DEFAULT 0,
                error         text        NOT NULL DEFAULT '',
                started_by    text        NOT NULL,
                started_at    timestamptz NOT NULL DEFAULT now(),
                updated_at    timestamptz NOT NULL DEFAULT now(),
                finished_at   timestamptz,
                summary       bytea
            );
            CREATE INDEX eval_runs_by_agent ON eval_runs (tenant_id, agent, started_at DESC);
            CREATE TABLE eval_case_results (
                run_id   text             NOT NULL REFERENCES eval_runs (run_id) ON DELETE CASCADE,
                position integer          NOT NULL,
                case_id  text             NOT NULL,
                score    double precision NOT NULL,
                passed   boolean          NOT NULL,
                result   bytea            NOT NULL,
                PRIMARY KEY (run_id, position)
            );
            """),
        Migration(version: 3, name: "gated rollouts and their changes", sql: """
            CREATE TABLE eval_rollouts (
                rollout_id       text        PRIMARY KEY,
                tenant_id        text        NOT NULL,
                agent            text        NOT NULL,
                state            text        NOT NULL,
                revision         bigint      NOT NULL DEFAULT 0,
                settings_pending boolean     NOT NULL DEFAULT false,
                lease_owner      text        NOT NULL DEFAULT '',
                lease_until      timestamptz NOT NULL DEFAULT '-infinity',
                started_at       timestamptz NOT NULL DEFAULT now(),
                updated_at       timestamptz NOT NULL DEFAULT now(),
                rollout          bytea       NOT NULL
            );
            CREATE UNIQUE INDEX eval_rollouts_one_unfinished ON eval_rollouts (tenant_id, agent)
                WHERE state IN ('evaluating', 'stepping', 'paused');
            CREATE INDEX eval_rollouts_by_agent ON eval_rollouts (tenant_id, agent, started_at DESC);
            CREATE TABLE eval_rollout_events (
                rollout_id text        NOT NULL REFERENCES eval_rollouts (rollout_id) ON DELETE CASCADE,
                sequence   bigint      NOT NULL,
                at         timestamptz NOT NULL DEFAULT now(),
                action     text        NOT NULL,
                event      bytea       NOT NULL,
                published  boolean     NOT NULL DEFAULT false,
                PRIMARY KEY (rollout_id, sequence)
            );
            CREATE INDEX eval_rollout_events_unpublished ON eval_rollout_events (at) WHERE NOT published;
            """),
    ]
}

/// `admin.eval.*`: suites are imported (validated with line numbers, for an agent the tenant's manifest has),
/// listed and read back. Every command needs an admin token; invalid input writes nothing.
public struct EvalAdmin: Sendable {
    let pool: PostgresPool
    let authenticator: AdminAuthenticator
    /// The tenancy mirror: the tenant and its agents must exist.
    let directory: TenantDirectory?
    let logger: Logger
    /// Runs suites through the chat path (nil: run-start is refused as unavailable).
    var runner: EvalRunner?
    /// Drives rollouts (nil: rollout commands are refused as unavailable).
    var rollouts: RolloutController?

    public init(pool: PostgresPool, authenticator: AdminAuthenticator, directory: TenantDirectory?, logger: Logger,
                runner: EvalRunner? = nil, rollouts: RolloutController? = nil) {
        self.pool = pool
        self.authenticator = authenticator
        self.directory = directory
        self.logger = logger
        self.runner = runner
        self.rollouts = rollouts
    }

    func storage(_ error: any Error) -> AdminFailure { AdminFailure.storage(error, service: "eval") }

    /// A start refused by the tenant's limit of runs in progress.
    static func refusal(_ reached: EvalRunner.RunLimitReached) -> AdminFailure {
        AdminFailure(.conflict, "tenant \(reached.tenant) has \(reached.running) eval runs in progress, the most it may "
                     + "have at once (SWITCHYARD_EVAL_MAX_RUNS_PER_TENANT=\(reached.limit)); start this one when one "
                     + "of them has finished (run-list shows them)")
    }

    /// The tenant and agent a command names, checked against the mirror.
    func checkTarget(tenant: String, agent: String, agentRequired: Bool) throws(AdminFailure) {
        guard TenantID.isValid(tenant) else {
            throw AdminFailure(.invalidArgument, "tenant_id must match [a-z0-9][a-z0-9-]{0,62}")
        }
        guard !agentRequired || !agent.isEmpty else { throw AdminFailure(.invalidArgument, "agent is required") }
        guard agent.utf8.count <= 128 else { throw AdminFailure(.invalidArgument, "agent is too long") }
        guard let directory else { return }
        guard let snapshot = directory.snapshot(tenant: tenant) else {
            throw AdminFailure(.notFound, "tenant \(tenant) not found")
        }
        if !agent.isEmpty, !(snapshot.manifest?.agents.contains { $0.agent == agent } ?? false) {
            let known = snapshot.manifest?.agents.map(\.agent).joined(separator: ", ") ?? ""
            throw AdminFailure(.notFound, "agent \(agent) is not in tenant \(tenant)'s manifest (agents: \(known.isEmpty ? "none" : known))")
        }
    }

    public func importSuite(_ request: ImportSuiteRequest) async throws(AdminFailure) -> ImportSuiteResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: true)
        var suite: EvalSuite
        do {
            suite = try SuiteParser.parse(request.source)
        } catch {
            throw AdminFailure(.invalidArgument, "the suite is not valid: \(error.problems.prefix(20).map { "line \($0.line): \($0.message)" }.joined(separator: "; "))"
                               + (error.problems.count > 20 ? "; … and \(error.problems.count - 20) more" : ""))
        }
        if !suite.agent.isEmpty && suite.agent != request.agent {
            throw AdminFailure(.invalidArgument, "the file is for agent \(suite.agent), not \(request.agent)")
        }
        if !request.name.isEmpty {
            guard EvalNames.isValid(request.name) else {
                throw AdminFailure(.invalidArgument, "name must match [a-z0-9][a-z0-9._-]{0,62}")
            }
            suite.name = request.name
        }
        guard !suite.name.isEmpty else {
            throw AdminFailure(.invalidArgument, "the suite needs a name (in the file or given with the command)")
        }
        suite.tenantID = request.tenantID
        suite.agent = request.agent
        suite.updatedBy = actor
        suite.updatedAtUnixNanos = EventClock.nowUnixNanos()
        let stored = suite
        do {
            let replaced = try await pool.transaction { connection -> Bool in
                let rows = try await connection.query("""
                    INSERT INTO eval_suites (tenant_id, agent, name, description, cases, source, suite, updated_by)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (tenant_id, agent, name) DO UPDATE SET
                        description = EXCLUDED.description, cases = EXCLUDED.cases, source = EXCLUDED.source,
                        suite = EXCLUDED.suite, updated_by = EXCLUDED.updated_by, updated_at = now()
                    RETURNING (xmax <> 0) AS replaced
                    """, [.text(stored.tenantID), .text(stored.agent), .text(stored.name), .text(stored.summary),
                          .int64(Int64(stored.cases.count)), .text(request.source), .bytea(stored.protobufBytes()),
                          .text(actor)])
                _ = try await connection.query("""
                    INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'suite-import', $2, $3, $4)
                    """, [.text(actor), .text(stored.tenantID), .text("\(stored.agent)/\(stored.name)"),
                          .text("\(stored.cases.count) cases")])
                return try rows.first?.decode(Bool.self, at: 0) ?? false
            }
            logger.info("eval suite imported", metadata: [
                "tenant.id": "\(stored.tenantID)", "agent": "\(stored.agent)", "suite": "\(stored.name)",
                "cases": "\(stored.cases.count)", "actor": "\(actor)",
            ])
            return ImportSuiteResponse(error: nil, suite: stored, replaced: replaced)
        } catch {
            throw storage(error)
        }
    }

    public func listSuites(_ request: ListSuitesRequest) async throws(AdminFailure) -> ListSuitesResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: false)
        do {
            let rows = try await pool.query("""
                SELECT agent, name, description, cases, (extract(epoch FROM updated_at) * 1e9)::bigint, updated_by
                FROM eval_suites WHERE tenant_id = $1 AND ($2 = '' OR agent = $2) ORDER BY agent, name
                """, [.text(request.tenantID), .text(request.agent)])
            return ListSuitesResponse(error: nil, suites: try rows.map { row in
                EvalSuiteSummary(tenantID: request.tenantID, agent: try row.decode(String.self, at: 0),
                                 name: try row.decode(String.self, at: 1), summary: try row.decode(String.self, at: 2),
                                 cases: UInt32(try row.decode(Int64.self, at: 3)),
                                 updatedAtUnixNanos: try row.decode(Int64.self, at: 4),
                                 updatedBy: try row.decode(String.self, at: 5))
            })
        } catch {
            throw storage(error)
        }
    }

    public func getSuite(_ request: GetSuiteRequest) async throws(AdminFailure) -> GetSuiteResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: true)
        guard EvalNames.isValid(request.name) else {
            throw AdminFailure(.invalidArgument, "name must match [a-z0-9][a-z0-9._-]{0,62}")
        }
        let bytes: [UInt8]?
        do {
            bytes = try await pool.query(
                "SELECT suite FROM eval_suites WHERE tenant_id = $1 AND agent = $2 AND name = $3",
                [.text(request.tenantID), .text(request.agent), .text(request.name)]
            ).first?.decode([UInt8].self, at: 0)
        } catch {
            throw storage(error)
        }
        guard let bytes else {
            throw AdminFailure(.notFound, "no suite \(request.name) for agent \(request.agent) of tenant \(request.tenantID)")
        }
        do {
            return GetSuiteResponse(error: nil, suite: try EvalSuite(protobuf: bytes))
        } catch {
            throw AdminFailure(.internalError, "the stored suite is unreadable")
        }
    }
}

extension EvalAdmin {
    /// Starts a run of a stored suite on a version of its agent; answers at once with the run (poll run-get).
    public func startRun(_ request: StartRunRequest) async throws(AdminFailure) -> StartRunResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: true)
        guard let runner else { throw AdminFailure(.unavailable, "this eval process cannot run suites") }
        try checkVersion(request.agentVersion, tenant: request.tenantID, agent: request.agent)
        let concurrency = request.concurrency == 0 ? EvalRunner.defaultConcurrency : Int(request.concurrency)
        guard concurrency <= EvalRunner.maxConcurrency else {
            throw AdminFailure(.invalidArgument, "concurrency must be 1 to \(EvalRunner.maxConcurrency)")
        }
        let suite = try await getSuite(GetSuiteRequest(adminToken: request.adminToken, actor: request.actor,
                                                       tenantID: request.tenantID, agent: request.agent,
                                                       name: request.suite)).suite ?? EvalSuite()
        guard !suite.cases.isEmpty else { throw AdminFailure(.invalidArgument, "suite \(request.suite) has no cases") }
        try checkJudge(suite, runner: runner)
        do {
            let run = try await runner.start(tenant: request.tenantID, agent: request.agent,
                                             version: request.agentVersion, suite: suite, concurrency: concurrency,
                                             actor: actor, limited: true)
            return StartRunResponse(error: nil, run: run)
        } catch let reached as EvalRunner.RunLimitReached {
            throw Self.refusal(reached)
        } catch {
            throw storage(error)
        }
    }

    /// Starts a replay of the tenant's recorded requests for the agent through a candidate version; answers at
    /// once with the run (poll run-get).
    public func startReplay(_ request: StartReplayRequest) async throws(AdminFailure) -> StartReplayResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: true)
        guard let runner else { throw AdminFailure(.unavailable, "this eval process cannot run replays") }
        try checkVersion(request.candidateVersion, tenant: request.tenantID, agent: request.agent)
        let now = EventClock.nowUnixNanos()
        guard request.sinceUnixNanos > 0, request.sinceUnixNanos < now else {
            throw AdminFailure(.invalidArgument, "since must be a time in the past")
        }
        let limit = request.limit == 0 ? 50 : Int(request.limit)
        guard limit <= 1_000 else { throw AdminFailure(.invalidArgument, "limit must be 1 to 1000") }
        let concurrency = request.concurrency == 0 ? EvalRunner.defaultConcurrency : Int(request.concurrency)
        guard concurrency <= EvalRunner.maxConcurrency else {
            throw AdminFailure(.invalidArgument, "concurrency must be 1 to \(EvalRunner.maxConcurrency)")
        }
        do {
            return StartReplayResponse(error: nil, run: try await runner.startReplay(
                tenant: request.tenantID, agent: request.agent, candidate: request.candidateVersion,
                since: request.sinceUnixNanos, limit: limit, concurrency: concurrency, actor: actor, limited: true))
        } catch let reached as EvalRunner.RunLimitReached {
            throw Self.refusal(reached)
        } catch {
            throw storage(error)
        }
    }

    /// A suite with `judge` expectations needs the operator's judge.
    func checkJudge(_ suite: EvalSuite, runner: EvalRunner) throws(AdminFailure) {
        let judged = suite.cases.filter { $0.expectations.contains { $0.kind == "judge" } }.count
        guard judged > 0, runner.judge == nil else { return }
        throw AdminFailure(.invalidArgument, "suite \(suite.name) has judge expectations in \(judged) case(s), but the eval "
                           + "service has no LLM judge (SWITCHYARD_EVAL_JUDGE_BASE_URL is not set)")
    }

    /// A version the agent has (manifest entry or rollout), else a clear error listing the ones it has.
    func checkVersion(_ version: String, tenant: String, agent: String) throws(AdminFailure) {
        guard !version.isEmpty, EvalNames.isValidVersion(version) else {
            throw AdminFailure(.invalidArgument, "agent_version must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        }
        guard let snapshot = directory?.snapshot(tenant: tenant) else { return }
        let known = snapshot.manifest?.versions(of: agent, rollout: snapshot.rollouts[agent]) ?? []
        guard known.contains(version) else {
            throw AdminFailure(.notFound, "agent \(agent) of tenant \(tenant) has no version \(version) "
                               + "(versions: \(known.isEmpty ? "none" : known.sorted().joined(separator: ", ")))")
        }
    }

    public func getRun(_ request: GetRunRequest) async throws(AdminFailure) -> GetRunResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: "", agentRequired: false)
        guard EvalNames.isValidRunID(request.runID) else { throw AdminFailure(.invalidArgument, "run_id is not a run id") }
        do {
            guard var run = try await Self.runs(pool, where: "tenant_id = $1 AND run_id = $2",
                                                [.text(request.tenantID), .text(request.runID)], limit: 1).first else {
                throw AdminFailure(.notFound, "no run \(request.runID) for tenant \(request.tenantID)")
            }
            if request.includeResults {
                let rows = try await pool.query(
                    "SELECT result FROM eval_case_results WHERE run_id = $1 ORDER BY position", [.text(request.runID)])
                run.results = try rows.map { try EvalCaseResult(protobuf: try $0.decode([UInt8].self, at: 0)) }
                // One reply must stay under NATS' 1 MiB payload limit: a large run's answers are shortened (the
                // stored results keep them whole).
                let perAnswer = max(120, 350_000 / max(1, run.results.count))
                for index in run.results.indices {
                    run.results[index].answer = String(run.results[index].answer.prefix(perAnswer))
                    run.results[index].recordedAnswer = String(run.results[index].recordedAnswer.prefix(perAnswer))
                }
            }
            return GetRunResponse(error: nil, run: run)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw storage(error)
        }
    }

    /// Cancels a run or replay in progress: marked `cancelled` at once (audited), so it no longer counts against
    /// the tenant's limit; the replica driving it notices within a second (``EvalRunner``'s watch) and stops.
    public func cancelRun(_ request: CancelRunRequest) async throws(AdminFailure) -> CancelRunResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: "", agentRequired: false)
        guard EvalNames.isValidRunID(request.runID) else { throw AdminFailure(.invalidArgument, "run_id is not a run id") }
        do {
            let cancelled = try await pool.transaction { connection in
                let rows = try await connection.query("""
                    UPDATE eval_runs SET status = 'cancelled', error = $3, finished_at = now(), updated_at = now()
                    WHERE tenant_id = $1 AND run_id = $2 AND status = 'running' RETURNING agent, suite
                    """, [.text(request.tenantID), .text(request.runID), .text("cancelled by \(actor)")])
                guard let row = rows.first else { return false }
                _ = try await connection.query("""
                    INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'run-cancel', $2, $3, $4)
                    """, [.text(actor), .text(request.tenantID),
                          .text("\(try row.decode(String.self, at: 0))/\(try row.decode(String.self, at: 1))"),
                          .text(request.runID)])
                return true
            }
            guard let run = try await Self.runs(pool, where: "tenant_id = $1 AND run_id = $2",
                                                [.text(request.tenantID), .text(request.runID)], limit: 1).first else {
                throw AdminFailure(.notFound, "no run \(request.runID) for tenant \(request.tenantID)")
            }
            guard cancelled else {
                throw AdminFailure(.conflict, "run \(request.runID) is \(run.status), not running: nothing to cancel")
            }
            logger.info("eval run cancelled", metadata: [
                "tenant.id": "\(request.tenantID)", "run": "\(request.runID)", "actor": "\(actor)",
            ])
            return CancelRunResponse(error: nil, run: run)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw storage(error)
        }
    }

    public func listRuns(_ request: ListRunsRequest) async throws(AdminFailure) -> ListRunsResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: false)
        let limit = request.limit == 0 ? 20 : min(Int(request.limit), 500)
        do {
            return ListRunsResponse(error: nil, runs: try await Self.runs(
                pool, where: "tenant_id = $1 AND ($2 = '' OR agent = $2)", [.text(request.tenantID), .text(request.agent)],
                limit: limit))
        } catch {
            throw storage(error)
        }
    }

    /// Runs from `eval_runs`, newest first: a finished run's stored summary, a running one's progress columns.
    static func runs(_ pool: PostgresPool, where condition: String, _ parameters: [PostgresValue], limit: Int)
        async throws -> [EvalRun]
    {
        let rows = try await pool.query("""
            SELECT run_id, tenant_id, agent, agent_version, suite, status, cases_total, cases_done, cases_passed, score,
                   error, started_by, (extract(epoch FROM started_at) * 1e9)::bigint,
                   coalesce((extract(epoch FROM finished_at) * 1e9)::bigint, 0), summary
            FROM eval_runs WHERE \(condition) ORDER BY started_at DESC, run_id LIMIT \(limit)
            """, parameters)
        return try rows.map { row in
            var run = EvalRun()
            if let summary = try row.decode([UInt8]?.self, at: 14) { run = try EvalRun(protobuf: summary) }
            run.runID = try row.decode(String.self, at: 0)
            run.tenantID = try row.decode(String.self, at: 1)
            run.agent = try row.decode(String.self, at: 2)
            run.agentVersion = try row.decode(String.self, at: 3)
            run.suite = try row.decode(String.self, at: 4)
            run.status = try row.decode(String.self, at: 5)
            run.casesTotal = UInt32(try row.decode(Int64.self, at: 6))
            run.casesDone = UInt32(try row.decode(Int64.self, at: 7))
            run.casesPassed = UInt32(try row.decode(Int64.self, at: 8))
            run.score = try row.decode(Double.self, at: 9)
            run.error = try row.decode(String.self, at: 10)
            run.startedBy = try row.decode(String.self, at: 11)
            run.startedAtUnixNanos = try row.decode(Int64.self, at: 12)
            run.finishedAtUnixNanos = try row.decode(Int64.self, at: 13)
            return run
        }
    }
}

/// `admin.eval.*` over NATS.
public struct EvalAdminDispatcher: AdminCommandDispatcher {
    let admin: EvalAdmin

    public init(admin: EvalAdmin) { self.admin = admin }

    public var service: String { EvalAdminCommand.service }
    public var commandNames: [String] { EvalAdminCommand.allCases.map(\.rawValue) }

    public func handle(command name: String, body: [UInt8], wire: AdminWire, bearerToken: String?) async
        -> (error: AdminErrorCode?, body: [UInt8])?
    {
        guard let command = EvalAdminCommand(rawValue: name) else { return nil }
        let a = admin
        switch command {
        case .suiteImport:
            return await AdminCall.run(body, wire, bearerToken, ImportSuiteRequest.self) { r throws(AdminFailure) in
                try await a.importSuite(r)
            }
        case .suiteList:
            return await AdminCall.run(body, wire, bearerToken, ListSuitesRequest.self) { r throws(AdminFailure) in
                try await a.listSuites(r)
            }
        case .suiteGet:
            return await AdminCall.run(body, wire, bearerToken, GetSuiteRequest.self) { r throws(AdminFailure) in
                try await a.getSuite(r)
            }
        case .runStart:
            return await AdminCall.run(body, wire, bearerToken, StartRunRequest.self) { r throws(AdminFailure) in
                try await a.startRun(r)
            }
        case .replayStart:
            return await AdminCall.run(body, wire, bearerToken, StartReplayRequest.self) { r throws(AdminFailure) in
                try await a.startReplay(r)
            }
        case .runGet:
            return await AdminCall.run(body, wire, bearerToken, GetRunRequest.self) { r throws(AdminFailure) in
                try await a.getRun(r)
            }
        case .runList:
            return await AdminCall.run(body, wire, bearerToken, ListRunsRequest.self) { r throws(AdminFailure) in
                try await a.listRuns(r)
            }
        case .runCancel:
            return await AdminCall.run(body, wire, bearerToken, CancelRunRequest.self) { r throws(AdminFailure) in
                try await a.cancelRun(r)
            }
        case .rolloutStart:
            return await AdminCall.run(body, wire, bearerToken, StartRolloutRequest.self) { r throws(AdminFailure) in
                try await a.startRollout(r)
            }
        case .rolloutGet:
            return await AdminCall.run(body, wire, bearerToken, GetRolloutRequest.self) { r throws(AdminFailure) in
                try await a.getRollout(r)
            }
        case .rolloutList:
            return await AdminCall.run(body, wire, bearerToken, ListRolloutsRequest.self) { r throws(AdminFailure) in
                try await a.listRollouts(r)
            }
        case .rolloutControl:
            return await AdminCall.run(body, wire, bearerToken, ControlRolloutRequest.self) { r throws(AdminFailure) in
                try await a.controlRollout(r)
            }
        }
    }
}
