import Contracts
import Foundation
import GatewayCore
import Messaging
import Schemas
import Synchronization
import Testing
import TestKit

@Suite("Replicas killed under load", .serialized)
struct ReplicaKillTests {
    struct Outcome: Sendable {
        var status: Int
        var requestID: String?
        var content: String?
        var failure: String?
    }

    final class Load: Sendable {
        let issued = Mutex(0)
        let outcomes = Mutex<[Outcome]>([])
    }

    @Test("one of two routers and one of two orchestrators SIGKILLed under load: every request answered, usage once each")
    func killOneRouterAndOneOrchestratorUnderLoad() async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        fake.set(.answer("Here you go."))
        // The deadline (30 s) is longer than the router's AckWait (10 s) and the orchestrators' (2 s here), so
        // every message the killed replicas held is redelivered to the survivors in time: every request must be
        // answered, not merely failed.
        try await Stack.with(gateway: GatewayConfiguration(requestTimeout: .seconds(30)), inProcessOrchestrator: false,
                             inProcessRouter: false) { stack in
            func environment(_ instance: String) -> [String: String] {
                var environment = Stack.environment(stack.nats, stack.postgres, instance: instance)
                environment["SWITCHYARD_OPENAI_BASE_URL"] = fake.baseURL
                environment["SWITCHYARD_TASK_ACK_WAIT_MS"] = "2000"
                environment["SWITCHYARD_LOG_LEVEL"] = "error"
                return environment
            }
            let routerBinary = try Stack.binary("router")
            let orchestratorBinary = try Stack.binary("orchestrator")
            let routers = try ["router-a", "router-b"].map {
                try TestProcess(executable: routerBinary, environment: environment($0))
            }
            let orchestrators = try ["orch-a", "orch-b"].map {
                try TestProcess(executable: orchestratorBinary, environment: environment($0))
            }
            defer { for process in routers + orchestrators { process.terminate(signal: SIGKILL) } }
            try await stack.waitUntilReady()

            let total = 240
            let killAfter = 60
            let load = Load()
            let killed = (router: routers[0], orchestrator: orchestrators[0])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<16 {
                    group.addTask {
                        while load.issued.withLock({ count -> Bool in count += 1; return count <= total }) {
                            do {
                                let response = try await stack.chat(["model": "gpt-agent", "messages": [
                                    ["role": "user", "content": "Tell me something"]]])
                                load.outcomes.withLock {
                                    $0.append(Outcome(status: response.status,
                                                      requestID: response.headers["x-switchyard-request-id"],
                                                      content: response.content, failure: response.errorCode))
                                }
                            } catch {
                                load.outcomes.withLock { $0.append(Outcome(status: 0, failure: "\(error)")) }
                            }
                        }
                    }
                }
                group.addTask {
                    while load.outcomes.withLock({ $0.count }) < killAfter { try await Task.sleep(for: .milliseconds(2)) }
                    killed.router.terminate(signal: SIGKILL)
                    killed.orchestrator.terminate(signal: SIGKILL)
                    _ = await killed.router.waitUntilExit()
                    _ = await killed.orchestrator.waitUntilExit()
                }
                try await group.waitForAll()
            }
            #expect(routers[0].isRunning == false)
            #expect(orchestrators[0].isRunning == false)
            let all = load.outcomes.withLock { $0 }
            #expect(all.count == total)
            let failed = all.filter { $0.status != 200 || $0.content != "Here you go." }
            #expect(failed.isEmpty, "not answered: \(failed.prefix(5))")
            // Exactly one usage record per answered request, whatever was redelivered after the kills.
            let usage = try await usageCounts(stack)
            let answered = all.compactMap(\.requestID)
            #expect(Set(answered).count == total)
            #expect(answered.filter { usage[$0] != 1 }.isEmpty,
                    "usage records: \(answered.filter { usage[$0] != 1 }.prefix(5).map { ($0, usage[$0] ?? 0) })")
            #expect(usage.values.allSatisfy { $0 == 1 })
            for process in routers + orchestrators where process.isRunning {
                _ = await process.terminateAndWait(grace: .seconds(3))
            }
        }
        await fake.stop()
    }

    /// UsageRecorded messages in the USAGE stream, counted per request id.
    func usageCounts(_ stack: Stack) async throws -> [String: Int] {
        try await stack.adminJS.ensureConsumer(stream: StreamNames.usage,
                                               ConsumerSpec(durable: "test-usage-count", ackWait: .seconds(5)))
        let consumer = try await PullConsumer.bind(jetStream: stack.adminJS, stream: StreamNames.usage,
                                                   durable: "test-usage-count")
        defer { consumer.stop() }
        var counts: [String: Int] = [:]
        while true {
            guard let message = try await consumer.next(timeout: .milliseconds(500)) else { break }
            if let id = (try? UsageRecorded(protobuf: message.delivery.payload))?.meta?.requestID {
                counts[id, default: 0] += 1
            }
            try message.ack()
        }
        return counts
    }
}
