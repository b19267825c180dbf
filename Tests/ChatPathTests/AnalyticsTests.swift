@testable import AnalyticsCore
import Contracts
import Foundation
import GatewayCore
import Messaging
import OrchestratorCore
import Schemas
import Storage
import Synchronization
import Telemetry
import Tenancy
import Testing
import TestKit

@Suite("Latency histogram buckets")
struct LatencyBucketTests {
    @Test("every value lies in its bucket, buckets are at most 1/128 of their values wide, and indices grow with values")
    func bucketsCoverValues() {
        var previous = -1
        var value: Int64 = 0
        while value < 3_600_000_000 {  // up to an hour, in µs
            let index = LatencyBuckets.index(micros: value)
            let (lower, width) = LatencyBuckets.range(index)
            #expect(lower <= value && value < lower + width, "value \(value) bucket \(index) [\(lower), +\(width))")
            #expect(width == 1 || width * 128 <= lower, "bucket \(index) too wide: \(width) at \(lower)")
            #expect(index >= previous)
            previous = index
            value = value < 1000 ? value + 1 : value + value / 97
        }
        #expect(LatencyBuckets.index(micros: -5) == 0)
    }

    @Test("quantiles by nearest rank over merged buckets")
    func quantiles() {
        // 100 samples: 1…100 µs (one bucket each below 256).
        let buckets = (1...100).map { (bucket: LatencyBuckets.index(micros: Int64($0)), count: Int64(1)) }
        #expect(LatencyBuckets.quantile(0.95, of: buckets) == 95)
        #expect(LatencyBuckets.quantile(0.5, of: buckets) == 50)
        #expect(LatencyBuckets.quantile(1.0, of: buckets) == 100)
        // Merging two halves gives the same answer as the whole.
        let merged = Dictionary(buckets.prefix(50).map { ($0.bucket, $0.count) } + buckets.suffix(50).map { ($0.bucket, $0.count) },
                                uniquingKeysWith: +).map { (bucket: $0.key, count: $0.value) }
        #expect(LatencyBuckets.quantile(0.95, of: merged) == 95)
        #expect(LatencyBuckets.quantile(0.99, of: []) == 0)
    }
}

@Suite("Bounded tenant labels of the log-derived metrics")
struct LogMetricsLabelTests {
    @Test("the first N tenants keep their label, later ones are `other`, and a label never changes")
    func boundedLabels() {
        let labels = LogMetrics(metrics: TelemetryMetrics(), limit: 2)
        #expect(labels.label(for: "alpha") == "alpha")
        #expect(labels.label(for: "beta") == "beta")
        #expect(labels.label(for: "gamma") == "other")
        #expect(labels.label(for: "alpha") == "alpha")
        #expect(LogMetrics(metrics: TelemetryMetrics(), limit: 0).label(for: "alpha") == "other")
    }
}

@Suite("Analytics: rollups of the event log, rebuilds, crashes, percentiles", .serialized)
struct AnalyticsTests {
    static let consentTenant = "consent-cafe"

    // MARK: helpers

    /// A stack whose gpt-agent always fails (upstream 500, no fallback), with a second tenant that requires
    /// consent and a 50 % canary of the host agent: every kind of counted event occurs.
    static func withMixedStack(analytics: Bool = true, _ body: (Stack, String) async throws -> Void) async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        fake.set(.status(500))
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, apiKey: "upstream-key",
                                         timeout: .milliseconds(400))],
            fallbackChain: [],
            retryPolicy: RetryPolicy(maxAttempts: 1, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2)))
        do {
            // A request deadline of 25 s rather than the stack's 10 s: thousands of chats while every other suite
            // starts its services (full CI load) once took one chat past 10 s, and a 504 is not what this measures.
            try await Stack.with(orchestrator: orchestrator, gateway: GatewayConfiguration(requestTimeout: .seconds(25)),
                                 analytics: analytics) { stack in
                try await stack.writer.put(RolloutSettings(agent: "host", stableVersion: "v1", canaryVersion: "v2",
                                                           canaryPercent: 50, tenantID: Stack.tenant),
                                           tenant: Stack.tenant)
                let now = EventClock.nowUnixNanos()
                let consentKey = try await stack.addTenant(consentTenant)
                try await stack.writer.put(Tenant(id: consentTenant, name: "Consent Café", planID: "pro", status: "active",
                                                  packageName: "gastronomy", consentPolicy: "required",
                                                  createdAtUnixNanos: now, updatedAtUnixNanos: now))
                try await body(stack, consentKey)
            }
        } catch {
            await fake.stop()
            throw error
        }
        await fake.stop()
    }

    /// Sends `count` chats, 8 at a time (the HTTP client's connections per host: more would only queue in the
    /// client, where under full CI load the wait used up a request's 30 s), of every kind: knowledge-base answers
    /// (some streamed), handoffs, upstream failures, consent asked / granted / denied. Returns how many were sent
    /// per tenant.
    static func sendMixed(_ stack: Stack, count: Int, consentKey: String) async throws -> [String: Int] {
        final class Sent: Sendable { let counts = Mutex<[String: Int]>([:]) }
        let sent = Sent()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                if index >= 8 { try await group.next() }
                group.addTask {
                    var body: [String: Any] = ["model": "host"]
                    var tenant = Stack.tenant
                    var headers = stack.withKey(stack.apiKey)
                    let conversation = "conv-\(index / 3)"
                    switch index % 10 {
                    case 0, 1, 2:
                        body["messages"] = [["role": "user", "content": "When are you open?"]]
                    case 3:
                        body["messages"] = [["role": "user", "content": "Where is the restaurant?"]]
                        body["stream"] = true
                    case 4:
                        body["messages"] = [["role": "user", "content": "Can you recommend a wine for fish?"]]
                    case 5:
                        body["model"] = "gpt-agent"
                        body["messages"] = [["role": "user", "content": "Tell me a joke"]]
                    case 6, 7, 8:
                        tenant = consentTenant
                        headers = stack.withKey(consentKey)
                        let say = ["When are you open?", "yes", "no"][index % 3]
                        body["messages"] = [["role": "user", "content": say]]
                    default:
                        body["messages"] = [["role": "user", "content": "Reserve a table please"]]
                        body["stream"] = true
                    }
                    headers["x-switchyard-conversation-id"] = conversation + "-\(index % 10)"
                    let response = try await stack.chat(body, headers: headers)
                    #expect([200, 502, 503].contains(response.status), "status \(response.status): \(response.text.prefix(200))")
                    sent.counts.withLock { $0[tenant, default: 0] += 1 }
                }
            }
            try await group.waitForAll()
        }
        return sent.counts.withLock { $0 }
    }

    /// Waits until analytics has folded everything on the log (nothing pending or unacknowledged).
    static func waitCaughtUp(_ stack: Stack, limit: Duration = .seconds(180)) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            var done = true
            for contract in Consumers.analytics {
                guard let state = try? await stack.adminJS.consumerState(stream: StreamNames.events,
                                                                        durable: contract.durable),
                      state.pending == 0, state.ackPending == 0 else { done = false; break }
            }
            if done { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("analytics did not catch up with the event log within \(limit)")
    }

    /// Every rollup row, as text lines in a fixed order.
    static func snapshot(_ stack: Stack) async throws -> [String] {
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: stack.postgres.connectionString,
                                                                         poolSize: 1), logger: Stack.logger)
        defer { Task { await pool.close() } }
        var lines: [String] = []
        for (table, order) in [("analytics_minutes", "1, 2"), ("analytics_errors", "1, 2, 3"),
                               ("analytics_latency", "1, 2, 3, 4"), ("analytics_conversations", "1, 2")] {
            let rows = try await pool.query("SELECT row_to_json(t)::text FROM (SELECT * FROM \(table) ORDER BY \(order)) t")
            lines += try rows.map { "\(table) " + (try $0.decode(String.self, at: 0)) }
        }
        return lines
    }

    /// The first line where a rebuild differs from the live rollups (short enough to read in a failure).
    static func firstDifference(_ rebuilt: [String], _ live: [String]) -> String {
        if let (a, b) = zip(rebuilt, live).first(where: { $0 != $1 }) { return "rebuilt \(a)\nlive    \(b)" }
        return "\(rebuilt.count) rows rebuilt, \(live.count) live"
    }

    static func admin(_ stack: Stack) -> AdminClient {
        AdminClient(connection: stack.admin, token: Stack.adminToken, actor: "test", timeout: .seconds(120))
    }

    static func stats(_ stack: Stack, tenant: String, by: String = "", agent: String = "") async throws -> [StatsRow] {
        let response: StatsResponse = try await admin(stack).call(AnalyticsAdminCommand.stats, StatsRequest(
            tenantID: tenant, sinceUnixNanos: EventClock.nowUnixNanos() - 3_600_000_000_000, by: by, agent: agent))
        return response.rows
    }

    /// Starts a rebuild of everything and waits until it is done.
    static func rebuild(_ stack: Stack) async throws -> RebuildResponse {
        let client = admin(stack)
        var state: RebuildResponse = try await client.call(AnalyticsAdminCommand.rebuild, RebuildRequest())
        #expect(state.state == "running" || state.state == "done")
        let deadline = ContinuousClock.now + .seconds(300)
        while state.state == "running" && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            state = try await client.call(AnalyticsAdminCommand.rebuildStatus, RebuildStatusRequest(id: state.id))
        }
        #expect(state.state == "done", "rebuild \(state.id): \(state.state) \(state.failure)")
        return state
    }

    // MARK: tests

    @Test("10,000 mixed chats (answers, streams, handoffs, failures, consent, two agent versions): the figures match what was sent, and a rebuild from the log equals the live rollups")
    func rebuildEqualsLive() async throws {
        try await Self.withMixedStack { stack, consentKey in
            let warmup = 1  // Stack.waitUntilReady's chat
            let sent = try await Self.sendMixed(stack, count: 10_000, consentKey: consentKey)
            try await Self.waitCaughtUp(stack)
            let live = try await Self.snapshot(stack)

            let total = try #require(try await Self.stats(stack, tenant: Stack.tenant).first)
            #expect(total.requests == Int64(sent[Stack.tenant, default: 0] + warmup))
            #expect(total.completions + total.failures == total.requests)
            #expect(total.failures == 1_000, "gpt-agent failures \(total.failures)")
            #expect(total.failuresByCode.values.reduce(0, +) == total.failures)
            #expect(total.handoffs > 0 && total.kbAnswered > 0 && total.kbNoAnswer > 0)
            #expect(total.conversations > 0 && total.conversationsAnswered > 0 && total.conversationsAbandoned > 0)
            #expect(total.latency.contains { $0.hop == HopLatency.total && $0.count == total.requests })
            let consent = try #require(try await Self.stats(stack, tenant: Self.consentTenant).first)
            #expect(consent.requests == Int64(sent[Self.consentTenant, default: 0]))
            #expect(consent.consentAsked > 0 && consent.consentGranted > 0 && consent.consentDenied > 0)
            let versions = try await Self.stats(stack, tenant: Stack.tenant, by: "version", agent: "host")
            #expect(Set(versions.map(\.agentVersion)) == ["v1", "v2"], "versions \(versions.map(\.agentVersion))")
            let cohorts = try await Self.stats(stack, tenant: Stack.tenant, by: "cohort", agent: "host")
            #expect(Set(cohorts.map(\.rolloutCohort)) == ["stable", "canary"])

            let rebuilt = try await Self.rebuild(stack)
            #expect(rebuilt.eventsFolded > 20_000)
            let after = try await Self.snapshot(stack)
            #expect(after.count == live.count)
            let same = after == live
            #expect(same, "first difference: \(Self.firstDifference(after, live))")
            #expect(live.count > 100)
        }
    }

    @Test("p50/p95/p99 per hop from analytics agree with the percentiles computed from the events themselves, within the histogram's precision")
    func percentilesAgreeWithTheEvents() async throws {
        try await Self.withMixedStack { stack, consentKey in
            _ = try await Self.sendMixed(stack, count: 2_000, consentKey: consentKey)
            try await Self.waitCaughtUp(stack)
            // Directly from the log: every completed and failed event of the tenant, its hop stamps.
            var samples: [String: [Int64]] = [:]
            let reader = "test-hops"
            try await stack.adminJS.ensureConsumer(stream: StreamNames.events, ConsumerSpec(
                durable: reader, filterSubject: "evt.chat.*.\(Stack.tenant)", maxAckPending: 100_000))
            let consumer = try await PullConsumer.bind(jetStream: stack.adminJS, stream: StreamNames.events, durable: reader)
            while let message = try await consumer.next(timeout: .seconds(1), batch: 256) {
                let delivery = message.delivery
                try message.ack()
                var hops: [HopStamp] = []
                if delivery.subject.hasPrefix("evt.chat.completed.") {
                    hops = try ChatCompleted(protobuf: delivery.payload).hops
                } else if delivery.subject.hasPrefix("evt.chat.failed.") {
                    hops = try ChatFailed(protobuf: delivery.payload).hops
                }
                guard hops.count >= 2 else { continue }
                for index in 1..<hops.count {
                    samples["\(hops[index - 1].hop)→\(hops[index].hop)", default: []]
                        .append((hops[index].unixNanos - hops[index - 1].unixNanos) / 1000)
                }
                samples["total", default: []].append((hops.last!.unixNanos - hops[0].unixNanos) / 1000)
            }
            consumer.stop()
            #expect(samples["total"]?.count ?? 0 >= 1_300)
            let byHop = try await Self.stats(stack, tenant: Stack.tenant, by: "hop")
            #expect(Set(byHop.map(\.hop)) == Set(samples.keys), "hops \(byHop.map(\.hop)) vs \(samples.keys.sorted())")
            for row in byHop {
                let summary = try #require(row.latency.first)
                let sorted = try #require(samples[row.hop]).sorted()
                #expect(summary.count == Int64(sorted.count))
                func direct(_ q: Double) -> Int64 { sorted[max(1, Int((q * Double(sorted.count)).rounded(.up))) - 1] }
                for (q, reported) in [(0.5, summary.p50Micros), (0.95, summary.p95Micros), (0.99, summary.p99Micros)] {
                    let exact = direct(q)
                    // Half a bucket at most: a bucket is at most 1/128 of its values wide.
                    #expect(abs(reported - exact) <= max(1, exact / 128),
                            "\(row.hop) p\(Int(q * 100)): analytics \(reported) µs, events \(exact) µs")
                }
            }
        }
    }

    @Test("analytics SIGKILLed mid-stream (once right after a COMMIT, before its acks; once from outside) and restarted: nothing counted twice, and the rollups equal a rebuild")
    func killedMidStream() async throws {
        try await Self.withMixedStack(analytics: false) { stack, consentKey in
            let binary = try builtProduct("analytics")
            var environment = Stack.environment(stack.nats, stack.postgres, instance: "analytics-crash")
            environment["SWITCHYARD_ADMIN_TOKENS"] = "test:\(Stack.adminToken)"
            environment["SWITCHYARD_LOG_LEVEL"] = "warning"
            // The traffic is on the log before analytics runs, so it has a backlog to fold batch after batch.
            let sent = try await Self.sendMixed(stack, count: 3_000, consentKey: consentKey)
            var failing = environment
            failing["SWITCHYARD_ANALYTICS_FAILPOINT_KILL_AFTER_COMMITS"] = "2"
            let first = try TestProcess(executable: binary, environment: failing)
            let status = await first.waitUntilExit()
            #expect(status == 128 + SIGKILL || status == -SIGKILL || status == SIGKILL, "exit status \(status): \(first.output.suffix(2000))")
            // Again, killed from outside as soon as it folds something, while more traffic arrives.
            let second = try TestProcess(executable: binary, environment: environment)
            let routed = Consumers.analytics[0].durable
            let before = try await stack.adminJS.consumerState(stream: StreamNames.events, durable: routed)
            async let more = Self.sendMixed(stack, count: 1_000, consentKey: consentKey)
            for _ in 0..<600 {
                let now = try await stack.adminJS.consumerState(stream: StreamNames.events, durable: routed)
                if now.ackFloorStreamSequence > before.ackFloorStreamSequence { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            second.terminate(signal: SIGKILL)
            _ = await second.waitUntilExit()
            let moreSent = try await more
            let last = try TestProcess(executable: binary, environment: environment)
            defer { last.terminate(signal: SIGKILL) }
            try await Self.waitCaughtUp(stack)

            let total = try #require(try await Self.stats(stack, tenant: Stack.tenant).first)
            #expect(total.requests == Int64(sent[Stack.tenant, default: 0] + moreSent[Stack.tenant, default: 0] + 1),
                    "requests counted \(total.requests)")
            let live = try await Self.snapshot(stack)
            _ = try await Self.rebuild(stack)
            let after = try await Self.snapshot(stack)
            let same = after == live
            #expect(same, "first difference: \(Self.firstDifference(after, live))")
        }
    }

    @Test("a rebuild while chats keep arriving: stats stay answerable, live folding resumes, and the result equals a rebuild at rest")
    func rebuildUnderLoad() async throws {
        try await Self.withMixedStack { stack, consentKey in
            _ = try await Self.sendMixed(stack, count: 2_000, consentKey: consentKey)
            try await Self.waitCaughtUp(stack)
            let client = Self.admin(stack)
            async let traffic = Self.sendMixed(stack, count: 3_000, consentKey: consentKey)
            var state: RebuildResponse = try await client.call(AnalyticsAdminCommand.rebuild, RebuildRequest())
            // A second request while it runs follows the same rebuild instead of starting another.
            let again: RebuildResponse = try await client.call(AnalyticsAdminCommand.rebuild, RebuildRequest())
            #expect(again.id == state.id || again.state != "running")
            var answeredDuring = 0
            while state.state == "running" {
                let stats: StatsResponse = try await client.call(AnalyticsAdminCommand.stats,
                                                                 StatsRequest(tenantID: Stack.tenant, by: "agent"))
                if !stats.rows.isEmpty { answeredDuring += 1 }
                state = try await client.call(AnalyticsAdminCommand.rebuildStatus, RebuildStatusRequest(id: state.id))
            }
            #expect(state.state == "done", "\(state.failure)")
            #expect(answeredDuring > 0, "no stats query was answered while the rebuild ran")
            let sent = try await traffic
            try await Self.waitCaughtUp(stack)
            let total = try #require(try await Self.stats(stack, tenant: Stack.tenant).first)
            let consentSent = 2_000 * 3 / 10 + sent[Self.consentTenant, default: 0]
            #expect(total.requests == Int64(2_000 - 2_000 * 3 / 10 + sent[Stack.tenant, default: 0] + 1))
            let consent = try #require(try await Self.stats(stack, tenant: Self.consentTenant).first)
            #expect(consent.requests == Int64(consentSent))
            let live = try await Self.snapshot(stack)
            _ = try await Self.rebuild(stack)
            let after = try await Self.snapshot(stack)
            let same = after == live
            #expect(same, "first difference: \(Self.firstDifference(after, live))")
        }
    }

    @Test("the seed metrics come from the log: agent_requests_total per tenant equals the rollups, errors by code, handoffs, consent outcomes, and the whole-path duration histogram")
    func logDerivedMetrics() async throws {
        try await Self.withMixedStack { stack, consentKey in
            _ = try await Self.sendMixed(stack, count: 500, consentKey: consentKey)
            try await Self.waitCaughtUp(stack)
            let text = stack.analyticsMetrics.renderPrometheusText()
            func sum(_ name: String, _ filter: String) -> Double {
                text.split(separator: "\n").filter { $0.hasPrefix(name + "{") && $0.contains(filter) }
                    .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
            }
            for tenant in [Stack.tenant, Self.consentTenant] {
                let rollups = try #require(try await Self.stats(stack, tenant: tenant).first)
                #expect(sum("agent_requests_total", "tenant=\"\(tenant)\"") == Double(rollups.requests), "\(tenant)")
                #expect(sum("agent_handoffs_total", "tenant=\"\(tenant)\"") == Double(rollups.handoffs), "\(tenant)")
                #expect(sum("agent_errors_total", "tenant=\"\(tenant)\"") == Double(rollups.failures), "\(tenant)")
                #expect(sum("agent_request_duration_seconds_count", "tenant=\"\(tenant)\"") == Double(rollups.completions))
            }
            #expect(sum("agent_errors_total", "outcome=\"upstream_error\"") > 0, "errors by code")
            #expect(sum("agent_consent_checks_total", "outcome=\"asked\"") > 0)
        }
    }

    @Test("applied sequences are pruned once every durable has acked them, also when a counted kind never occurs")
    func appliedSequencesArePruned() async throws {
        // Only answered knowledge-base questions: no failures, consent checks or handoffs on the log.
        try await Stack.with(analytics: true) { stack in
            for _ in 0..<50 {
                #expect(try await stack.chat(["model": "host", "messages": [["role": "user", "content": "When are you open?"]]]).status == 200)
            }
            try await Self.waitCaughtUp(stack)
            let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: stack.postgres.connectionString,
                                                                             poolSize: 1), logger: Stack.logger)
            func applied() async throws -> Int64 {
                try await pool.query("SELECT coalesce(sum(cardinality(seqs)), 0)::bigint FROM analytics_applied")[0]
                    .decode(Int64.self, at: 0)
            }
            #expect(try await applied() >= 100)  // routed and completed of each chat
            let pruning = AppliedPruning(store: RollupStore(pool: pool, prices: PriceBook(pool: pool)),
                                         jetStream: stack.adminJS, logger: Stack.logger)
            let pruned = try await pruning.pruneOnce()
            #expect(pruned >= 100)
            #expect(try await applied() == 0)
            await pool.close()
        }
    }

    @Test("stats refuse bad input: no tenant, a hostile tenant id, an unknown grouping, a wrong token")
    func statsRefuseBadInput() async throws {
        try await Stack.with(analytics: true) { stack in
            let client = Self.admin(stack)
            for (request, expected) in [
                (StatsRequest(tenantID: "", by: ""), AdminErrorCode.invalidArgument),
                (StatsRequest(tenantID: "acme.>", by: ""), .invalidArgument),
                (StatsRequest(tenantID: Stack.tenant, by: "weather"), .invalidArgument),
                (StatsRequest(tenantID: Stack.tenant, sinceUnixNanos: 10, untilUnixNanos: 5), .invalidArgument),
            ] {
                do {
                    let _: StatsResponse = try await client.call(AnalyticsAdminCommand.stats, request)
                    Issue.record("accepted \(request)")
                } catch let failure as AdminFailure {
                    #expect(failure.code == expected, "\(request): \(failure)")
                }
            }
            let stranger = AdminClient(connection: stack.admin, token: "wrong-token-0123456789", actor: "x")
            do {
                let _: StatsResponse = try await stranger.call(AnalyticsAdminCommand.stats,
                                                               StatsRequest(tenantID: Stack.tenant))
                Issue.record("a wrong token was accepted")
            } catch let failure as AdminFailure {
                #expect(failure.code == .unauthorized)
            }
        }
    }
}

@Suite("The ledger of applied sequences (PostgreSQL)")
struct AppliedLedgerTests {
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    static func fact(_ sequence: UInt64, _ kind: EventFact.Kind, minute: Int64 = 1_700_000_040) -> EventFact {
        EventFact(sequence: sequence, minute: minute, occurredAtUnixNanos: minute * 1_000_000_000,
                  dimensions: Dimensions(tenant: "ledger-test", agent: "host", version: "v1", cohort: "stable",
                                         channel: "web", package: "gastronomy"),
                  conversation: "c-\(sequence)", kind: kind)
    }

    static func requests(_ pool: PostgresPool) async throws -> Int64 {
        try await pool.query("SELECT coalesce(sum(requests), 0)::bigint FROM analytics_minutes")[0].decode(Int64.self, at: 0)
    }

    @Test("a redelivered or overlapping batch changes nothing; sequences applied before the per-batch ledger still count once")
    func redeliveriesAndUpgrade() async throws {
        let postgres = try await PostgresServer.start()  // stopped at the end, or by its deinit when a check throws
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                         poolSize: 3), logger: Stack.logger)
        // An installation from before migration 3, with sequences 1…3 applied in the old per-event ledger.
        _ = try await migrate(pool: pool, service: "analytics", migrations: Array(AnalyticsSchema.migrations.prefix(2)),
                              logger: Stack.logger)
        _ = try await pool.execute("""
            INSERT INTO analytics_applied (seq, minute) VALUES (1, to_timestamp(1700000040)), (2, to_timestamp(1700000040)),
                                                               (3, to_timestamp(1700000040))
            """)
        _ = try await migrate(pool: pool, service: "analytics", migrations: AnalyticsSchema.migrations, logger: Stack.logger)
        let store = RollupStore(pool: pool, prices: PriceBook(pool: pool))

        // 1…3 come again (a redelivery across the upgrade) with 4 and 5: only 4 and 5 count.
        var outcome = try await store.fold((1...5).map { Self.fact($0, .routed) })
        #expect(outcome.folded == 2)
        #expect(outcome.duplicates == 3)
        #expect(try await Self.requests(pool) == 2)
        // The same batch again, and one overlapping it with a new sequence of another minute: only 6 counts.
        outcome = try await store.fold((1...5).map { Self.fact($0, .routed) })
        #expect(outcome.folded == 0)
        outcome = try await store.fold([Self.fact(5, .routed), Self.fact(6, .routed, minute: 1_700_000_100)])
        #expect(outcome.folded == 1)
        #expect(try await Self.requests(pool) == 3)
        // Two batches of one kind holding the same sequences at the same time: the second is folded while the
        // first's transaction is still open; it waits for the first's COMMIT (seen waiting in pg_locks), then
        // finds 30…40 applied. Counted once.
        let first = (10...40).map { Self.fact($0, .routed) }
        let ids = try await store.seriesIDs(first)
        let second = try await pool.transaction { connection in
            #expect(try await store.fold(first, series: ids, on: connection).folded == 31)
            let finished = Flag()
            let second = Task {
                defer { finished.set() }
                return try await store.fold((30...60).map { Self.fact($0, .routed) })
            }
            while true {
                // Waiting for a lock the first holds (its kind's; without that, a rollup row's), or done.
                let waiting = try await pool.query("SELECT count(*) FROM pg_locks WHERE NOT granted")[0]
                    .decode(Int64.self, at: 0)
                if waiting > 0 || finished.isSet { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            return second
        }
        #expect(try await second.value.folded == 20)
        #expect(try await Self.requests(pool) == 54)

        // Pruning at or below an ack floor drops whole ledger rows (the old rows included) and says how many
        // sequences went.
        #expect(try await store.prune(belowOrAt: 5) == 5)
        #expect(try await pool.query("SELECT count(*) FROM analytics_applied WHERE kind = 'any'")[0]
                    .decode(Int64.self, at: 0) == 0)
        await pool.close()
        await postgres.stop()
    }
}
