import Foundation
import Messaging
import ServiceContextModule
import Telemetry
import TestKit
import Testing
import Tracing

@Suite("Core NATS and KV against a real nats-server")
struct CoreAndKVTests {
    @Test("request/reply with headers, concurrent requests, and no-responders")
    func requestReply() async throws {
        try await withHarness { h in
            let service = try h.connection.subscribe("echo.upper", queue: "echoers")
            let responder = Task {
                for await message in service.messages {
                    guard let reply = message.reply else { continue }
                    try? h.connection.publish(reply, payload: bytes(text(message.payload).uppercased()),
                                              headers: ["x-seen": message.headers["x-in"] ?? "none"])
                }
            }
            defer { responder.cancel(); service.unsubscribe() }
            try await h.connection.flush()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        let reply = try await h.connection.request("echo.upper", payload: bytes("hi \(index)"),
                                                                   headers: ["x-in": "v\(index)"])
                        #expect(text(reply.payload) == "HI \(index)")
                        #expect(reply.headers["x-seen"] == "v\(index)")
                    }
                }
                try await group.waitForAll()
            }
            await #expect(throws: NATSError.self) {
                try await h.connection.request("nobody.home", payload: [], timeout: .seconds(2))
            }
            do {
                _ = try await h.connection.request("nobody.home", payload: [], timeout: .seconds(2))
            } catch let error as NATSError {
                #expect(error.code == .noResponders)
            }
        }
    }

    @Test("trace context published on one connection is extracted on another")
    func traceContextAcrossConnections() async throws {
        try await NATSServer.withServer { server in
            let (publisher, _) = try await Harness.connect(server, name: "publisher")
            let (subscriber, _) = try await Harness.connect(server, name: "subscriber")
            defer { publisher.close(); subscriber.close() }
            let subscription = try subscriber.subscribe("traced.>")
            try await subscriber.flush()

            let tracer = W3CTracer()
            let span = tracer.startSpan("publish", context: .topLevel, ofKind: .producer)
            var headers: [String: String] = [:]
            tracer.inject(span.context, into: &headers, using: DictionaryInjector())
            try publisher.publish("traced.event", payload: bytes("x"), headers: headers)
            try await publisher.flush()
            span.end()

            var iterator = subscription.messages.makeAsyncIterator()
            let received = try #require(await iterator.next())
            var extracted = ServiceContext.topLevel
            tracer.extract(received.headers, into: &extracted, using: DictionaryExtractor())
            let sentTrace = try #require(span.context.traceID)
            #expect(received.headers["traceparent"] != nil)
            #expect(extracted.traceID == sentTrace)
            let child = tracer.startSpan("consume", context: extracted, ofKind: .consumer)
            #expect(child.context.traceID == sentTrace)
            #expect(child.context.spanID != span.context.spanID)
            child.end()
        }
    }

    @Test("KV get/put/create/update-with-revision/delete and a stale revision fails")
    func keyValue() async throws {
        try await withHarness { h in
            let bucket = try await h.jetStream.keyValue(KVBucketSpec(name: "apikeys", history: 5))
            _ = try await h.jetStream.keyValue(KVBucketSpec(name: "apikeys", history: 5))  // idempotent
            #expect(try await bucket.get("missing") == nil)
            let r1 = try await bucket.create("k1", bytes("v1"))
            await #expect(throws: NATSError.self) { try await bucket.create("k1", bytes("again")) }
            do { try await bucket.create("k1", bytes("again")) } catch let error as NATSError { #expect(error.code == .keyExists) }
            let r2 = try await bucket.update("k1", bytes("v2"), expectedRevision: r1)
            #expect(r2 > r1)
            do {
                try await bucket.update("k1", bytes("stale"), expectedRevision: r1)
                Issue.record("a stale revision must fail")
            } catch let error as NATSError {
                #expect(error.code == .wrongLastRevision)
            }
            let entry = try #require(try await bucket.get("k1"))
            #expect(text(entry.value) == "v2")
            #expect(entry.revision == r2)
            try await bucket.put("k2", [0, 255, 1])
            #expect(try await bucket.get("k2")?.value == [0, 255, 1])
            try await bucket.delete("k2")
            #expect(try await bucket.get("k2") == nil)
        }
    }

    @Test("KV watch delivers current values, the initial marker, then live changes")
    func keyValueWatch() async throws {
        try await withHarness { h in
            let bucket = try await h.jetStream.keyValue(KVBucketSpec(name: "tenants"))
            try await bucket.put("acme", bytes("active"))
            let events = try await bucket.watchAll()
            var iterator = events.makeAsyncIterator()
            #expect(try await iterator.next() == .entry(try #require(try await bucket.get("acme"))))
            #expect(try await iterator.next() == .initialValuesDone)
            // A change made on another connection reaches the watcher.
            let (other, otherJS) = try await Harness.connect(h.server, name: "writer")
            defer { other.close() }
            let otherBucket = try await otherJS.keyValue(KVBucketSpec(name: "tenants"))
            try await otherBucket.put("acme", bytes("suspended"))
            guard case .entry(let changed)? = try await iterator.next() else {
                Issue.record("expected an entry")
                return
            }
            #expect(changed.key == "acme")
            #expect(text(changed.value) == "suspended")
            try await otherBucket.delete("acme")
            guard case .entry(let deleted)? = try await iterator.next() else {
                Issue.record("expected a delete")
                return
            }
            #expect(deleted.operation == .delete)
        }
    }
}
