import BillingCore
import Contracts
import Foundation
import Schemas
import Storage
import Testing
import TestKit

@Suite("Billing killed under load (the real binary)", .serialized)
struct BillingCrashTests {
    static func binary() throws -> String { try builtProduct("billing") }

    @Test("SIGKILLed 20 times (some right after COMMIT, before the acks) during 50,000 usage events: exactly 50,000 lines, exact sums")
    func killedTwentyTimesDuringLoad() async throws {
        let tenants = (0..<50).map { "tenant-\($0)" }
        try await BillingHarness.with(tenants: tenants) { h in
            let binary = try Self.binary()
            let total = 50_000
            var events: [UsageRecorded] = []
            var expected: [String: (prompt: Int64, completion: Int64)] = [:]
            for index in 0..<total {
                let tenant = tenants[index % tenants.count]
                let prompt = UInt32.random(in: 1...4_000)
                let completion = UInt32.random(in: 0...2_000)
                events.append(BillingHarness.usage(tenant: tenant, prompt: prompt, completion: completion,
                                                   conversation: index % 3 == 0 ? "conv-\(index % 97)" : ""))
                expected[tenant, default: (0, 0)].prompt += Int64(prompt)
                expected[tenant, default: (0, 0)].completion += Int64(completion)
            }
            let chunks = stride(from: 0, to: total, by: 5_000).map { Array(events[$0..<min($0 + 5_000, total)]) }
            var published = 0
            var killedThemselves = 0
            for round in 0..<20 {
                // The load keeps arriving during the first ten rounds.
                if round < chunks.count {
                    try await h.publish(chunks[round])
                    published += chunks[round].count
                }
                var environment = h.environment(instance: "billing-\(round)")
                let rowsBefore = try await h.ledgerRows()
                // Every fourth round the process kills itself right after a COMMIT, before that batch's acks —
                // while there is still work to commit.
                let failpoint = round % 4 == 1 && rowsBefore < Int64(published)
                if failpoint { environment["SWITCHYARD_BILLING_FAILPOINT_KILL_AFTER_COMMITS"] = "\(1 + round % 3)" }
                let process = try TestProcess(executable: binary, environment: environment)
                if failpoint {
                    let exited = await withTaskGroup(of: Bool.self) { group in
                        group.addTask { _ = await process.waitUntilExit(); return true }
                        group.addTask { try? await Task.sleep(for: .seconds(60)); return false }
                        let first = await group.next() ?? false
                        group.cancelAll()
                        return first
                    }
                    if exited { killedThemselves += 1 } else { process.terminate(signal: SIGKILL) }
                    _ = await process.waitUntilExit()
                } else {
                    // Killed from outside at a random moment after it started making progress.
                    try await BillingHarness.eventually(.seconds(30)) {
                        try await h.ledgerRows() > rowsBefore || rowsBefore >= Int64(published)
                    }
                    try await Task.sleep(for: .milliseconds(Int.random(in: 0...250)))
                    process.terminate(signal: SIGKILL)
                    _ = await process.waitUntilExit()
                }
            }
            #expect(killedThemselves >= 3, "the failpoint fired \(killedThemselves) times")
            var lastEnvironment = h.environment(instance: "billing-final")
            lastEnvironment["SWITCHYARD_LOG_LEVEL"] = "warning"  // its log is shown when the figures are off
            let last = try TestProcess(executable: binary, environment: lastEnvironment)
            defer { last.terminate(signal: SIGKILL) }
            // Until every line is in, or the durable has settled everything (then the figures say what is missing);
            // a busy machine only makes this slower.
            try await BillingHarness.eventually(.seconds(600)) {
                if try await h.ledgerRows() >= Int64(total) { return true }
                guard let state = try? await h.jetStream.consumerState(stream: Consumers.billingUsage.stream.name,
                                                                       durable: Consumers.billingUsage.durable)
                else { return false }
                return state.pending == 0 && state.ackPending == 0
            }

            let recorded = try await h.ledgerRows()
            if recorded != Int64(total) {
                // Where the missing events are: still pending on the durable, or dead-lettered.
                let consumer = try? await h.jetStream.consumerState(stream: Consumers.billingUsage.stream.name,
                                                                     durable: Consumers.billingUsage.durable)
                let deadLettered = (try? await h.jetStream.streamState(Streams.deadLetter.name).messages) ?? 0
                let logged = (try? await h.jetStream.streamState(Streams.usage.name).messages) ?? 0
                Issue.record("""
                    ledger holds \(recorded) of \(total) lines; the usage stream \(logged); \
                    durable: \(consumer.map { "\($0)" } ?? "unreadable"); dead letters: \(deadLettered); failpoint fired \(killedThemselves) times; last process \
                    \(last.exitStatus.map { "exited with \($0)" } ?? "running"), its log ends:
                    \(last.output.suffix(2_000))
                    """)
            }
            #expect(recorded == Int64(total))
            #expect(try await h.scalar("SELECT count(DISTINCT (tenant_id, event_id)) FROM billing_ledger") == Int64(total))
            let rows = try await h.pool.query("""
                SELECT tenant_id, sum(prompt_tokens), sum(completion_tokens) FROM billing_ledger GROUP BY tenant_id
                """)
            var billed: [String: (prompt: Int64, completion: Int64)] = [:]
            for row in rows {
                billed[try row.decode(String.self, at: 0)] = (try row.decode(Int64.self, at: 1),
                                                              try row.decode(Int64.self, at: 2))
            }
            #expect(billed.count == tenants.count)
            let wrong = tenants.filter { billed[$0]?.prompt != expected[$0]?.prompt
                || billed[$0]?.completion != expected[$0]?.completion }
            #expect(wrong.isEmpty, "token sums differ for \(wrong.prefix(5))")
            try await LedgerTests.expectTotalsMatchLedger(h)
            _ = await last.terminateAndWait(grace: .seconds(5))
        }
    }
}
