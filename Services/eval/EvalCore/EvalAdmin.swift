import Contracts
import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import Storage
import Tenancy

/// The eval service's tables. `eval_suites`: one row per (tenant, agent, suite name): the file as imported (so
/// an operator can read it back) and the parsed suite (protobuf), replaced whole on re-import. `eval_audit`: who
/// imported what, when.
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

    public init(pool: PostgresPool, authenticator: AdminAuthenticator, directory: TenantDirectory?, logger: Logger) {
        self.pool = pool
        self.authenticator = authenticator
        self.directory = directory
        self.logger = logger
    }

    func storage(_ error: any Error) -> AdminFailure { AdminFailure.storage(error, service: "eval") }

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
        }
    }
}
