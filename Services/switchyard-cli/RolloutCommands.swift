import ArgumentParser
import Foundation
import Schemas
import Tenancy

struct AgentOption: ParsableArguments {
    @Option(help: ArgumentHelp("The agent, as named in the tenant's manifest.", valueName: "agent"))
    var agent: String

    func validate() throws {
        guard TenantID.isValid(agent) else {
            throw ValidationError("invalid agent name: it must match [a-z0-9][a-z0-9-]{0,62}")
        }
    }
}

struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Gated progressive rollouts, canary settings and the kill switch of a tenant's agents.",
        subcommands: [Start.self, Status.self, List.self, Pause.self, Resume.self, Abort.self, SetRollout.self, Kill.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk a candidate version through canary steps, gated on its eval score and live figures.",
            discussion: """
                The eval service drives the rollout on its own (docs/EVAL.md, "Rollouts"): before the first step it \
                runs --suite (and a replay of --replay recorded requests) and refuses the candidate if an eval or \
                replay gate fails; at each step it sets the canary share, waits at least --hold and --min-requests \
                settled requests, reads canary vs stable from analytics, and advances — or rolls back (canary 0 %, \
                the previous stable version) as soon as a live gate fails. After the last step the candidate becomes \
                the stable version. Gates: eval, replay (scores 0-1), error_rate, handoff_rate (e.g. 1%), p95_ms; \
                default "eval>=0.9" (with --suite), "replay>=0.9" (with --replay), "error_rate<1%,handoff_rate<5%".
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @OptionGroup var agent: AgentOption
        @Option(help: "The candidate version (an entry of the agent in the tenant's manifest).") var candidate: String
        @Option(help: "Canary shares of the steps, ascending, ending with 100.") var steps = "10,25,50,100"
        @Option(help: "Minimum time per step: 90s, 10m, 1h.") var hold = "10m"
        @Option(help: "Gates, e.g. 'eval>=0.9,error_rate<1%,handoff_rate<5%,p95_ms<2000'.") var gate: String?
        @Option(name: .customLong("min-requests"), help: "Settled requests of the agent a step needs before it advances.")
        var minRequests: UInt32 = 100
        @Option(help: "The golden suite run on the candidate before the first step.") var suite: String?
        @Option(help: "Replay this many recorded requests (last 24 h) through the candidate before the first step.")
        var replay: UInt32 = 0
        @Flag(help: "Follow the rollout until it ends (exit 1 unless it completes).") var wait = false

        func parsedSteps() throws -> [UInt32] {
            try steps.split(separator: ",").map {
                guard let value = UInt32($0.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("--steps: \"\($0)\" is not a whole number")
                }
                return value
            }
        }

        func validate() throws {
            _ = try parsedSteps()
            _ = try parseDuration(hold, option: "--hold")
            guard replay <= 1_000 else { throw ValidationError("--replay must be 0 to 1000") }
        }

        func run() async throws {
            let holdNanos = try parseDuration(hold, option: "--hold")
            try await options.withSession { session in
                let response: RolloutResponse = try await session.call(EvalAdminCommand.rolloutStart, StartRolloutRequest(
                    tenantID: tenant.tenant, agent: agent.agent, candidateVersion: candidate, steps: try parsedSteps(),
                    holdMillis: holdNanos / 1_000_000, gates: gate ?? "", minRequests: minRequests, suite: suite ?? "",
                    replayLimit: replay))
                let rollout = response.rollout ?? Rollout()
                if !wait {
                    try session.output(json: response) {
                        print("started rollout \(rollout.rolloutID) of \(agent.agent) \(candidate) for \(tenant.tenant)")
                        RolloutText.print(rollout)
                        print("follow it: switchyard rollout status --tenant \(tenant.tenant) --agent \(agent.agent)")
                    }
                    return
                }
                let final = try await RolloutText.follow(rollout, session: session)
                try session.output(json: RolloutResponse(error: nil, rollout: final)) { RolloutText.print(final) }
                if final.state != "completed" {
                    throw CLIFailure("rollout \(final.rolloutID) \(final.state): \(final.reason)")
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A rollout's state, the current step's canary vs stable figures, and its history.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "The agent (its latest rollout).") var agent: String?
        @Option(help: "The rollout id.") var id: String?

        func validate() throws {
            if agent == nil && id == nil { throw ValidationError("give --agent (its latest rollout) or --id") }
        }

        func run() async throws {
            try await options.withSession { session in
                let response: RolloutResponse = try await session.call(EvalAdminCommand.rolloutGet, GetRolloutRequest(
                    tenantID: tenant.tenant, rolloutID: id ?? "", agent: agent ?? "", includeHistory: true))
                try session.output(json: response) { RolloutText.print(response.rollout ?? Rollout(), history: true) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "A tenant's rollouts, newest first.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "Only this agent's.") var agent: String?
        @Option(help: "At most this many (1-500).") var limit: UInt32 = 20

        func run() async throws {
            try await options.withSession { session in
                let response: ListRolloutsResponse = try await session.call(EvalAdminCommand.rolloutList, ListRolloutsRequest(
                    tenantID: tenant.tenant, agent: agent ?? "", limit: limit))
                try session.output(json: response) {
                    var table = TextTable("ROLLOUT", "AGENT", "CANDIDATE", "STATE", "STEP", "CANARY %", "STARTED", "REASON")
                    for rollout in response.rollouts {
                        table.add(rollout.rolloutID, rollout.agent, rollout.candidateVersion, rollout.state,
                                  RolloutText.step(rollout), "\(rollout.canaryPercent)", Output.time(rollout.startedAtUnixNanos),
                                  String(rollout.reason.prefix(60)))
                    }
                    table.print(ifEmpty: "rollouts: none")
                }
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a rollout from advancing (the canary share stays).")
        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "The rollout id.") var id: String
        func run() async throws { try await RolloutText.control("pause", id: id, tenant: tenant.tenant, options: options) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a paused rollout go on (its step's hold starts again).")
        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "The rollout id.") var id: String
        func run() async throws { try await RolloutText.control("resume", id: id, tenant: tenant.tenant, options: options) }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a rollout now: live users get the previous stable version back (canary 0 %).")
        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "The rollout id.") var id: String
        func run() async throws { try await RolloutText.control("abort", id: id, tenant: tenant.tenant, options: options) }
    }

    struct SetRollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change an agent's stable/canary versions or canary share.",
            discussion: "Settings you leave out keep their current values (the kill switch too).")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @OptionGroup var agent: AgentOption
        @Option(name: .customLong("canary-percent"), help: "Share of requests (0-100) that get the canary version.")
        var canaryPercent: UInt32?
        @Option(name: .customLong("stable-version"), help: "The version most requests get.")
        var stableVersion: String?
        @Option(name: .customLong("canary-version"), help: "The version under test (empty: none).")
        var canaryVersion: String?

        func validate() throws {
            if let canaryPercent, canaryPercent > 100 { throw ValidationError("--canary-percent must be 0 to 100") }
            if canaryPercent == nil && stableVersion == nil && canaryVersion == nil {
                throw ValidationError("nothing to change: give --canary-percent, --stable-version or --canary-version")
            }
        }

        func run() async throws {
            try await options.withSession { session in
                var rollout = try await RolloutText.current(agent.agent, tenant: tenant.tenant, session: session)
                if let canaryPercent { rollout.canaryPercent = canaryPercent }
                if let stableVersion { rollout.stableVersion = stableVersion }
                if let canaryVersion { rollout.canaryVersion = canaryVersion }
                let response: SetRolloutResponse = try await session.call(
                    .setRollout, SetRolloutRequest(tenantID: tenant.tenant, rollout: rollout))
                try session.output(json: response) {
                    print("set the rollout of agent \(agent.agent) of tenant \(tenant.tenant)")
                    RolloutText.printTable([response.rollout ?? rollout])
                }
            }
        }
    }

    struct Kill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn an agent's kill switch on (or off with --off).",
            discussion: "While the kill switch is on, the agent's requests go to its fallback agent.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @OptionGroup var agent: AgentOption
        @Flag(help: "Turn the kill switch off again.") var off = false

        func run() async throws {
            try await options.withSession { session in
                var rollout = try await RolloutText.current(agent.agent, tenant: tenant.tenant, session: session)
                rollout.killSwitch = !off
                let response: SetRolloutResponse = try await session.call(
                    .setRollout, SetRolloutRequest(tenantID: tenant.tenant, rollout: rollout))
                try session.output(json: response) {
                    print(off ? "kill switch OFF for agent \(agent.agent) of tenant \(tenant.tenant)"
                              : "kill switch ON for agent \(agent.agent) of tenant \(tenant.tenant): "
                                + "its requests go to its fallback agent")
                }
            }
        }
    }
}

enum RolloutText {
    /// `error_rate<1%`, `p95_ms<2000`, `eval>=0.9`.
    static func step(_ rollout: Rollout) -> String {
        rollout.stepIndex < 0 ? "-" : "\(rollout.stepIndex + 1)/\(rollout.steps.count)"
    }

    static func print(_ rollout: Rollout, history: Bool = false) {
        Swift.print("rollout \(rollout.rolloutID): \(rollout.agent) \(rollout.candidateVersion) over "
                    + "\(rollout.stableVersion.isEmpty ? "(manifest version)" : rollout.stableVersion) — \(rollout.state)")
        Swift.print("  steps \(rollout.steps.map(String.init).joined(separator: " → ")) %, now step \(step(rollout)) at "
                    + "\(rollout.canaryPercent) %; hold \(rollout.holdMillis / 1_000) s, at least \(rollout.minRequests) requests")
        Swift.print("  gates " + rollout.gates.map(\.text).joined(separator: ", "))
        if !rollout.evalRunID.isEmpty {
            Swift.print(String(format: "  suite %@: run %@, score %.3f", rollout.suite, rollout.evalRunID, rollout.evalScore))
        }
        if !rollout.replayRunID.isEmpty {
            Swift.print(String(format: "  replay: run %@, score %.3f", rollout.replayRunID, rollout.replayScore))
        }
        if !rollout.reason.isEmpty { Swift.print("  reason: \(rollout.reason)") }
        if !rollout.driver.isEmpty { Swift.print("  driven by \(rollout.driver)") }
        if let figures = rollout.figures, figures.checkedAtUnixNanos > 0 {
            var table = TextTable("THIS STEP", "SETTLED", "FAILED", "HANDOFFS", "P95 MS")
            func rate(_ part: Int64, _ whole: Int64) -> String {
                whole == 0 ? "\(part)" : String(format: "%lld (%.1f%%)", part, Double(part) * 100 / Double(whole))
            }
            table.add("canary \(rollout.candidateVersion)", "\(figures.canarySettled)",
                      rate(figures.canaryFailures, figures.canarySettled), rate(figures.canaryHandoffs, figures.canarySettled),
                      String(format: "%.1f", Double(figures.canaryP95Micros) / 1_000))
            table.add("stable \(rollout.stableVersion)", "\(figures.stableSettled)",
                      rate(figures.stableFailures, figures.stableSettled), rate(figures.stableHandoffs, figures.stableSettled),
                      String(format: "%.1f", Double(figures.stableP95Micros) / 1_000))
            table.print(ifEmpty: "")
            Swift.print("  verdict at \(Output.time(figures.checkedAtUnixNanos)): \(figures.verdict)")
        }
        if history {
            var table = TextTable("#", "AT", "ACTION", "CANARY %", "BY", "DETAIL")
            for change in rollout.history {
                table.add("\(change.sequence)", Output.time(change.meta?.occurredAtUnixNanos ?? 0), change.action,
                          "\(change.canaryPercent)", change.actor, change.detail)
            }
            table.print(ifEmpty: "history: none")
        }
    }

    /// Polls the rollout until it has ended, printing each change as it happens (to stderr).
    static func follow(_ rollout: Rollout, session: AdminSession) async throws -> Rollout {
        var seen: UInt64 = 0
        var current = rollout
        let progress = FileHandle.standardError
        while true {
            let response: RolloutResponse = try await session.call(EvalAdminCommand.rolloutGet, GetRolloutRequest(
                tenantID: rollout.tenantID, rolloutID: rollout.rolloutID, includeHistory: true))
            current = response.rollout ?? current
            for change in current.history where change.sequence > seen {
                seen = change.sequence
                let line = "\(Output.time(change.meta?.occurredAtUnixNanos ?? 0))  \(change.action)  "
                    + "\(change.canaryPercent) %  \(change.detail)\n"
                progress.write(Data(line.utf8))
            }
            if !["evaluating", "stepping", "paused"].contains(current.state) { return current }
            try await Task.sleep(for: .seconds(1))
        }
    }

    static func control(_ action: String, id: String, tenant: String, options: AdminOptions) async throws {
        try await options.withSession { session in
            let response: RolloutResponse = try await session.call(EvalAdminCommand.rolloutControl, ControlRolloutRequest(
                tenantID: tenant, rolloutID: id, action: action))
            try session.output(json: response) { print(response.rollout ?? Rollout()) }
        }
    }

    /// The agent's stored rollout, or a fresh one when it has none.
    static func current(_ agent: String, tenant: String, session: AdminSession) async throws -> RolloutSettings {
        let response: GetTenantResponse = try await session.call(.get, GetTenantRequest(tenantID: tenant))
        return response.rollouts.first { $0.agent == agent } ?? RolloutSettings(agent: agent, tenantID: tenant)
    }

    static func printTable(_ rollouts: [RolloutSettings]) {
        var table = TextTable("AGENT", "STABLE", "CANARY", "CANARY %", "KILL SWITCH", "UPDATED")
        for rollout in rollouts {
            table.add(rollout.agent, Output.text(rollout.stableVersion), Output.text(rollout.canaryVersion),
                      "\(rollout.canaryPercent)", rollout.killSwitch ? "ON" : "off",
                      Output.time(rollout.updatedAtUnixNanos))
        }
        table.print(ifEmpty: "rollouts: none")
    }
}
