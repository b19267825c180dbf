import ArgumentParser
import Foundation
import Schemas
import Tenancy

/// `1h`, `30m`, `2d`, `90s` → nanoseconds.
func parseDuration(_ text: String, option: String) throws -> Int64 {
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
    guard let unit = text.last.flatMap({ units[$0] }), let value = Int64(text.dropLast()), value > 0,
          value <= 400 * 86_400 / unit else {
        throw ValidationError("\(option) must be a duration such as 90s, 15m, 1h or 7d (at most 400 days)")
    }
    return value * unit * 1_000_000_000
}

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Requests, errors, handoffs, consent, cost and per-hop latency from the analytics rollups.",
        discussion: """
            Figures cover whole minutes. Percentiles come from merged histograms (exact to 1 %), never from \
            averaging. --by cohort puts each agent's canary and stable side by side. Without --tenant, \
            --platform shows all tenants (admin only).
            """)

    enum Grouping: String, ExpressibleByArgument, CaseIterable {
        case total, tenant, agent, version, cohort, channel, package, hop
    }

    @OptionGroup(title: "Connection and output options") var options: AdminOptions
    @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String?
    @Flag(help: "Figures of every tenant (the platform).") var platform = false
    @Option(help: "The window up to now: 90s, 15m, 1h, 7d.") var since = "1h"
    @Option(help: "Only this agent.") var agent: String?
    @Option(help: "Group by total, tenant, agent, version, cohort, channel, package or hop.") var by: Grouping = .agent

    func validate() throws {
        if let tenant { try validateTenantID(tenant) }
        if tenant == nil && !platform { throw ValidationError("give --tenant T, or --platform for every tenant") }
        _ = try parseDuration(since, option: "--since")
    }

    func run() async throws {
        let window = try parseDuration(since, option: "--since")
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        try await options.withSession { session in
            let response: StatsResponse = try await session.call(AnalyticsAdminCommand.stats, StatsRequest(
                tenantID: tenant ?? "", platform: platform, sinceUnixNanos: now - window, untilUnixNanos: now,
                by: by == .total ? "" : by.rawValue, agent: agent ?? ""))
            try session.output(json: response) {
                print("from \(Output.time(response.sinceUnixNanos)) to \(Output.time(response.untilUnixNanos))")
                if by == .hop {
                    var table = TextTable("HOP", "SAMPLES", "P50 MS", "P95 MS", "P99 MS", "MAX MS")
                    for row in response.rows {
                        for hop in row.latency {
                            table.add(hop.hop, String(hop.count), millis(hop.p50Micros), millis(hop.p95Micros),
                                      millis(hop.p99Micros), millis(hop.maxMicros))
                        }
                    }
                    table.print(ifEmpty: "no latency samples in the window")
                    return
                }
                let keys: [(String, (StatsRow) -> String)] = switch by {
                case .total, .hop: []
                case .tenant: [("TENANT", \.tenantID)]
                case .agent: [("AGENT", \.agent)]
                case .version: [("AGENT", \.agent), ("VERSION", \.agentVersion)]
                case .cohort: [("AGENT", \.agent), ("COHORT", \.rolloutCohort)]
                case .channel: [("CHANNEL", \.channel)]
                case .package: [("PACKAGE", \.packageName)]
                }
                var table = TextTable(headers: keys.map(\.0) + ["REQUESTS", "ERRORS", "ERROR %", "HANDOFF %",
                                                                "CONSENT A/G/D", "TOKENS", "COST", "P95 MS"])
                for row in response.rows {
                    let total = row.latency.first { $0.hop == "total" }
                    table.add(row: keys.map { cell($0.1(row).isEmpty ? "-" : $0.1(row)) } + [
                        String(row.requests), String(row.failures), percent(row.failures, of: row.requests),
                        percent(row.handoffs, of: row.completions),
                        "\(row.consentAsked)/\(row.consentGranted)/\(row.consentDenied)",
                        String(row.promptTokens + row.completionTokens),
                        money(row.costMicros) + (row.unpricedCompletions > 0 ? " (+\(row.unpricedCompletions) unpriced)" : ""),
                        total.map { millis($0.p95Micros) } ?? "-",
                    ])
                }
                table.print(ifEmpty: "no traffic in the window")
                if let first = response.rows.first, by == .total, first.conversations > 0 {
                    print("conversations: \(first.conversations) started, \(first.conversationsAnswered) answered, "
                          + "\(first.conversationsHandedOff) handed off, \(first.conversationsAbandoned) abandoned")
                }
            }
        }
    }

    func millis(_ micros: Int64) -> String { String(format: "%.1f", Double(micros) / 1000) }
    func percent(_ part: Int64, of whole: Int64) -> String {
        whole == 0 ? "-" : String(format: "%.1f", Double(part) * 100 / Double(whole))
    }
}

struct AnalyticsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analytics",
        abstract: "Operate the analytics rollups.",
        subcommands: [RebuildAnalytics.self])

    struct RebuildAnalytics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rebuild",
            abstract: "Replay the event log into fresh rollups (all minutes, or those from --from on).",
            discussion: """
                The rebuild runs in the analytics service; this command starts it (or follows the one already \
                running) and reports its progress until it ends. Live folding pauses meanwhile (nothing is lost; it \
                catches up afterwards). A rebuild that fails changes nothing. Without --from it covers everything \
                the event log still holds.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: "The first minute to rebuild: a date (UTC) or a UTC time; default the whole log.") var from: String?

        func run() async throws {
            let fromNanos = try from.map { try parseTime($0, option: "--from") } ?? 0
            try await options.withSession { session in
                var state: RebuildResponse = try await session.call(AnalyticsAdminCommand.rebuild,
                                                                    RebuildRequest(fromUnixNanos: fromNanos))
                let progress = FileHandle.standardError
                progress.write(Data("rebuild \(state.id) (requested by \(state.requestedBy)) running…\n".utf8))
                // Progress on stderr every 2 s until it finishes; the outcome on stdout (or as JSON).
                var lastReport = Date.distantPast
                while state.state == "running" {
                    try await Task.sleep(for: .milliseconds(500))
                    state = try await session.call(AnalyticsAdminCommand.rebuildStatus, RebuildStatusRequest(id: state.id))
                    if Date().timeIntervalSince(lastReport) >= 2, state.state == "running" {
                        lastReport = Date()
                        let of = state.lastSequence > 0 ? " of events \(state.firstSequence)…\(state.lastSequence)" : ""
                        progress.write(Data("  replayed \(state.eventsReplayed)\(of), folded \(state.eventsFolded)\n".utf8))
                    }
                }
                let outcome = state
                try session.output(json: outcome) {
                    let scope = outcome.fromUnixNanos == 0 ? "every minute" : "minutes from \(Output.time(outcome.fromUnixNanos))"
                    if outcome.state == "done" {
                        print("rebuilt \(scope): replayed events \(outcome.firstSequence)…\(outcome.lastSequence) "
                              + "(\(outcome.eventsReplayed)), folded \(outcome.eventsFolded)")
                    }
                }
                if outcome.state != "done" {
                    throw AdminFailure(.unavailable, "rebuild \(outcome.id) failed, nothing was changed: \(outcome.failure)")
                }
            }
        }
    }
}
