import ArgumentParser
import Schemas
import Tenancy

struct ManifestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manifest",
        abstract: "Set and show a tenant's package manifest (its agents and their intents).",
        subcommands: [SetManifest.self, ShowManifest.self])

    struct SetManifest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Replace a tenant's manifest with one from a JSON or YAML file.",
            discussion: """
                The file holds one PackageManifest with the proto3 JSON field names (packageName, defaultAgent, \
                agents: agent, provider, model, systemPrompt, intents, fallbackAgent, enabled, version, \
                handoffThreshold); the .proto names (package_name, …) are accepted too, unknown keys are errors. \
                `switchyard manifest show --json` prints a file this command takes; \
                examples/demo-restaurant/manifest.yaml is an example. Rollouts of agents the new manifest no longer \
                has are removed.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Argument(help: ArgumentHelp("A .json, .yaml or .yml file holding the manifest.", valueName: "file"))
        var file: String

        func run() async throws {
            // The file is read and checked before anything connects.
            let manifest = try InputFile.load(file).decode(PackageManifest.self)
            try await options.withSession { session in
                let response: SetManifestResponse = try await session.call(
                    .setManifest, SetManifestRequest(tenantID: tenant.tenant, manifest: manifest))
                try session.output(json: response) {
                    let stored = response.manifest ?? manifest
                    print("set the manifest of tenant \(tenant.tenant): package \(Output.text(stored.packageName)), "
                          + "\(stored.agents.count) agent(s) (\(stored.agents.map(\.agent).joined(separator: ", "))), "
                          + "default agent \(stored.defaultAgent)")
                }
            }
        }
    }

    struct ShowManifest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show a tenant's manifest.",
            discussion: """
                With --json the manifest itself is printed, in the format `manifest set` takes: \
                `switchyard manifest show --tenant T --json > manifest.json` and \
                `switchyard manifest set --tenant T manifest.json` round-trip.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption

        func run() async throws {
            try await options.withSession { session in
                let response: GetTenantResponse = try await session.call(.get, GetTenantRequest(tenantID: tenant.tenant))
                guard let manifest = response.manifest else {
                    throw CLIFailure("not_found: tenant \(tenant.tenant) has no manifest "
                        + "(set one with `switchyard manifest set`)")
                }
                try session.output(json: manifest) {
                    ManifestText.printSummary(manifest)
                    for agent in manifest.agents where !agent.intents.isEmpty {
                        print("")
                        print("intents of \(agent.agent):")
                        var table = TextTable("NAME", "PRIORITY", "PATTERN", "KEYWORDS")
                        for intent in agent.intents.sorted(by: { $0.priority > $1.priority }) {
                            table.add(intent.name, "\(intent.priority)", cell(intent.pattern, max: 30),
                                      cell(intent.keywords.joined(separator: ", "), max: 60))
                        }
                        table.print(ifEmpty: "")
                    }
                    print("")
                    print("(system prompts and all details: --json)")
                }
            }
        }
    }
}

enum ManifestText {
    static func printSummary(_ manifest: PackageManifest) {
        print("manifest: package \(Output.text(manifest.packageName)), default agent \(Output.text(manifest.defaultAgent))")
        var table = TextTable("AGENT", "ENABLED", "PROVIDER", "MODEL", "VERSION", "FALLBACK", "HANDOFF BELOW", "INTENTS")
        for agent in manifest.agents {
            table.add(agent.agent, agent.enabled ? "yes" : "no", Output.text(agent.provider), Output.text(agent.model),
                      Output.text(agent.version), Output.text(agent.fallbackAgent), "\(agent.handoffThreshold)",
                      "\(agent.intents.count)")
        }
        table.print(ifEmpty: "(no agents)")
    }
}
