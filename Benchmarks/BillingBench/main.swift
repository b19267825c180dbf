// billing-bench: the billing service's sustained ledger ingest rate (`make bench-billing`).
// Starts its own nats-server and PostgreSQL (TestKit) on free ports, creates BILLING_BENCH_TENANTS tenants
// (default 1,000) in the tenancy mirror, pre-fills the usage log with BILLING_BENCH_EVENTS usage events (default
// 200,000), then starts the billing binary given as the first argument and measures, from its first ledger line
// to the last, how many events per second reach the ledger; CPU seconds of billing and PostgreSQL alongside.
import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import Storage
import Tenancy
import TestKit

let logger = Logger(label: "billing-bench") { _ in SwiftLogNoOpLogHandler() }
let arguments = CommandLine.arguments
guard arguments.count > 1, FileManager.default.isExecutableFile(atPath: arguments[1]) else {
    print("usage: billing-bench <path to the billing binary>")
    exit(64)
}
let billingBinary = arguments[1]
let environment = ProcessInfo.processInfo.environment
let tenantCount = Int(environment["BILLING_BENCH_TENANTS"] ?? "") ?? 1_000
let eventCount = Int(environment["BILLING_BENCH_EVENTS"] ?? "") ?? 200_000

/// utime + stime of a process in seconds (Linux /proc), 0 when unreadable.
func cpuSeconds(_ pid: pid_t) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds of every process whose command line mentions `needle` (PostgreSQL's backends).
func cpuSeconds(matching needle: String) -> Double {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    var total = 0.0
    for entry in entries {
        guard let pid = pid_t(entry),
              let command = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8),
              command.contains(needle) else { continue }
        total += cpuSeconds(pid)
    }
    return total
}

print("Switchyard billing-bench — \(ProcessInfo.processInfo.activeProcessorCount) cores, \(eventCount) usage events over \(tenantCount) tenants")
let nats = try await NATSServer.start()
let postgres = try await PostgresServer.start()
do {
    let connection = try await NATSConnection.connect(
        NATSConfiguration(servers: [nats.url], name: "billing-bench", sendAsap: false), logger: logger)
    let jetStream = try JetStream(connection: connection)
    try await jetStream.ensureStream(Streams.usage.spec)
    try await jetStream.ensureStream(Streams.deadLetter.spec)
    let writer = try await TenancyWriter(jetStream: jetStream)
    let tenants = (0..<tenantCount).map { "bench-tenant-\($0)" }
    let now = EventClock.nowUnixNanos()
    for tenant in tenants {
        try await writer.put(Tenant(id: tenant, name: tenant, planID: "pro", status: "active", packageName: "bench",
                                    consentPolicy: "none", createdAtUnixNanos: now, updatedAtUnixNanos: now))
    }
    print("pre-filling the usage log…")
    let fillStart = ContinuousClock.now
    var next = 0
    while next < eventCount {
        let end = min(next + 20_000, eventCount)
        let messages = (next..<end).map { index -> OutboundMessage in
            var event = UsageRecorded()
            let tenant = tenants[index % tenantCount]
            let eventID = String(format: "%032x", index)
            event.meta = EventMeta(eventID: eventID, tenantID: tenant, occurredAtUnixNanos: now + Int64(index),
                                   producer: "orchestrator", schemaVersion: 1, requestID: "req-\(index)", traceID: "")
            event.conversationID = index % 4 == 0 ? "conv-\(index % 5_000)" : ""
            event.agent = ["host", "concierge", "support"][index % 3]
            event.provider = index % 5 == 0 ? "local" : "openai"
            event.model = index % 5 == 0 ? "kb" : "gpt-4o-mini"
            event.promptTokens = UInt32(50 + index % 900)
            event.completionTokens = UInt32(10 + index % 300)
            return OutboundMessage(subject: Subjects.usage(tenant: tenant), payload: event.protobufBytes(),
                                   headers: [Headers.eventType: UsageRecorded.protoName],
                                   messageID: "usage:\(tenant):\(eventID)")
        }
        _ = try await jetStream.publishPipelined(messages, maxInFlight: 1_024)
        next = end
        print("  \(next) / \(eventCount)")
    }
    print(String(format: "pre-filled in %.1f s", (ContinuousClock.now - fillStart) / .seconds(1)))

    let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                     poolSize: 1), logger: logger)
    func ledgerRows() async -> Int {
        let rows = try? await pool.query("SELECT count(*) FROM billing_ledger")
        return (try? rows?.first?.decode(Int64.self, at: 0)).map { Int($0) } ?? 0
    }
    let postgresCPUBefore = cpuSeconds(matching: "postgres")
    let opsPort = try freeTCPPort()
    let billing = try TestProcess(executable: billingBinary, environment: [
        "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
        "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_HTTP_PORT": "0", "SWITCHYARD_OPS_PORT": "\(opsPort)",
        "SWITCHYARD_INSTANCE_ID": "billing-bench", "SWITCHYARD_DB_POOL_SIZE": "4", "SWITCHYARD_LOG_LEVEL": "warning",
    ])
    // Progress from billing's own counter of recorded events (its /metrics), not from `count(*)` on the ledger: a
    // scan of a growing table every few milliseconds would compete with the ingest it measures. The ledger is
    // counted once at the end.
    func recorded() -> Int { RecordedCounter.read(port: opsPort) }
    // From the first ledger line on (startup, migrations and the mirror load are not ingest).
    var rows = 0
    while rows == 0 {
        guard billing.isRunning else { print("billing exited:\n\(billing.output)"); exit(1) }
        try await Task.sleep(for: .milliseconds(5))
        rows = recorded()
    }
    let start = ContinuousClock.now
    let startRows = rows
    let billingCPUStart = cpuSeconds(billing.pid)
    var lastReport = start
    while rows < eventCount {
        guard billing.isRunning else { print("billing exited:\n\(billing.output)"); exit(1) }
        try await Task.sleep(for: .milliseconds(20))
        rows = recorded()
        if ContinuousClock.now - lastReport > .seconds(2) {
            lastReport = ContinuousClock.now
            print("  \(rows) / \(eventCount) in the ledger")
        }
    }
    let seconds = (ContinuousClock.now - start) / .seconds(1)
    let billingCPU = cpuSeconds(billing.pid) - billingCPUStart
    let postgresCPU = cpuSeconds(matching: "postgres") - postgresCPUBefore
    let ledgerLines = await ledgerRows()
    guard ledgerLines == eventCount else {
        print("the ledger holds \(ledgerLines) lines, expected \(eventCount)")
        exit(1)
    }
    let ingested = Double(rows - startRows)
    print(String(format: "ledger ingest: %.0f usage events/s (%d events in %.2f s)", ingested / seconds,
                 rows - startRows, seconds))
    print(String(format: "CPU per 1,000 events: billing %.1f ms, PostgreSQL %.1f ms (including startup work)",
                 billingCPU * 1e6 / ingested, postgresCPU * 1e6 / ingested))
    _ = await billing.terminateAndWait(grace: .seconds(5))
    await pool.close()
    connection.close()
}
await nats.stop()
await postgres.stop()

/// Reads `billing_usage_events_total{outcome="recorded"}` from billing's ops port with one blocking HTTP GET
/// (0 while the server isn't up). The response is read until the server closes the connection.
enum RecordedCounter {
    static func read(port: Int) -> Int {
        guard let fd = connectedSocket(port: port) else { return 0 }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { return 0 }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        let prefix = "billing_usage_events_total{outcome=\"recorded\"} "
        for line in String(decoding: response, as: UTF8.self).split(separator: "\n") where line.hasPrefix(prefix) {
            return Int(Double(line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)) ?? 0)
        }
        return 0
    }
}
