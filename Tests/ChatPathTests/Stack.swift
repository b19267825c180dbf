import AsyncHTTPClient
import AnalyticsCore
import BillingCore
import EvalCore
import Foundation
import GatewayCore
import Hummingbird
import KnowledgeBase
import Logging
import Messaging
import NIOCore
import NIOHTTP1
import OrchestratorCore
import RouterCore
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization
import Telemetry
import Tenancy
import TestKit

/// The whole chat path on real infrastructure: nats-server, PostgreSQL, router, orchestrator and gateway
/// (each with its own NATS connection, as separate processes would have), plus an HTTP client.
final class Stack: Sendable {
    static let logger = Logger(label: "chat-path") { _ in SwiftLogNoOpLogHandler() }
    static let tenant = "acme-bistro"
    /// The admin token of in-process services that take admin commands (analytics).
    static let adminToken = "test-admin-token-0123456789"

    let nats: NATSServer
    let postgres: PostgresServer
    let gatewayPort: Int
    /// Every gateway replica's port (the first is `gatewayPort`).
    let gatewayPorts: [Int]
    let apiKey: String
    let keyRecord: ApiKeyRecord
    let writer: TenancyWriter
    let admin: NATSConnection
    let adminJS: JetStream
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    /// The analytics service's HTTP port (admin commands, dashboard) when it runs in the stack, else 0.
    let analyticsPort: Int
    /// The analytics service's metrics registry (what its /metrics renders).
    let analyticsMetrics: TelemetryMetrics
    /// The NATS users' passwords when nats-server runs with `scripts/nats-auth.conf.tmpl` (`natsAuth: true`).
    let natsPasswords: [String: String]?
    private let groups: [ServiceGroup]
    private let runner: Task<Void, any Error>

    private init(nats: NATSServer, postgres: PostgresServer, gatewayPorts: [Int], apiKey: String, keyRecord: ApiKeyRecord,
                 writer: TenancyWriter, admin: NATSConnection, adminJS: JetStream, groups: [ServiceGroup],
                 runner: Task<Void, any Error>, natsPasswords: [String: String]?, analyticsPort: Int,
                 analyticsMetrics: TelemetryMetrics) {
        self.analyticsMetrics = analyticsMetrics
        self.natsPasswords = natsPasswords
        self.analyticsPort = analyticsPort
        self.nats = nats
        self.postgres = postgres
        self.gatewayPort = gatewayPorts[0]
        self.gatewayPorts = gatewayPorts
        self.apiKey = apiKey
        self.keyRecord = keyRecord
        self.writer = writer
        self.admin = admin
        self.adminJS = adminJS
        self.groups = groups
        self.runner = runner
    }

    var baseURL: String { "http://127.0.0.1:\(gatewayPort)/v1" }

    static func environment(_ nats: NATSServer, _ postgres: PostgresServer, instance: String,
                            user: String? = nil, passwords: [String: String]? = nil) -> [String: String] {
        var environment = [
            "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
            "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "0",
            "SWITCHYARD_INSTANCE_ID": instance, "SWITCHYARD_DB_POOL_SIZE": "2", "SWITCHYARD_DRAIN_SECONDS": "5"]
        if let user, let password = passwords?[user] {
            environment["SWITCHYARD_NATS_USER"] = user
            environment["SWITCHYARD_NATS_PASSWORD"] = password
        }
        return environment
    }

    static func start(orchestrator: OrchestratorConfiguration = OrchestratorConfiguration(endpoints: []),
                      gateway: GatewayConfiguration = GatewayConfiguration(requestTimeout: .seconds(10)),
                      consentPolicy: String = "none", inProcessOrchestrator: Bool = true,
                      inProcessRouter: Bool = true, billing: Bool = false, analytics: Bool = false,
                      eval: Bool = false, evalJudge: JudgeConfiguration? = nil, gatewayReplicas: Int = 1,
                      natsAuth: Bool = false) async throws -> Stack {
        // With natsAuth, nats-server runs with the template `make run` uses and each service as its own user.
        let passwords = natsAuth ? NATSAuthTemplate.randomPasswords() : nil
        let nats: NATSServer
        if let passwords {
            nats = try await NATSServer.start(configuration: try NATSAuthTemplate.render(passwords: passwords))
        } else {
            nats = try await NATSServer.start()
        }
        let postgres = try await PostgresServer.start()
        func environment(_ nats: NATSServer, _ postgres: PostgresServer, instance: String, user: String) -> [String: String] {
            Self.environment(nats, postgres, instance: instance, user: user, passwords: passwords)
        }
        // The test's own connection writes the tenancy KV: as the tenant service's user under auth.
        let (admin, adminJS) = try await connect(nats, user: passwords == nil ? nil : "tenant", password: passwords?["tenant"])
        // Tenancy: tenant, plan, manifest, knowledge base and a key.
        let writer = try await TenancyWriter(jetStream: adminJS)
        try await seed(writer: writer, postgres: postgres, consentPolicy: consentPolicy)
        let (apiKey, record) = APIKeyGenerator.generate(env: .test, pepper: nil, tenantID: tenant, scopes: ["chat"],
                                                        nowUnixNanos: EventClock.nowUnixNanos())
        try await writer.put(record)

        var groups: [ServiceGroup] = []
        if inProcessRouter {
            groups.append(try await buildRouter(
                configuration: try ServiceConfiguration(environment: environment(nats, postgres, instance: "router-1", user: "router"),
                                                        service: "router"),
                logger: logger, signals: false))
        }
        if inProcessOrchestrator {
            groups.append(try await buildOrchestrator(
                configuration: try ServiceConfiguration(environment: environment(nats, postgres, instance: "orch-1", user: "orchestrator"),
                                                        service: "orchestrator"),
                orchestrator: orchestrator, logger: logger, signals: false))
        }
        if billing {
            groups.append(try await buildBilling(
                configuration: try ServiceConfiguration(environment: environment(nats, postgres, instance: "billing-1", user: "billing"),
                                                        service: "billing"),
                logger: logger, signals: false))
        }
        let analyticsBound = Mutex(0)
        let metricsOfAnalytics = TelemetryMetrics()
        if analytics {
            groups.append(try await buildAnalytics(
                configuration: try ServiceConfiguration(
                    environment: environment(nats, postgres, instance: "analytics-1", user: "analytics"),
                    service: "analytics"),
                analytics: AnalyticsConfiguration(adminTokens: [(name: "test", token: adminToken)]),
                logger: logger, metrics: metricsOfAnalytics, signals: false,
                onServerRunning: { bound in analyticsBound.withLock { $0 = bound } }))
        }
        if eval {
            groups.append(try await buildEval(
                configuration: try ServiceConfiguration(environment: environment(nats, postgres, instance: "eval-1", user: "eval"),
                                                        service: "eval"),
                eval: EvalConfiguration(adminTokens: [(name: "test", token: adminToken)], judge: evalJudge), logger: logger,
                signals: false))
        }
        let ports = Mutex<[Int]>(Array(repeating: 0, count: gatewayReplicas))
        for replica in 0..<gatewayReplicas {
            groups.append(try await buildGateway(
                configuration: try ServiceConfiguration(
                    environment: environment(nats, postgres, instance: "gw-\(replica + 1)", user: "gateway"),
                    service: "api-gateway"),
                gateway: gateway, logger: logger, signals: false,
                onServerRunning: { bound in ports.withLock { $0[replica] = bound } }))
        }
        let allGroups = groups
        let runner = Task {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for group in allGroups { tasks.addTask { try await group.run() } }
                try await tasks.waitForAll()
            }
        }
        for _ in 0..<400 where ports.withLock({ $0.contains(0) }) || (analytics && analyticsBound.withLock({ $0 }) == 0) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let stack = Stack(nats: nats, postgres: postgres, gatewayPorts: ports.withLock { $0 }, apiKey: apiKey,
                          keyRecord: record, writer: writer, admin: admin, adminJS: adminJS, groups: allGroups,
                          runner: runner, natsPasswords: passwords, analyticsPort: analyticsBound.withLock { $0 },
                          analyticsMetrics: metricsOfAnalytics)
        if inProcessOrchestrator && inProcessRouter { try await stack.waitUntilReady() }
        return stack
    }

    static func connect(_ nats: NATSServer, user: String? = nil, password: String? = nil) async throws
        -> (NATSConnection, JetStream)
    {
        let connection = try await NATSConnection.connect(
            NATSConfiguration(servers: [nats.url], user: user, password: password, name: "test-admin", connectAttempts: 3),
            logger: logger)
        return (connection, try JetStream(connection: connection))
    }

    static let manifest = PackageManifest(
        packageName: "gastronomy",
        agents: [
            AgentManifest(agent: "host", provider: "local", model: "kb", systemPrompt: "You are the host.",
                          intents: [IntentRule(name: "reservation", keywords: ["reserve", "table"], pattern: "", priority: 5)],
                          fallbackAgent: "supervisor", enabled: true, version: "v1", handoffThreshold: 0.2),
            AgentManifest(agent: "supervisor", provider: "local", model: "kb", systemPrompt: "You supervise.",
                          intents: [], fallbackAgent: "", enabled: true, version: "v1", handoffThreshold: 0.2),
            AgentManifest(agent: "gpt-agent", provider: "openai", model: "gpt-test", systemPrompt: "Be brief.",
                          intents: [], fallbackAgent: "host", enabled: true, version: "v1", handoffThreshold: 0.2),
        ],
        defaultAgent: "host", tenantID: tenant)

    static func seed(writer: TenancyWriter, postgres: PostgresServer, consentPolicy: String) async throws {
        let now = EventClock.nowUnixNanos()
        try await writer.put(Tenant(id: tenant, name: "Acme Bistro", planID: "pro", status: "active",
                                    packageName: "gastronomy", consentPolicy: consentPolicy, createdAtUnixNanos: now,
                                    updatedAtUnixNanos: now))
        try await writer.put(Plan(id: "pro", rpm: 100_000, tpm: 100_000_000, maxTokensPerRequest: 4096), tenant: tenant)
        try await writer.put(manifest, tenant: tenant)
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                         poolSize: 1), logger: logger)
        let knowledge = KnowledgeStore(pool: pool)
        try await knowledge.migrate(logger: logger)
        try await knowledge.upsert([
            KnowledgeEntry(id: "hours", tenantID: tenant, title: "Opening hours",
                           content: "We are open Tuesday to Sunday from 12:00 to 22:00. Closed on Mondays.",
                           language: "en", tags: ["hours", "open"]),
            KnowledgeEntry(id: "hours-de", tenantID: tenant, title: "Öffnungszeiten",
                           content: "Wir haben Dienstag bis Sonntag von 12 bis 22 Uhr geöffnet.", language: "de",
                           tags: ["öffnungszeiten", "geöffnet"]),
            KnowledgeEntry(id: "address", tenantID: tenant, title: "Address",
                           content: "Acme Bistro is at Hauptstraße 12, Berlin.", language: "en", tags: ["address", "where"]),
            KnowledgeEntry(id: "reservation", tenantID: tenant, title: "Reservations",
                           content: "Reserve a table for up to 8 guests by phone at +49 30 1234567.", language: "en",
                           tags: ["reservation", "table", "book"]),
        ], tenant: tenant)
        await pool.close()
    }

    /// Adds another tenant with the same manifest and returns its API key.
    func addTenant(_ id: String, plan: Plan = Plan(id: "pro", rpm: 100_000, tpm: 100_000_000,
                                                   maxTokensPerRequest: 4096)) async throws -> String {
        let now = EventClock.nowUnixNanos()
        try await writer.put(Tenant(id: id, name: id, planID: "pro", status: "active", packageName: "gastronomy",
                                    consentPolicy: "none", createdAtUnixNanos: now, updatedAtUnixNanos: now))
        try await writer.put(plan, tenant: id)
        var manifest = Self.manifest
        manifest.tenantID = id
        try await writer.put(manifest, tenant: id)
        let (key, record) = APIKeyGenerator.generate(env: .test, pepper: nil, tenantID: id, scopes: ["chat"],
                                                     nowUnixNanos: now)
        try await writer.put(record)
        return key
    }

    func waitUntilReady() async throws {
        // Ready once a request makes it through every hop.
        for _ in 0..<200 {
            if let response = try? await chat(["model": "host", "messages": [["role": "user", "content": "open hours?"]]]),
               response.status == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestProcessError("the chat path did not become ready")
    }

    func stop() async {
        for group in groups { await group.triggerGracefulShutdown() }
        _ = try? await runner.value
        try? await http.shutdown()
        admin.close()
        await nats.stop()
        await postgres.stop()
    }

    static func with<T>(orchestrator: OrchestratorConfiguration = OrchestratorConfiguration(endpoints: []),
                        gateway: GatewayConfiguration = GatewayConfiguration(requestTimeout: .seconds(10)),
                        consentPolicy: String = "none", inProcessOrchestrator: Bool = true,
                        inProcessRouter: Bool = true, billing: Bool = false, analytics: Bool = false,
                        eval: Bool = false, evalJudge: JudgeConfiguration? = nil, gatewayReplicas: Int = 1,
                        natsAuth: Bool = false, _ body: (Stack) async throws -> T) async throws -> T {
        let stack = try await start(orchestrator: orchestrator, gateway: gateway, consentPolicy: consentPolicy,
                                    inProcessOrchestrator: inProcessOrchestrator, inProcessRouter: inProcessRouter,
                                    billing: billing, analytics: analytics, eval: eval, evalJudge: evalJudge, gatewayReplicas: gatewayReplicas,
                                    natsAuth: natsAuth)
        do {
            let result = try await body(stack)
            await stack.stop()
            return result
        } catch {
            await stack.stop()
            throw error
        }
    }

    /// The path of a service binary built next to the test bundle.
    static func binary(_ name: String) throws -> String { try builtProduct(name) }

    // MARK: HTTP

    struct HTTPResult {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
        var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
        var content: String? {
            ((json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        }
    }

    func send(_ method: HTTPMethod = .POST, path: String = "/chat/completions", body: [UInt8]? = nil,
              headers: [String: String]? = nil, replica: Int = 0) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPorts[replica])/v1" + path)
        request.method = method
        for (name, value) in headers ?? ["authorization": "Bearer \(apiKey)", "content-type": "application/json"] {
            request.headers.add(name: name, value: value)
        }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        var flat: [String: String] = [:]
        for header in response.headers { flat[header.name.lowercased()] = header.value }
        return HTTPResult(status: Int(response.status.code), headers: flat, body: Array(collected.readableBytesView))
    }

    func chat(_ json: [String: Any], headers: [String: String]? = nil, replica: Int = 0) async throws -> HTTPResult {
        try await send(body: Array(try JSONSerialization.data(withJSONObject: json)), headers: headers, replica: replica)
    }

    func withKey(_ key: String) -> [String: String] {
        ["authorization": "Bearer \(key)", "content-type": "application/json"]
    }
}

/// Parses `data: …` lines of a server-sent event stream.
func sseEvents(_ text: String) -> [String] {
    text.components(separatedBy: "\n\n").compactMap { block in
        block.split(separator: "\n").first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }
}
