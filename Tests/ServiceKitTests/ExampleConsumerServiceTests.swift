import AsyncHTTPClient
import Contracts
import Foundation
import Logging
import Messaging
import NIOCore
import Schemas
import ServiceKit
import ServiceLifecycle
import Synchronization
import TestKit
import Testing

/// The scaffold's example consumer service (docs/adr/0010) end to end: real nats-server, PostgreSQL, HTTP.
@Suite("Example consumer service on the scaffold")
struct ExampleConsumerServiceTests {
    static let logger = Logger(label: "example") { _ in SwiftLogNoOpLogHandler() }

    @Test("counts each completed chat once, dead-letters bad events, answers over HTTP")
    func countsOnceAndDeadLettersPoison() async throws {
        let nats = try await NATSServer.start()
        let postgres = try await PostgresServer.start()
        defer { Task { await nats.stop(); await postgres.stop() } }
        let configuration = try ServiceConfiguration(
            environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                          "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "0",
                          "SWITCHYARD_DB_POOL_SIZE": "2", "SWITCHYARD_INSTANCE_ID": "counter-1"],
            service: CompletionCounter.service.rawValue)
        let port = Atomic<Int>(0)
        let group = try await buildCompletionCounter(configuration: configuration, logger: Self.logger, signals: false,
                                                     onServerRunning: { port.store($0, ordering: .relaxed) })
        let running = Task { try await group.run() }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let client = try await NATSConnection.connect(
            NATSConfiguration(servers: [nats.url], name: "publisher", connectAttempts: 3), logger: Self.logger)
        let jetStream = try JetStream(connection: client)

        func completed(_ tenant: String, _ eventID: String) -> [UInt8] {
            ChatCompleted(meta: EventMeta(eventID: eventID, tenantID: tenant, occurredAtUnixNanos: 1,
                                          producer: "orchestrator", schemaVersion: EventMeta.currentSchemaVersion),
                          agent: "host", content: "hi").protobufBytes()
        }
        // Five distinct completions for acme, one of them delivered twice (another Nats-Msg-Id, so the stream
        // keeps both and the consumer's idempotence is what counts it once); one for globex; two poison events.
        var messages: [(String, [UInt8], String)] = (1...5).map { ("acme", completed("acme", "e\($0)"), "acme:e\($0)") }
        messages.append(("acme", completed("acme", "e3"), "replayed:e3"))
        messages.append(("globex", completed("globex", "g1"), "globex:g1"))
        messages.append(("acme", [0xFF, 0xFF, 0xFF], "poison:1"))
        messages.append(("acme", completed("Not A Tenant", "x1"), "poison:2"))
        for (tenant, payload, id) in messages {
            try await jetStream.publish(OutboundMessage(subject: Subjects.event(.chatCompleted, tenant: tenant),
                                                        payload: payload, messageID: id))
        }

        func count(_ tenant: String) async throws -> (status: UInt, body: String) {
            let response = try await http.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(port.load(ordering: .relaxed))/v1/completions/\(tenant)"),
                timeout: .seconds(5))
            let body = try await response.body.collect(upTo: 1 << 16)
            return (response.status.code, String(buffer: body))
        }
        // Wait for observable facts: both poison events parked, and the counts the valid ones produce.
        // (Messages are handled concurrently, so each count is waited for on its own.)
        var acme = ""
        var globex = ""
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let parked = (try? await jetStream.streamState(StreamNames.deadLetter).messages) ?? 0
            if port.load(ordering: .relaxed) != 0 {
                acme = try await count("acme").body
                globex = try await count("globex").body
            }
            if parked == 2 && acme.contains(#""completions":5"#) && globex.contains(#""completions":1"#) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(acme == #"{"completions":5,"tenant":"acme"}"#)
        #expect(try await count("globex").body == #"{"completions":1,"tenant":"globex"}"#)
        #expect(try await count("initech").body == #"{"completions":0,"tenant":"initech"}"#)
        #expect(try await count("Not%20A%20Tenant").status == 400)
        #expect(try await jetStream.streamState(StreamNames.deadLetter).messages == 2)

        await group.triggerGracefulShutdown()
        try await running.value
        try await http.shutdown()
        client.close()
    }
}
