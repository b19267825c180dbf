import ServiceKit
import Testing

@Suite("HealthRegistry")
struct HealthTests {
    @Test func overallStatusIsTheWorstComponent() async {
        let health = HealthRegistry()
        #expect(await health.report().status == .up)
        health.register(name: "nats") { .up }
        health.register(name: "kv") { .degraded("cache 40s old") }
        var report = await health.report()
        #expect(report.status == .degraded)
        #expect(report.isHealthy)
        #expect(report.components["kv"]?.detail == "cache 40s old")
        health.register(name: "postgres") { .down("connection refused") }
        report = await health.report()
        #expect(report.status == .down)
        #expect(!report.isHealthy)
        #expect(health.checkNames == ["nats", "kv", "postgres"])
    }

    @Test func sameNameReplacesCheck() async {
        let health = HealthRegistry()
        health.register(name: "nats") { .down() }
        health.register(name: "nats") { .up }
        #expect(health.checkNames == ["nats"])
        #expect(await health.report().status == .up)
    }

    @Test func hangingCheckCountsAsDown() async {
        let health = HealthRegistry(checkTimeout: .milliseconds(20))
        health.register(name: "stuck") {
            // Never finishes on its own; only the registry's cancellation ends it.
            try? await Task.sleep(for: .seconds(3600))
            return .up
        }
        let report = await health.report()
        #expect(report.components["stuck"] == .down("check timed out"))
    }

    @Test func readinessNeedsFlagAndHealth() async {
        let health = HealthRegistry()
        health.register(name: "nats") { .up }
        #expect(await health.readiness().ready == false)
        health.setReady(true)
        #expect(await health.readiness().ready == true)
        health.register(name: "postgres") { .down() }
        #expect(await health.readiness().ready == false)
    }

    @Test func reportEncodesAsDocumentedJSON() throws {
        let report = HealthReport(components: ["nats": .up, "postgres": .down("refused")])
        let json = String(decoding: report.jsonData(), as: UTF8.self)
        #expect(json == #"{"components":{"nats":{"status":"up"},"postgres":{"detail":"refused","status":"down"}},"status":"down"}"#)
    }
}
