import Foundation
import Logging
import Messaging
import Synchronization
import TestKit
import Testing

/// Ownership of nats.c handles under churn: KV watches and pull consumers started and stopped thousands of times
/// while messages flow, parents dropped while children live on. CI runs this suite under AddressSanitizer too
/// (`make test-sanitize`), where a use-after-free or double destroy aborts the run.
@Suite("nats.c handle ownership under churn")
struct HandleChurnTests {
    static let watchRounds = 2_000
    static let pullRounds = 2_000

    @Test("KV watches started and stopped 2,000 times while values change: every watch ends and is destroyed")
    func kvWatchChurn() async throws {
        try await withHarness { h in
            // The bucket outlives the references to its JetStream context and connection: it keeps them alive.
            let bucket = try await Self.bucketWithoutOtherReferences(h.server)
            let writer = try await h.jetStream.keyValue(KVBucketSpec(name: "churn"))
            try await writer.put("k0", bytes("0"))
            let stop = Atomic<Bool>(false)
            let writes = Task {
                var count = 0
                while !stop.load(ordering: .relaxed) && count < 1_000_000 {
                    count += 1
                    try await writer.put("k\(count % 16)", bytes("\(count)"))
                }
                return count
            }
            var initialMarkers = 0
            var liveChanges = 0
            for round in 0..<Self.watchRounds {
                let events = try await bucket.watchAll()
                switch round % 4 {
                case 0:  // read the initial values, then drop the stream
                    initialMarkers += try await Self.readUntilInitialValuesDone(events)
                case 1:  // read one live change too
                    var iterator = events.makeAsyncIterator()
                    while let event = try await iterator.next() {
                        if case .initialValuesDone = event { initialMarkers += 1; break }
                    }
                    if case .entry(let entry)? = try await iterator.next() {
                        #expect(entry.key.hasPrefix("k"))
                        liveChanges += 1
                    }
                case 2:  // never iterated
                    break
                default:  // cancel the reading task while it waits
                    let reader = Task { try await Self.readUntilInitialValuesDone(events, thenWait: true) }
                    reader.cancel()
                    _ = try? await reader.value
                }
            }
            stop.store(true, ordering: .relaxed)
            let written = try await writes.value
            #expect(written > 0)
            #expect(initialMarkers == Self.watchRounds / 2, "every fully read watch delivered its initial values")
            #expect(liveChanges > 0)
            // Every watcher is destroyed once its thread and its stream let go of it: wait for that fact.
            #expect(await Self.eventually { bucket.jetStream.handleCounts.kvWatchers == 0 },
                    "watchers left: \(bucket.jetStream.handleCounts.kvWatchers)")
            // The bucket still works afterwards.
            let final = try await bucket.watchAll()
            #expect(try await Self.readUntilInitialValuesDone(final) == 1)
        }
    }

    @Test("pull consumers bound and stopped 2,000 times while messages flow: nothing lost, nothing leaked")
    func pullConsumerChurn() async throws {
        try await withHarness { h in
            let (connection, jetStream) = try await Harness.connect(h.server, name: "churn")
            defer { connection.close() }
            try await jetStream.ensureStream(StreamSpec(name: "CHURN", subjects: ["churn.*"], retention: .workQueue))
            try await jetStream.ensureConsumer(stream: "CHURN", ConsumerSpec(
                durable: "churn", ackWait: .seconds(30), maxDeliver: 10_000, backoff: [.milliseconds(1)]))
            let total = 3_000
            let publisher = Task {
                for index in 0..<total {
                    try await h.jetStream.publish(OutboundMessage(subject: "churn.x", payload: bytes("\(index)"),
                                                                  messageID: "m\(index)"))
                }
            }
            var acked = Set<Int>()
            var dropped = 0
            // A message kept across rounds: it outlives the consumer that fetched it (and keeps its subscription).
            var held: JetStreamMessage?
            for round in 0..<Self.pullRounds {
                let consumer = try await PullConsumer.bind(jetStream: jetStream, stream: "CHURN", durable: "churn")
                let fetched = try await consumer.next(timeout: .milliseconds(20), batch: 4)
                switch consume fetched {
                case .none:
                    break
                case .some(let message):
                    let index = try #require(Int(text(message.delivery.payload)))
                    switch round % 5 {
                    case 0, 1:
                        try message.ack()
                        acked.insert(index)
                    case 2:
                        try message.nak()
                    case 3:
                        _ = consume message  // dropped unsettled: nak'ed by its deinit
                        dropped += 1
                    default:
                        if let previous = held.take() {
                            acked.insert(try #require(Int(text(previous.delivery.payload))))
                            try previous.ack()
                        }
                        held = consume message
                    }
                }
                consumer.stop()  // buffered messages are nak'ed
            }
            if let previous = held.take() {
                acked.insert(try #require(Int(text(previous.delivery.payload))))
                try previous.ack()
            }
            try await publisher.value
            // Whatever the churn left (nak'ed, dropped, buffered) is still there: drain it.
            let drain = try await PullConsumer.bind(jetStream: jetStream, stream: "CHURN", durable: "churn")
            let deadline = ContinuousClock.now + .seconds(60)
            while acked.count < total && ContinuousClock.now < deadline {
                let fetched = try await drain.next(timeout: .milliseconds(500), batch: 256)
                switch consume fetched {
                case .none: continue
                case .some(let message):
                    acked.insert(try #require(Int(text(message.delivery.payload))))
                    try message.ack()
                }
            }
            drain.stop()
            #expect(acked == Set(0..<total), "missing: \(Set(0..<total).subtracting(acked).sorted().prefix(10))")
            #expect(jetStream.handleCounts.droppedUnsettledMessages == dropped)
            #expect(dropped > 0)
            // Every subscription is destroyed once its consumer and its messages are gone: wait for that fact.
            #expect(await Self.eventually { jetStream.handleCounts.pullSubscriptions == 1 }, "only the drain consumer is left")
        }
    }

    // MARK: helpers

    /// A bucket on a connection nobody else references.
    static func bucketWithoutOtherReferences(_ server: NATSServer) async throws -> KeyValueBucket {
        let (_, jetStream) = try await Harness.connect(server, name: "kv-churn")
        return try await jetStream.keyValue(KVBucketSpec(name: "churn"))
    }

    /// Reads until `.initialValuesDone` (1) or the end of the stream (0); optionally keeps waiting afterwards.
    static func readUntilInitialValuesDone(_ events: AsyncThrowingStream<KVWatchEvent, any Error>,
                                           thenWait: Bool = false) async throws -> Int {
        var marker = 0
        for try await event in events {
            switch event {
            case .initialValuesDone:
                marker = 1
                if !thenWait { return marker }
            case .entry(let entry):
                #expect(entry.key.hasPrefix("k"))
            }
        }
        return marker
    }

    /// Polls `condition` until it holds (true) or 30 s pass (false).
    static func eventually(_ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}
