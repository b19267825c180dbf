import ArgumentParser
import Foundation
import Schemas
import Tenancy

/// `switchyard eval …`: golden suites of the eval service (runs, replays and rollouts build on them).
struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Golden suites per tenant and agent (the eval service).",
        subcommands: [SuiteCommand.self])

    struct SuiteCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "suite",
            abstract: "Import, list and show golden suites.",
            subcommands: [Import.self, List.self, Show.self])
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Validate a suite file (YAML or JSON) and store it for a tenant's agent.",
            discussion: """
                The eval service checks the file (every problem with its line) and that the agent is in the \
                tenant's manifest; a suite of the same name is replaced. Nothing is written when anything is wrong. \
                Format: docs/EVAL.md; example: examples/eval/restaurant-host.yaml.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "The agent the suite tests.") var agent: String
        @Option(help: "The suite's name (default: the file's `name`).") var name: String?
        @Argument(help: ArgumentHelp("The suite file (.yaml, .yml or .json).", valueName: "file")) var file: String

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            let source: String
            do {
                source = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw CLIFailure("\(file): cannot read the file as UTF-8 text")
            }
            try await options.withSession { session in
                let response: ImportSuiteResponse = try await session.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                    tenantID: tenant, agent: agent, name: name ?? "", source: source))
                try session.output(json: response) {
                    let suite = response.suite ?? EvalSuite()
                    print("\(response.replaced ? "replaced" : "imported") suite \(suite.name) for \(suite.agent) of "
                          + "\(suite.tenantID): \(suite.cases.count) cases")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List a tenant's suites.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "Only this agent's suites.") var agent: String?

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            try await options.withSession { session in
                let response: ListSuitesResponse = try await session.call(EvalAdminCommand.suiteList, ListSuitesRequest(
                    tenantID: tenant, agent: agent ?? ""))
                try session.output(json: response) {
                    var table = TextTable("AGENT", "SUITE", "CASES", "UPDATED", "BY", "DESCRIPTION")
                    for suite in response.suites {
                        table.add(suite.agent, suite.name, String(suite.cases), Output.time(suite.updatedAtUnixNanos),
                                  suite.updatedBy, String(suite.summary.prefix(60)))
                    }
                    table.print(ifEmpty: "no suites for \(tenant)")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a suite's cases.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "The agent the suite tests.") var agent: String
        @Option(help: "The suite's name.") var name: String

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            try await options.withSession { session in
                let response: GetSuiteResponse = try await session.call(EvalAdminCommand.suiteGet, GetSuiteRequest(
                    tenantID: tenant, agent: agent, name: name))
                try session.output(json: response) {
                    let suite = response.suite ?? EvalSuite()
                    print("\(suite.name) (\(suite.agent) of \(suite.tenantID)): \(suite.summary)")
                    var table = TextTable("CASE", "WEIGHT", "INPUT", "EXPECTATIONS")
                    for evalCase in suite.cases {
                        let input = evalCase.messages.last?.content ?? ""
                        let checks = evalCase.expectations.map { expectation in
                            let value = expectation.values.isEmpty ? expectation.value : expectation.values.joined(separator: ",")
                            return "\(expectation.kind)=\(value.prefix(24))"
                        }
                        table.add(evalCase.id, String(format: "%g", evalCase.weight), String(input.prefix(40)),
                                  checks.joined(separator: " "))
                    }
                    table.print(ifEmpty: "no cases")
                }
            }
        }
    }
}
