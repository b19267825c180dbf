import Contracts
import EvalCore
import Foundation
import Messaging
import OrchestratorCore
import Schemas
import ServiceKit
import Storage
import Synchronization
import Tenancy
import Testing
import TestKit

/// Eval runs through the real chat path (router, orchestrator, billing, analytics, eval in-process; nats-server
/// with the per-service users and permissions of `make run`; the fake upstream speaks OpenAI's wire format).
@Suite("Eval runs: suites through the chat path on a pinned version", .serialized)
struct EvalRunTests {
    /// The demo tenant's manifest plus a second entry for `host`: version v2, answered by the upstream (which the
    /// test tells to answer nonsense) — a deliberately broken candidate.
    static var manifestWithCandidate: PackageManifest {
        var manifest = Stack.manifest
        manifest.agents.append(AgentManifest(agent: "host", provider: "openai", model: "gpt-test",
                                             systemPrompt: "Answer anything.", intents: [], fallbackAgent: "",
                                             enabled: true, version: "v2", handoffThreshold: 0.2))
        return manifest
    }

    static let suite = """
        name: basics
        description: what every guest asks
        cases:
          - id: hours
            messages: [{role: user, content: "When are you open?"}]
            expect: [{contains: "Tuesday"}]
          - id: address
            messages: [{role: user, content: "Where is the bistro, what is the address?"}]
            expect: [{contains: "Hauptstraße"}]
          - id: hours-de
            messages: [{role: user, content: "Wann habt ihr geöffnet?"}]
            expect: [{contains: "Dienstag"}, {language: de}]
          - id: reservation
            messages: [{role: user, content: "How can I reserve a table?"}]
            expect: [{contains: "+49 30 1234567"}, {handoff: false}]
        """

    func withEvalStack(judge: JudgeConfiguration? = nil, upstreamTimeout: Duration = .seconds(2),
                       _ body: (Stack, FakeOpenAI, AdminClient) async throws -> Void) async throws {
        let fake = FakeOpenAI()
        try await fake.start()
        let orchestrator = OrchestratorConfiguration(
            endpoints: [ProviderEndpoint(name: "openai", kind: .openAI, baseURL: fake.baseURL, apiKey: "upstream-key",
                                         timeout: upstreamTimeout)])
        do {
            try await Stack.with(orchestrator: orchestrator, billing: true, analytics: true, eval: true, evalJudge: judge,
                                 natsAuth: true) { stack in
                try await stack.writer.put(Self.manifestWithCandidate, tenant: Stack.tenant)
                let admin = AdminClient(connection: stack.admin, token: Stack.adminToken, actor: "test",
                                        timeout: .seconds(10))
                // The eval service serves commands once its mirror knows the tenant's new manifest.
                var imported = false
                for _ in 0..<400 where !imported {
                    do {
                        _ = try await admin.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                            tenantID: Stack.tenant, agent: "host", source: Self.suite), as: ImportSuiteResponse.self)
                        imported = true
                    } catch let failure as AdminFailure where failure.code == .unavailable || failure.code == .notFound {
                        try await Task.sleep(for: .milliseconds(25))
                    }
                }
                #expect(imported)
                try await body(stack, fake, admin)
            }
        } catch {
            await fake.stop()
            throw error
        }
        await fake.stop()
    }

    /// Starts a run and polls it until it is no longer running (each case has a 30 s deadline, so this ends).
    static func run(_ admin: AdminClient, version: String, suite: String = "basics") async throws -> EvalRun {
        let started = try await admin.call(EvalAdminCommand.runStart, StartRunRequest(
            tenantID: Stack.tenant, agent: "host", agentVersion: version, suite: suite, concurrency: 2),
            as: StartRunResponse.self)
        let runID = try #require(started.run?.runID)
        #expect(started.run?.status == "running")
        while true {
            let response = try await admin.call(EvalAdminCommand.runGet, GetRunRequest(
                tenantID: Stack.tenant, runID: runID, includeResults: true), as: GetRunResponse.self)
            let run = try #require(response.run)
            if run.status != "running" { return run }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test("the stable version scores 1, a broken candidate scores lower; the pin reaches the candidate's provider; eval traffic is on no invoice and in none of the tenant's analytics")
    func scoresAndSeparation() async throws {
        try await withEvalStack { stack, fake, admin in
            let completed = try stack.admin.subscribe(Subjects.event(.evalCompleted, tenant: Stack.tenant))
            let received = Mutex<[[UInt8]]>([])
            let collector = Task { for await message in completed.messages { received.withLock { $0.append(message.payload) } } }
            defer { completed.unsubscribe(); collector.cancel() }
            fake.set(.answer("I have no idea, sorry."))
            let upstreamBefore = fake.requests

            // A suite with judge expectations needs the operator's judge: refused here, nothing run.
            _ = try await admin.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                tenantID: Stack.tenant, agent: "host", source: Self.judgedSuite), as: ImportSuiteResponse.self)
            do {
                _ = try await Self.run(admin, version: "v1", suite: "judged")
                Issue.record("a judged suite ran without a judge")
            } catch let failure as AdminFailure {
                #expect(failure.code == .invalidArgument && failure.message.contains("no LLM judge"), "\(failure)")
            }

            let good = try await Self.run(admin, version: "v1")
            #expect(good.status == "completed", "\(good.error)")
            #expect(good.casesTotal == 4 && good.casesDone == 4)
            #expect(good.score == 1.0, "\(good.results.map { "\($0.caseID): \($0.failures) \($0.answer)" })")
            #expect(good.results.allSatisfy { $0.agentVersion == "v1" })
            #expect(fake.requests == upstreamBefore, "v1 is the local agent: the upstream must not be asked")

            let broken = try await Self.run(admin, version: "v2")
            #expect(broken.status == "completed", "\(broken.error)")
            #expect(broken.score < 0.5, "a candidate answering nonsense scored \(broken.score)")
            #expect(broken.score < good.score)
            #expect(broken.results.allSatisfy { $0.agentVersion == "v2" })
            #expect(fake.requests - upstreamBefore >= 4, "the pinned version's own provider answers its cases")

            // Both runs closed with an event on the log.
            let closing = ContinuousClock.now + .seconds(10)
            while received.withLock({ $0.count }) < 2 && ContinuousClock.now < closing {
                try await Task.sleep(for: .milliseconds(20))
            }
            let scores = try received.withLock { $0 }.map { try EvalCompleted(protobuf: $0).run?.score ?? -1 }.sorted()
            #expect(scores == [broken.score, good.score].sorted())

            // Billing: every usage event handled; the eval ones (one per answered case) on no ledger line.
            let evalAnswers = (good.results + broken.results).filter { $0.errorCode.isEmpty }.count
            #expect(evalAnswers == 8)
            try await Self.waitSettled(stack, stream: StreamNames.usage, durable: Consumers.billingUsage.durable)
            let usage = try await stack.adminJS.streamState(StreamNames.usage).messages
            let ledger = try await Self.count(stack, "SELECT count(*) FROM billing_ledger")
            #expect(ledger == Int(usage) - evalAnswers, "usage events \(usage), ledger lines \(ledger), eval answers \(evalAnswers)")
            #expect(ledger > 0, "the tenant's own chats (readiness probes) are billed")

            // Analytics: caught up; the tenant's series hold only its own traffic (no eval cohort, no v2).
            try await AnalyticsTests.waitCaughtUp(stack)
            let evalSeries = try await Self.count(stack, """
                SELECT count(*) FROM analytics_series WHERE rollout_cohort = 'eval' OR agent_version = 'v2' OR channel = 'eval'
                """)
            #expect(evalSeries == 0)
            #expect(try await Self.count(stack, "SELECT count(*) FROM analytics_series") > 0)
        }
    }

    @Test("a replay sends the tenant's recorded requests through a candidate: the same version agrees, a broken one does not; replays never become recorded traffic")
    func replayRecordedTraffic() async throws {
        try await withEvalStack { stack, fake, admin in
            fake.set(.answer("I have no idea, sorry."))
            // The tenant's own traffic: five chats, each recorded once its completion is on the log.
            let completions = try stack.admin.subscribe(Subjects.event(.chatCompleted, tenant: Stack.tenant))
            let recorded = Mutex<Set<String>>([])
            let collector = Task {
                for await message in completions.messages {
                    if let id = (try? ChatCompleted(protobuf: message.payload))?.meta?.requestID {
                        _ = recorded.withLock { $0.insert(id) }
                    }
                }
            }
            defer { completions.unsubscribe(); collector.cancel() }
            try await stack.admin.flush()
            var sent: [String] = []
            for question in ["When are you open?", "Where is the bistro?", "How can I reserve a table?",
                             "Wann habt ihr geöffnet?", "Are you open on Monday?"] {
                let response = try await stack.chat(["model": "host", "messages": [["role": "user", "content": question]]])
                #expect(response.status == 200)
                sent.append(try #require(response.headers["x-switchyard-request-id"]))
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while !Set(sent).isSubset(of: recorded.withLock { $0 }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(Set(sent).isSubset(of: recorded.withLock { $0 }), "every chat's completion is on the log")

            let same = try await Self.replay(admin, candidate: "v1")
            #expect(same.status == "completed", "\(same.error)")
            #expect(same.kind == "replay" && same.casesTotal == 5)
            #expect(Set(same.results.map(\.caseID)) == Set(sent), "the five most recent recorded requests")
            #expect(same.results.allSatisfy { $0.agreement == 1 && $0.passed && $0.recordedVersion == "v1" },
                    "\(same.results.map { "\($0.agreement) \($0.failures)" })")
            #expect(same.score == 1)

            let broken = try await Self.replay(admin, candidate: "v2")
            #expect(broken.status == "completed")
            #expect(Set(broken.results.map(\.caseID)) == Set(sent), "replayed requests never count as recorded traffic")
            #expect(broken.casesPassed == 0 && broken.score < 0.5, "\(broken.results.map(\.agreement))")
            #expect(broken.results.allSatisfy { $0.agentVersion == "v2" && !$0.recordedAnswer.isEmpty })
            #expect(broken.recordedPromptTokens > 0 && broken.promptTokens > 0)
        }
    }

    static let judgedSuite = """
        name: judged
        cases:
          - id: hours
            messages: [{role: user, content: "When are you open?"}]
            expect: [{contains: "Tuesday"}, {judge: "States the opening days politely"}]
        """

    @Test("the operator's LLM judge grades judge expectations (its verdict, its reason, an unreadable verdict fails)")
    func judgeExpectations() async throws {
        let judge = FakeOpenAI()
        try await judge.start()
        defer { Task { await judge.stop() } }
        try await withEvalStack(judge: JudgeConfiguration(baseURL: judge.baseURL, apiKey: "judge-key", model: "judge-model",
                                                          timeout: .seconds(5))) { stack, _, admin in
            _ = try await admin.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                tenantID: Stack.tenant, agent: "host", source: Self.judgedSuite), as: ImportSuiteResponse.self)
            judge.set(.answer(#"{"pass": true, "reason": "polite and complete"}"#))
            let passed = try await Self.run(admin, version: "v1", suite: "judged")
            #expect(passed.status == "completed" && passed.score == 1, "\(passed.results.map(\.failures))")
            let asked = try #require(judge.capturedBodies.last)
            #expect(asked.contains("judge-model") && asked.contains("States the opening days politely")
                    && asked.contains("Tuesday"), "the judge sees the rubric and the answer: \(asked.prefix(400))")

            judge.set(.answer("```json\n{\"pass\": false, \"reason\": \"curt\"}\n```"))
            let failed = try await Self.run(admin, version: "v1", suite: "judged")
            #expect(failed.score == 0.5 && failed.results.first?.failures == ["judge: curt"],
                    "\(failed.results.map(\.failures))")

            judge.set(.answer("I think it is fine"))
            let unreadable = try await Self.run(admin, version: "v1", suite: "judged")
            #expect(unreadable.score == 0.5, "an unreadable verdict never passes")
            #expect(unreadable.results.first?.failures.first?.contains("verdict unreadable") == true,
                    "\(unreadable.results.map(\.failures))")

            judge.set(.status(503))
            let down = try await Self.run(admin, version: "v1", suite: "judged")
            #expect(down.score == 0.5 && down.results.first?.failures.first?.contains("judge: unavailable: HTTP 503") == true,
                    "\(down.results.map(\.failures))")
        }
    }

    static func replay(_ admin: AdminClient, candidate: String) async throws -> EvalRun {
        let started = try await admin.call(EvalAdminCommand.replayStart, StartReplayRequest(
            tenantID: Stack.tenant, agent: "host", candidateVersion: candidate,
            sinceUnixNanos: EventClock.nowUnixNanos() - 3_600_000_000_000, limit: 5, concurrency: 2),
            as: StartReplayResponse.self)
        let runID = try #require(started.run?.runID)
        while true {
            let response = try await admin.call(EvalAdminCommand.runGet, GetRunRequest(
                tenantID: Stack.tenant, runID: runID, includeResults: true), as: GetRunResponse.self)
            let run = try #require(response.run)
            if run.status != "running" { return run }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test("bad runs get clear errors and write nothing: unknown version, agent, suite, tenant; hostile run ids")
    func badRunsAreRefused() async throws {
        try await withEvalStack { stack, _, admin in
            func failure(_ request: StartRunRequest) async -> AdminFailure? { await Self.startFailure(admin, request) }
            let unknownVersion = await failure(StartRunRequest(tenantID: Stack.tenant, agent: "host", agentVersion: "v9",
                                                               suite: "basics"))
            #expect(unknownVersion?.code == .notFound)
            #expect(unknownVersion?.message.contains("v1, v2") == true, "\(unknownVersion?.message ?? "")")
            let unknownAgent = await failure(StartRunRequest(tenantID: Stack.tenant, agent: "ghost", agentVersion: "v1",
                                                             suite: "basics"))
            #expect(unknownAgent?.code == .notFound)
            let unknownSuite = await failure(StartRunRequest(tenantID: Stack.tenant, agent: "host", agentVersion: "v1",
                                                             suite: "nope"))
            #expect(unknownSuite?.code == .notFound)
            let unknownTenant = await failure(StartRunRequest(tenantID: "nobody", agent: "host", agentVersion: "v1",
                                                              suite: "basics"))
            #expect(unknownTenant?.code == .notFound)
            for version in ["", "../v1", "v1; DROP TABLE eval_runs", String(repeating: "v", count: 65)] {
                let hostile = await failure(StartRunRequest(tenantID: Stack.tenant, agent: "host", agentVersion: version,
                                                            suite: "basics"))
                #expect(hostile?.code == .invalidArgument, "version \(version.prefix(20))")
            }
            let tooWide = await failure(StartRunRequest(tenantID: Stack.tenant, agent: "host", agentVersion: "v1",
                                                        suite: "basics", concurrency: 1_000))
            #expect(tooWide?.code == .invalidArgument)
            for id in ["", "run-XYZ", "run-0123456789abcdef'--", "../etc"] {
                let refused = await Self.getFailure(admin, GetRunRequest(tenantID: Stack.tenant, runID: id))
                #expect(refused?.code == .invalidArgument, "run id \(id)")
            }
            #expect(try await Self.count(stack, "SELECT count(*) FROM eval_runs") == 0)
            let listed = try await admin.call(EvalAdminCommand.runList, ListRunsRequest(tenantID: Stack.tenant),
                                              as: ListRunsResponse.self)
            #expect(listed.runs.isEmpty)
        }
    }

    @Test("a tenant has at most SWITCHYARD_EVAL_MAX_RUNS_PER_TENANT runs in progress, other replicas' included; a finished one frees its place")
    func runsPerTenantAreLimited() async throws {
        try await withEvalStack { stack, _, admin in
            let limit = EvalRunner.defaultMaxRunsPerTenant
            // Runs in progress on other eval replicas: rows of eval_runs that say so (recent, so no sweep takes them).
            let pool = try PostgresPool(configuration: PostgresConfiguration(
                connectionString: stack.postgres.connectionString, poolSize: 1), logger: Stack.logger)
            defer { Task { await pool.close() } }
            for index in 0..<limit {
                _ = try await pool.execute("""
                    INSERT INTO eval_runs (run_id, tenant_id, agent, agent_version, suite, status, cases_total, started_by)
                    VALUES ($1, $2, 'host', 'v1', 'basics', 'running', 4, 'elsewhere')
                    """, [.text("run-elsewhere0000\(index)"), .text(Stack.tenant)])
            }
            let refused = await Self.startFailure(admin, StartRunRequest(
                tenantID: Stack.tenant, agent: "host", agentVersion: "v1", suite: "basics"))
            #expect(refused?.code == .conflict)
            #expect(refused?.message.contains("\(limit) eval runs in progress") == true, "\(refused?.message ?? "")")
            let replayRefused: AdminFailure?
            do {
                _ = try await admin.call(EvalAdminCommand.replayStart, StartReplayRequest(
                    tenantID: Stack.tenant, agent: "host", candidateVersion: "v1",
                    sinceUnixNanos: EventClock.nowUnixNanos() - 3_600_000_000_000), as: StartReplayResponse.self)
                replayRefused = nil
            } catch let failure as AdminFailure {
                replayRefused = failure
            }
            #expect(replayRefused?.code == .conflict)
            #expect(try await Self.count(stack, "SELECT count(*) FROM eval_runs") == limit, "a refused start wrote a run")

            // One of them finishes: the next start is taken and runs to its end.
            _ = try await pool.execute("UPDATE eval_runs SET status = 'completed' WHERE run_id = 'run-elsewhere00000'")
            let run = try await Self.run(admin, version: "v1")
            #expect(run.status == "completed")
            #expect(run.casesDone == 4)
        }
    }

    @Test("run-cancel stops a run in progress: nothing starts or is stored after it, the run says who cancelled it; an ended run, an unknown or hostile id are refused")
    func cancelStopsARun() async throws {
        try await withEvalStack(upstreamTimeout: .seconds(60)) { stack, fake, admin in
            // v2 is answered by the upstream, which holds every request until the test lets go.
            fake.set(.hold)
            let started = try await admin.call(EvalAdminCommand.runStart, StartRunRequest(
                tenantID: Stack.tenant, agent: "host", agentVersion: "v2", suite: "basics", concurrency: 1),
                as: StartRunResponse.self)
            let runID = try #require(started.run?.runID)
            // Its first case is in flight: the upstream holds it.
            let deadline = ContinuousClock.now + .seconds(30)
            while fake.requests == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(fake.requests == 1)
            let sent = fake.requests
            let stored = try await Self.count(stack, "SELECT count(*) FROM eval_case_results WHERE run_id = '\(runID)'")

            let cancelled = try await admin.call(EvalAdminCommand.runCancel, CancelRunRequest(
                tenantID: Stack.tenant, runID: runID), as: CancelRunResponse.self)
            #expect(cancelled.run?.status == "cancelled")
            #expect(cancelled.run?.error == "cancelled by test")
            // The held case is answered now: its result reaches the driver after the cancel, which must neither
            // count it nor start the next case.
            fake.set(.answer("Released."))
            // The replica driving it stops: its run-finish audit line is the fact to wait for.
            let finishDeadline = ContinuousClock.now + .seconds(30)
            var finishes = 0
            while finishes == 0 && ContinuousClock.now < finishDeadline {
                finishes = try await Self.count(stack, """
                    SELECT count(*) FROM eval_audit WHERE action = 'run-finish' AND detail LIKE '\(runID) %'
                    """)
                if finishes == 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(finishes == 1, "the run's driver did not stop")
            #expect(fake.requests == sent, "a case started after the cancel")
            #expect(try await Self.count(stack, "SELECT count(*) FROM eval_case_results WHERE run_id = '\(runID)'")
                    == stored, "a case in flight was stored after the cancel")
            let run = try #require(try await admin.call(EvalAdminCommand.runGet, GetRunRequest(
                tenantID: Stack.tenant, runID: runID), as: GetRunResponse.self).run)
            #expect(run.status == "cancelled")
            #expect(run.error == "cancelled by test")
            #expect(Int(run.casesDone) == stored, "the run's totals count cases after the cancel")
            #expect(try await Self.count(stack, """
                SELECT count(*) FROM eval_audit WHERE action = 'run-cancel' AND detail = '\(runID)' AND actor = 'test'
                """) == 1)

            func cancelFailure(_ id: String) async -> AdminFailure? {
                do {
                    _ = try await admin.call(EvalAdminCommand.runCancel, CancelRunRequest(tenantID: Stack.tenant, runID: id),
                                             as: CancelRunResponse.self)
                    return nil
                } catch let failure as AdminFailure {
                    return failure
                } catch {
                    return nil
                }
            }
            #expect(await cancelFailure(runID)?.code == .conflict, "an ended run was cancelled again")
            #expect(await cancelFailure("run-0123456789abcdef")?.code == .notFound)
            for id in ["", "run-XYZ", "run-0123456789abcdef'--", "../etc"] {
                #expect(await cancelFailure(id)?.code == .invalidArgument, "run id \(id)")
            }
            fake.set(.answer("Released."))
        }
    }

    // MARK: helpers

    static func startFailure(_ admin: AdminClient, _ request: StartRunRequest) async -> AdminFailure? {
        do {
            _ = try await admin.call(EvalAdminCommand.runStart, request, as: StartRunResponse.self)
            return nil
        } catch {
            return error
        }
    }

    static func getFailure(_ admin: AdminClient, _ request: GetRunRequest) async -> AdminFailure? {
        do {
            _ = try await admin.call(EvalAdminCommand.runGet, request, as: GetRunResponse.self)
            return nil
        } catch {
            return error
        }
    }

    static func count(_ stack: Stack, _ sql: String) async throws -> Int {
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: stack.postgres.connectionString,
                                                                         poolSize: 1), logger: Stack.logger)
        defer { Task { await pool.close() } }
        return Int(try await pool.query(sql).first?.decode(Int64.self, at: 0) ?? -1)
    }

    /// Waits until a durable has nothing pending or unacknowledged.
    static func waitSettled(_ stack: Stack, stream: String, durable: String, limit: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let state = try? await stack.adminJS.consumerState(stream: stream, durable: durable),
               state.pending == 0, state.ackPending == 0 {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("\(durable) did not settle within \(limit)")
    }
}
