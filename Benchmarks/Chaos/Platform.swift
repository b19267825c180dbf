import Contracts
import Foundation
import KnowledgeBase
import Logging
import Messaging
import Schemas
import Storage
import Tenancy
import TestKit

/// One platform for one fault run: its own nats-server and PostgreSQL (TestKit, free ports), a seeded tenant, and
/// the real service binaries — router, orchestrator, api-gateway, billing, analytics — each restartable.
final class Platform: @unchecked Sendable {
    static let tenant = "chaos-bistro"
    static let logger = Logger(label: "chaos") { _ in SwiftLogNoOpLogHandler() }
    static let services = ["router", "orchestrator", "api-gateway", "billing", "analytics"]

    let binDirectory: String
    let nats: NATSServer
    let postgres: PostgresServer
    let connection: NATSConnection
    let jetStream: JetStream
    let apiKey: String
    let gatewayPort: Int
    /// Extra environment for every service (e.g. shorter HTTP timeouts for the slow-client run).
    let extraEnvironment: [String: String]
    /// Service name → its running process and its ops port. Only touched by the run's own task.
    private(set) var processes: [String: TestProcess] = [:]
    private var opsPorts: [String: Int] = [:]

    private init(binDirectory: String, nats: NATSServer, postgres: PostgresServer, connection: NATSConnection,
                 jetStream: JetStream, apiKey: String, gatewayPort: Int, extraEnvironment: [String: String]) {
        self.binDirectory = binDirectory
        self.nats = nats
        self.postgres = postgres
        self.connection = connection
        self.jetStream = jetStream
        self.apiKey = apiKey
        self.gatewayPort = gatewayPort
        self.extraEnvironment = extraEnvironment
    }

    static func start(binDirectory: String, extraEnvironment: [String: String] = [:]) async throws -> Platform {
        let nats = try await NATSServer.start()
        let postgres = try await PostgresServer.start()
        let connection = try await NATSConnection.connect(
            NATSConfiguration(servers: [nats.url], name: "chaos", connectAttempts: 3), logger: logger)
        let jetStream = try JetStream(connection: connection)
        let apiKey = try await seed(jetStream: jetStream, postgres: postgres)
        let platform = Platform(binDirectory: binDirectory, nats: nats, postgres: postgres, connection: connection,
                                jetStream: jetStream, apiKey: apiKey, gatewayPort: try freeTCPPort(),
                                extraEnvironment: extraEnvironment)
        for service in services { try platform.launch(service) }
        return platform
    }

    /// A restaurant tenant on the gastronomy package with the local knowledge-base agent, and an API key.
    static func seed(jetStream: JetStream, postgres: PostgresServer) async throws -> String {
        let writer = try await TenancyWriter(jetStream: jetStream)
        let now = EventClock.nowUnixNanos()
        try await writer.put(Tenant(id: tenant, name: "Chaos Bistro", planID: "pro", status: "active",
                                    packageName: "gastronomy", consentPolicy: "none", createdAtUnixNanos: now,
                                    updatedAtUnixNanos: now))
        try await writer.put(Plan(id: "pro", rpm: 1_000_000, tpm: 1_000_000_000, maxTokensPerRequest: 4096), tenant: tenant)
        try await writer.put(PackageManifest(
            packageName: "gastronomy",
            agents: [AgentManifest(agent: "host", provider: "local", model: "kb", systemPrompt: "You are the host.",
                                   intents: [], fallbackAgent: "", enabled: true, version: "v1", handoffThreshold: 0.2)],
            defaultAgent: "host", tenantID: tenant), tenant: tenant)
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                         poolSize: 1), logger: logger)
        let knowledge = KnowledgeStore(pool: pool)
        try await knowledge.migrate(logger: logger)
        try await knowledge.upsert([
            KnowledgeEntry(id: "hours", tenantID: tenant, title: "Opening hours",
                           content: "We are open Tuesday to Sunday from 12:00 to 22:00. Closed on Mondays.",
                           language: "en", tags: ["hours", "open"]),
            KnowledgeEntry(id: "address", tenantID: tenant, title: "Address",
                           content: "Chaos Bistro is at Hauptstraße 12, Berlin.", language: "en", tags: ["address"]),
        ], tenant: tenant)
        await pool.close()
        let (key, record) = APIKeyGenerator.generate(env: .test, pepper: nil, tenantID: tenant, scopes: ["chat"],
                                                     nowUnixNanos: now)
        try await writer.put(record)
        return key
    }

    func environment(for service: String) throws -> [String: String] {
        if opsPorts[service] == nil { opsPorts[service] = try freeTCPPort() }
        var environment = [
            "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
            "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_OPS_PORT": "\(opsPorts[service]!)",
            "SWITCHYARD_HTTP_PORT": service == "api-gateway" ? "\(gatewayPort)" : "0",
            "SWITCHYARD_INSTANCE_ID": "\(service)-chaos", "SWITCHYARD_DB_POOL_SIZE": "4",
            "SWITCHYARD_DRAIN_SECONDS": "5", "SWITCHYARD_LOG_LEVEL": "warning",
            "SWITCHYARD_ADMIN_TOKENS": "chaos:chaos-admin-token-0123456789abcdef",
        ]
        environment.merge(extraEnvironment) { $1 }
        return environment
    }

    func launch(_ service: String) throws {
        processes[service] = try TestProcess(executable: binDirectory + "/" + service,
                                             environment: try environment(for: service))
    }

    /// SIGKILL, then a new process with the same configuration (ports included).
    func killAndRestart(_ service: String) async throws {
        guard let process = processes[service] else { return }
        process.terminate(signal: SIGKILL)
        _ = await process.waitUntilExit()
        try launch(service)
    }

    func opsPort(_ service: String) -> Int { opsPorts[service] ?? 0 }

    /// Waits until every service answers `/ready` and a chat makes it through every hop.
    func waitUntilReady(client: LoadClient) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        for service in Self.services {
            while !(await httpStatus(port: opsPort(service), path: "/ready") == 200) {
                guard ContinuousClock.now < deadline, processes[service]?.isRunning == true else {
                    throw ChaosError("\(service) not ready: \(processes[service]?.output.suffix(2_000) ?? "")")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        while await client.send(stream: false).status != 200 {
            guard ContinuousClock.now < deadline else { throw ChaosError("no chat answered within 120 s") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Until billing's and analytics' durables have nothing pending and nothing unacknowledged (or `limit`).
    func waitUntilSettled(limit: Duration = .seconds(180)) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        let durables = [Consumers.billingUsage] + Consumers.analytics
        while ContinuousClock.now < deadline {
            var settled = true
            for durable in durables {
                guard let state = try? await jetStream.consumerState(stream: durable.stream.name, durable: durable.durable),
                      state.pending == 0, state.ackPending == 0 else {
                    settled = false
                    break
                }
            }
            if settled { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    func stop() async {
        for process in processes.values { _ = await process.terminateAndWait(grace: .seconds(5)) }
        connection.close()
        await postgres.stop()
        await nats.stop()
    }
}

struct ChaosError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The status of `GET path` on 127.0.0.1:`port` (0 when nothing answers), on a thread of its own.
func httpStatus(port: Int, path: String) async -> Int {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            guard port > 0, let fd = connectedSocket(port: port) else { return continuation.resume(returning: 0) }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
            guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else {
                return continuation.resume(returning: 0)
            }
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = recv(fd, &buffer, buffer.count, 0)
            let line = count > 12 ? String(decoding: buffer[9..<12], as: UTF8.self) : ""
            continuation.resume(returning: Int(line) ?? 0)
        }
    }
}
