import Contracts
import EvalCore
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Tenancy
import Testing
import TestKit

/// The eval service in-process against a real nats-server and PostgreSQL, driven by its admin commands over NATS.
@Suite("Eval service: golden suites over admin.eval.*")
struct EvalAdminTests {
    static let logger = Logger(label: "eval-tests") { _ in SwiftLogNoOpLogHandler() }
    static let token = "eval-test-admin-token-0123456789"

    static func withEval(_ body: @Sendable (AdminClient, PostgresPool) async throws -> Void) async throws {
        try await NATSServer.withServer { nats in
            try await PostgresServer.withServer { postgres in
                let connection = try await NATSConnection.connect(
                    NATSConfiguration(servers: [nats.url], name: "eval-test", connectAttempts: 3), logger: logger)
                defer { connection.close() }
                let writer = try await TenancyWriter(jetStream: try JetStream(connection: connection))
                let now = EventClock.nowUnixNanos()
                try await writer.put(Tenant(id: "demo-restaurant", name: "Trattoria", planID: "pro", status: "active",
                                            packageName: "gastronomy", consentPolicy: "none", createdAtUnixNanos: now,
                                            updatedAtUnixNanos: now))
                try await writer.put(PackageManifest(
                    packageName: "gastronomy",
                    agents: [AgentManifest(agent: "restaurant-host", provider: "local", model: "kb", systemPrompt: "",
                                           intents: [], fallbackAgent: "", enabled: true, version: "v1",
                                           handoffThreshold: 0.25)],
                    defaultAgent: "restaurant-host", tenantID: "demo-restaurant"), tenant: "demo-restaurant")
                let environment = [
                    "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                    "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "0",
                    "SWITCHYARD_INSTANCE_ID": "eval-1", "SWITCHYARD_DB_POOL_SIZE": "2",
                ]
                let group = try await buildEval(
                    configuration: try ServiceConfiguration(environment: environment, service: "eval"),
                    eval: EvalConfiguration(adminTokens: [(name: "operator", token: token)]), logger: logger,
                    signals: false)
                let pool = try PostgresPool(configuration: PostgresConfiguration(
                    connectionString: postgres.connectionString, poolSize: 1), logger: logger)
                defer { Task { await pool.close() } }
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await group.run() }
                    let client = AdminClient(connection: connection, token: token, actor: "test", timeout: .seconds(5))
                    // Served once the mirror knows the tenant (the last thing the service wires up is the admin loop).
                    for _ in 0..<400 {
                        do {
                            _ = try await client.call(.suiteList, ListSuitesRequest(tenantID: "demo-restaurant"),
                                                      as: ListSuitesResponse.self)
                            break
                        } catch let failure as AdminFailure where failure.code == .unavailable || failure.code == .notFound {
                            try await Task.sleep(for: .milliseconds(25))
                        }
                    }
                    try await body(client, pool)
                    await group.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
            }
        }
    }

    /// The failure an import gets (nil when it succeeds).
    static func failure(of client: AdminClient, _ command: EvalAdminCommand, _ request: ImportSuiteRequest) async
        -> AdminFailure?
    {
        do {
            _ = try await client.call(command, request, as: ImportSuiteResponse.self)
            return nil
        } catch {
            return error
        }
    }

    static func rows(_ pool: PostgresPool, _ table: String) async throws -> Int64 {
        try await pool.query("SELECT count(*) FROM \(table)").first?.decode(Int64.self, at: 0) ?? -1
    }

    @Test("the demo suite is imported, listed and read back; a re-import replaces it and both are audited")
    func importListGet() async throws {
        try await Self.withEval { client, pool in
            let source = try demoSuiteSource()
            let request = ImportSuiteRequest(tenantID: "demo-restaurant", agent: "restaurant-host", source: source)
            let imported = try await client.call(.suiteImport, request, as: ImportSuiteResponse.self)
            #expect(imported.suite?.cases.count == 24)
            #expect(imported.suite?.name == "restaurant-basics")
            #expect(imported.suite?.updatedBy.hasPrefix("operator") == true)
            #expect(imported.replaced == false)
            let again = try await client.call(.suiteImport, request, as: ImportSuiteResponse.self)
            #expect(again.replaced)

            let listed = try await client.call(.suiteList, ListSuitesRequest(tenantID: "demo-restaurant"),
                                               as: ListSuitesResponse.self)
            #expect(listed.suites.map(\.name) == ["restaurant-basics"])
            #expect(listed.suites.first?.cases == 24)
            let read = try await client.call(.suiteGet, GetSuiteRequest(tenantID: "demo-restaurant", agent: "restaurant-host",
                                                                        name: "restaurant-basics"),
                                             as: GetSuiteResponse.self)
            #expect(read.suite?.cases == (try SuiteParser.parse(source)).cases)
            #expect(try await Self.rows(pool, "eval_audit") == 2)
        }
    }

    @Test("bad input gets a clear error and writes nothing: schema errors with lines, unknown agent or tenant, hostile ids, a wrong token")
    func badInput() async throws {
        try await Self.withEval { client, pool in
            func failure(_ command: EvalAdminCommand, _ request: ImportSuiteRequest) async -> AdminFailure? {
                await Self.failure(of: client, command, request)
            }
            let broken = "name: broken\ncases:\n  - id: a\n    input: hi\n    expect:\n      - contans: x\n"
            let schema = await failure(.suiteImport, ImportSuiteRequest(tenantID: "demo-restaurant", agent: "restaurant-host",
                                                                         source: broken))
            #expect(schema?.code == .invalidArgument)
            #expect(schema?.message.contains("line 6: case 'a': unknown expectation 'contans'") == true, "\(String(describing: schema))")

            let source = try demoSuiteSource()
            let agent = await failure(.suiteImport, ImportSuiteRequest(tenantID: "demo-restaurant", agent: "sommelier",
                                                                        source: source))
            #expect(agent?.code == .notFound)
            #expect(agent?.message.contains("not in tenant demo-restaurant's manifest") == true)
            let tenant = await failure(.suiteImport, ImportSuiteRequest(tenantID: "no-such-tenant", agent: "restaurant-host",
                                                                         source: source))
            #expect(tenant?.code == .notFound)
            for hostile in ["a.b", "*", "Demo", ""] {
                let refused = await failure(.suiteImport, ImportSuiteRequest(tenantID: hostile, agent: "restaurant-host",
                                                                              source: source))
                #expect(refused?.code == .invalidArgument, "\(hostile)")
            }
            let name = await failure(.suiteImport, ImportSuiteRequest(tenantID: "demo-restaurant", agent: "restaurant-host",
                                                                       name: "../etc", source: source))
            #expect(name?.code == .invalidArgument)
            let wrongAgentInFile = await failure(.suiteImport, ImportSuiteRequest(
                tenantID: "demo-restaurant", agent: "restaurant-host",
                source: source.replacingOccurrences(of: "agent: restaurant-host", with: "agent: concierge")))
            #expect(wrongAgentInFile?.code == .invalidArgument)

            let stranger = AdminClient(connection: client.connection, token: "wrong-token-wrong-token-wrong",
                                       actor: "mallory", timeout: .seconds(5))
            do {
                _ = try await stranger.call(.suiteImport, ImportSuiteRequest(tenantID: "demo-restaurant",
                                                                             agent: "restaurant-host", source: source),
                                            as: ImportSuiteResponse.self)
                Issue.record("a wrong token was accepted")
            } catch let failure as AdminFailure {
                #expect(failure.code == .unauthorized)
            }
            #expect(try await Self.rows(pool, "eval_suites") == 0)
            #expect(try await Self.rows(pool, "eval_audit") == 0)
        }
    }
}
