import ArgumentParser
import Foundation
import Schemas
import Tenancy

/// `switchyard eval …`: golden suites of the eval service and runs of them against agent versions.
struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Golden suites per tenant and agent, and runs of them on an agent version (the eval service).",
        subcommands: [SuiteCommand.self, RunSuite.self, Replay.self, Runs.self, Result.self, Cancel.self])

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

    struct RunSuite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Run a suite through the chat path on a version of its agent and report the score.",
            discussion: """
                Each case goes through router and orchestrator pinned to --version (a version of the agent in the \
                tenant's manifest or rollout), marked as eval traffic: it is on no invoice and in none of the \
                tenant's analytics. Progress is printed while the run goes on; then every case with its score and \
                the run's score (weighted by the cases' weights). Exit status 1 if the run failed or, with \
                --min-score, scored below it. --detach prints the run id and returns at once.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "The agent the suite tests.") var agent: String
        @Option(help: "The agent version to run (e.g. v2).") var version: String
        @Option(help: "The suite's name.") var suite: String
        @Option(help: "Cases in flight at once (1-32, default 4).") var concurrency: UInt32 = 4
        @Option(name: .customLong("min-score"), help: "Exit with status 1 when the score is below this (0-1).")
        var minScore: Double?
        @Flag(help: "Start the run and return its id without waiting.") var detach = false

        func validate() throws {
            try validateTenantID(tenant)
            guard (1...32).contains(concurrency) else { throw ValidationError("--concurrency must be 1 to 32") }
            if let minScore, !(0...1).contains(minScore) { throw ValidationError("--min-score must be 0 to 1") }
        }

        func run() async throws {
            try await options.withSession { session in
                let started: StartRunResponse = try await session.call(EvalAdminCommand.runStart, StartRunRequest(
                    tenantID: tenant, agent: agent, agentVersion: version, suite: suite, concurrency: concurrency))
                let runID = started.run?.runID ?? ""
                if detach {
                    try session.output(json: started) { print(runID) }
                    return
                }
                let progress = FileHandle.standardError
                progress.write(Data("run \(runID): \(started.run?.casesTotal ?? 0) cases of \(suite) on \(agent) \(version)…\n".utf8))
                var lastDone: UInt32 = .max
                var run = started.run ?? EvalRun()
                while run.status == "running" {
                    try await Task.sleep(for: .milliseconds(500))
                    let response: GetRunResponse = try await session.call(EvalAdminCommand.runGet, GetRunRequest(
                        tenantID: tenant, runID: runID))
                    run = response.run ?? run
                    if run.casesDone != lastDone && run.status == "running" {
                        lastDone = run.casesDone
                        progress.write(Data("  \(run.casesDone)/\(run.casesTotal) cases done, \(run.casesPassed) passed\n".utf8))
                    }
                }
                let final: GetRunResponse = try await session.call(EvalAdminCommand.runGet, GetRunRequest(
                    tenantID: tenant, runID: runID, includeResults: true))
                let finished = final.run ?? run
                try session.output(json: final) { EvalRunText.print(finished) }
                if finished.status != "completed" {
                    throw CLIFailure("run \(runID) \(finished.status): \(finished.error)")
                }
                if let minScore, finished.score < minScore {
                    throw CLIFailure(String(format: "run %@ scored %.3f, below --min-score %.3f", runID, finished.score, minScore))
                }
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "replay",
            abstract: "Run a tenant's recorded requests for an agent through a candidate version and compare the answers.",
            discussion: """
                Takes the most recent --limit requests of the agent since --since from the event log (the tenant's own \
                traffic, never eval runs), sends each through the chat path pinned to --candidate as eval traffic (no \
                user sees it, nothing is billed, no tenant figure changes), and compares with what the request got: \
                agreement of the answers (word overlap), handoffs, failures, latency and tokens. A case passes when \
                the answers agree on at least half their words, hand off alike and neither fails where the other \
                answered. Prints each case and the totals side by side (--json: the whole run).
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "The agent whose traffic is replayed.") var agent: String
        @Option(help: "The candidate version (e.g. v2).") var candidate: String
        @Option(help: "Recorded traffic of this window up to now: 90s, 15m, 1h, 7d.") var since = "24h"
        @Option(help: "The most recent N recorded requests (1-1000).") var limit: UInt32 = 50
        @Option(help: "Cases in flight at once (1-32).") var concurrency: UInt32 = 4

        func validate() throws {
            try validateTenantID(tenant)
            _ = try parseDuration(since, option: "--since")
            guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be 1 to 1000") }
            guard (1...32).contains(concurrency) else { throw ValidationError("--concurrency must be 1 to 32") }
        }

        func run() async throws {
            let window = try parseDuration(since, option: "--since")
            try await options.withSession { session in
                let started: StartReplayResponse = try await session.call(EvalAdminCommand.replayStart, StartReplayRequest(
                    tenantID: tenant, agent: agent, candidateVersion: candidate,
                    sinceUnixNanos: EventClock.nowUnixNanos() - window, limit: limit, concurrency: concurrency))
                let runID = started.run?.runID ?? ""
                let progress = FileHandle.standardError
                progress.write(Data("replay \(runID): reading \(agent)'s recorded requests of the last \(since) from the event log…\n".utf8))
                var run = started.run ?? EvalRun()
                var lastDone: UInt32 = .max
                while run.status == "running" {
                    try await Task.sleep(for: .milliseconds(500))
                    let response: GetRunResponse = try await session.call(EvalAdminCommand.runGet, GetRunRequest(
                        tenantID: tenant, runID: runID))
                    run = response.run ?? run
                    if run.casesDone != lastDone && run.status == "running" && run.casesTotal > 0 {
                        lastDone = run.casesDone
                        progress.write(Data("  \(run.casesDone)/\(run.casesTotal) requests replayed\n".utf8))
                    }
                }
                let final: GetRunResponse = try await session.call(EvalAdminCommand.runGet, GetRunRequest(
                    tenantID: tenant, runID: runID, includeResults: true))
                let finished = final.run ?? run
                try session.output(json: final) { EvalRunText.printReplay(finished) }
                if finished.status != "completed" { throw CLIFailure("replay \(runID) \(finished.status): \(finished.error)") }
            }
        }
    }

    struct Runs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "runs", abstract: "List a tenant's eval runs, newest first.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Option(help: "Only this agent's runs.") var agent: String?
        @Option(help: "At most this many runs (default 20).") var limit: UInt32 = 20

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            try await options.withSession { session in
                let response: ListRunsResponse = try await session.call(EvalAdminCommand.runList, ListRunsRequest(
                    tenantID: tenant, agent: agent ?? "", limit: limit))
                try session.output(json: response) {
                    var table = TextTable("RUN", "AGENT", "VERSION", "SUITE", "STATUS", "CASES", "PASSED", "SCORE", "STARTED", "BY")
                    for run in response.runs {
                        table.add(run.runID, run.agent, run.agentVersion, run.suite, run.status,
                                  "\(run.casesDone)/\(run.casesTotal)", String(run.casesPassed),
                                  run.status == "completed" ? String(format: "%.3f", run.score) : "-",
                                  Output.time(run.startedAtUnixNanos), run.startedBy)
                    }
                    table.print(ifEmpty: "no eval runs for \(tenant)")
                }
            }
        }
    }

    struct Result: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "result", abstract: "Show a run with every case's result.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Argument(help: ArgumentHelp("The run id (run-…).", valueName: "run-id")) var runID: String

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            try await options.withSession { session in
                let response: GetRunResponse = try await session.call(EvalAdminCommand.runGet, GetRunRequest(
                    tenantID: tenant, runID: runID, includeResults: true))
                try session.output(json: response) { EvalRunText.print(response.run ?? EvalRun()) }
            }
        }
    }
}

extension EvalCommand {
    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel", abstract: "Cancel a run or replay in progress.",
            discussion: """
                The run is marked cancelled at once (and no longer counts against the tenant's limit of runs in \
                progress); the eval replica driving it stops within a second: no new case starts, cases in flight \
                are neither stored nor scored. A run that has already ended is refused (conflict).
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var tenant: String
        @Argument(help: ArgumentHelp("The run id (run-…).", valueName: "run-id")) var runID: String

        func validate() throws { try validateTenantID(tenant) }

        func run() async throws {
            try await options.withSession { session in
                let response: CancelRunResponse = try await session.call(EvalAdminCommand.runCancel, CancelRunRequest(
                    tenantID: tenant, runID: runID))
                let run = response.run ?? EvalRun()
                try session.output(json: response) {
                    print("run \(run.runID) cancelled (\(run.casesDone)/\(run.casesTotal) cases done): \(run.error)")
                }
            }
        }
    }
}

/// A run as text: one row per case, then the totals.
enum EvalRunText {
    static func print(_ run: EvalRun) {
        var table = TextTable("CASE", "SCORE", "PASS", "MS", "HANDOFF", "ANSWER / FAILURES")
        for result in run.results {
            let detail = result.failures.isEmpty ? String(result.answer.prefix(50)) : result.failures.joined(separator: "; ")
            table.add(result.caseID, String(format: "%.2f", result.score), result.passed ? "yes" : "no",
                      String(result.latencyMs), result.handedOff ? "yes" : "no", String(detail.prefix(90)))
        }
        table.print(ifEmpty: "no case results")
        Swift.print("run \(run.runID) \(run.status): \(run.agent) \(run.agentVersion), suite \(run.suite)")
        if run.status == "completed" {
            Swift.print(String(format: "score %.3f — %d/%d cases passed, %d handoffs, %d errors, p95 %d ms, tokens %d in / %d out",
                               run.score, run.casesPassed, run.casesTotal, run.handoffs, run.errors, run.latencyP95Ms,
                               run.promptTokens, run.completionTokens))
        } else if !run.error.isEmpty {
            Swift.print("error: \(run.error)")
        }
    }

    /// A replay: recorded vs candidate per request, then the totals side by side.
    static func printReplay(_ run: EvalRun) {
        var table = TextTable("REQUEST", "AGREE", "PASS", "MS REC→CAND", "HANDOFF REC→CAND", "TOKENS REC→CAND", "NOTES")
        for result in run.results {
            table.add(String(result.caseID.prefix(12)), String(format: "%.2f", result.agreement), result.passed ? "yes" : "no",
                      "\(result.recordedLatencyMs)→\(result.latencyMs)",
                      "\(result.recordedHandedOff ? "yes" : "no")→\(result.handedOff ? "yes" : "no")",
                      "\(result.recordedPromptTokens + result.recordedCompletionTokens)→\(result.promptTokens + result.completionTokens)",
                      String(result.failures.joined(separator: "; ").prefix(70)))
        }
        table.print(ifEmpty: "no recorded requests of \(run.agent) in that window")
        Swift.print("replay \(run.runID) \(run.status): \(run.agent), candidate \(run.agentVersion), \(run.casesTotal) recorded requests")
        guard run.status == "completed" else {
            if !run.error.isEmpty { Swift.print("error: \(run.error)") }
            return
        }
        var totals = TextTable("", "RECORDED", "CANDIDATE")
        totals.add("handoffs", String(run.recordedHandoffs), String(run.handoffs))
        totals.add("errors", String(run.recordedErrors), String(run.errors))
        totals.add("p95 ms", String(run.recordedLatencyP95Ms), String(run.latencyP95Ms))
        totals.add("tokens in / out", "\(run.recordedPromptTokens) / \(run.recordedCompletionTokens)",
                   "\(run.promptTokens) / \(run.completionTokens)")
        totals.print(ifEmpty: "")
        Swift.print(String(format: "score %.3f (mean agreement-based score), %d/%d requests passed", run.score,
                           run.casesPassed, run.casesTotal))
    }
}
