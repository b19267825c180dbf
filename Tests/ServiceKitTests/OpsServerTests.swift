import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceKit
import Telemetry
import Testing

@Suite("OpsServer")
struct OpsServerTests {
    let configuration: ServiceConfiguration
    let logger = Logger(label: "ops-test") { _ in SwiftLogNoOpLogHandler() }

    init() throws {
        configuration = try ServiceConfiguration(
            environment: ["SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_OPS_PORT": "0"], service: "test")
    }

    func status(_ client: some TestClientProtocol, _ uri: String) async throws -> HTTPResponse.Status {
        try await client.execute(uri: uri, method: .get).status
    }

    func json(_ body: ByteBuffer) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(buffer: body))
        return try #require(object as? [String: Any])
    }

    @Test func liveIsAlways200EvenWhenEverythingIsDown() async throws {
        let health = HealthRegistry()
        health.register(name: "nats") { .down("no connection") }
        let app = buildOpsApplication(
            configuration: configuration, health: health, metrics: TelemetryMetrics(), logger: logger)
        try await app.test(.live) { client in
            let response = try await client.execute(uri: "/live", method: .get)
            #expect(response.status == .ok)
        }
    }

    @Test func healthReflectsComponents() async throws {
        let health = HealthRegistry()
        let natsUp = Flag(true)
        health.register(name: "nats") { natsUp.value ? .up : .down("disconnected") }
        health.register(name: "postgres") { .up }
        let app = buildOpsApplication(
            configuration: configuration, health: health, metrics: TelemetryMetrics(), logger: logger)
        try await app.test(.live) { client in
            var response = try await client.execute(uri: "/health", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "application/json")
            var body = try json(response.body)
            #expect(body["status"] as? String == "up")
            let components = try #require(body["components"] as? [String: [String: Any]])
            #expect(components["nats"]?["status"] as? String == "up")
            #expect(components["postgres"]?["status"] as? String == "up")

            natsUp.value = false
            response = try await client.execute(uri: "/health", method: .get)
            #expect(response.status == .serviceUnavailable)
            body = try json(response.body)
            #expect(body["status"] as? String == "down")
            let down = try #require(body["components"] as? [String: [String: Any]])
            #expect(down["nats"]?["status"] as? String == "down")
            #expect(down["nats"]?["detail"] as? String == "disconnected")
        }
    }

    @Test func readyFollowsFlagAndHealth() async throws {
        let health = HealthRegistry()
        let natsUp = Flag(true)
        health.register(name: "nats") { natsUp.value ? .up : .down() }
        let app = buildOpsApplication(
            configuration: configuration, health: health, metrics: TelemetryMetrics(), logger: logger)
        try await app.test(.live) { client in
            var status = try await self.status(client, "/ready")
            #expect(status == .serviceUnavailable)
            health.setReady(true)
            status = try await self.status(client, "/ready")
            #expect(status == .ok)
            natsUp.value = false
            status = try await self.status(client, "/ready")
            #expect(status == .serviceUnavailable)
            natsUp.value = true
            status = try await self.status(client, "/ready")
            #expect(status == .ok)
            health.setReady(false)
            status = try await self.status(client, "/ready")
            #expect(status == .serviceUnavailable)
        }
    }

    @Test func metricsExposesCounters() async throws {
        let metrics = TelemetryMetrics()
        metrics.counter(.chatRequestsTotal, [(.tenant, "acme")]).increment(by: 2)
        let app = buildOpsApplication(
            configuration: configuration, health: HealthRegistry(), metrics: metrics, logger: logger)
        try await app.test(.live) { client in
            var response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(String(buffer: response.body).contains(#"chat_requests_total{tenant="acme"} 2"#))

            metrics.counter(.chatRequestsTotal, [(.tenant, "acme")]).increment()
            response = try await client.execute(uri: "/metrics", method: .get)
            #expect(String(buffer: response.body).contains(#"chat_requests_total{tenant="acme"} 3"#))
        }
    }

    @Test func unknownPathIs404() async throws {
        let app = buildOpsApplication(
            configuration: configuration, health: HealthRegistry(), metrics: TelemetryMetrics(), logger: logger)
        try await app.test(.live) { client in
            let status = try await self.status(client, "/nope")
            #expect(status == .notFound)
        }
    }
}
