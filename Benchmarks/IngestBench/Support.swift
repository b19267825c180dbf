import Foundation
import Messaging
import TestKit

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

/// Sums the samples of `series` (exact series names with labels, e.g. `billing_usage_events_total{outcome="recorded"}`)
/// on a service's ops port `/metrics`, with one blocking HTTP GET read until the server closes the connection
/// (0 while the server isn't up).
func readCounters(port: Int, _ series: [String]) -> Int {
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
    var total = 0.0
    for line in String(decoding: response, as: UTF8.self).split(separator: "\n") {
        for name in series where line.hasPrefix(name + " ") {
            total += Double(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)) ?? 0
        }
    }
    return Int(total)
}

/// Runs a consumer binary against a pre-filled stream and measures its ingest: from the first event it settles
/// to the last (`total` settled, read from its own counters `series` on its ops port — not from a `count(*)`
/// that would compete with the ingest it measures). The counters are read once a second: each scrape renders
/// every series and asks nats-server for each durable's state, which for a filtered durable means counting its
/// pending messages — read every 20 ms, that took 8 % of analytics' CPU and a good part of nats-server's. The
/// rate is taken between the first reading and the last one before the end (both while folding, so the idle
/// part of the last second doesn't count). Returns events per second and CPU seconds of the service, of
/// PostgreSQL and of nats-server from the first reading to the end.
func measureIngest(binary: String, name: String, environment: [String: String], series: [String], total: Int,
                   unit: String) async throws
    -> (rate: Double, serviceCPU: Double, postgresCPU: Double, natsCPU: Double, settled: Int)
{
    let postgresCPUBefore = cpuSeconds(matching: "postgres")
    let natsCPUBefore = cpuSeconds(matching: "nats-server")
    let opsPort = try freeTCPPort()
    var environment = environment
    environment["SWITCHYARD_OPS_PORT"] = "\(opsPort)"
    let process = try TestProcess(executable: binary, environment: environment)
    var settled = 0
    while settled == 0 {
        guard process.isRunning else { print("\(name) exited:\n\(process.output)"); exit(1) }
        try await Task.sleep(for: .milliseconds(5))
        settled = readCounters(port: opsPort, series)
    }
    let start = ContinuousClock.now
    let startSettled = settled
    let cpuStart = cpuSeconds(process.pid)
    var lastBeforeEnd = (at: start, settled: settled)
    while settled < total {
        guard process.isRunning else { print("\(name) exited:\n\(process.output)"); exit(1) }
        try await Task.sleep(for: .seconds(1))
        settled = readCounters(port: opsPort, series)
        if settled < total {
            lastBeforeEnd = (ContinuousClock.now, settled)
            print("  \(settled) / \(total) \(unit)")
        }
    }
    let end = ContinuousClock.now
    // The rate between the first and the last reading while folding (a run too short for two: up to the end).
    let rate = lastBeforeEnd.settled > startSettled
        ? Double(lastBeforeEnd.settled - startSettled) / ((lastBeforeEnd.at - start) / .seconds(1))
        : Double(settled - startSettled) / ((end - start) / .seconds(1))
    let serviceCPU = cpuSeconds(process.pid) - cpuStart
    let postgresCPU = cpuSeconds(matching: "postgres") - postgresCPUBefore
    let natsCPU = cpuSeconds(matching: "nats-server") - natsCPUBefore
    _ = await process.terminateAndWait(grace: .seconds(5))
    return (rate, serviceCPU, postgresCPU, natsCPU, settled - startSettled)
}

/// Publishes `count` messages made by `make` in pipelined chunks of 20,000, with progress.
func prefill(_ jetStream: JetStream, count: Int, what: String, make: (Int) -> [OutboundMessage]) async throws {
    print("pre-filling \(what)…")
    let fillStart = ContinuousClock.now
    var next = 0
    var published = 0
    while next < count {
        let end = min(next + 5_000, count)
        let messages = (next..<end).flatMap(make)
        _ = try await jetStream.publishPipelined(messages, maxInFlight: 1_024)
        published += messages.count
        next = end
        if next % 20_000 == 0 || next == count { print("  \(next) / \(count)") }
    }
    print(String(format: "pre-filled %d messages in %.1f s", published, (ContinuousClock.now - fillStart) / .seconds(1)))
}
