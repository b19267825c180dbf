import Contracts
@testable import GatewayCore
import Logging
import Messaging
@testable import OrchestratorCore
import Schemas
@testable import ServiceKit
import Synchronization
import Telemetry
import Testing
import TestKit

@Suite("Answers lost while a gateway was away from NATS are sent again")
struct ReplyResendTests {
    static let logger = Logger(label: "reply-resend-tests") { _ in SwiftLogNoOpLogHandler() }

    static func connect(_ nats: NATSServer, _ name: String) async throws -> NATSConnection {
        try await NATSConnection.connect(NATSConfiguration(servers: [nats.url], name: name, connectAttempts: 3),
                                         logger: logger)
    }

    static func answer(_ requestID: String, content: String) -> ChatCompleted {
        var completed = ChatCompleted()
        completed.meta = EventMeta(eventID: "evt-\(requestID)", tenantID: "acme", occurredAtUnixNanos: 1,
                                   producer: "orchestrator", schemaVersion: 1, requestID: requestID, traceID: "")
        completed.content = content
        return completed
    }

    /// Runs an orchestrator's resend responder on its own connection while `body` runs.
    static func withResponder<T: Sendable>(_ nats: NATSServer, replies: RecentReplies,
                                           _ body: @Sendable () async throws -> T) async throws -> T {
        let connection = try await connect(nats, "orchestrator")
        defer { connection.close() }
        let responder = Task {
            try await ReplyResendService(connection: connection, replies: replies, metrics: TelemetryMetrics(),
                                         logger: logger).run()
        }
        defer { responder.cancel() }
        // Wait until the responder answers (its subscription is made when its task runs, which a loaded machine
        // may delay): a resend of a kept probe answer comes back.
        let probe = "_sy.gw.probe.ready"
        let answers = try connection.subscribe(probe)
        defer { answers.unsubscribe() }
        record(replies, answer("ready", content: "ready"), subject: probe)
        let answered = Mutex(false)
        let listener = Task { for await _ in answers.messages { answered.withLock { $0 = true } } }
        defer { listener.cancel() }
        for _ in 0..<100 where !answered.withLock({ $0 }) {
            try connection.publish(ReplySubjects.resendRoot + ".probe",
                                   payload: ReplyResend(requestIds: ["ready"]).protobufBytes())
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(answered.withLock { $0 }, "the resend responder never answered")
        return try await body()
    }

    static func record(_ replies: RecentReplies, _ completed: ChatCompleted, subject: String) {
        replies.record(subject: subject, payload: completed.protobufBytes(),
                       headers: [Headers.eventType: ChatCompleted.protoName])
    }

    @Test("a resend request brings back the answer kept by the orchestrator; hostile ids are ignored")
    func resendBringsBackTheAnswer() async throws {
        try await NATSServer.withServer { nats in
            let replies = RecentReplies()
            try await Self.withResponder(nats, replies: replies) {
                let gateway = try await Self.connect(nats, "gateway")
                defer { gateway.close() }
                let inbox = try ReplyInbox(connection: gateway, instanceID: "gw-1")
                // The inbox's service ends a waiting request at its deadline, so a missing answer fails the test.
                let service = Task { try await ReplyInboxService(inbox: inbox).run() }
                defer { service.cancel() }
                // Published while the gateway was away: only the orchestrator's record has it.
                Self.record(replies, Self.answer("req-1", content: "We open at noon."), subject: inbox.subject(for: "req-1"))
                let waiting = inbox.register("req-1", deadline: .now + .seconds(20))
                // A spy on every gateway reply subject: hostile ids must produce nothing before the real one.
                let spy = try gateway.subscribe(ReplySubjects.gatewayRoot + ".>")
                defer { spy.unsubscribe() }
                try await gateway.flush()
                try gateway.publish(ReplySubjects.resendSubject(instanceID: "gw-1"),
                                    payload: ReplyResend(requestIds: ["*", "req-1.x", ">", ""]).protobufBytes())
                try gateway.publish(ReplySubjects.resendSubject(instanceID: "gw-1"), payload: [0xFF, 0x01])
                #expect(inbox.requestResend() == 1)

                var iterator = waiting.makeAsyncIterator()
                let resent = try #require(await iterator.next())
                #expect(try ChatCompleted(protobuf: resent.payload).content == "We open at noon.")
                var spied = spy.messages.makeAsyncIterator()
                let first = try #require(await spied.next())
                #expect(first.subject == inbox.subject(for: "req-1"))
                inbox.unregister("req-1")
            }
        }
    }

    @Test("after nats-server restarts, the gateway's inbox asks by itself and the waiting request gets its answer")
    func reconnectTriggersResend() async throws {
        try await NATSServer.withServer { nats in
            // Kept long enough for any restart a busy machine makes slow: the test is about asking, not the window.
            let replies = RecentReplies(window: .seconds(300))
            try await Self.withResponder(nats, replies: replies) {
                let gateway = try await Self.connect(nats, "gateway")
                defer { gateway.close() }
                let inbox = try ReplyInbox(connection: gateway, instanceID: "gw-2")
                let service = Task { try await ReplyInboxService(inbox: inbox).run() }
                defer { service.cancel() }
                let waiting = inbox.register("req-2", deadline: .now + .seconds(120))
                // The answer went out while the server was going down; the orchestrator only kept it.
                Self.record(replies, Self.answer("req-2", content: "Table for two at eight."),
                            subject: inbox.subject(for: "req-2"))
                try await nats.restart()
                var iterator = waiting.makeAsyncIterator()
                let resent = try #require(await iterator.next())
                #expect(try ChatCompleted(protobuf: resent.payload).content == "Table for two at eight.")
                #expect(gateway.reconnectCount >= 1)
                inbox.unregister("req-2")
            }
        }
    }

    @Test("kept answers: bounded by count and age, the latest answer of a subject wins")
    func recentRepliesAreBounded() {
        let replies = RecentReplies(window: .seconds(10), capacity: 3)
        let second: UInt64 = 1_000_000_000
        for index in 0..<5 {
            replies.record(subject: "s\(index)", payload: [UInt8(index)], headers: [:], now: UInt64(index) * second)
        }
        #expect(replies.count == 3)
        #expect(replies.reply(subject: "s0", now: 5 * second) == nil)
        #expect(replies.reply(subject: "s4", now: 5 * second)?.payload == [4])
        // Answered again (a redelivered task): the old record's eviction keeps the newer answer.
        replies.record(subject: "s2", payload: [22], headers: [:], now: 6 * second)
        replies.record(subject: "s5", payload: [5], headers: [:], now: 7 * second)
        #expect(replies.reply(subject: "s2", now: 7 * second)?.payload == [22])
        // Past the window: gone.
        #expect(replies.reply(subject: "s5", now: 18 * second) == nil)
    }

    @Test("a streamed answer: chunks in order, duplicates skipped, and after a gap the rest comes from the final answer")
    func streamedTextRepairsGaps() {
        func chunk(_ index: UInt32, _ delta: String) -> StreamChunk {
            var chunk = StreamChunk()
            chunk.index = index
            chunk.delta = delta
            return chunk
        }
        var text = StreamedText()
        let taken = [chunk(0, "Wir "), chunk(0, "Wir "), chunk(1, "öffnen "), chunk(3, "Uhr."), chunk(2, "um 12 ")]
            .map { text.accept($0) }
        // A duplicate is skipped; chunk 2 was lost, so chunk 3 opens a gap and chunk 2 comes too late.
        #expect(taken == [true, false, true, false, false])
        #expect(text.remainder(of: "Wir öffnen um 12 Uhr.") == "um 12 Uhr.")
        #expect(text.remainder(of: "Something else entirely") == nil)
        var complete = StreamedText()
        let whole = complete.accept(chunk(0, "Ja."))
        #expect(whole)
        #expect(complete.remainder(of: "Ja.") == nil)
    }

    @Test("resend subjects only ever name a gateway's reply subject")
    func resendSubjectsAreTokens() {
        #expect(ReplySubjects.gatewayReplySubject(instanceToken: "gw-1", requestID: "abc_12") == "_sy.gw.gw-1.abc_12")
        for hostile in ["", "a.b", "*", ">", "a b", String(repeating: "x", count: 200)] {
            #expect(ReplySubjects.gatewayReplySubject(instanceToken: "gw-1", requestID: hostile) == nil)
            #expect(ReplySubjects.gatewayReplySubject(instanceToken: Substring(hostile), requestID: "abc") == nil)
        }
    }
}
