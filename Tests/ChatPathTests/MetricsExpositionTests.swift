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

    @Test("promtool check metrics reports nothing for any of the seven services, and the operator figures are there")
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
                for service in Self.services {
                    let port = try freeTCPPort()
                    let environment = [
                        "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                        "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "\(port)",
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
                for service in Self.services {
                    let port = processes[service]!.port
                    _ = try await Self.get(http, port: port, path: "/metrics")  // the second scrape has HTTP durations
                    let (status, text) = try await Self.get(http, port: port, path: "/metrics")
                    #expect(status == 200)
                    let (exit, output) = try Self.promtool(promtool, text)
                    #expect(exit == 0 && output.isEmpty, "\(service): promtool says \(output)")
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
