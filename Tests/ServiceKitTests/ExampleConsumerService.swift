// A complete consumer service on the scaffold (docs/adr/0010 quotes it): it reads one stream (completed chats
// from the event log), writes PostgreSQL idempotently, and serves an HTTP query API. The test below runs it
// against a real nats-server and PostgreSQL.
import Contracts
import Hummingbird
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Storage
import Telemetry

enum CompletionCounter {
    static let service = ServiceName("completion-counter")
    /// Its durable on the event log: completed chats only.
    static let consumer = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "completion-counter", filterSubject: Subjects.eventAll(.chatCompleted),
                     ackWait: .seconds(30), maxDeliver: 5),
        owner: service)
    static let migrations = [
        Migration(version: 1, name: "completions", sql: """
            CREATE TABLE counted_events (tenant_id text NOT NULL, event_id text NOT NULL,
                                         PRIMARY KEY (tenant_id, event_id));
            CREATE TABLE completions (tenant_id text PRIMARY KEY, count bigint NOT NULL);
            """),
    ]

    /// One event = one transaction: remember the event id, count it only if it was new, then (after COMMIT)
    /// the scaffold acks. A redelivery finds the id and changes nothing.
    static func record(_ event: ChatCompleted, _ context: EventContext, pool: PostgresPool) async throws {
        try await pool.transaction { connection in
            let inserted = try await connection.execute(
                "INSERT INTO counted_events VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [.text(context.tenant), .text(context.meta.eventID)])
            guard inserted == 1 else { return }
            _ = try await connection.execute("""
                INSERT INTO completions VALUES ($1, 1)
                ON CONFLICT (tenant_id) DO UPDATE SET count = completions.count + 1
                """, [.text(context.tenant)])
        }
    }

    /// `GET /v1/completions/{tenant}` → `{"tenant":"…","completions":N}`; an invalid tenant id is a 400.
    static func routes(pool: PostgresPool) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/v1/completions/{tenant}") { _, context -> Response in
            guard let tenant = context.parameters.get("tenant"), TenantID.isValid(tenant) else {
                return Response(status: .badRequest, body: .init(byteBuffer: .init(string: #"{"error":"invalid tenant"}"#)))
            }
            let rows = try await pool.query("SELECT count FROM completions WHERE tenant_id = $1", [.text(tenant)])
            let count = try rows.first.map { try $0.decode(Int64.self, column: "count") } ?? 0
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: .init(string: #"{"completions":\#(count),"tenant":"\#(tenant)"}"#)))
        }
        return router
    }
}

/// The whole builder: connect, PostgreSQL with migrations, one typed consumer, the HTTP API.
func buildCompletionCounter(configuration: ServiceConfiguration, logger: Logger, signals: Bool = true,
                            onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger)
    let pool = try await builder.postgres { pool, logger in
        try await migrate(pool: pool, service: CompletionCounter.service.rawValue,
                          migrations: CompletionCounter.migrations, logger: logger)
    }
    try await builder.streams(Streams.deadLetter)
    try await builder.consume(CompletionCounter.consumer, ChatCompleted.self, keepAlive: false) { event, context in
        try await CompletionCounter.record(event, context, pool: pool)
    }
    builder.http(CompletionCounter.routes(pool: pool), onServerRunning: onServerRunning)
    return builder.serviceGroup(signals: signals)
}
