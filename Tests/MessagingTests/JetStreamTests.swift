import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Synchronization
import TestKit
import Testing

@Suite("JetStream against a real nats-server")
struct JetStreamTests {
    static let stream = StreamSpec(name: "ORDERS", subjects: ["orders.*"], retention: .workQueue)

    @Test("the same Nats-Msg-Id published twice is stored once")
    func deduplication() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            let message = OutboundMessage(subject: "orders.acme", payload: bytes("one"), messageID: "acme:evt-1")
            let first = try await h.jetStream.publish(message)
            let second = try await h.jetStream.publish(message)
            #expect(first.duplicate == false)
            #expect(second.duplicate == true)
            #expect(second.sequence == first.sequence)
            let other = try await h.jetStream.publish(
                OutboundMessage(subject: "orders.acme", payload: bytes("two"), messageID: "acme:evt-2"))
            #expect(other.duplicate == false)
            #expect(try await h.jetStream.streamState("ORDERS").messages == 2)
        }
    }

    @Test("a non-owner creates a missing stream from its spec but never changes an existing one")
    func ensureStreamExistsNeverUpdates() async throws {
        try await withHarness { h in
            let owned = StreamSpec(name: "OWNED", subjects: ["owned.a"])
            // Missing: created from the spec, so publishing works whichever service starts first.
            #expect(try await h.jetStream.ensureStreamExists(owned) == true)
            try await h.jetStream.publish(OutboundMessage(subject: "owned.a", payload: bytes("1")))
            // Existing: a different spec (another version of a non-owner) changes nothing.
            var other = owned
            other.subjects = ["owned.b"]
            #expect(try await h.jetStream.ensureStreamExists(other) == false)
            await #expect(throws: NATSError.self) {
                try await h.jetStream.publish(OutboundMessage(subject: "owned.b", payload: bytes("2")))
            }
            try await h.jetStream.publish(OutboundMessage(subject: "owned.a", payload: bytes("3")))
            // The owner updates it.
            try await h.jetStream.ensureStream(other)
            try await h.jetStream.publish(OutboundMessage(subject: "owned.b", payload: bytes("4")))
            #expect(try await h.jetStream.streamState("OWNED").messages == 3)
        }
    }

    @Test("the context's replica count replaces the specs': a single nats-server refuses three replicas, for streams and buckets")
    func replicaOverride() async throws {
        try await withHarness { h in
            let three = try JetStream(connection: h.connection, replicas: 3)
            await #expect(throws: NATSError.self) { try await three.ensureStream(StreamSpec(name: "R3", subjects: ["r3.*"])) }
            await #expect(throws: NATSError.self) { try await three.ensureStreamExists(StreamSpec(name: "R3", subjects: ["r3.*"])) }
            await #expect(throws: NATSError.self) { _ = try await three.keyValue(KVBucketSpec(name: "r3")) }
            let one = try JetStream(connection: h.connection, replicas: 1)
            try await one.ensureStream(StreamSpec(name: "R3", subjects: ["r3.*"], replicas: 3))
            _ = try await one.keyValue(KVBucketSpec(name: "r3", replicas: 3))
            try await one.publish(OutboundMessage(subject: "r3.a", payload: bytes("1")))
            #expect(try await one.streamState("R3").messages == 1)
        }
    }

    @Test("a publish that finds no stream yet (JetStream right after a restart) is retried until one captures it")
    func publishRidesOutNoResponders() async throws {
        try await withHarness { h in
            let retriesBefore = JetStream.publishRetries
            let finished = Atomic<Bool>(false)
            let publish = Task {
                defer { finished.store(true, ordering: .relaxed) }
                return try await h.jetStream.publish(OutboundMessage(subject: "late.x", payload: bytes("hello"),
                                                                     messageID: "late-1"))
            }
            // A first attempt found no stream and is being retried (or the publish gave up); only now does the
            // stream appear.
            while JetStream.publishRetries == retriesBefore && !finished.load(ordering: .relaxed) {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await h.jetStream.ensureStream(StreamSpec(name: "LATE", subjects: ["late.>"]))
            let ack = try await publish.value
            #expect(ack.stream == "LATE")
            #expect(try await h.jetStream.streamState("LATE").messages == 1)
        }
    }

    @Test("provisioning is idempotent and publishing to an unknown subject fails clearly")
    func provisioning() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            try await h.jetStream.ensureStream(Self.stream)
            var changed = Self.stream
            changed.maxAge = .seconds(3600)
            try await h.jetStream.ensureStream(changed)
            // An invalid change (duplicate window longer than max age) is refused with the server's code.
            var invalid = Self.stream
            invalid.maxAge = .seconds(10)
            do {
                try await h.jetStream.ensureStream(invalid)
                Issue.record("an invalid stream config must be refused")
            } catch let error as NATSError {
                #expect(error.jetStreamCode != nil)
                #expect(!error.isRetriable)
            }
            let consumer = ConsumerSpec(durable: "workers", ackWait: .seconds(5), maxDeliver: 3,
                                        backoff: [.milliseconds(100)])
            try await h.jetStream.ensureConsumer(stream: "ORDERS", consumer)
            try await h.jetStream.ensureConsumer(stream: "ORDERS", consumer)
            await #expect(throws: NATSError.self) {
                try await h.jetStream.publish(OutboundMessage(subject: "nobody.listens", payload: []))
            }
            #expect(throws: NATSError.self) {
                try h.connection.publish("bad subject", payload: [])
            }
            #expect(throws: NATSError.self) {
                try h.connection.publish("orders.*", payload: [])
            }
        }
    }

    @Test("pipelined publish stores every message once, in order")
    func pipelined() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            let messages = (0..<500).map {
                OutboundMessage(subject: "orders.acme", payload: bytes("m\($0)"), messageID: "acme:\($0)")
            }
            let acks = try await h.jetStream.publishPipelined(messages, maxInFlight: 64)
            #expect(acks.count == 500)
            #expect(Set(acks.map(\.sequence)).count == 500)
            #expect(try await h.jetStream.streamState("ORDERS").messages == 500)
            // Republishing the whole batch is a no-op thanks to Nats-Msg-Id.
            let again = try await h.jetStream.publishPipelined(messages, maxInFlight: 64)
            let allDuplicates = again.allSatisfy { $0.duplicate }
            #expect(allDuplicates)
            #expect(try await h.jetStream.streamState("ORDERS").messages == 500)
        }
    }

    @Test("a nak'd message comes back after its delay, with a higher delivery count")
    func nakWithDelay() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            try await h.jetStream.ensureConsumer(
                stream: "ORDERS", ConsumerSpec(durable: "nakker", ackWait: .seconds(30), maxDeliver: 5, backoff: []))
            try await h.jetStream.publish(OutboundMessage(subject: "orders.acme", payload: bytes("retry me")))
            let consumer = try await PullConsumer.bind(jetStream: h.jetStream, stream: "ORDERS", durable: "nakker")
            let first = try required(try await consumer.next(timeout: .seconds(5)))
            #expect(first.delivery.deliveryCount == 1)
            #expect(text(first.delivery.payload) == "retry me")
            let firstSequence = first.delivery.streamSequence
            try first.nak(delay: .milliseconds(1500))
            // Not redelivered before its delay has passed…
            #expect(isNone(try await consumer.next(timeout: .milliseconds(300))))
            // …but redelivered after it.
            let second = try required(try await consumer.next(timeout: .seconds(10)))
            #expect(second.delivery.deliveryCount == 2)
            #expect(second.delivery.streamSequence == firstSequence)
            try second.ack()
            #expect(isNone(try await consumer.next(timeout: .milliseconds(300))))
        }
    }

    @Test("a message fetched but never acked is redelivered to another member of the same durable")
    func redeliveryToAnotherConsumer() async throws {
        try await NATSServer.withServer { server in
            let (setup, setupJS) = try await Harness.connect(server, name: "setup")
            defer { setup.close() }
            try await setupJS.ensureStream(Self.stream)
            try await setupJS.ensureConsumer(
                stream: "ORDERS", ConsumerSpec(durable: "shared", ackWait: .seconds(1), maxDeliver: 5, backoff: []))
            try await setupJS.publish(OutboundMessage(subject: "orders.acme", payload: bytes("crashy")))

            // Replica A fetches the message and "crashes": its connection goes away without an ack.
            do {
                let (connA, jsA) = try await Harness.connect(server, name: "replica-a")
                let consumerA = try await PullConsumer.bind(jetStream: jsA, stream: "ORDERS", durable: "shared")
                let taken = try required(try await consumerA.next(timeout: .seconds(5)))
                #expect(taken.delivery.deliveryCount == 1)
                _ = consume taken
                connA.close()
            }

            // Replica B, on another connection, gets it after AckWait.
            let (connB, jsB) = try await Harness.connect(server, name: "replica-b")
            defer { connB.close() }
            let consumerB = try await PullConsumer.bind(jetStream: jsB, stream: "ORDERS", durable: "shared")
            let redelivered = try required(try await consumerB.next(timeout: .seconds(10)))
            #expect(text(redelivered.delivery.payload) == "crashy")
            #expect(redelivered.delivery.deliveryCount == 2)
            try redelivered.ack()
        }
    }

    @Test("a message that exhausts MaxDeliver is dead-lettered and does not block the ones behind it")
    func deadLetter() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            try await h.jetStream.ensureStream(StreamSpec(name: "DEADLETTER", subjects: [DeadLetter.allSubjects]))
            let spec = ConsumerSpec(durable: "processor", ackWait: .seconds(5), maxDeliver: 3,
                                    backoff: [.milliseconds(50), .milliseconds(50)])
            try await h.jetStream.ensureConsumer(stream: "ORDERS", spec)
            try await h.jetStream.publish(OutboundMessage(subject: "orders.acme", payload: bytes("poison"),
                                                          headers: ["traceparent": "keep-me"]))
            for index in 0..<20 {
                try await h.jetStream.publish(OutboundMessage(subject: "orders.acme", payload: bytes("ok-\(index)")))
            }
            try await h.jetStream.publish(OutboundMessage(subject: "orders.acme", payload: bytes("garbage")))

            let processed = Mutex<[String]>([])
            let attempts = Mutex<[String: Int]>([:])
            let service = JetStreamConsumerService(
                jetStream: h.jetStream, stream: "ORDERS", consumer: spec, batchSize: 8, logger: Harness.logger
            ) { delivery in
                let body = text(delivery.payload)
                attempts.withLock { $0[body, default: 0] += 1 }
                if body == "poison" { throw NATSError(.timeout, context: "simulated transient failure") }
                if body == "garbage" { throw PoisonMessage("cannot decode") }
                processed.withLock { $0.append(body) }
            }
            let dlq = try h.connection.subscribe("dlq.>")
            let group = ServiceGroup(services: [service], logger: Harness.logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var parked: [NATSMessage] = []
                for await message in dlq.messages {
                    parked.append(message)
                    if parked.count == 2 { break }
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()

                let reasons = Dictionary(uniqueKeysWithValues: parked.map { (text($0.payload), $0) })
                let poison = try #require(reasons["poison"])
                #expect(poison.subject == "dlq.ORDERS.processor")
                #expect(poison.headers[DeadLetter.deliveriesHeader] == "3")
                #expect(poison.headers[DeadLetter.subjectHeader] == "orders.acme")
                #expect(poison.headers["traceparent"] == "keep-me")
                let garbage = try #require(reasons["garbage"])
                #expect(garbage.headers[DeadLetter.deliveriesHeader] == "1")
            }
            #expect(Set(processed.withLock { $0 }) == Set((0..<20).map { "ok-\($0)" }))
            #expect(attempts.withLock { $0["poison"] } == 3)
            #expect(attempts.withLock { $0["garbage"] } == 1)
            // Nothing is left in the work queue; both parked messages are kept in DEADLETTER. Acks and terms are
            // fire-and-forget, so the server may apply the last of them a moment after the loop stopped.
            var remaining = try await h.jetStream.streamState("ORDERS").messages
            for _ in 0..<100 where remaining != 0 {
                try await Task.sleep(for: .milliseconds(20))
                remaining = try await h.jetStream.streamState("ORDERS").messages
            }
            #expect(remaining == 0)
            #expect(try await h.jetStream.streamState("DEADLETTER").messages == 2)
        }
    }

    @Test("two consumers of one log that give up on the same message each park it (one dead letter per consumer)")
    func deadLetterPerConsumer() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(StreamSpec(name: "LOG", subjects: ["log.*"]))
            try await h.jetStream.ensureStream(StreamSpec(name: "DEADLETTER", subjects: [DeadLetter.allSubjects]))
            try await h.jetStream.publish(OutboundMessage(subject: "log.acme", payload: bytes("garbage")))
            let specs = ["reader-a", "reader-b"].map { ConsumerSpec(durable: $0, maxDeliver: 2) }
            for spec in specs { try await h.jetStream.ensureConsumer(stream: "LOG", spec) }
            let services = specs.map { spec in
                JetStreamConsumerService(jetStream: h.jetStream, stream: "LOG", consumer: spec, batchSize: 8,
                                         logger: Harness.logger) { _ in throw PoisonMessage("cannot decode") }
            }
            let group = ServiceGroup(services: services, logger: Harness.logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                // Both parked (each consumer's dead letter stored), or the deadline passed.
                let deadline = ContinuousClock.now + .seconds(10)
                while try await h.jetStream.streamState("DEADLETTER").messages < 2 && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            #expect(try await h.jetStream.streamState("DEADLETTER").messages == 2)
        }
    }

    @Test("a handler cancelled by shutdown gives its message back at once (no backoff, no dead letter)")
    func cancelledHandlerIsNotDeadLettered() async throws {
        try await withHarness { h in
            try await h.jetStream.ensureStream(Self.stream)
            try await h.jetStream.ensureStream(StreamSpec(name: "DEADLETTER", subjects: [DeadLetter.allSubjects]))
            // A long nak backoff and a long AckWait: only the immediate give-back can bring the message back within
            // the 5 s the test waits for it.
            let spec = ConsumerSpec(durable: "cancelled", ackWait: .seconds(60), maxDeliver: 2, backoff: [.seconds(600)])
            try await h.jetStream.ensureConsumer(stream: "ORDERS", spec)
            try await h.jetStream.publish(OutboundMessage(subject: "orders.acme", payload: bytes("slow")))
            let started = AsyncStream<Void>.makeStream()
            let service = JetStreamConsumerService(
                jetStream: h.jetStream, stream: "ORDERS", consumer: spec, batchSize: 1, keepAlive: true,
                logger: Harness.logger
            ) { _ in
                started.continuation.yield()
                // Runs until it is cancelled (polling, like a libpq call on a lane that notices late), however long
                // the test takes to cancel it on a busy machine; the bound only keeps a broken loop from hanging.
                let limit = ContinuousClock.now + .seconds(60)
                while !Task.isCancelled && ContinuousClock.now < limit { try? await Task.sleep(for: .milliseconds(20)) }
                try Task.checkCancellation()
            }
            let running = Task { try await service.run() }
            var iterator = started.stream.makeAsyncIterator()
            await iterator.next()
            running.cancel()
            _ = try? await running.value
            // The message went back at once (AckWait 60 s, nak backoff 600 s: nothing else brings it back within the
            // 5 s below), and nothing was parked. Its delivery count is the server's business: nats-server does not
            // count a redelivery attempt towards the stopped loop's pull request, which no longer had interest.
            let consumer = try await PullConsumer.bind(jetStream: h.jetStream, stream: "ORDERS", durable: "cancelled")
            defer { consumer.stop() }
            let fetched = try await consumer.next(timeout: .seconds(5))
            let message = try required(fetched)
            #expect(text(message.delivery.payload) == "slow")
            #expect(message.delivery.deliveryCount <= 2)
            try message.term()
            #expect(try await h.jetStream.streamState("DEADLETTER").messages == 0)
        }
    }

    @Test("a durable created with a recent start skips older messages, and keeps its start across updates")
    func recentStartPolicy() async throws {
        try await withHarness { h in
            let log = StreamSpec(name: "LOG", subjects: ["log.*"])
            try await h.jetStream.ensureStream(log)
            try await h.jetStream.publish(OutboundMessage(subject: "log.a", payload: bytes("old")))
            // Older than the window (1 s) by a margin a slow machine only widens.
            try await Task.sleep(for: .milliseconds(2000))
            var spec = ConsumerSpec(durable: "recent", ackWait: .seconds(30), start: .recent(.seconds(1)))
            try await h.jetStream.ensureConsumer(stream: "LOG", spec)
            try await h.jetStream.publish(OutboundMessage(subject: "log.a", payload: bytes("new")))
            // A later start (another replica, a new release with another AckWait) updates it but keeps its start.
            try await h.jetStream.ensureConsumer(stream: "LOG", spec)
            spec.ackWait = .seconds(20)
            try await h.jetStream.ensureConsumer(stream: "LOG", spec)
            let consumer = try await PullConsumer.bind(jetStream: h.jetStream, stream: "LOG", durable: "recent")
            defer { consumer.stop() }
            let first = try required(try await consumer.next(timeout: .seconds(5)))
            #expect(text(first.delivery.payload) == "new", "the recreated durable must not replay older messages")
            try first.ack()
            // The whole log is still there for durables that want it.
            try await h.jetStream.ensureConsumer(stream: "LOG", ConsumerSpec(durable: "everything"))
            let all = try await PullConsumer.bind(jetStream: h.jetStream, stream: "LOG", durable: "everything")
            defer { all.stop() }
            let oldest = try required(try await all.next(timeout: .seconds(5)))
            #expect(text(oldest.delivery.payload) == "old")
            try oldest.ack()
        }
    }
}
