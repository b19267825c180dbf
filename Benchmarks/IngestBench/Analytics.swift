// `ingest-bench analytics <binary>` (make bench-analytics): the analytics service's sustained fold rate.
// Pre-fills the event log with ANALYTICS_BENCH_CHATS chats (default 100,000) over 200 tenants, each as the chat
// path writes it — requested, routed, completed or failed, the agent's decision, and now and then a handoff or a
// consent check — then starts the analytics binary and measures, from its first folded event to the last, how
// many events per second it folds into the rollups; CPU of analytics and PostgreSQL alongside.
import Contracts
import Foundation
import Messaging
import Schemas
import Storage
import TestKit

func benchAnalytics(binary: String, nats: NATSServer, postgres: PostgresServer, connection: NATSConnection,
                    jetStream: JetStream) async throws {
    let environment = ProcessInfo.processInfo.environment
    let chats = Int(environment["ANALYTICS_BENCH_CHATS"] ?? "") ?? 100_000
    let tenants = (0..<200).map { "bench-tenant-\($0)" }
    print("Switchyard analytics ingest — \(ProcessInfo.processInfo.activeProcessorCount) cores, \(chats) chats over \(tenants.count) tenants")
    try await jetStream.ensureStream(Streams.events.spec)
    try await jetStream.ensureStream(Streams.deadLetter.spec)
    let now = EventClock.nowUnixNanos() - Int64(chats) * 1_000_000  // a chat per millisecond, ending now
    var folded = 0
    var total = 0
    for index in 0..<chats {
        folded += 2 + (index % 10 == 0 ? 1 : 0) + (index % 7 == 0 ? 1 : 0)
        total += 4 + (index % 10 == 0 ? 1 : 0) + (index % 7 == 0 ? 1 : 0)
    }
    try await prefill(jetStream, count: chats, what: "the event log (\(total) events, \(folded) of kinds analytics counts)") { index in
        let tenant = tenants[index % tenants.count]
        let at = now + Int64(index) * 1_000_000
        func meta(_ kind: String, _ offset: Int64) -> EventMeta {
            EventMeta(eventID: String(format: "%030x%02x", index, kind.utf8.count), tenantID: tenant,
                      occurredAtUnixNanos: at + offset, producer: "bench", schemaVersion: 1,
                      requestID: "req-\(index)", traceID: "")
        }
        let agent = ["host", "concierge", "support"][index % 3]
        let canary = index % 4 == 0
        let channel = index % 5 == 0 ? "whatsapp" : "web"
        let conversation = "conv-\(index / 3)"
        let hops = [HopStamp(hop: "gateway.in", unixNanos: at), HopStamp(hop: "router", unixNanos: at + 300_000 + Int64(index % 50) * 10_000),
                    HopStamp(hop: "orchestrator", unixNanos: at + 700_000 + Int64(index % 70) * 10_000)]
        let done = hops + [HopStamp(hop: "orchestrator.done", unixNanos: at + 2_000_000 + Int64(index % 900) * 20_000)]
        let request = ChatRequested(meta: meta("requested", 0), messages: [
            ChatMessage(role: "system", content: "You are the host of a restaurant."),
            ChatMessage(role: "user", content: "When are you open on Sunday? Table for \(index % 8 + 1), please."),
        ], model: agent, conversationID: conversation, channel: channel, hops: [hops[0]])
        var events: [(EventKind, any ProtoMessage, String)] = [(.chatRequested, request, "requested")]
        events.append((.chatRouted, ChatRouted(meta: meta("routed", 300_000), request: request, agent: agent,
                                               agentVersion: canary ? "v2" : "v1", provider: "openai", model: "gpt-4o-mini",
                                               rolloutCohort: canary ? "canary" : "stable", reason: "default-agent",
                                               hops: Array(hops.prefix(2)), packageName: "gastronomy"), "routed"))
        if index % 20 == 19 {
            events.append((.chatFailed, ChatFailed(meta: meta("failed", 1_000_000), conversationID: conversation, agent: agent,
                                                   errorCode: "upstream_timeout", message: "timed out", httpStatus: 504,
                                                   retriable: true, hops: done, agentVersion: canary ? "v2" : "v1",
                                                   rolloutCohort: canary ? "canary" : "stable", channel: channel,
                                                   packageName: "gastronomy"), "failed"))
        } else {
            events.append((.chatCompleted, ChatCompleted(
                meta: meta("completed", 2_000_000), conversationID: conversation, agent: agent,
                agentVersion: canary ? "v2" : "v1", model: "gpt-4o-mini", provider: "openai",
                content: "We are open Tuesday to Sunday from 12:00 to 22:00.", finishReason: "stop",
                usage: Usage(promptTokens: UInt32(40 + index % 400), completionTokens: UInt32(10 + index % 200),
                             totalTokens: UInt32(50 + index % 600)),
                hops: done, handedOff: index % 10 == 0, rolloutCohort: canary ? "canary" : "stable", channel: channel,
                packageName: "gastronomy"), "completed"))
        }
        events.append((.agentDecision, AgentDecision(meta: meta("decision", 2_000_000), agent: agent,
                                                     agentVersion: canary ? "v2" : "v1", decision: "answer",
                                                     confidence: 0.9, reason: "answer", durationNanos: 1_000_000,
                                                     conversationID: conversation), "decision"))
        if index % 10 == 0 {
            events.append((.handoffRequested, HandoffRequested(
                meta: meta("handoff", 2_000_000), conversationID: conversation, agent: agent, reason: "low_confidence",
                confidence: 0.1, agentVersion: canary ? "v2" : "v1", rolloutCohort: canary ? "canary" : "stable",
                channel: channel, packageName: "gastronomy"), "handoff"))
        }
        if index % 7 == 0 {
            events.append((.consentChecked, ConsentChecked(
                meta: meta("consent", 1_000_000), conversationID: conversation, required: true, granted: index % 2 == 0,
                policy: "required", outcome: ["asked", "granted", "denied"][index % 3], agent: agent,
                agentVersion: canary ? "v2" : "v1", rolloutCohort: canary ? "canary" : "stable", channel: channel,
                packageName: "gastronomy"), "consent"))
        }
        return events.map { kind, event, name in
            OutboundMessage(subject: Subjects.event(kind, tenant: tenant), payload: event.protobufBytes(),
                            headers: [Headers.eventType: kind.protoName], messageID: "\(tenant):req-\(index):\(name)")
        }
    }
    let result = try await measureIngest(
        binary: binary, name: "analytics",
        environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                      "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0",
                      "SWITCHYARD_INSTANCE_ID": "analytics-bench", "SWITCHYARD_DB_POOL_SIZE": "4",
                      "SWITCHYARD_LOG_LEVEL": "warning"],
        series: ["analytics_events_total{outcome=\"folded\"}", "analytics_events_total{outcome=\"duplicate\"}"],
        total: folded, unit: "events folded")
    let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                     poolSize: 1), logger: benchLogger)
    let rows = try await pool.query("SELECT sum(requests)::bigint, sum(completions + failures)::bigint FROM analytics_minutes")
    let requests = Int(try rows.first?.decode(Int64.self, at: 0) ?? 0)
    let outcomes = Int(try rows.first?.decode(Int64.self, at: 1) ?? 0)
    // Row work per table (inserts, updates, deletes): the part of PostgreSQL's CPU that grows with the events.
    for row in try await pool.query("""
        SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables
        WHERE relname LIKE 'analytics%' AND n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname
        """) {
        print("  \(try row.decode(String.self, at: 0)): \(try row.decode(Int64.self, at: 1)) inserted, "
              + "\(try row.decode(Int64.self, at: 2)) updated (\(try row.decode(Int64.self, at: 4)) in place), "
              + "\(try row.decode(Int64.self, at: 3)) deleted")
    }
    await pool.close()
    guard requests == chats, outcomes == chats else {
        print("the rollups count \(requests) requests and \(outcomes) outcomes, expected \(chats) of each")
        exit(1)
    }
    let share = Double(total) / Double(folded)
    print(String(format: "analytics fold: %.0f events/s folded into rollups (%d events)", result.rate, result.settled))
    print(String(format: "  the log it covers: %.0f events/s (%d events in all; the %d of kinds analytics doesn't count are never delivered to it)",
                 result.rate * share, total, total - folded))
    print(String(format: "CPU per 1,000 folded events: analytics %.1f ms, PostgreSQL %.1f ms, nats-server %.1f ms (including startup work)",
                 result.serviceCPU * 1e6 / Double(result.settled), result.postgresCPU * 1e6 / Double(result.settled),
                 result.natsCPU * 1e6 / Double(result.settled)))
}
