import AsyncHTTPClient
import Foundation
import Messaging
import Schemas
import Testing
import TestKit

/// `switchyard doctor` (the real CLI) against the seven real binaries on an authenticated nats-server, as `make
/// run` starts them: it passes, then fails naming the reason when a service runs with a known default secret,
/// and when a stream is deleted.
@Suite("switchyard doctor against a running installation", .serialized)
struct DoctorTests {
    static let services = ["tenant", "router", "orchestrator", "api-gateway", "billing", "analytics", "eval"]
    static let adminToken = "doctor-test-" + EventID.random()

    struct Installation {
        let nats: NATSServer
        let postgres: PostgresServer
        let passwords: [String: String]
        let opsPorts: [String: Int]
        /// Fixed API ports (the gateway's, for clients); 0 = any.
        var httpPorts: [String: Int] = [:]

        func environment(_ service: String, adminTokens: String) -> [String: String] {
            let user = service == "api-gateway" ? "gateway" : service
            return [
                "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_NATS_USER": user,
                "SWITCHYARD_NATS_PASSWORD": passwords[user] ?? "",
                "SWITCHYARD_DATABASE_URL": postgres.connectionString, "SWITCHYARD_HTTP_HOST": "127.0.0.1",
                "SWITCHYARD_HTTP_PORT": "\(httpPorts[service] ?? 0)", "SWITCHYARD_OPS_PORT": "\(opsPorts[service]!)",
                "SWITCHYARD_INSTANCE_ID": "\(service)-doctor", "SWITCHYARD_DB_POOL_SIZE": "2",
                "SWITCHYARD_LOG_LEVEL": "warning", "SWITCHYARD_ADMIN_TOKENS": adminTokens,
            ]
        }

        /// `switchyard doctor --json` as the admin user: its exit status, the checks by name, and the raw output.
        func doctor() async throws -> (status: Int32, checks: [(status: String, name: String, detail: String, source: String)], output: String) {
            let (status, output) = try await TestProcess.run(
                try builtProduct("switchyard"), ["doctor", "--json", "--wait-ms", "5000"],
                environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_NATS_USER": "admin",
                              "SWITCHYARD_NATS_PASSWORD": passwords["admin"] ?? "", "SWITCHYARD_ADMIN_TOKEN": DoctorTests.adminToken,
                              "SWITCHYARD_ACTOR": "ci"],
                check: false)
            // The JSON document, without the one-line failure message stderr adds after it.
            let start = output.firstIndex(of: "{") ?? output.startIndex
            let end = output.lastIndex(of: "}") ?? output.endIndex
            let json = start < end ? (try? JSONSerialization.jsonObject(with: Data(output[start...end].utf8))) as? [String: Any] ?? [:] : [:]
            let checks = (json["checks"] as? [[String: Any]] ?? []).map {
                ($0["status"] as? String ?? "", $0["name"] as? String ?? "", $0["detail"] as? String ?? "",
                 $0["source"] as? String ?? "")
            }
            return (status, checks, output)
        }
    }

    static func start(_ service: String, _ installation: Installation, adminTokens: String) throws -> TestProcess {
        try TestProcess(executable: try builtProduct(service),
                        environment: installation.environment(service, adminTokens: adminTokens))
    }

    static func waitReady(_ http: HTTPClient, _ service: String, port: Int, _ process: TestProcess) async throws {
        for _ in 0..<600 {
            guard process.isRunning else { throw TestProcessError("\(service) exited: \(process.output.suffix(1_000))") }
            if let response = try? await http.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/ready"), timeout: .seconds(2)),
               response.status.code == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestProcessError("\(service) not ready: \(process.output.suffix(1_000))")
    }

    @Test("passes on a healthy installation; fails naming a default secret, then a deleted stream")
    func doctorPassesThenFindsProblems() async throws {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let passwords = NATSAuthTemplate.randomPasswords()
        defer { Task { try? await http.shutdown() } }
        try await NATSServer.withServer(configuration: try NATSAuthTemplate.render(passwords: passwords)) { nats in
            try await PostgresServer.withServer { postgres in
                var ports: [String: Int] = [:]
                for service in Self.services { ports[service] = try freeTCPPort() }
                let installation = Installation(nats: nats, postgres: postgres, passwords: passwords, opsPorts: ports)
                let tokens = "operator:\(Self.adminToken)"
                var processes: [String: TestProcess] = [:]
                defer { for process in processes.values { process.terminate(signal: SIGKILL) } }
                for service in Self.services {
                    processes[service] = try Self.start(service, installation, adminTokens: tokens)
                    // The tenant service first: it creates the tenancy buckets the others read.
                    if service == "tenant" { try await Self.waitReady(http, service, port: ports[service]!, processes[service]!) }
                }
                for service in Self.services {
                    try await Self.waitReady(http, service, port: ports[service]!, processes[service]!)
                }

                // 1. Healthy: no check fails, every service answered, the platform's checks are there.
                let healthy = try await installation.doctor()
                let failures = healthy.checks.filter { $0.status == "fail" }
                #expect(healthy.status == 0, "\(failures.map { "\($0.name): \($0.detail)" })\n\(healthy.output.suffix(2_000))")
                #expect(failures.isEmpty)
                let names = Set(healthy.checks.map(\.name))
                for expected in ["stream EVENTS", "stream USAGE", "stream DEADLETTER", "consumer EVENTS/router-requested",
                                 "consumer USAGE/billing-usage", "kv bucket tenants", "migrations billing", "nats authentication",
                                 "nats permissions", "postgresql", "providers", "disk"] + Self.services.map({ "service \($0)" }) {
                    #expect(names.contains(expected), "doctor lacks \(expected)")
                }
                #expect(healthy.checks.contains { $0.name == "nats permissions" && $0.status == "pass" })

                // 2. Billing restarted with the k8s dev overlay's admin token: a failure naming it and billing.
                processes["billing"]?.terminate(signal: SIGKILL)
                _ = await processes["billing"]?.waitUntilExit()
                processes["billing"] = try Self.start("billing", installation,
                                                      adminTokens: "operator:dev-only-admin-token-0000")
                try await Self.waitReady(http, "billing", port: ports["billing"]!, processes["billing"]!)
                let weak = try await installation.doctor()
                #expect(weak.status == 1)
                let secret = weak.checks.first { $0.status == "fail" && $0.name.hasPrefix("secret SWITCHYARD_ADMIN_TOKENS") }
                #expect(secret?.source == "billing/billing-doctor", "\(weak.output.suffix(2_000))")
                #expect(secret?.detail.contains("known default") == true)
                #expect(!weak.output.contains("dev-only-admin-token-0000"), "the secret's value is never printed")
                processes["billing"]?.terminate(signal: SIGKILL)
                _ = await processes["billing"]?.waitUntilExit()
                processes["billing"] = try Self.start("billing", installation, adminTokens: tokens)
                try await Self.waitReady(http, "billing", port: ports["billing"]!, processes["billing"]!)

                // 3. The dead-letter stream deleted behind the services' backs: a failure naming it.
                let (tenant, _) = try await Stack.connect(nats, user: "tenant", password: passwords["tenant"])
                defer { tenant.close() }
                let deleted = try await tenant.request("$JS.API.STREAM.DELETE.DEADLETTER", payload: [], timeout: .seconds(5))
                #expect(String(decoding: deleted.payload, as: UTF8.self).contains("\"success\":true"))
                let broken = try await installation.doctor()
                #expect(broken.status == 1)
                let stream = broken.checks.first { $0.name == "stream DEADLETTER" }
                #expect(stream?.status == "fail" && stream?.detail.contains("missing") == true, "\(broken.output.suffix(2_000))")
                #expect(broken.checks.filter { $0.status == "fail" }.count == 1,
                        "\(broken.checks.filter { $0.status == "fail" }.map { "\($0.name): \($0.detail)" })")
            }
        }
    }
}
