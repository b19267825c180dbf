import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Messaging
import OrchestratorCore
import Schemas
import Storage
import Testing

@Suite("Upstream providers: retries, fallback, timeouts, stream cuts, circuit breaker", .serialized)
struct ProviderTests {
    func withUpstream(breakerFailures: Int = 100, maxAttempts: Int = 3, billing: Bool = false,
                      _ body: (Stack, FakeOpenAI) async throws -> Void) async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        defer { Task { await fake.stop() } }
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, apiKey: "upstream-key",
                                         timeout: .milliseconds(400))],
            fallbackChain: [ProviderTarget(provider: "local")],
            retryPolicy: RetryPolicy(maxAttempts: maxAttempts, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20)),
            breaker: .init(failureThreshold: breakerFailures, openDuration: .milliseconds(800)))
        try await Stack.with(orchestrator: orchestrator, billing: billing) { stack in try await body(stack, fake) }
        await fake.stop()
    }

    let askGPT: [String: Any] = ["model": "gpt-agent", "messages": [["role": "user", "content": "When are you open on Sunday?"]]]

    @Test("a healthy upstream answers, non-stream and stream, with its reported usage")
    func healthyUpstream() async throws {
        try await withUpstream { stack, fake in
            fake.set(.answer("Upstream says hello there."))
            let plain = try await stack.chat(askGPT)
            #expect(plain.status == 200)
            #expect(plain.content == "Upstream says hello there.")
            #expect((plain.json["usage"] as? [String: Any])?["total_tokens"] as? Int == 18)
            var streaming = askGPT
            streaming["stream"] = true
            let streamed = try await stack.chat(streaming)
            let text = sseEvents(streamed.text).dropLast().compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }
            #expect(text.joined() == "Upstream says hello there. ")
        }
    }

    @Test("upstream 500s are retried, then the fallback provider answers")
    func retriesThenFallback() async throws {
        try await withUpstream { stack, fake in
            fake.set(.status(500))
            let response = try await stack.chat(askGPT)
            #expect(response.status == 200)
            #expect(response.content?.contains("Tuesday to Sunday") == true)  // the local knowledge-base agent
            #expect(fake.requests == 3)
        }
    }

    @Test("two failed attempts, then the fallback answers: the attempts are on the event, the tenant is billed once, for the answer")
    func failedAttemptsAreRecordedNotBilled() async throws {
        try await withUpstream(maxAttempts: 2, billing: true) { stack, fake in
            fake.set(.status(500))
            let completions = try stack.admin.subscribe("evt.chat.completed.>")
            try await stack.admin.flush()
            let response = try await stack.chat(askGPT)
            #expect(response.status == 200)
            let requestID = try #require(response.headers["x-switchyard-request-id"])
            var completed: ChatCompleted?
            var iterator = completions.messages.makeAsyncIterator()
            while completed == nil, let message = await iterator.next() {
                let event = try ChatCompleted(protobuf: message.payload)
                if event.meta?.requestID == requestID { completed = event }
            }
            let attempts = try #require(completed).attempts
            #expect(attempts.map(\.outcome) == ["error", "error", "ok"])
            #expect(attempts.prefix(2).allSatisfy { $0.provider == "openai" && $0.httpStatus == 500 })
            #expect(attempts.last?.provider == "local")

            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            // Wait until billing has settled every usage event in the log (ledger lines + dead letters = USAGE's
            // messages) and this request's line is there: only then does "one line" mean "billed once".
            var lines: [PostgresRow] = []
            for _ in 0..<400 {
                lines = (try? await pool.query("SELECT provider FROM billing_ledger WHERE request_id = $1",
                                               [.text(requestID)])) ?? []
                let ledger = (try? await pool.query("SELECT count(*) FROM billing_ledger"))?.first
                    .flatMap { try? $0.decode(Int64.self, at: 0) } ?? 0
                let logged = try await stack.adminJS.streamState("USAGE").messages
                let deadLettered = (try? await stack.adminJS.streamState("DEADLETTER").messages) ?? 0
                if !lines.isEmpty && UInt64(ledger) + deadLettered >= logged { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(lines.count == 1)
            #expect(try lines.first?.decode(String.self, at: 0) == "local")
        }
    }

    @Test("200 streams aborted by the client at random points are all billed, for at least what was delivered")
    func abortedStreamsAreBilled() async throws {
        try await withUpstream(billing: true) { stack, fake in
            // Seven words, seven content chunks; the provider reports 7 completion tokens.
            fake.set(.answer("one two three four five six seven"))
            let outcomes = AbortOutcomes()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for index in stride(from: worker, to: 200, by: 8) {
                            // 0 = hang up on the response head, before the first token; 8 = after the last chunk.
                            let abortAfter = index % 9
                            var request = HTTPClientRequest(url: stack.baseURL + "/chat/completions")
                            request.method = .POST
                            request.headers.add(name: "authorization", value: "Bearer \(stack.apiKey)")
                            request.headers.add(name: "content-type", value: "application/json")
                            request.body = .bytes(ByteBuffer(bytes: Array(#"{"model":"gpt-agent","stream":true,"messages":[{"role":"user","content":"Count to seven"}]}"#.utf8)))
                            let response = try await stack.http.execute(request, timeout: .seconds(30))
                            let requestID = response.headers.first(name: "x-switchyard-request-id") ?? ""
                            var delivered = 0
                            var text = ""
                            if abortAfter > 0 {
                                for try await buffer in response.body {
                                    text += String(buffer: buffer)
                                    // Content chunks with text (the first chunk carries only the role).
                                    delivered = sseEvents(text).filter { event in
                                        let json = (try? JSONSerialization.jsonObject(with: Data(event.utf8))) as? [String: Any]
                                        let delta = (json?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
                                        return !((delta?["content"] as? String) ?? "").isEmpty
                                    }.count
                                    if delivered >= abortAfter { break }
                                }
                            }
                            // Leaving the loop (or never entering it) drops the body stream: the connection closes.
                            outcomes.list.withLock { $0.append((requestID, delivered)) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = outcomes.list.withLock { $0 }
            #expect(all.count == 200)
            #expect(Set(all.map(\.requestID)).count == 200)
            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            var billed: [String: Int64] = [:]
            for _ in 0..<800 {
                let rows = (try? await pool.query("SELECT request_id, completion_tokens FROM billing_ledger")) ?? []
                billed = [:]
                for row in rows { billed[try row.decode(String.self, at: 0)] = try row.decode(Int64.self, at: 1) }
                if all.allSatisfy({ billed[$0.requestID] != nil }) { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            let missing = all.filter { billed[$0.requestID] == nil }
            #expect(missing.isEmpty, "not billed: \(missing.count) of 200")
            let short = all.filter { (billed[$0.requestID] ?? 0) < Int64($0.delivered) }
            #expect(short.isEmpty, "billed less than delivered: \(short.prefix(3))")
            #expect(all.contains { $0.delivered == 0 } && all.contains { $0.delivered == 7 })
        }
    }

    @Test("a non-retriable upstream error falls back at once; garbage bodies too")
    func nonRetriable() async throws {
        try await withUpstream { stack, fake in
            fake.set(.status(401))
            #expect(try await stack.chat(askGPT).status == 200)
            #expect(fake.requests == 1)
            fake.set(.garbage)
            let response = try await stack.chat(askGPT)
            #expect(response.status == 200)
            #expect(response.content?.contains("Tuesday to Sunday") == true)
        }
    }

    @Test("an upstream that times out falls back within the deadline")
    func timeoutFallsBack() async throws {
        try await withUpstream { stack, fake in
            fake.set(.hang)
            let response = try await stack.chat(askGPT)
            #expect(response.status == 200)
            #expect(response.content?.contains("Tuesday to Sunday") == true)
        }
    }

    @Test("a stream cut before its first token falls back")
    func streamCutFallsBack() async throws {
        try await withUpstream { stack, fake in
            fake.set(.cutStream)
            var streaming = askGPT
            streaming["stream"] = true
            let response = try await stack.chat(streaming)
            #expect(response.status == 200)
            let events = sseEvents(response.text)
            #expect(events.last == "[DONE]")
            #expect(response.text.contains("Tuesday"))
        }
    }

    @Test("the circuit opens after repeated failures and closes after recovery")
    func circuitBreaker() async throws {
        try await withUpstream(breakerFailures: 3) { stack, fake in
            fake.set(.status(503))
            _ = try await stack.chat(askGPT)  // 3 attempts → 3 consecutive failures → open
            #expect(fake.requests == 3)
            let whileOpen = try await stack.chat(askGPT)
            #expect(whileOpen.status == 200)
            #expect(fake.requests == 3)  // skipped: the circuit is open
            fake.set(.answer("Recovered."))
            var content: String?
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(100))
                content = try await stack.chat(askGPT).content
                if content == "Recovered." { break }
            }
            #expect(content == "Recovered.")  // half-open probe succeeded → closed
        }
    }
}

/// What each aborted stream of `abortedStreamsAreBilled` delivered, shared by its client tasks.
final class AbortOutcomes: Sendable {
    let list = Mutex<[(requestID: String, delivered: Int)]>([])
}
