import ArgumentParser
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
        abstract: "Canary rollouts and the kill switch of a tenant's agents.",
        subcommands: [SetRollout.self, Kill.self])

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
