import Contracts
import Foundation
import GatewayCore
import Messaging
import OrchestratorCore
import Schemas
import Storage
import Synchronization
import Testing
import TestKit

@Suite("Tenancy isolation and crash recovery", .serialized)
struct ResilienceTests {
    @Test("tenant B's key never sees tenant A's conversation, even with the same conversation id")
    func tenantIsolation() async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, timeout: .seconds(2))],
            fallbackChain: [ProviderTarget(provider: "local")])
        try await Stack.with(orchestrator: orchestrator) { stack in
            let otherKey = try await stack.addTenant("rival-diner")
            let conversation = ["x-switchyard-conversation-id": "shared-conv-1"]
            let secret = "my secret table code is 4711"
            let a = try await stack.chat(["model": "gpt-agent", "messages": [["role": "user", "content": secret]]],
                                         headers: stack.withKey(stack.apiKey).merging(conversation) { $1 })
            #expect(a.status == 200)
            fake.resetCaptured()
            var b = 0
            for _ in 0..<50 {  // the new tenant reaches the mirrors within moments
                b = try await stack.chat(["model": "gpt-agent", "messages": [["role": "user", "content": "what did I say?"]]],
                                         headers: stack.withKey(otherKey).merging(conversation) { $1 }).status
                if b == 200 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(b == 200)
            let sent = fake.capturedBodies.joined(separator: "\n")
            #expect(sent.contains("what did I say?"))
            #expect(!sent.contains("4711"))  // A's history was not loaded for B
            // …while A's own next request does carry its history.
            fake.resetCaptured()
            _ = try await stack.chat(["model": "gpt-agent", "messages": [["role": "user", "content": "and again?"]]],
                                     headers: stack.withKey(stack.apiKey).merging(conversation) { $1 })
            #expect(fake.capturedBodies.joined().contains("4711"))
        }
        await fake.stop()
    }

    @Test("PostgreSQL down: no answer from an empty knowledge base but a clear 503, not billed; answers again once it is back")
    func knowledgeBaseOutage() async throws {
        try await Stack.with(billing: true) { stack in
            let key = try await stack.addTenant("kb-outage")  // nothing cached for it yet
            let body = Array(#"{"model":"host","messages":[{"role":"user","content":"When are you open?"}]}"#.utf8)
            try await stack.postgres.pause()
            let failed = try await stack.send(body: body, headers: stack.withKey(key))
            #expect(failed.status == 503)
            #expect(failed.errorCode == "service_unavailable")
            let failedID = try #require(failed.headers["x-switchyard-request-id"])
            try await stack.postgres.resume()
            var answered = 0
            for _ in 0..<200 where answered == 0 {
                if try await stack.send(body: body, headers: stack.withKey(key)).status == 200 { answered += 1 }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(answered == 1, "answers again once PostgreSQL is back")
            // Billing has settled every usage event in the log, and none is the failed request's.
            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            var settled = false
            for _ in 0..<400 where !settled {
                let ledger = (try? await pool.query("SELECT count(*) FROM billing_ledger"))?.first
                    .flatMap { try? $0.decode(Int64.self, at: 0) } ?? -1
                let logged = try await stack.adminJS.streamState("USAGE").messages
                settled = ledger >= 0 && UInt64(ledger) >= logged
                if !settled { try await Task.sleep(for: .milliseconds(25)) }
            }
            #expect(settled)
            let billed = try await pool.query("SELECT count(*) FROM billing_ledger WHERE request_id = $1", [.text(failedID)])
            #expect(try billed.first?.decode(Int64.self, at: 0) == 0)
        }
    }

    @Test("a request whose publish is not acknowledged for longer than the publish grace (nats-server frozen 6 s) is answered once, not refused and billed anyway")
    func unacknowledgedPublishIsNotRefused() async throws {
        // A 30 s deadline: the answer only has to come after the thaw, however slow the machine is.
        try await Stack.with(gateway: GatewayConfiguration(requestTimeout: .seconds(30)), billing: true) { stack in
            let body = Array(#"{"model":"host","messages":[{"role":"user","content":"When are you open?"}]}"#.utf8)
            stack.nats.freeze()
            let thawed = Task {
                try await Task.sleep(for: .seconds(6))
                stack.nats.thaw()
            }
            let response = try await stack.send(body: body)
            try await thawed.value
            #expect(response.status == 200, "\(response.status): \(response.text.prefix(200))")
            let id = try #require(response.headers["x-switchyard-request-id"])
            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            var billed: Int64 = 0
            for _ in 0..<400 where billed == 0 {
                billed = try await pool.query("SELECT count(*) FROM billing_ledger WHERE request_id = $1", [.text(id)])
                    .first?.decode(Int64.self, at: 0) ?? 0
                if billed == 0 { try await Task.sleep(for: .milliseconds(25)) }
            }
            #expect(billed == 1, "billed once, as answered")
        }
    }

    @Test("nats-server restarted under load: every request is answered 200")
    func natsRestartIsInvisibleToClients() async throws {
        try await Stack.with { stack in
            let tally = RestartTally()
            let body = Array(#"{"model":"host","messages":[{"role":"user","content":"When are you open?"}]}"#.utf8)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        // The clients keep asking until 100 answers came after the restart.
                        while tally.state.withLock({ !$0.restarted || $0.afterRestart < 100 }) {
                            let result = try? await stack.send(body: body)
                            let status = result?.status ?? 0
                            tally.state.withLock {
                                $0.statuses[status, default: 0] += 1
                                if status != 200 {
                                    $0.failedIDs.append(result?.headers["x-switchyard-request-id"] ?? "?")
                                    $0.failureBodies.append(String((result?.text ?? "no answer").prefix(300)))
                                }
                                if $0.restarted { $0.afterRestart += 1 }
                            }
                        }
                    }
                }
                group.addTask {
                    while tally.state.withLock({ $0.statuses.values.reduce(0, +) }) < 40 {
                        try await Task.sleep(for: .milliseconds(10))
                    }
                    let started = EventClock.nowUnixNanos()
                    try await stack.nats.restart()
                    let ended = EventClock.nowUnixNanos()
                    tally.state.withLock {
                        $0.restarted = true
                        $0.restart = "\(started)…\(ended) (\((ended - started) / 1_000_000) ms)"
                    }
                }
                try await group.waitForAll()
            }
            let (statuses, failedIDs, restart, bodies) = tally.state.withLock {
                ($0.statuses, $0.failedIDs, $0.restart, $0.failureBodies)
            }
            let trail = try await Self.eventTrail(stack, requestIDs: Set(failedIDs))
            #expect(statuses.keys.sorted() == [200], """
                statuses \(statuses); nats-server down and back \(restart); answers \(bodies); \
                what the log holds of the failed requests: \
                \(trail)
                """)
        }
    }

    @Test("an orchestrator killed mid-request: the task is redelivered and answered, usage recorded exactly once")
    func orchestratorKilledMidRequest() async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        try await Stack.with(inProcessOrchestrator: false) { stack in
            let executable = try Stack.binary("orchestrator")
            var environment = Stack.environment(stack.nats, stack.postgres, instance: "orch-a")
            environment["SWITCHYARD_OPENAI_BASE_URL"] = fake.baseURL
            environment["SWITCHYARD_PROVIDER_TIMEOUT_MS"] = "20000"
            environment["SWITCHYARD_TASK_ACK_WAIT_MS"] = "1500"
            environment["SWITCHYARD_LOG_LEVEL"] = "error"
            fake.set(.hang)
            let first = try TestProcess(executable: executable, environment: environment)

            async let answer = stack.chat(["model": "gpt-agent", "messages": [
                ["role": "user", "content": "Tell me something"]]])
            // Wait until orchestrator A is inside the provider call, then kill it hard.
            for _ in 0..<500 where fake.requests == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(fake.requests >= 1)
            first.terminate(signal: SIGKILL)
            _ = await first.waitUntilExit()
            fake.set(.answer("Answered after the crash."))
            environment["SWITCHYARD_INSTANCE_ID"] = "orch-b"
            let second = try TestProcess(executable: executable, environment: environment)
            defer { second.terminate(signal: SIGKILL) }

            let response = try await answer
            #expect(response.status == 200)
            #expect(response.content == "Answered after the crash.")
            let requestID = try #require(response.headers["x-switchyard-request-id"])

            // Exactly one usage record for the request in the USAGE stream, even across the crash.
            let stored = try await usageRecords(stack, requestID: requestID)
            #expect(stored == 1)
            _ = await second.terminateAndWait(grace: .seconds(3))
        }
        await fake.stop()
    }

    /// Counts UsageRecorded messages for `requestID` stored in the USAGE stream.
    func usageRecords(_ stack: Stack, requestID: String) async throws -> Int {
        try await stack.adminJS.ensureConsumer(stream: StreamNames.usage,
                                               ConsumerSpec(durable: "test-usage-audit", ackWait: .seconds(5)))
        let consumer = try await PullConsumer.bind(jetStream: stack.adminJS, stream: StreamNames.usage, durable: "test-usage-audit")
        var count = 0
        while true {
            guard let message = try await consumer.next(timeout: .milliseconds(500)) else { break }
            if (try? UsageRecorded(protobuf: message.delivery.payload))?.meta?.requestID == requestID { count += 1 }
            try message.ack()
        }
        return count
    }
}

/// Statuses seen by the clients of the nats-server restart test.
extension ResilienceTests {
    /// For a failure report: the event kinds the log holds for each of `requestIDs`, with their hop stamps.
    static func eventTrail(_ stack: Stack, requestIDs: Set<String>) async throws -> [String: [String]] {
        guard !requestIDs.isEmpty else { return [:] }
        let reader = "test-trail"
        try await stack.adminJS.ensureConsumer(stream: StreamNames.events, ConsumerSpec(
            durable: reader, filterSubject: "evt.>", maxAckPending: 100_000))
        let consumer = try await PullConsumer.bind(jetStream: stack.adminJS, stream: StreamNames.events, durable: reader)
        defer { consumer.stop() }
        var trail: [String: [String]] = [:]
        while let message = try await consumer.next(timeout: .seconds(1), batch: 256) {
            let delivery = message.delivery
            try message.ack()
            let kind = delivery.subject.split(separator: ".").dropFirst().dropLast().joined(separator: ".")
            var meta: EventMeta?
            var hops: [HopStamp] = []
            switch kind {
            case "chat.requested": meta = try? ChatRequested(protobuf: delivery.payload).meta
            case "chat.routed":
                let routed = try? ChatRouted(protobuf: delivery.payload)
                (meta, hops) = (routed?.meta, routed?.hops ?? [])
            case "chat.completed":
                let completed = try? ChatCompleted(protobuf: delivery.payload)
                (meta, hops) = (completed?.meta, completed?.hops ?? [])
            case "chat.failed":
                let failed = try? ChatFailed(protobuf: delivery.payload)
                (meta, hops) = (failed?.meta, failed?.hops ?? [])
            default: continue
            }
            guard let meta, requestIDs.contains(meta.requestID) else { continue }
            trail[meta.requestID, default: []].append(
                "\(kind) seq \(delivery.streamSequence) delivered \(delivery.deliveryCount)× stored \(delivery.storedAtUnixNanos) "
                    + hops.map { "\($0.hop)@\($0.unixNanos)" }.joined(separator: " "))
        }
        return trail
    }
}

final class RestartTally: Sendable {
    struct Tally {
        var statuses: [Int: Int] = [:]
        var restarted = false
        var afterRestart = 0
        var failedIDs: [String] = []
        var failureBodies: [String] = []
        var restart = ""
    }
    let state = Mutex(Tally())
}
