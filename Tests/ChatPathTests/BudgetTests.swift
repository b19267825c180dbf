import Foundation
import Messaging
import OrchestratorCore
import Schemas
import Storage
import Tenancy
import Testing

/// Budgets end to end (docs/adr/0014): two gateway replicas, billing, the fake upstream with a fixed usage.
@Suite("Budgets across gateway replicas", .serialized)
struct BudgetTests {
    static let tenant = "budget-bistro"
    /// 11 prompt tokens at 1 µ + 7 completion tokens at 2 µ (FakeOpenAI's usage and the price below).
    static let requestCost: Int64 = 25
    static let ask = Array(#"{"model":"gpt-agent","messages":[{"role":"user","content":"Do you have a terrace?"}]}"#.utf8)

    @Test("100 concurrent requests over 2 gateways against a budget for 10: charged for at most 12; raising the budget lifts the block")
    func concurrentRequestsAgainstABudget() async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, apiKey: "k",
                                         timeout: .seconds(5))])
        try await Stack.with(orchestrator: orchestrator, billing: true, gatewayReplicas: 2) { stack in
            fake.set(.answer("Yes, we have a terrace."))
            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            _ = try await pool.execute("""
                INSERT INTO billing_prices (provider, model, effective_from, input_micros_per_million,
                                            output_micros_per_million, currency, created_by)
                VALUES ('openai', 'gpt-test', now() - interval '1 hour', 1000000, 2000000, 'USD', 'test')
                """)
            let budget = 10 * Self.requestCost
            var plan = Plan(id: "capped", rpm: 100_000, tpm: 100_000_000, dailyBudgetMicros: budget,
                            monthlyBudgetMicros: 0, maxTokensPerRequest: 4096)
            let key = try await stack.addTenant(Self.tenant, plan: plan)
            let book = BudgetBook(bucket: try await stack.adminJS.keyValue(Budgets.bucket))
            let warnings = try stack.admin.subscribe("evt.budget.warning.\(Self.tenant)")
            let exhausted = try stack.admin.subscribe("evt.budget.exceeded.\(Self.tenant)")
            try await stack.admin.flush()

            // Billing publishes the new budgeted tenant's figures; until then the gateway can't know the spend.
            try await eventually("billing publishes the tenant's budget state") {
                try await book.state(tenant: Self.tenant) != nil
            }
            // The first request prices the tenant's requests (its estimate), then the burst.
            #expect(try await stack.send(body: Self.ask, headers: stack.withKey(key)).status == 200)
            try await eventually("billing settles the first request") {
                let state = try await book.state(tenant: Self.tenant)
                return state?.requestEstimateMicros == Self.requestCost && state?.holds.isEmpty == true
            }
            let results = try await withThrowingTaskGroup(of: Stack.HTTPResult.self) { group in
                for index in 0..<100 {
                    group.addTask { try await stack.send(body: Self.ask, headers: stack.withKey(key), replica: index % 2) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let admitted = results.filter { $0.status == 200 }.count
            let refused = results.filter { $0.status == 429 && $0.errorCode == "insufficient_quota" }
            #expect(admitted + refused.count == 100, "every request is answered 200 or 429 insufficient_quota")
            #expect(admitted >= 1)
            #expect(refused.first?.json["error"].flatMap { ($0 as? [String: Any])?["type"] as? String } == "insufficient_quota")
            #expect(refused.first?.text.contains("daily budget") == true)
            #expect(refused.first?.headers["retry-after"] != nil)

            // Everything admitted reaches the ledger; the tenant is charged for at most 12 requests' worth.
            let expectedLines = 1 + admitted
            try await eventually("the admitted requests are in the ledger") {
                try await Self.ledger(pool).lines == expectedLines
            }
            let charged = try await Self.ledger(pool).cost
            #expect(charged <= 12 * Self.requestCost, "charged \(charged) µ against a budget of \(budget) µ")
            #expect(charged == Int64(expectedLines) * Self.requestCost)
            print("budget for 10 requests: 1 + \(admitted) admitted of 100 concurrent over 2 gateways, charged \(charged) µ")

            // One warning (80 %) and one exhaustion event for the day, whichever replica saw it first.
            let warning = try BudgetWarning(protobuf: try #require(await warnings.messages.first { _ in true }).payload)
            #expect(warning.period == "daily" && warning.limitMicros == budget && warning.thresholdPercent == 80)
            let exceeded = try BudgetExceeded(protobuf: try #require(await exhausted.messages.first { _ in true }).payload)
            #expect(exceeded.period == "daily" && exceeded.limitMicros == budget)
            #expect(exceeded.periodStart == BudgetPeriods(unixNanos: EventClock.nowUnixNanos()).day)

            // Raising the budget lifts the block on both replicas (the plan reaches them by KV watch).
            plan.dailyBudgetMicros = 100 * Self.requestCost
            let raised = ContinuousClock.now
            try await stack.writer.put(plan, tenant: Self.tenant)
            var lifted: [Duration] = []
            for replica in 0..<2 {
                try await eventually("replica \(replica) admits again") {
                    try await stack.send(body: Self.ask, headers: stack.withKey(key), replica: replica).status == 200
                }
                lifted.append(ContinuousClock.now - raised)
            }
            print("budget raise lifted the block after \(lifted.map { "\($0)" }.joined(separator: ", ")) (replica 1, 2)")
        }
        await fake.stop()
    }

    static func ledger(_ pool: PostgresPool) async throws -> (lines: Int, cost: Int64) {
        let rows = try await pool.query("""
            SELECT count(*)::bigint AS lines, COALESCE(sum(cost_micros), 0)::bigint AS cost
            FROM billing_ledger WHERE tenant_id = $1
            """, [.text(tenant)])
        return (Int(try rows[0].decode(Int64.self, column: "lines")), try rows[0].decode(Int64.self, column: "cost"))
    }

    /// Polls `condition` until it holds (a generous deadline: it waits for a fact, not a time window).
    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<600 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out waiting until \(what)")
        throw CancellationError()
    }
}
