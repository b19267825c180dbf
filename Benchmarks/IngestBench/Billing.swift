// `ingest-bench billing <binary>` (make bench-billing): the billing service's sustained ledger ingest rate.
// Creates BILLING_BENCH_TENANTS tenants (default 1,000) in the tenancy mirror, pre-fills the usage log with
// BILLING_BENCH_EVENTS usage events (default 200,000), then starts the billing binary and measures, from its first
// ledger line to the last, how many events per second reach the ledger; CPU of billing and PostgreSQL alongside.
import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import Storage
import Tenancy
import TestKit

func benchBilling(binary: String, nats: NATSServer, postgres: PostgresServer, connection: NATSConnection,
                  jetStream: JetStream) async throws {
    let environment = ProcessInfo.processInfo.environment
    let tenantCount = Int(environment["BILLING_BENCH_TENANTS"] ?? "") ?? 1_000
    let eventCount = Int(environment["BILLING_BENCH_EVENTS"] ?? "") ?? 200_000
    print("Switchyard billing ingest — \(ProcessInfo.processInfo.activeProcessorCount) cores, \(eventCount) usage events over \(tenantCount) tenants")
    try await jetStream.ensureStream(Streams.usage.spec)
    try await jetStream.ensureStream(Streams.deadLetter.spec)
    let writer = try await TenancyWriter(jetStream: jetStream)
    let tenants = (0..<tenantCount).map { "bench-tenant-\($0)" }
    let now = EventClock.nowUnixNanos()
    for tenant in tenants {
        try await writer.put(Tenant(id: tenant, name: tenant, planID: "pro", status: "active", packageName: "bench",
                                    consentPolicy: "none", createdAtUnixNanos: now, updatedAtUnixNanos: now))
    }
    try await prefill(jetStream, count: eventCount, what: "the usage log") { index in
        var event = UsageRecorded()
        let tenant = tenants[index % tenantCount]
        let eventID = String(format: "%032x", index)
        event.meta = EventMeta(eventID: eventID, tenantID: tenant, occurredAtUnixNanos: now + Int64(index),
                               producer: "orchestrator", schemaVersion: 1, requestID: "req-\(index)", traceID: "")
        event.conversationID = index % 4 == 0 ? "conv-\(index % 5_000)" : ""
        event.agent = ["host", "concierge", "support"][index % 3]
        event.provider = index % 5 == 0 ? "local" : "openai"
        event.model = index % 5 == 0 ? "kb" : "gpt-4o-mini"
        event.promptTokens = UInt32(50 + index % 900)
        event.completionTokens = UInt32(10 + index % 300)
        return [OutboundMessage(subject: Subjects.usage(tenant: tenant), payload: event.protobufBytes(),
                                headers: [Headers.eventType: UsageRecorded.protoName],
                                messageID: "usage:\(tenant):\(eventID)")]
    }
    // Progress from billing's own counter of recorded events (its /metrics); the ledger is counted once at the end.
    let result = try await measureIngest(
        binary: binary, name: "billing",
        environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                      "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0",
                      "SWITCHYARD_INSTANCE_ID": "billing-bench", "SWITCHYARD_DB_POOL_SIZE": "4",
                      "SWITCHYARD_LOG_LEVEL": "warning"],
        series: ["billing_usage_events_total{outcome=\"recorded\"}"], total: eventCount, unit: "in the ledger")
    let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                     poolSize: 1), logger: benchLogger)
    let rows = try await pool.query("SELECT count(*) FROM billing_ledger")
    let ledgerLines = Int(try rows.first?.decode(Int64.self, at: 0) ?? 0)
    await pool.close()
    guard ledgerLines == eventCount else {
        print("the ledger holds \(ledgerLines) lines, expected \(eventCount)")
        exit(1)
    }
    print(String(format: "ledger ingest: %.0f usage events/s (%d events)", result.rate, result.settled))
    print(String(format: "CPU per 1,000 events: billing %.1f ms, PostgreSQL %.1f ms, nats-server %.1f ms (including startup work)",
                 result.serviceCPU * 1e6 / Double(result.settled), result.postgresCPU * 1e6 / Double(result.settled),
                 result.natsCPU * 1e6 / Double(result.settled)))
}
