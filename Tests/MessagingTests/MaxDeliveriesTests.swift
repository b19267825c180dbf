import Foundation
import Messaging
import Synchronization
import TestKit
import Testing

/// docs/adr/0004, known gap 1: a handler that kills its process on every delivery.
@Suite("Messages the server gives up on are dead-lettered")
struct MaxDeliveriesTests {
    @Test("a message whose handler kills the process on every delivery ends in the dead-letter stream after MaxDeliver; the ones behind it are processed")
    func crashLoopIsDeadLettered() async throws {
        let binary = try builtProduct("crash-consumer")
        try await withHarness { h in
            try await h.jetStream.ensureStream(StreamSpec(name: "WORK", subjects: ["work.*"]))
            try await h.jetStream.ensureStream(StreamSpec(name: "DEADLETTER", subjects: [DeadLetter.allSubjects]))
            let done = try h.connection.subscribe("done.>")
            let parked = try h.connection.subscribe(DeadLetter.subject(stream: "WORK", consumer: "crashy"))
            try await h.connection.flush()
            // The poison first, then three good messages behind it (the consumer holds one message at a time).
            for payload in ["poison", "a", "b", "c"] {
                try await h.jetStream.publish(OutboundMessage(subject: "work.x", payload: bytes(payload)))
            }
            // Keep one crash-consumer running, restarting it whenever it dies, like a supervisor would.
            let restarts = Mutex(0)
            let supervisor = Task {
                while !Task.isCancelled {
                    let process = try TestProcess(executable: binary, environment: [
                        "CRASH_NATS_URL": h.server.url, "CRASH_STREAM": "WORK", "CRASH_DURABLE": "crashy",
                    ])
                    let status = await withTaskCancellationHandler {
                        await process.waitUntilExit()
                    } onCancel: {
                        process.terminate(signal: SIGKILL)
                    }
                    if status == 0 || Task.isCancelled { break }
                    restarts.withLock { $0 += 1 }
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            defer { supervisor.cancel() }

            // Facts awaited (with a generous bound so a broken build fails instead of hanging).
            let watchdog = Task {
                try await Task.sleep(for: .seconds(120))
                done.unsubscribe()
                parked.unsubscribe()
            }
            defer { watchdog.cancel() }
            var processed: Set<String> = []
            var doneIterator = done.messages.makeAsyncIterator()
            while processed.count < 3, let message = await doneIterator.next() {
                processed.insert(text(message.payload))
            }
            #expect(processed == ["a", "b", "c"])
            var parkedIterator = parked.messages.makeAsyncIterator()
            let letter = try #require(await parkedIterator.next(), "no dead letter within 120 s")
            #expect(text(letter.payload) == "poison")
            #expect(letter.headers[DeadLetter.sequenceHeader] == "1")
            #expect(letter.headers[DeadLetter.deliveriesHeader] == "3")
            #expect(letter.headers[DeadLetter.reasonHeader]?.contains("no outcome after 3 deliveries") == true)
            #expect(restarts.withLock { $0 } >= 3, "the poison killed the consumer on each of its 3 deliveries")
            supervisor.cancel()
            _ = await supervisor.result
        }
    }
}
