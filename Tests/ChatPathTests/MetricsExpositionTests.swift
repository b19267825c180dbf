import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import TestKit

/// Every service's `/metrics` (the real binaries) passes `promtool check metrics` from its first scrape, and has the
/// figures operators alert on: process, NATS connection, PostgreSQL pool, durable consumers, HTTP durations.
@Suite("Metrics exposition of every service", .serialized)
struct MetricsExpositionTests {
    static let services = ["api-gateway", "router", "orchestrator", "tenant", "billing", "analytics", "eval"]
    /// Which services own a durable and which hold a PostgreSQL pool.
    static let withConsumers: Set<String> = ["router", "orchestrator", "tenant", "billing", "analytics"]
    static let withPool: Set<String> = ["orchestrator", "tenant", "billing", "analytics", "eval"]

    @Test("promtool check metrics reports nothing for any of the seven services, fresh and after chats, and the operator figures are there")
    func promtoolIsSatisfied() async throws {
        guard let promtool = findExecutable("promtool") else {
            Issue.record("promtool not found: install the Debian package prometheus (make deps does)")
            return
        }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        try await NATSServer.withServer { nats in
            try await PostgresServer.withServer { postgres in
                var processes: [String: (process: TestProcess, port: Int)] = [:]
                defer { for entry in processes.values { entry.process.terminate(signal: SIGKILL) } }
                let gatewayPort = try freeTCPPort()
                for service in Self.services {
                    let port = try freeTCPPort()
                    let environment = [
                        "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                        "SWITCHYARD_HTTP_HOST": "127.0.0.1",
                        "SWITCHYARD_HTTP_PORT": service == "api-gateway" ? "\(gatewayPort)" : "0", "SWITCHYARD_OPS_PORT": "\(port)",
                        "SWITCHYARD_INSTANCE_ID": "\(service)-metrics", "SWITCHYARD_DB_POOL_SIZE": "2",
                        "SWITCHYARD_LOG_LEVEL": "warning", "SWITCHYARD_ADMIN_TOKENS": "ops:metrics-test-token-0123456789",
                    ]
                    processes[service] = (try TestProcess(executable: try builtProduct(service), environment: environment), port)
                }
                for service in Self.services {
                    let (process, port) = processes[service]!
                    var ready = false
                    for _ in 0..<600 where !ready {
                        #expect(process.isRunning, "\(service) exited: \(process.output.suffix(1_000))")
                        if !process.isRunning { return }
                        ready = (try? await Self.get(http, port: port, path: "/ready").status) == 200
                        if !ready { try await Task.sleep(for: .milliseconds(100)) }
                    }
                    #expect(ready, "\(service) not ready")
                }
                /// Every service's exposition passes promtool and has the operator figures.
                func checkAll(_ moment: String) async throws {
                    for service in Self.services {
                        let port = processes[service]!.port
                        _ = try await Self.get(http, port: port, path: "/metrics")  // the second scrape has HTTP durations
                        let (status, text) = try await Self.get(http, port: port, path: "/metrics")
                        #expect(status == 200)
                        let (exit, output) = try Self.promtool(promtool, text)
                        #expect(exit == 0 && output.isEmpty, "\(service) (\(moment)): promtool says \(output)")
                        for family in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                                       "process_max_fds", "process_start_time_seconds", "nats_connected 1",
                                       "nats_reconnects_total", "http_request_duration_seconds_bucket{"] {
                            #expect(text.contains(family), "\(service) lacks \(family)")
                        }
                        #expect(text.contains("route=\"/metrics\""), "\(service): the scrape itself is timed")
                        if Self.withConsumers.contains(service) {
                            #expect(text.contains("jetstream_consumer_pending_messages{"), "\(service) lacks consumer figures")
                            #expect(text.contains("jetstream_consumer_ack_pending_messages{"))
                            #expect(text.contains("nats_messages_dead_lettered_total{"), "\(service): dead letters from the start")
                        }
                        if Self.withPool.contains(service) {
                            #expect(text.contains("db_pool_connections{state=\"max\"} 2") || text.contains("db_pool_connections{state=\"max\"} 2.0"),
                                    "\(service) lacks pool figures")
                        }
                        #expect(text.contains("# HELP process_resident_memory_bytes "), "\(service) lacks help text")
                    }
                }
                try await checkAll("fresh")
                // After traffic too: a tenant, a key and a few chats (answered, streamed, refused) through the chat path.
                // (The tenant service is running: the demo tenant goes in through its admin commands, like make run.)
                let seedDirectory = try makeTemporaryDirectory(prefix: "metrics")
                defer { try? FileManager.default.removeItem(atPath: seedDirectory) }
                let envFile = seedDirectory + "/demo.env"
                let (seeded, seedOutput) = try await TestProcess.run(
                    try builtProduct("switchyard"),
                    ["demo", "seed", "--env-file", envFile, "--base-url", "http://127.0.0.1/v1", "--rpm", "0", "--tpm", "0"],
                    environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_ADMIN_TOKEN": "metrics-test-token-0123456789",
                                  "SWITCHYARD_ACTOR": "ci"], check: false)
                #expect(seeded == 0, "\(seedOutput)")
                let apiKey = ((try? String(contentsOfFile: envFile, encoding: .utf8)) ?? "").split(separator: "\n")
                    .first { $0.hasPrefix("SWITCHYARD_API_KEY=") }.map { String($0.dropFirst("SWITCHYARD_API_KEY=".count)) } ?? ""
                var answered = 0
                for attempt in 0..<300 where answered < 5 {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPort)/v1/chat/completions")
                    request.method = .POST
                    request.headers.add(name: "authorization", value: "Bearer \(attempt % 7 == 6 ? "wrong" : apiKey)")
                    request.headers.add(name: "content-type", value: "application/json")
                    let stream = attempt % 2 == 0 ? "true" : "false"
                    request.body = .bytes(ByteBuffer(string: #"{"model":"restaurant-host","stream":"# + stream
                        + #","messages":[{"role":"user","content":"When are you open?"}]}"#))
                    if let response = try? await http.execute(request, timeout: .seconds(10)) {
                        _ = try? await response.body.collect(upTo: 1 << 20)
                        if response.status == .ok { answered += 1 }
                    }
                    if answered < 5 { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(answered == 5, "the chat path answered \(answered) of 5")
                try await checkAll("after chats")
            }
        }
        try await http.shutdown()
    }

    static func get(_ http: HTTPClient, port: Int, path: String) async throws -> (status: Int, body: String) {
        let response = try await http.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 8 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    /// `promtool check metrics` on `text` (stdin): its exit status and whatever it printed.
    static func promtool(_ path: String, _ text: String) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
