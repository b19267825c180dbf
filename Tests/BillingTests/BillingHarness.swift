import BillingCore
import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization
import Telemetry
import Tenancy
import TestKit

/// nats-server and PostgreSQL on free ports, an admin connection, tenancy records for `tenants`, and a pool
/// on the billing database. Billing itself runs in-process (``runBilling``) or as the real binary.
struct BillingHarness: Sendable {
    static let logger = Logger(label: "billing-tests") { _ in SwiftLogNoOpLogHandler() }

    let nats: NATSServer
    let postgres: PostgresServer
    let connection: NATSConnection
    let jetStream: JetStream
    let pool: PostgresPool
    let tenants: [String]

    static func with<T>(tenants: [String] = ["acme", "globex"], timeZones: [String: String] = [:],
                        _ body: (BillingHarness) async throws -> T) async throws -> T
    {
        try await NATSServer.withServer { nats in
            try await PostgresServer.withServer { postgres in
                let connection = try await NATSConnection.connect(
                    NATSConfiguration(servers: [nats.url], name: "billing-test", connectAttempts: 3), logger: logger)
                defer { connection.close() }
                let jetStream = try JetStream(connection: connection)
                try await jetStream.ensureStream(Streams.usage.spec)
                try await jetStream.ensureStream(Streams.deadLetter.spec)
                let writer = try await TenancyWriter(jetStream: jetStream)
                let now = EventClock.nowUnixNanos()
                for tenant in tenants {
                    try await writer.put(Tenant(id: tenant, name: tenant, planID: "pro", status: "active",
                                                packageName: "gastronomy", consentPolicy: "none",
                                                createdAtUnixNanos: now, updatedAtUnixNanos: now,
                                                timeZone: timeZones[tenant] ?? ""))
                }
                let pool = try PostgresPool(configuration: PostgresConfiguration(
                    connectionString: postgres.connectionString, poolSize: 2), logger: logger)
                defer { Task { await pool.close() } }
                return try await body(BillingHarness(nats: nats, postgres: postgres, connection: connection,
                                                     jetStream: jetStream, pool: pool, tenants: tenants))
            }
        }
    }

    func environment(instance: String) -> [String: String] {
        ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
         "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "0",
         "SWITCHYARD_INSTANCE_ID": instance, "SWITCHYARD_DB_POOL_SIZE": "4", "SWITCHYARD_DRAIN_SECONDS": "5",
         "SWITCHYARD_LOG_LEVEL": "error"]
    }

    /// Runs billing in-process while `body` runs, then shuts it down gracefully.
    static let adminToken = "billing-test-admin-token-0123456789"

    func runBilling<T: Sendable>(metrics: TelemetryMetrics = TelemetryMetrics(),
                                 _ body: @Sendable () async throws -> T) async throws -> T {
        let group = try await buildBilling(
            configuration: try ServiceConfiguration(environment: environment(instance: "billing-1"), service: "billing"),
            billing: BillingConfiguration(adminTokens: [(name: "operator", token: Self.adminToken)]),
            logger: Self.logger, metrics: metrics, signals: false)
        return try await withThrowingTaskGroup(of: T?.self) { tasks in
            tasks.addTask { try await group.run(); return nil }
            // Started once the admin commands are served (the last thing the builder wires up).
            let probe = AdminClient(connection: connection, token: Self.adminToken, actor: "test", timeout: .seconds(1))
            for _ in 0..<200 {
                do {
                    _ = try await probe.call(.priceList, ListPricesRequest(), as: ListPricesResponse.self)
                    break
                } catch let failure as AdminFailure where failure.code == .unavailable {
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
            let result = try await body()
            await group.triggerGracefulShutdown()
            while let value = try await tasks.next() { _ = value }
            return result
        }
    }

    /// A usage event as the orchestrator writes it.
    static func usage(tenant: String, eventID: String = UUID().uuidString.lowercased(), prompt: UInt32 = 100,
                      completion: UInt32 = 50, provider: String = "openai", model: String = "gpt-test",
                      agent: String = "host", conversation: String = "", at unixNanos: Int64 = EventClock.nowUnixNanos())
        -> UsageRecorded
    {
        var event = UsageRecorded()
        event.meta = EventMeta(eventID: eventID, tenantID: tenant, occurredAtUnixNanos: unixNanos,
                               producer: "orchestrator", schemaVersion: 1, requestID: "req-\(eventID)", traceID: "")
        event.conversationID = conversation
        event.agent = agent
        event.provider = provider
        event.model = model
        event.promptTokens = prompt
        event.completionTokens = completion
        return event
    }

    /// Publishes usage events the way the orchestrator does (`Nats-Msg-Id` from tenant and event id), or with
    /// `idSuffix` to get past the de-duplication window like a republish long after the fact.
    func publish(_ events: [UsageRecorded], idSuffix: String = "") async throws {
        _ = try await jetStream.publishPipelined(events.map { event in
            OutboundMessage(subject: Subjects.usage(tenant: event.meta!.tenantID), payload: event.protobufBytes(),
                            headers: [Headers.eventType: UsageRecorded.protoName],
                            messageID: "usage:\(event.meta!.tenantID):\(event.meta!.eventID)\(idSuffix)")
        })
    }

    func scalar(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int64 {
        let rows = try await pool.query(sql, parameters)
        guard let row = rows.first else { return 0 }
        return row.isNull(0) ? 0 : try row.decode(Int64.self, at: 0)
    }

    func ledgerRows() async throws -> Int64 {
        (try? await scalar("SELECT count(*) FROM billing_ledger")) ?? 0
    }

    /// Waits until `condition` holds or `limit` passes (the caller's expectation then checks it).
    static func eventually(_ limit: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows {
        let deadline = ContinuousClock.now + limit
        while try await !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(25)) }
    }
}

/// The value of `name{outcome="…"}` in a Prometheus text rendering (0 when absent).
func counterValue(_ text: String, _ name: String, outcome: String) -> Double {
    counterValue(text, name, label: "outcome", outcome)
}

/// The value of `name{label="value"}` in a Prometheus text rendering (0 when absent).
func counterValue(_ text: String, _ name: String, label: String, _ value: String) -> Double {
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains("\(label)=\"\(value)\"") {
        if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
    }
    return 0
}
