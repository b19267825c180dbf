import Foundation
import Messaging
import OrchestratorCore
import Schemas
import Testing

@Suite("Upstream providers: retries, fallback, timeouts, stream cuts, circuit breaker", .serialized)
struct ProviderTests {
    func withUpstream(breakerFailures: Int = 100, _ body: (Stack, FakeOpenAI) async throws -> Void) async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        defer { Task { await fake.stop() } }
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, apiKey: "upstream-key",
                                         timeout: .milliseconds(400))],
            fallbackChain: [ProviderTarget(provider: "local")],
            retryPolicy: RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20)),
            breaker: .init(failureThreshold: breakerFailures, openDuration: .milliseconds(800)))
        try await Stack.with(orchestrator: orchestrator) { stack in try await body(stack, fake) }
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
