import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import Testing

/// A thread-safe boolean for tests.
final class Flag: Sendable {
    private let storage: Mutex<Bool>
    init(_ value: Bool) { storage = Mutex(value) }
    var value: Bool {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}

final class ProbeBox: Sendable {
    let readyDuringShutdown = Mutex<Bool?>(nil)
}

@Suite("Lifecycle")
struct LifecycleTests {
    @Test func drainCoordinatorWithdrawsReadinessBeforeOtherServicesStop() async throws {
        let configuration = try ServiceConfiguration(environment: ["SWITCHYARD_DRAIN_SECONDS": "5"], service: "test")
        let health = HealthRegistry()
        let logger = Logger(label: "lifecycle-test") { _ in SwiftLogNoOpLogHandler() }
        let (readyStream, readyContinuation) = AsyncStream<Void>.makeStream()
        let box = ProbeBox()

        /// Waits for readiness, reports it, and records on graceful shutdown whether readiness was already
        /// withdrawn (it must be: the drain coordinator is last in the list, so it shuts down first).
        struct Probe: Service {
            let health: HealthRegistry
            let sawReady: AsyncStream<Void>.Continuation
            let box: ProbeBox
            func run() async throws {
                while !health.isReady {
                    try await Task.sleep(for: .milliseconds(1))
                }
                sawReady.yield()
                try? await gracefulShutdown()
                box.readyDuringShutdown.withLock { $0 = health.isReady }
            }
        }

        let group = ServiceRunner.makeServiceGroup(
            services: [Probe(health: health, sawReady: readyContinuation, box: box)],
            configuration: configuration, health: health, logger: logger, signals: false)

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = readyStream.makeAsyncIterator()
            _ = await iterator.next()
            #expect(health.isReady)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(box.readyDuringShutdown.withLock { $0 } == false)
        #expect(!health.isReady)
    }
}
