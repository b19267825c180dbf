import BillingCore
import Contracts
import Foundation
import Messaging
import Schemas
import Storage
import Synchronization
import Telemetry
import TestKit
import Testing

@Suite("Billing ledger against real nats-server and PostgreSQL", .serialized)
struct LedgerTests {
    /// 2026-11-27 10:00 UTC and the day after, in unix nanoseconds.
    static let day1: Int64 = 1_795_773_600 * 1_000_000_000
    static let day2: Int64 = day1 + 86_400 * 1_000_000_000

    @Test("usage becomes ledger lines priced by the price in effect, with day, month and conversation totals")
    func ledgerAndTotals() async throws {
        try await BillingHarness.with { h in
            let metrics = TelemetryMetrics()
            try await h.runBilling(metrics: metrics) {
                // $2 per million input tokens, $8 per million output tokens, from before the usage; a later price
                // must not apply to earlier usage.
                try await h.pool.execute("""
                    INSERT INTO billing_prices (provider, model, effective_from, input_micros_per_million,
                                                output_micros_per_million, currency)
                    VALUES ('openai', 'gpt-test', '2026-01-01T00:00:00Z', 2000000, 8000000, 'USD'),
                           ('openai', 'gpt-test', '2026-12-01T00:00:00Z', 9000000, 9000000, 'USD')
                    """)
                let events = [
                    BillingHarness.usage(tenant: "acme", at: Self.day1),
                    BillingHarness.usage(tenant: "acme", at: Self.day1 + 1_000),
                    BillingHarness.usage(tenant: "acme", model: "mystery-model", at: Self.day1 + 2_000),
                    BillingHarness.usage(tenant: "acme", prompt: 1000, completion: 0, at: Self.day2),
                    BillingHarness.usage(tenant: "acme", completion: 7, at: Self.day2 + 5),
                    BillingHarness.usage(tenant: "globex", conversation: "c1", at: Self.day1),
                    BillingHarness.usage(tenant: "globex", conversation: "c1", at: Self.day2),
                ]
                try await h.publish(events)
                try await BillingHarness.eventually { try await h.ledgerRows() == 7 }
                #expect(try await h.ledgerRows() == 7)

                // 100 × $2/M + 50 × $8/M = 600 µ$; the unknown model is flagged, not billed at zero silently.
                #expect(try await h.scalar("SELECT cost_micros FROM billing_ledger WHERE tenant_id = 'acme' AND model = 'gpt-test' AND occurred_at < '2026-11-28' LIMIT 1") == 600)
                #expect(try await h.scalar("SELECT count(*) FROM billing_ledger WHERE unpriced") == 1)
                #expect(try await h.scalar("SELECT cost_micros FROM billing_ledger WHERE unpriced") == 0)
                let day1 = try await h.pool.query("""
                    SELECT sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros), sum(unpriced_requests)
                    FROM billing_totals WHERE tenant_id = 'acme' AND period = 'day' AND period_start = '2026-11-27'
                    """)
                #expect(try day1[0].decode(Int64.self, at: 0) == 3)
                #expect(try day1[0].decode(Int64.self, at: 1) == 300)
                #expect(try day1[0].decode(Int64.self, at: 2) == 150)
                #expect(try day1[0].decode(Int64.self, at: 3) == 1200)
                #expect(try day1[0].decode(Int64.self, at: 4) == 1)
                // Day 2: 1,000 × $2/M = 2,000 µ$, and 100 × $2/M + 7 × $8/M = 256 µ$.
                #expect(try await h.scalar("SELECT sum(cost_micros) FROM billing_totals WHERE tenant_id = 'acme' AND period = 'day' AND period_start = '2026-11-28'") == 2256)
                #expect(try await h.scalar("SELECT sum(requests) FROM billing_month_totals WHERE tenant_id = 'acme' AND month = '2026-11-01'") == 5)
                #expect(try await h.scalar("SELECT requests FROM billing_conversations WHERE tenant_id = 'globex' AND conversation_id = 'c1'") == 2)
                #expect(try await h.scalar("SELECT count(*) FROM billing_conversations WHERE tenant_id = 'acme'") == 0)
                try await Self.expectTotalsMatchLedger(h)
                // Spend per tenant, as a metric: 600 + 600 + 0 (unpriced) + 2,000 + 256.
                #expect(counterValue(metrics.renderPrometheusText(), "billing_spend_micros_total",
                                     label: "tenant", "acme") == 3_456)

                // The same events again, under new message ids (as after the de-duplication window): no new line,
                // no total changed.
                try await h.publish(events, idSuffix: ":republished")
                try await BillingHarness.eventually {
                    counterValue(metrics.renderPrometheusText(), "billing_usage_events_total", outcome: "duplicate") >= 7
                }
                #expect(counterValue(metrics.renderPrometheusText(), "billing_usage_events_total", outcome: "duplicate") == 7)
                #expect(try await h.ledgerRows() == 7)
                try await Self.expectTotalsMatchLedger(h)
                #expect(try await h.scalar("SELECT sum(requests) FROM billing_month_totals") == 7)
            }
        }
    }

    @Test("hostile usage events are dead-lettered with a reason and bill nothing; the good ones behind them are billed")
    func hostileEvents() async throws {
        try await BillingHarness.with { h in
            let metrics = TelemetryMetrics()
            try await h.runBilling(metrics: metrics) {
                let deadLetters = try h.connection.subscribe("dlq.>")
                try await h.connection.flush()
                let hostile = [
                    BillingHarness.usage(tenant: "acme", prompt: 0, completion: 0),
                    BillingHarness.usage(tenant: "acme", prompt: 20_000_000),
                    BillingHarness.usage(tenant: "nobody"),
                    BillingHarness.usage(tenant: "acme", provider: ""),
                    BillingHarness.usage(tenant: "acme", model: String(repeating: "m", count: 300)),
                ]
                try await h.publish(hostile)
                // Not protobuf at all.
                try await h.jetStream.publish(OutboundMessage(subject: Subjects.usage(tenant: "acme"),
                                                              payload: [0xFF, 0xFF, 0xFF, 0x0F, 0x01]))
                let good = (0..<3).map { _ in BillingHarness.usage(tenant: "globex", prompt: 10, completion: 5) }
                try await h.publish(good)

                // Ends the wait if fewer than six ever arrive (the expectations below then fail).
                let watchdog = Task {
                    try? await Task.sleep(for: .seconds(30))
                    deadLetters.unsubscribe()
                }
                defer { watchdog.cancel() }
                var reasons: [String] = []
                var iterator = deadLetters.messages.makeAsyncIterator()
                while reasons.count < 6, let message = await iterator.next() {
                    reasons.append(message.headers[DeadLetter.reasonHeader] ?? "")
                }
                #expect(reasons.count == 6)
                #expect(reasons.contains { $0.contains("without tokens") })
                #expect(reasons.contains { $0.contains("implausible token count") })
                #expect(reasons.contains { $0.contains("unknown tenant") })
                #expect(reasons.contains { $0.contains("without a provider") })
                #expect(reasons.contains { $0.contains("over-long") })
                // Counted for the dead-letter alert (observability/prometheus/rules.yml).
                func deadLettered() -> Double {
                    counterValue(metrics.renderPrometheusText(), "nats_messages_dead_lettered_total", label: "consumer",
                                 "billing-usage")
                }
                try await BillingHarness.eventually { deadLettered() == 6 }
                #expect(deadLettered() == 6)
                try await BillingHarness.eventually { try await h.ledgerRows() == 3 }
                #expect(try await h.ledgerRows() == 3)
                #expect(try await h.scalar("SELECT count(*) FROM billing_ledger WHERE tenant_id <> 'globex'") == 0)
                #expect(try await h.scalar("SELECT sum(prompt_tokens) FROM billing_totals WHERE period = 'day'") == 30)
            }
        }
    }

    @Test("PostgreSQL restarted during the load: nothing lost or doubled, and billing recovers by itself")
    func postgresRestartDuringLoad() async throws {
        try await BillingHarness.with { h in
            var events: [UsageRecorded] = []
            var expectedPrompt: Int64 = 0
            var expectedCompletion: Int64 = 0
            for index in 0..<20_000 {
                let prompt = UInt32(1 + index % 700)
                let completion = UInt32(index % 300)
                events.append(BillingHarness.usage(tenant: index % 2 == 0 ? "acme" : "globex", prompt: prompt,
                                                   completion: completion))
                expectedPrompt += Int64(prompt)
                expectedCompletion += Int64(completion)
            }
            let batches = [Array(events[0..<10_000]), Array(events[10_000...])]
            try await h.runBilling {
                try await h.publish(batches[0])
                try await BillingHarness.eventually { try await h.ledgerRows() > 0 }
                try await h.postgres.restart()
                try await h.publish(batches[1])
                try await BillingHarness.eventually(.seconds(120)) { try await h.ledgerRows() >= 20_000 }
            }
            #expect(try await h.ledgerRows() == 20_000)
            #expect(try await h.scalar("SELECT sum(prompt_tokens) FROM billing_ledger") == expectedPrompt)
            #expect(try await h.scalar("SELECT sum(completion_tokens) FROM billing_ledger") == expectedCompletion)
            try await Self.expectTotalsMatchLedger(h)
        }
    }

    @Test("a tenant with a time zone: its lines count toward its local days and months")
    func tenantTimeZone() async throws {
        try await BillingHarness.with(tenants: ["kiwi", "acme"], timeZones: ["kiwi": "Pacific/Auckland"]) { h in
            try await h.runBilling {
                let noon27 = Self.day1 + 2 * 3_600 * 1_000_000_000  // 2026-11-27 12:00 UTC = 28th 01:00 in Auckland
                let noon30 = noon27 + 3 * 86_400 * 1_000_000_000    // 2026-11-30 12:00 UTC = 1 December 01:00 there
                try await h.publish([
                    BillingHarness.usage(tenant: "kiwi", at: noon27),
                    BillingHarness.usage(tenant: "kiwi", at: noon30),
                    BillingHarness.usage(tenant: "acme", at: noon30),
                ])
                try await BillingHarness.eventually { try await h.ledgerRows() == 3 }
                #expect(try await h.scalar("SELECT count(*) FROM billing_ledger WHERE tenant_id = 'kiwi' AND day = '2026-11-28'") == 1)
                #expect(try await h.scalar("SELECT sum(requests) FROM billing_totals WHERE tenant_id = 'kiwi' AND period_start = '2026-12-01'") == 1)
                #expect(try await h.scalar("SELECT sum(requests) FROM billing_month_totals WHERE tenant_id = 'kiwi' AND month = '2026-12-01'") == 1)
                #expect(try await h.scalar("SELECT sum(requests) FROM billing_month_totals WHERE tenant_id = 'acme' AND month = '2026-11-01'") == 1)
                try await Self.expectTotalsMatchLedger(h)
            }
        }
    }

    /// Every total equals the sum of its ledger lines.
    static func expectTotalsMatchLedger(_ h: BillingHarness) async throws {
        for (period, totals) in [("day", "billing_totals WHERE period = 'day'"), ("month", "billing_month_totals")] {
            let mismatches = try await h.scalar("""
                SELECT count(*) FROM (
                    SELECT tenant_id, agent, provider, model, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,
                           sum(cost_micros) AS m, count(*) AS r
                    FROM billing_ledger GROUP BY 1, 2, 3, 4
                ) l FULL JOIN (
                    SELECT tenant_id, agent, provider, model, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,
                           sum(cost_micros) AS m, sum(requests) AS r
                    FROM \(totals) GROUP BY 1, 2, 3, 4
                ) t USING (tenant_id, agent, provider, model)
                WHERE l.p IS DISTINCT FROM t.p OR l.c IS DISTINCT FROM t.c OR l.m IS DISTINCT FROM t.m
                   OR l.r IS DISTINCT FROM t.r
                """)
            #expect(mismatches == 0, "\(period) totals differ from the ledger")
        }
    }
}
