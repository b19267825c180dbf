import Foundation
import TestKit

// make chaos / make chaos-quick: the whole platform (real binaries, its own nats-server and PostgreSQL) under an
// open-loop chat load, one fault per run, then a reconciliation of what the clients saw against what billing, the
// event log and analytics recorded. Prints one table row per fault; exits 1 when any run loses or doubles anything,
// answers wrongly, or shows errors its fault must not cause.
//
// usage: chaos --bin <dir of the service binaries> [--quick] [--faults a,b,…] [--rate N] [--seconds N] [--slow N]

struct Options {
    var bin = ""
    var faults = Fault.allCases
    var rate = 150
    var seconds = 20
    var slow = 1_000

    init(_ arguments: [String]) throws {
        var iterator = arguments.dropFirst().makeIterator()
        func value(_ name: String) throws -> String {
            guard let value = iterator.next() else { throw ChaosError("\(name) needs a value") }
            return value
        }
        while let argument = iterator.next() {
            switch argument {
            case "--bin": bin = try value(argument)
            case "--quick":
                faults = [.killOrchestrator, .restartNATS, .slowClients]
                rate = 100
                seconds = 10
                slow = 200
            case "--faults":
                faults = try value(argument).split(separator: ",").map {
                    guard let fault = Fault(rawValue: String($0)) else {
                        throw ChaosError("unknown fault \($0); known: \(Fault.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    return fault
                }
            case "--rate": rate = Int(try value(argument)) ?? rate
            case "--seconds": seconds = Int(try value(argument)) ?? seconds
            case "--slow": slow = Int(try value(argument)) ?? slow
            default: throw ChaosError("unknown argument \(argument)")
            }
        }
        guard !bin.isEmpty else { throw ChaosError("--bin <directory of the service binaries> is required") }
    }
}

enum Fault: String, CaseIterable {
    case killRouter = "kill-router"
    case killOrchestrator = "kill-orchestrator"
    case killGateway = "kill-gateway"
    case killBilling = "kill-billing"
    case killAnalytics = "kill-analytics"
    case restartNATS = "restart-nats"
    case restartPostgres = "restart-postgres"
    case slowClients = "slow-clients"

    /// Statuses the clients may see under this fault (0 = connection refused or cut).
    var allowedFailures: Set<Int> {
        switch self {
        case .killGateway: [0]  // its clients' connections are cut; nothing else
        case .restartPostgres: [503]  // a clear, unbilled "knowledge base unavailable" — never a wrong 200
        default: []
        }
    }
}

struct Row {
    var fault: Fault
    var sent = 0
    var answered = 0
    var failures: [Int: Int] = [:]
    var wrong = 0
    var p50 = 0.0
    var p99 = 0.0
    var max = 0.0
    var lost = 0
    var duplicated = 0
    var notes: [String] = []
    var passed = true
}

/// Raises the soft open-file limit to the hard one (the slow-client run holds a thousand sockets, and the gateway,
/// started from here, inherits the limit).
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
}

func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
}

func run(_ fault: Fault, options: Options) async throws -> Row {
    var row = Row(fault: fault)
    let headerTimeout = 5, idleTimeout = 10
    let extra = fault == .slowClients
        ? ["SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS": "\(headerTimeout)", "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS": "\(idleTimeout)"]
        : [:]
    let platform = try await Platform.start(binDirectory: options.bin, extraEnvironment: extra)
    let client = LoadClient(port: platform.gatewayPort, apiKey: platform.apiKey)
    do {
        try await platform.waitUntilReady(client: client)
        print("  \(fault.rawValue): platform up; \(options.rate) chats/s for \(options.seconds) s, fault after a third…")
        let faultNotes = FaultNotes()
        let outcomes = try await runLoad(client: client, rate: options.rate, duration: .seconds(options.seconds)) {
            try await inject(fault, platform: platform, options: options, headerTimeout: headerTimeout,
                             idleTimeout: idleTimeout, notes: faultNotes)
        }
        row.notes += faultNotes.take()
        print("  \(fault.rawValue): load done; waiting for billing and analytics to settle…")
        if !(try await platform.waitUntilSettled()) {
            row.notes.append("billing/analytics not settled after 180 s")
            row.passed = false
        }
        let reconciliation = try await reconcile(platform: platform, outcomes: outcomes)
        row.sent = outcomes.count
        row.answered = outcomes.filter { $0.status == 200 }.count
        for outcome in outcomes where outcome.status != 200 { row.failures[outcome.status, default: 0] += 1 }
        // What the failures said (the first of each status).
        var shown = Set<Int>()
        for outcome in outcomes where outcome.status != 200 && shown.insert(outcome.status).inserted {
            row.notes.append("\(outcome.status == 0 ? "no answer" : String(outcome.status)): \(outcome.failure)")
        }
        row.wrong = outcomes.filter(\.wrong).count
        let latencies = outcomes.filter { $0.status == 200 }.map(\.milliseconds).sorted()
        row.p50 = percentile(latencies, 0.50)
        row.p99 = percentile(latencies, 0.99)
        row.max = latencies.last ?? 0
        row.lost = reconciliation.lost
        row.duplicated = reconciliation.duplicated
        row.notes += reconciliation.details
        let unexpected = row.failures.keys.filter { !fault.allowedFailures.contains($0) }
        if row.lost > 0 || row.duplicated > 0 || row.wrong > 0 || !unexpected.isEmpty || faultNotes.failed
            || reconciliation.billedFailures > 0 {
            row.passed = false
        }
    } catch {
        row.notes.append("run failed: \(error)")
        row.passed = false
    }
    await client.shutdown()
    await platform.stop()
    return row
}

final class FaultNotes: @unchecked Sendable {
    private let lock = NSLock()
    private var notes: [String] = []
    private(set) var failed = false
    func add(_ note: String, failing: Bool = false) {
        lock.lock()
        notes.append(note)
        failed = failed || failing
        lock.unlock()
    }
    func take() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return notes
    }
}

func inject(_ fault: Fault, platform: Platform, options: Options, headerTimeout: Int, idleTimeout: Int,
            notes: FaultNotes) async throws {
    let started = ContinuousClock.now
    switch fault {
    case .killRouter: try await platform.killAndRestart("router")
    case .killOrchestrator: try await platform.killAndRestart("orchestrator")
    case .killGateway: try await platform.killAndRestart("api-gateway")
    case .killBilling: try await platform.killAndRestart("billing")
    case .killAnalytics: try await platform.killAndRestart("analytics")
    case .restartNATS:
        try await platform.nats.restart()
        notes.add("nats-server down for \(milliseconds(ContinuousClock.now - started)) ms")
    case .restartPostgres:
        try await platform.postgres.restart()
        notes.add("PostgreSQL down for \(milliseconds(ContinuousClock.now - started)) ms")
    case .slowClients:
        let (trickling, silent, answers) = await slowClients(port: platform.gatewayPort, count: options.slow,
                                                             limit: .seconds(idleTimeout + 20))
        let late = trickling.filter { ($0 ?? .infinity) > Double(headerTimeout) + 2 }.count
            + silent.filter { ($0 ?? .infinity) > Double(idleTimeout) + 2 }.count
        // Trickling connections must end with the header timeout's 408 (not earlier, not otherwise); silent ones
        // are closed without an answer.
        let early = trickling.filter { ($0 ?? 0) < Double(headerTimeout) - 0.5 }.count
        let unexpected = answers.filter { key, _ in
            key != "trickling: HTTP/1.1 408 Request Timeout" && key != "silent: closed without an answer"
        }
        if !unexpected.isEmpty { notes.add("unexpected answers: \(unexpected)", failing: true) }
        if early > 0 { notes.add("\(early) trickling connections closed before the header timeout", failing: true) }
        let slowestTrickling = trickling.compactMap { $0 }.max() ?? 0
        let fastestTrickling = trickling.compactMap { $0 }.min() ?? 0
        let slowestSilent = silent.compactMap { $0 }.max() ?? 0
        notes.add("\(trickling.count) trickling connections closed with 408 after "
                  + String(format: "%.1f–%.1f s", fastestTrickling, slowestTrickling) + " (header timeout \(headerTimeout) s), \(silent.count) silent ones after at most "
                  + String(format: "%.1f s", slowestSilent) + " (idle timeout \(idleTimeout) s); \(late) late",
                  failing: late > 0 || trickling.count + silent.count < options.slow)
    }
}

func milliseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
}

do {
    let options = try Options(CommandLine.arguments)
    raiseOpenFileLimit()
    print("Switchyard chaos: \(options.faults.count) faults, one per run, \(options.rate) chats/s for "
          + "\(options.seconds) s each (every fifth streamed), \(ProcessInfo.processInfo.activeProcessorCount) cores")
    var rows: [Row] = []
    for fault in options.faults {
        rows.append(try await run(fault, options: options))
        let row = rows.last!
        print("  \(fault.rawValue): \(row.passed ? "ok" : "FAILED") — \(row.answered)/\(row.sent) answered, lost \(row.lost), "
              + "duplicated \(row.duplicated)")
    }
    print("")
    print("| fault | sent | 200 | other statuses | wrong answers | p50 ms | p99 ms | max ms | lost | duplicated | result | notes |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
    for row in rows {
        let failures = row.failures.isEmpty ? "—"
            : row.failures.sorted { $0.key < $1.key }.map { "\($0.key == 0 ? "no answer" : String($0.key)): \($0.value)" }
                .joined(separator: ", ")
        print("| \(row.fault.rawValue) | \(row.sent) | \(row.answered) | \(failures) | \(row.wrong) | "
              + String(format: "%.1f | %.1f | %.0f", row.p50, row.p99, row.max)
              + " | \(row.lost) | \(row.duplicated) | \(row.passed ? "ok" : "FAILED") | \(row.notes.joined(separator: "; ")) |")
    }
    exit(rows.allSatisfy(\.passed) ? 0 : 1)
} catch {
    print("chaos: \(error)")
    exit(2)
}
