import AsyncHTTPClient
import Foundation
import GatewayCore
import Logging
import Messaging
import NIOCore
import NIOHTTP1
import OrchestratorCore
import RouterCore
import Schemas
import Security
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization
import Telemetry
import Tenancy
import TenantCore
import TestKit

/// Collects every log line (message + metadata) of the services it is given to, for the "no plaintext key in
/// logs" check.
final class LogCapture: Sendable {
    let lines = Mutex<[String]>([])

    var logger: Logger {
        var logger = Logger(label: "capture") { label in CaptureHandler(capture: self, label: label) }
        logger.logLevel = .trace
        return logger
    }

    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    struct CaptureHandler: LogHandler {
        let capture: LogCapture
        let label: String
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            let all = metadata.merging(extra ?? [:]) { $1 }
            capture.lines.withLock { $0.append("\(level) \(message) \(all)") }
        }
    }
}

/// The port a server reports once it is listening.
final class PortBox: Sendable {
    private let port: Mutex<Int>
    init(_ value: Int = 0) { port = Mutex(value) }
    var value: Int {
        get { port.withLock { $0 } }
        set { port.withLock { $0 = newValue } }
    }
    func set(_ value: Int) { port.withLock { $0 = value } }
}

/// A service group running in this process, stoppable on its own.
final class RunningService: Sendable {
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int

    init(group: ServiceGroup, port: PortBox = PortBox(1)) async throws {
        self.group = group
        self.task = Task { try await group.run() }
        for _ in 0..<500 where port.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
        self.port = port.value
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Real nats-server and PostgreSQL, tenant-service replicas, gateway replicas, a router and an orchestrator
/// (local knowledge-base agent), an admin NATS connection and an HTTP client.
final class TenantStack: Sendable {
    static let token = "test-operator-token-0123456789abcdef"
    /// The tenant service signs the KV mirror; every reader verifies (as `make run` configures it).
    static let signingSeed = SecureRandom.bytes(count: 32)
    static let signingKey = Ed25519.SigningKey(seed: signingSeed)!
    static let quietLogger = Logger(label: "tenant-tests") { _ in SwiftLogNoOpLogHandler() }

    let nats: NATSServer
    let postgres: PostgresServer
    let connection: NATSConnection
    let jetStream: JetStream
    let admin: AdminClient
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let logger: Logger
    private let tenantServices = Mutex<[String: RunningService]>([:])
    private let others = Mutex<[RunningService]>([])
    private let ports = Mutex<[Int]>([])
    var gatewayPorts: [Int] { ports.withLock { $0 } }

    private init(nats: NATSServer, postgres: PostgresServer, connection: NATSConnection, jetStream: JetStream,
                 logger: Logger) {
        self.nats = nats
        self.postgres = postgres
        self.connection = connection
        self.jetStream = jetStream
        self.admin = AdminClient(connection: connection, token: Self.token, actor: "alice", timeout: .seconds(15))
        self.logger = logger
    }

    func environment(instance: String) -> [String: String] {
        ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
         "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "0",
         "SWITCHYARD_INSTANCE_ID": instance, "SWITCHYARD_DB_POOL_SIZE": "3", "SWITCHYARD_DRAIN_SECONDS": "5",
         "SWITCHYARD_MIRROR_PUBLIC_KEY": Hex.encode(Self.signingKey.publicKey)]
    }

    static func start(tenantReplicas: Int = 1, gateways: Int = 1, chatPath: Bool = true,
                      logger: Logger = quietLogger) async throws -> TenantStack {
        let nats = try await NATSServer.start()
        let postgres = try await PostgresServer.start()
        let connection = try await NATSConnection.connect(
            NATSConfiguration(servers: [nats.url], name: "test-admin", connectAttempts: 3), logger: quietLogger)
        let jetStream = try JetStream(connection: connection)
        let stack = TenantStack(nats: nats, postgres: postgres, connection: connection, jetStream: jetStream,
                                logger: logger)
        for index in 0..<tenantReplicas { try await stack.startTenantService(name: "tenant-\(index + 1)") }
        guard chatPath else { return stack }
        var ports: [Int] = []
        var services: [RunningService] = []
        let router = try await buildRouter(
            configuration: try ServiceConfiguration(environment: stack.environment(instance: "router-1"), service: "router"),
            logger: logger, signals: false)
        services.append(try await RunningService(group: router))
        let orchestrator = try await buildOrchestrator(
            configuration: try ServiceConfiguration(environment: stack.environment(instance: "orch-1"),
                                                    service: "orchestrator"),
            // A knowledge index cached for an hour: only the invalidation event can make an edit visible.
            orchestrator: OrchestratorConfiguration(endpoints: [], knowledgeCacheTTL: .seconds(3600)), logger: logger,
            signals: false)
        services.append(try await RunningService(group: orchestrator))
        for index in 0..<gateways {
            let port = PortBox()
            let gateway = try await buildGateway(
                configuration: try ServiceConfiguration(environment: stack.environment(instance: "gw-\(index + 1)"),
                                                        service: "api-gateway"),
                gateway: GatewayConfiguration(requestTimeout: .seconds(10)), logger: logger, signals: false,
                onServerRunning: { bound in port.set(bound) })
            let running = try await RunningService(group: gateway, port: port)
            services.append(running)
            ports.append(running.port)
        }
        stack.ports.withLock { $0 = ports }
        stack.others.withLock { $0 = services }
        return stack
    }

    @discardableResult
    func startTenantService(name: String) async throws -> RunningService {
        let port = PortBox()
        let group = try await buildTenantService(
            configuration: try ServiceConfiguration(environment: environment(instance: name), service: "tenant"),
            tenant: TenantConfiguration(adminTokens: [("operator", Self.token)], mirrorSigningKey: Self.signingKey),
            logger: logger, signals: false,
            onServerRunning: { bound in port.set(bound) })
        let running = try await RunningService(group: group, port: port)
        tenantServices.withLock { $0[name] = running }
        return running
    }

    func stopTenantService(name: String) async {
        let running = tenantServices.withLock { $0.removeValue(forKey: name) }
        await running?.stop()
    }

    func tenantHTTPPort(_ name: String = "tenant-1") -> Int { tenantServices.withLock { $0[name]?.port ?? 0 } }

    func stop() async {
        for service in others.withLock({ $0 }) { await service.stop() }
        for service in tenantServices.withLock({ Array($0.values) }) { await service.stop() }
        try? await http.shutdown()
        connection.close()
        await nats.stop()
        await postgres.stop()
    }

    static func with<T>(tenantReplicas: Int = 1, gateways: Int = 1, chatPath: Bool = true,
                        logger: Logger = quietLogger, _ body: (TenantStack) async throws -> T) async throws -> T {
        let stack = try await start(tenantReplicas: tenantReplicas, gateways: gateways, chatPath: chatPath,
                                    logger: logger)
        do {
            let result = try await body(stack)
            await stack.stop()
            return result
        } catch {
            await stack.stop()
            throw error
        }
    }

    // MARK: seeding through admin commands

    static func manifest(agents: [String] = ["host", "supervisor"]) -> PackageManifest {
        PackageManifest(
            packageName: "gastronomy",
            agents: agents.enumerated().map { index, name in
                AgentManifest(agent: name, provider: "local", model: "kb-retrieval",
                              systemPrompt: "You are \(name).", intents: [],
                              fallbackAgent: index == 0 && agents.count > 1 ? agents[1] : "", enabled: true,
                              version: "v1", handoffThreshold: 0.05)
            },
            defaultAgent: agents[0])
    }

    /// Creates a tenant with a manifest and a knowledge entry; returns a fresh key.
    @discardableResult
    func createTenant(_ id: String, agents: [String] = ["host", "supervisor"]) async throws -> (String, ApiKeyRecord) {
        _ = try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: id, name: "Tenant \(id)")),
                                 as: CreateTenantResponse.self)
        _ = try await admin.call(.setManifest, SetManifestRequest(tenantID: id, manifest: Self.manifest(agents: agents)),
                                 as: SetManifestResponse.self)
        _ = try await admin.call(.knowledgeUpsert, KnowledgeUpsertRequest(tenantID: id, entry: KnowledgeEntry(
            id: "hours", title: "Opening hours", content: "We are open daily from 12:00 to 22:00.",
            language: "en", tags: ["hours", "open"])), as: KnowledgeUpsertResponse.self)
        let issued = try await admin.call(.issueKey, IssueKeyRequest(tenantID: id, scopes: ["chat"], env: "test"),
                                          as: IssueKeyResponse.self)
        return (issued.plaintextKey, issued.key ?? ApiKeyRecord())
    }

    // MARK: HTTP

    struct HTTPResult {
        var status: Int
        var body: [UInt8]
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func send(url: String, method: HTTPMethod = .POST, body: [UInt8]? = nil, headers: [String: String]) async throws
        -> HTTPResult
    {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return HTTPResult(status: Int(response.status.code), body: Array(collected.readableBytesView))
    }

    /// `GET /v1/models` on gateway `index` with `key` (cheap: authentication + KV mirror only).
    func models(key: String, gateway index: Int = 0) async throws -> HTTPResult {
        try await send(url: "http://127.0.0.1:\(gatewayPorts[index])/v1/models", method: .GET,
                       headers: ["authorization": "Bearer \(key)"])
    }

    func chat(key: String, model: String, content: String = "When are you open?", gateway index: Int = 0)
        async throws -> HTTPResult
    {
        let body = try JSONSerialization.data(withJSONObject: [
            "model": model, "messages": [["role": "user", "content": content]],
        ] as [String: Any])
        return try await send(url: "http://127.0.0.1:\(gatewayPorts[index])/v1/chat/completions", body: Array(body),
                              headers: ["authorization": "Bearer \(key)", "content-type": "application/json"])
    }

    /// Polls `GET /v1/models` every 20 ms until it answers `status`; how long that took, or nil after `deadline`.
    /// (A plain loop with explicit arguments: closures capturing test values proved fragile with this
    /// compiler — see the session note.)
    func waitForModels(key: String, gateway: Int = 0, status: Int, within deadline: Duration) async throws -> Duration? {
        let start = ContinuousClock.now
        while true {
            if try await models(key: key, gateway: gateway).status == status { return ContinuousClock.now - start }
            if ContinuousClock.now - start > deadline { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// How long a test waits for a change to reach the gateways, router or orchestrator. The product target is
    /// well under a second (a KV watch applies a change in milliseconds); tests wait for the fact with a
    /// generous bound rather than assert the target, which a busy CI machine can miss (timing belongs in
    /// benchmarks).
    static let propagation: Duration = .seconds(10)

    /// Waits until every gateway's KV mirror has applied everything written to the tenancy buckets before this
    /// call: creates a fresh tenant (a later revision in both buckets; a watch applies a bucket's entries in
    /// revision order) and waits until its key works on every gateway. Tests use it instead of sleeping before
    /// asserting that an earlier write had *no* effect.
    func waitForMirrorBarrier() async throws {
        let (key, _) = try await createTenant("barrier-\(UInt32.random(in: 0...UInt32.max))")
        for gateway in 0..<gatewayPorts.count {
            guard try await waitForModels(key: key, gateway: gateway, status: 200, within: .seconds(30)) != nil else {
                throw BarrierTimeout()
            }
        }
    }

    struct BarrierTimeout: Error {}

    /// Like `waitForModels`, with a chat completion.
    func waitForChat(key: String, model: String, status: Int, within deadline: Duration) async throws -> Duration? {
        let start = ContinuousClock.now
        while true {
            if try await chat(key: key, model: model).status == status { return ContinuousClock.now - start }
            if ContinuousClock.now - start > deadline { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// `POST /admin/v1/tenant/<command>` on the first tenant replica.
    func adminHTTP(_ command: String, json: String, token: String? = TenantStack.token) async throws -> HTTPResult {
        var headers = ["content-type": "application/json"]
        if let token { headers["authorization"] = "Bearer \(token)" }
        return try await send(url: "http://127.0.0.1:\(tenantHTTPPort())/admin/v1/tenant/\(command)",
                              body: Array(json.utf8), headers: headers)
    }

    /// A mirror client signing like the tenant service (for reading, rebuilding and planting entries).
    func mirror() async throws -> TenantMirror {
        try await TenantMirror(jetStream: jetStream, signer: Self.signingKey, logger: Self.quietLogger)
    }

    /// Every row of every table in the public schema, as text.
    func databaseDump() async throws -> String {
        try await postgres.psql("""
            SELECT string_agg(query_to_xml('SELECT * FROM ' || quote_ident(table_name), true, false, '')::text, E'\\n')
            FROM information_schema.tables WHERE table_schema = 'public'
            """)
    }

    func count(_ table: String) async throws -> Int {
        Int(try await postgres.psql("SELECT count(*) FROM \(table)").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes; returns how long it took, or nil.
func eventually(within deadline: Duration, _ condition: () async throws -> Bool) async rethrows -> Duration? {
    let start = ContinuousClock.now
    while true {
        if try await condition() { return ContinuousClock.now - start }
        if ContinuousClock.now - start > deadline { return nil }
        try? await Task.sleep(for: .milliseconds(20))
    }
}

enum PostgresPoolFactory {
    static func make(_ postgres: PostgresServer) throws -> PostgresPool {
        try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString, poolSize: 2),
                         logger: TenantStack.quietLogger)
    }
}
