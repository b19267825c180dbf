import Contracts
import Foundation
import Messaging
import Schemas
import Storage

/// What the platform recorded, against what the clients saw.
struct Reconciliation {
    /// Answers (200) with no billing line, usage events with no billing line, answers with no completion on the
    /// event log, completions on the log that analytics didn't count.
    var lost = 0
    /// Request ids billed more than once, completed more than once on the log, or counted more than once by
    /// analytics.
    var duplicated = 0
    /// Requests the client saw fail (with a request id) that were billed anyway.
    var billedFailures = 0
    var details: [String] = []
}

/// Every message of `stream` under `filter`, read once through a temporary durable.
func readAll(_ jetStream: JetStream, stream: String, filter: String) async throws -> [JetStreamDelivery] {
    let durable = "chaos-read-\(UUID().uuidString.prefix(8).lowercased())"
    try await jetStream.ensureConsumer(stream: stream, ConsumerSpec(durable: durable, filterSubject: filter,
                                                                    maxAckPending: 1_000_000))
    let consumer = try await PullConsumer.bind(jetStream: jetStream, stream: stream, durable: durable)
    var deliveries: [JetStreamDelivery] = []
    while let message = try await consumer.next(timeout: .seconds(1), batch: 512) {
        deliveries.append(message.delivery)
        try message.ack()
    }
    consumer.stop()
    try? await jetStream.deleteConsumer(stream: stream, durable: durable)
    return deliveries
}

func reconcile(platform: Platform, outcomes: [Outcome]) async throws -> Reconciliation {
    var result = Reconciliation()
    let pool = try PostgresPool(configuration: PostgresConfiguration(
        connectionString: platform.postgres.connectionString, poolSize: 1), logger: Platform.logger)
    defer { Task { await pool.close() } }

    // Billing: request id → ledger lines.
    var billed: [String: Int] = [:]
    for row in try await pool.query("SELECT request_id, count(*) FROM billing_ledger GROUP BY request_id") {
        billed[try row.decode(String.self, at: 0)] = Int(try row.decode(Int64.self, at: 1))
    }
    // The event log: request id → completions; the usage log: request id → usage events.
    var completed: [String: Int] = [:]
    for delivery in try await readAll(platform.jetStream, stream: StreamNames.events,
                                      filter: Subjects.eventAll(.chatCompleted)) {
        if let id = try? ChatCompleted(protobuf: delivery.payload).meta?.requestID { completed[id, default: 0] += 1 }
    }
    var usage: [String: Int] = [:]
    for delivery in try await readAll(platform.jetStream, stream: StreamNames.usage, filter: Subjects.usageAll) {
        if let id = try? UsageRecorded(protobuf: delivery.payload).meta?.requestID { usage[id, default: 0] += 1 }
    }
    let answered = outcomes.filter { $0.status == 200 }.compactMap(\.requestID)
    let unbilledAnswers = answered.filter { billed[$0] == nil }.count
    let unbilledUsage = usage.keys.filter { billed[$0] == nil }.count
    let unlogged = answered.filter { completed[$0] == nil }.count
    let doubleBilled = billed.values.filter { $0 > 1 }.count
    let doubleCompleted = completed.values.filter { $0 > 1 }.count
    let doubleUsage = usage.values.filter { $0 > 1 }.count
    // Analytics: completions folded vs. completions on the log.
    let folded = Int(try await pool.query("SELECT coalesce(sum(completions), 0)::bigint FROM analytics_minutes")
        .first?.decode(Int64.self, at: 0) ?? 0)
    let logged = completed.values.reduce(0, +)
    result.lost = unbilledAnswers + unbilledUsage + unlogged + max(0, logged - folded)
    result.duplicated = doubleBilled + doubleCompleted + doubleUsage + max(0, folded - logged)
    result.billedFailures = outcomes.filter { $0.status != 200 }.compactMap(\.requestID).filter { billed[$0] != nil }.count
    func note(_ count: Int, _ what: String) { if count > 0 { result.details.append("\(count) \(what)") } }
    note(result.billedFailures, "failed requests billed")
    note(unbilledAnswers, "answers not billed")
    note(unbilledUsage, "usage events not billed")
    note(unlogged, "answers without a completion on the log")
    note(max(0, logged - folded), "completions analytics did not count")
    note(doubleBilled, "requests billed twice")
    note(doubleCompleted, "requests completed twice on the log")
    note(doubleUsage, "requests with two usage events")
    note(max(0, folded - logged), "completions analytics counted twice")
    return result
}
