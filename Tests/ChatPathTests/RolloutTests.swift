import AsyncHTTPClient
import Contracts
import Foundation
import Messaging
import NIOCore
import Schemas
import Synchronization
import Tenancy
import Testing
import TestKit

/// The rollout controller against the seven real binaries (two eval replicas where a test kills one): the demo
/// tenant's `restaurant-host` v1 (the local agent) is stable; v2, answered by the fake upstream, is the candidate.
/// Live traffic runs throughout; the split is measured from the routed events (each carries the canary share in
/// force), the steps from the rollout's audit events.
@Suite("Rollouts: gated steps, automatic rollback, one driver", .serialized)
struct RolloutTests {
    static let tenant = "demo-restaurant"
    static let agent = "restaurant-host"
    static let adminToken = "rollout-test-" + EventID.random()
    static let rolloutToken = "rollout-controller-" + EventID.random()
    static let goodAnswer = "We are open Tuesday to Sunday from 12:00 to 22:00. To reserve a table call +49 30 1234567."
    static let suite = """
        name: canary
        description: what the candidate must get right
        cases:
          - id: hours
            messages: [{role: user, content: "When are you open?"}]
            expect: [{contains: "Tuesday"}]
          - id: reserve
            messages: [{role: user, content: "How can I reserve a table?"}]
            expect: [{contains: "+49 30 1234567"}]
          - id: sunday
            messages: [{role: user, content: "Are you open on Sunday?"}]
            expect: [{contains: "Sunday"}]
        """

    /// The running installation: processes by name, the fake upstream, an admin client, the demo key.
    final class World: Sendable {
        let installation: DoctorTests.Installation
        let processes: Mutex<[String: TestProcess]>
        let fake: FakeOpenAI
        let http: HTTPClient
        let connection: NATSConnection
        let admin: AdminClient
        let apiKey: String
        let gatewayPort: Int

        init(installation: DoctorTests.Installation, processes: [String: TestProcess], fake: FakeOpenAI, http: HTTPClient,
             connection: NATSConnection, admin: AdminClient, apiKey: String, gatewayPort: Int) {
            self.installation = installation
            self.processes = Mutex(processes)
            self.fake = fake
            self.http = http
            self.connection = connection
            self.admin = admin
            self.apiKey = apiKey
            self.gatewayPort = gatewayPort
        }

        func chat(conversation: String) async -> Int {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPort)/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "authorization", value: "Bearer \(apiKey)")
            request.headers.add(name: "content-type", value: "application/json")
            request.headers.add(name: "x-switchyard-conversation-id", value: conversation)
            request.body = .bytes(ByteBuffer(string: #"{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}"#))
            do {
                let response = try await http.execute(request, timeout: .seconds(30))
                _ = try await response.body.collect(upTo: 1 << 20)
                return Int(response.status.code)
            } catch {
                return 0
            }
        }

        func rollout(_ id: String) async throws -> Rollout {
            try #require(try await admin.call(EvalAdminCommand.rolloutGet, GetRolloutRequest(
                tenantID: RolloutTests.tenant, rolloutID: id, includeHistory: true), as: RolloutResponse.self).rollout)
        }

        /// Polls the rollout until `done` holds (or 8 minutes passed).
        func waitRollout(_ id: String, until done: (Rollout) -> Bool) async throws -> Rollout {
            let deadline = ContinuousClock.now + .seconds(480)
            var current = try await rollout(id)
            while !done(current) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                current = try await rollout(id)
            }
            return current
        }

        func control(_ id: String, _ action: String) async throws -> Rollout {
            try #require(try await admin.call(EvalAdminCommand.rolloutControl, ControlRolloutRequest(
                tenantID: RolloutTests.tenant, rolloutID: id, action: action), as: RolloutResponse.self).rollout)
        }

        /// Runs a suite on a version and waits for it to finish.
        func run(version: String, suite: String) async throws -> EvalRun {
            let started = try await admin.call(EvalAdminCommand.runStart, StartRunRequest(
                tenantID: RolloutTests.tenant, agent: RolloutTests.agent, agentVersion: version, suite: suite, concurrency: 4),
                as: StartRunResponse.self)
            let runID = try #require(started.run?.runID)
            let deadline = ContinuousClock.now + .seconds(180)
            while ContinuousClock.now < deadline {
                let run = try #require(try await admin.call(EvalAdminCommand.runGet, GetRunRequest(
                    tenantID: RolloutTests.tenant, runID: runID), as: GetRunResponse.self).run)
                if run.status != "running" { return run }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw AdminFailure(.unavailable, "run \(runID) did not finish")
        }

        func settings() async throws -> RolloutSettings? {
            let response = try await admin.call(.get, GetTenantRequest(tenantID: RolloutTests.tenant), as: GetTenantResponse.self)
            return response.rollouts.first { $0.agent == RolloutTests.agent }
        }
    }

    /// Chats with fresh conversations from `workers` clients until stopped; counts the answers by status.
    final class Load: Sendable {
        let statuses = Mutex<[Int: Int]>([:])
        let stopped = Atomic<Bool>(false)
        private let task = Mutex<Task<Void, Never>?>(nil)

        func start(_ world: World, workers: Int = 8) {
            let load = self
            let running = Task {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<workers {
                        group.addTask {
                            while !load.stopped.load(ordering: .relaxed) {
                                let status = await world.chat(conversation: "conv-" + EventID.random())
                                load.statuses.withLock { $0[status, default: 0] += 1 }
                            }
                        }
                    }
                }
            }
            task.withLock { $0 = running }
        }

        func stop() async {
            stopped.store(true, ordering: .relaxed)
            await task.withLock { $0 }?.value
        }
    }

    /// The routed events of the agent's own traffic: canary share in force, cohort and version of each.
    final class RoutedLog: Sendable {
        let routed = Mutex<[(percent: UInt32, cohort: String, version: String)]>([])
        let changes = Mutex<[UInt64]>([])
        private let tasks = Mutex<[Task<Void, Never>]>([])
        private let subscriptions: [NATSSubscription]

        init(_ connection: NATSConnection) async throws {
            let routedSubscription = try connection.subscribe(Subjects.event(.chatRouted, tenant: RolloutTests.tenant))
            let changeSubscription = try connection.subscribe(Subjects.event(.rolloutChanged, tenant: RolloutTests.tenant))
            subscriptions = [routedSubscription, changeSubscription]
            let log = self
            tasks.withLock {
                $0 = [
                    Task {
                        for await message in routedSubscription.messages {
                            guard let event = try? ChatRouted(protobuf: message.payload), event.agent == RolloutTests.agent,
                                  event.rolloutCohort != "eval" else { continue }
                            log.routed.withLock { $0.append((event.canaryPercent, event.rolloutCohort, event.agentVersion)) }
                        }
                    },
                    Task {
                        for await message in changeSubscription.messages {
                            guard let event = try? RolloutChanged(protobuf: message.payload) else { continue }
                            log.changes.withLock { $0.append(event.sequence) }
                        }
                    },
                ]
            }
            try await connection.flush()
        }

        func stop() {
            for subscription in subscriptions { subscription.unsubscribe() }
            for task in tasks.withLock({ $0 }) { task.cancel() }
        }
    }

    /// Starts nats-server (with the users of `make run`), PostgreSQL, the fake upstream and the seven services
    /// (`evalReplicas` eval processes); seeds the demo tenant with the CLI, adds v2 (the fake upstream's) to
    /// `restaurant-host` and imports the suite.
    static func withWorld(evalReplicas: [String], _ body: (World) async throws -> Void) async throws {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await http.shutdown() } }
        let fake = FakeOpenAI()
        try await fake.start()
        defer { Task { await fake.stop() } }
        let passwords = NATSAuthTemplate.randomPasswords()
        let directory = try makeTemporaryDirectory(prefix: "rollout-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await NATSServer.withServer(configuration: try NATSAuthTemplate.render(passwords: passwords)) { nats in
            try await PostgresServer.withServer { postgres in
                var ops: [String: Int] = [:]
                for service in DoctorTests.services + evalReplicas { ops[service] = try freeTCPPort() }
                let gatewayPort = try freeTCPPort()
                let installation = DoctorTests.Installation(nats: nats, postgres: postgres, passwords: passwords,
                                                            opsPorts: ops, httpPorts: ["api-gateway": gatewayPort])
                let tokens = "operator:\(adminToken),rollout-controller:\(rolloutToken)"
                var processes: [String: TestProcess] = [:]
                defer { for process in processes.values { process.terminate(signal: SIGKILL) } }
                let services = DoctorTests.services.filter { $0 != "eval" } + evalReplicas
                for name in services {
                    let service = evalReplicas.contains(name) ? "eval" : name
                    var environment = installation.environment(service, adminTokens: tokens)
                    environment["SWITCHYARD_OPS_PORT"] = "\(ops[name]!)"
                    environment["SWITCHYARD_INSTANCE_ID"] = name
                    environment["SWITCHYARD_LOG_LEVEL"] = "error"
                    if service == "orchestrator" {
                        environment["SWITCHYARD_OPENAI_BASE_URL"] = fake.baseURL
                        environment["SWITCHYARD_OPENAI_API_KEY"] = "upstream-key"
                        // No fallback to the local agent: a failing candidate's requests fail (and are counted).
                        environment["SWITCHYARD_FALLBACK_CHAIN"] = "openai"
                        environment["SWITCHYARD_PROVIDER_TIMEOUT_MS"] = "5000"
                    }
                    if service == "eval" {
                        environment["SWITCHYARD_ROLLOUT_ADMIN_TOKEN"] = rolloutToken
                        environment["SWITCHYARD_ROLLOUT_TICK_MS"] = "200"
                        // Longer than a tick can take on a loaded machine (two analytics queries, a few writes).
                        environment["SWITCHYARD_ROLLOUT_LEASE_MS"] = "8000"
                    }
                    processes[name] = try TestProcess(executable: try builtProduct(service), environment: environment)
                    if name == "tenant" { try await DoctorTests.waitReady(http, name, port: ops[name]!, processes[name]!) }
                }
                for name in services { try await DoctorTests.waitReady(http, name, port: ops[name]!, processes[name]!) }

                let envFile = directory + "/demo.env"
                let (seeded, output) = try await TestProcess.run(try builtProduct("switchyard"), [
                    "demo", "seed", "--env-file", envFile, "--base-url", "http://127.0.0.1/v1", "--rpm", "0", "--tpm", "0",
                ], environment: ["SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_NATS_USER": "admin",
                                 "SWITCHYARD_NATS_PASSWORD": passwords["admin"]!, "SWITCHYARD_ADMIN_TOKEN": adminToken,
                                 "SWITCHYARD_ACTOR": "ci"], check: false)
                try #require(seeded == 0, "\(output)")
                let apiKey = try #require((try String(contentsOfFile: envFile, encoding: .utf8)).split(separator: "\n")
                    .first { $0.hasPrefix("SWITCHYARD_API_KEY=") }.map { String($0.dropFirst("SWITCHYARD_API_KEY=".count)) })

                // Admin commands from a connection of the tenant service's user (its replies need no admin inbox).
                let (connection, _) = try await Stack.connect(nats, user: "tenant", password: passwords["tenant"])
                defer { connection.close() }
                let admin = AdminClient(connection: connection, token: adminToken, actor: "ci", timeout: .seconds(10))
                let tenantResponse = try await admin.call(.get, GetTenantRequest(tenantID: tenant), as: GetTenantResponse.self)
                var manifest = try #require(tenantResponse.manifest)
                manifest.agents.append(AgentManifest(agent: agent, provider: "openai", model: "gpt-candidate",
                                                     systemPrompt: "You are the host.", intents: [], fallbackAgent: "",
                                                     enabled: true, version: "v2", handoffThreshold: 0.2))
                _ = try await admin.call(.setManifest, SetManifestRequest(tenantID: tenant, manifest: manifest),
                                         as: SetManifestResponse.self)
                // The eval replicas take commands about the tenant once their mirror has it.
                var imported = false
                for _ in 0..<400 where !imported {
                    do {
                        _ = try await admin.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                            tenantID: tenant, agent: agent, source: suite), as: ImportSuiteResponse.self)
                        imported = true
                    } catch let failure as AdminFailure where failure.code == .notFound || failure.code == .unavailable {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                try #require(imported)
                let world = World(installation: installation, processes: processes, fake: fake, http: http,
                                  connection: connection, admin: admin, apiKey: apiKey, gatewayPort: gatewayPort)
                // The gateway learns the key through the KV mirror.
                var ready = false
                for _ in 0..<400 where !ready {
                    ready = await world.chat(conversation: "warm-up") == 200
                    if !ready { try await Task.sleep(for: .milliseconds(50)) }
                }
                try #require(ready)
                try await body(world)
                processes = world.processes.withLock { $0 }
            }
        }
    }

    /// Starts a rollout, retrying while the eval replicas' mirror does not know v2 yet.
    static func start(_ world: World, _ request: StartRolloutRequest) async throws -> Rollout {
        for _ in 0..<200 {
            do {
                return try #require(try await world.admin.call(EvalAdminCommand.rolloutStart, request,
                                                               as: RolloutResponse.self).rollout)
            } catch let failure as AdminFailure where failure.code == .notFound && request.candidateVersion == "v2"
                        && failure.message.contains("no version v2") {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        throw AdminFailure(.notFound, "v2 never reached the eval service's mirror")
    }

    static let active = ["evaluating", "stepping", "paused"]
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples")

    @Test("a good candidate walks 10 → 25 → 50 → 100 with the observed split within 3 points over ≥ 1,000 conversations per step; killing the driving eval replica hands the rollout to the other without a stall or a double step")
    func goodCandidateWalksAndSurvivesItsDriver() async throws {
        try await Self.withWorld(evalReplicas: ["eval-a", "eval-b"]) { world in
            world.fake.set(.answer(Self.goodAnswer))
            let log = try await RoutedLog(world.connection)
            defer { log.stop() }
            let load = Load()
            load.start(world)
            let started = try await Self.start(world, StartRolloutRequest(
                tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", steps: [10, 25, 50, 100],
                holdMillis: 1_000, gates: "eval>=0.9,replay>=0,error_rate<1%,handoff_rate<5%", minRequests: 1_500,
                suite: "canary", replayLimit: 10))
            #expect(started.state == "evaluating" && started.stableVersion == "v1")

            // Once the second step is on, kill the replica driving it.
            let second = try await world.waitRollout(started.rolloutID) { $0.stepIndex >= 1 || !Self.active.contains($0.state) }
            #expect(second.stepIndex == 1 && second.state == "stepping", "\(second.state): \(second.reason)")
            let killed = second.driver
            #expect(["eval-a", "eval-b"].contains(killed))
            let victim = try #require(world.processes.withLock { $0[killed] })
            victim.terminate(signal: SIGKILL)
            _ = await victim.waitUntilExit()

            let final = try await world.waitRollout(started.rolloutID) { !Self.active.contains($0.state) && !$0.settingsPending }
            await load.stop()
            #expect(final.state == "completed", "\(final.state): \(final.reason)")
            #expect(final.evalScore == 1, "the suite on v2 scored \(final.evalScore)")
            #expect(!final.replayRunID.isEmpty && final.replayScore > 0, "the replay ran before the first step")
            #expect(final.history.filter { $0.action == "evaluated" }.count == 2)

            // Every step exactly once, in order; the surviving replica took over once and finished it.
            let history = final.history
            #expect(history.map(\.sequence) == Array(1...UInt64(history.count)), "sequences \(history.map(\.sequence))")
            #expect(history.filter { $0.action == "stepped" }.map(\.canaryPercent) == [10, 25, 50, 100],
                    "\(history.map { "\($0.action) \($0.canaryPercent)" })")
            // The survivor took over from the killed driver. (On a very loaded machine a tick may outlast the lease
            // once more and the replicas trade it; without the lease check they trade it every tick.)
            let takeovers = history.filter { $0.action == "driver-changed" }
            #expect(takeovers.contains { $0.detail.contains("from \(killed)") } && takeovers.count <= 3,
                    "\(takeovers.map(\.detail))")
            #expect(final.driver != killed && !final.driver.isEmpty)
            #expect(history.last?.action == "completed")

            // The candidate is now stable for everyone.
            let settings = try await world.settings()
            #expect(settings?.stableVersion == "v2" && settings?.canaryPercent == 0 && settings?.canaryVersion == "",
                    "\(String(describing: settings))")

            // The observed split at each step, from the routed events (≥ 1,000 conversations each).
            let routed = log.routed.withLock { $0 }
            for percent in [UInt32(10), 25, 50, 100] {
                let step = routed.filter { $0.percent == percent }
                let canary = step.filter { $0.cohort == "canary" && $0.version == "v2" }.count
                let share = step.isEmpty ? -1 : Double(canary) * 100 / Double(step.count)
                print(String(format: "rollout test: step %u %%: %d of %d conversations on the canary (%.1f %%)",
                             percent, canary, step.count, share))
                #expect(step.count >= 1_000, "step \(percent) %: \(step.count) conversations")
                #expect(abs(share - Double(percent)) <= 3, "step \(percent) %: \(canary) of \(step.count) on the canary")
            }
            // The live traffic was answered throughout (the driver's death did not touch it).
            let statuses = load.statuses.withLock { $0 }
            #expect(statuses.keys.sorted() == [200], "\(statuses)")

            // Every change is on the event log too.
            let deadline = ContinuousClock.now + .seconds(10)
            while Set(log.changes.withLock { $0 }) != Set(history.map(\.sequence)) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(Set(log.changes.withLock { $0 }) == Set(history.map(\.sequence)))
        }
    }

    @Test("a broken candidate is refused at the eval gate; one whose error rate degrades after the second step is rolled back within one hold; bad requests write nothing")
    func brokenRefusedDegradedRolledBack() async throws {
        try await Self.withWorld(evalReplicas: ["eval-a"]) { world in
            // Bad input: clear errors, nothing written.
            let bad: [(StartRolloutRequest, AdminErrorCode, String)] = [
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", gates: "latency<3"),
                 .invalidArgument, "unknown metric"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", gates: "eval>=0.9"),
                 .invalidArgument, "needs a suite"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", steps: [10, 50]),
                 .invalidArgument, "last step must be 100"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", steps: [50, 25, 100]),
                 .invalidArgument, "ascending"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v9"), .notFound, "no version v9"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v1"), .invalidArgument,
                 "already the stable version"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: "nobody", candidateVersion: "v2"), .notFound, "not in tenant"),
                (StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", suite: "missing"),
                 .notFound, "no suite missing"),
            ]
            for (request, code, message) in bad {
                do {
                    _ = try await Self.start(world, request)
                    Issue.record("accepted: \(request)")
                } catch let failure as AdminFailure {
                    #expect(failure.code == code && failure.message.contains(message), "\(failure)")
                }
            }
            let none = try await world.admin.call(EvalAdminCommand.rolloutList, ListRolloutsRequest(tenantID: Self.tenant),
                                                  as: ListRolloutsResponse.self)
            #expect(none.rollouts.isEmpty)

            // 1. The demo restaurant's suite (24 cases, English and German) scores the local agent (v1) high; a
            //    candidate answering nonsense scores lower and is refused at the gate: live users never see it.
            let demoSuite = try String(contentsOf: Self.examples.appendingPathComponent("eval/restaurant-host.yaml"), encoding: .utf8)
            _ = try await world.admin.call(EvalAdminCommand.suiteImport, ImportSuiteRequest(
                tenantID: Self.tenant, agent: Self.agent, source: demoSuite), as: ImportSuiteResponse.self)
            let local = try await world.run(version: "v1", suite: "restaurant-basics")
            #expect(local.status == "completed" && local.casesTotal >= 20 && local.score >= 0.9,
                    "v1 on the demo suite: \(local.status) \(local.score) \(local.casesPassed)/\(local.casesTotal)")
            world.fake.set(.answer("I have no idea, sorry."))
            let broken = try await Self.start(world, StartRolloutRequest(
                tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", holdMillis: 1_000,
                suite: "restaurant-basics"))
            let refused = try await world.waitRollout(broken.rolloutID) { !Self.active.contains($0.state) && !$0.settingsPending }
            #expect(refused.state == "refused" && refused.reason.contains("eval>=0.9 not met"), "\(refused.state): \(refused.reason)")
            #expect(refused.evalScore < local.score, "the broken candidate scored \(refused.evalScore), v1 \(local.score)")
            #expect(refused.history.map(\.action) == ["started", "refused"])
            #expect(try await world.settings()?.canaryPercent == 0)

            // 2. A good candidate, until its upstream starts failing during the second step.
            world.fake.set(.answer(Self.goodAnswer))
            let load = Load()
            load.start(world)
            let hold: Int64 = 15_000
            let candidate = try await Self.start(world, StartRolloutRequest(
                tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", steps: [10, 25, 50, 100],
                holdMillis: hold, minRequests: 100, suite: "canary"))
            do {
                _ = try await Self.start(world, StartRolloutRequest(tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2"))
                Issue.record("a second rollout of the agent was accepted")
            } catch let failure as AdminFailure {
                #expect(failure.code == .conflict, "\(failure)")
            }
            // Paused during the first step, then resumed: the step goes on after its hold starts again.
            let first = try await world.waitRollout(candidate.rolloutID) { $0.stepIndex >= 0 || !Self.active.contains($0.state) }
            #expect(first.stepIndex == 0 && first.state == "stepping", "\(first.state): \(first.reason)")
            let paused = try await world.control(candidate.rolloutID, "pause")
            #expect(paused.state == "paused" && paused.canaryPercent == 10)
            let resumed = try await world.control(candidate.rolloutID, "resume")
            #expect(resumed.state == "stepping" && resumed.stepIndex == 0)
            let second = try await world.waitRollout(candidate.rolloutID) { $0.stepIndex >= 1 || !Self.active.contains($0.state) }
            #expect(second.stepIndex == 1 && second.state == "stepping", "\(second.state): \(second.reason)")
            world.fake.set(.status(500))
            let final = try await world.waitRollout(candidate.rolloutID) { !Self.active.contains($0.state) && !$0.settingsPending }
            await load.stop()
            #expect(final.state == "rolled-back", "\(final.state): \(final.reason)")
            #expect(final.reason.contains("error_rate<1% not met"), "\(final.reason)")
            let history = final.history
            #expect(history.filter { $0.action == "stepped" }.map(\.canaryPercent) == [10, 25])
            #expect(history.map(\.action).filter { ["stepped", "paused", "resumed"].contains($0) }
                    == ["stepped", "paused", "resumed", "stepped"], "\(history.map(\.action))")
            let stepped = try #require(history.last { $0.action == "stepped" }?.meta?.occurredAtUnixNanos)
            let rolledBack = try #require(history.last { $0.action == "rolled-back" }?.meta?.occurredAtUnixNanos)
            print(String(format: "rollout test: rolled back %.1f s into the second step's %lld s hold", Double(rolledBack - stepped) / 1e9, hold / 1_000))
            #expect(rolledBack - stepped < hold * 1_000_000,
                    "rolled back \(Double(rolledBack - stepped) / 1e9) s into a \(hold / 1_000) s hold")
            #expect(history.last?.action == "rolled-back" && history.last?.canaryPercent == 0)
            // Live users are back on v1 with no canary.
            let settings = try await world.settings()
            #expect(settings?.stableVersion == "v1" && settings?.canaryPercent == 0 && settings?.canaryVersion == "",
                    "\(String(describing: settings))")
            // An operator's abort during a step: the previous stable version back, canary 0 %.
            world.fake.set(.answer(Self.goodAnswer))
            let third = try await Self.start(world, StartRolloutRequest(
                tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", holdMillis: hold, minRequests: 100))
            let stepping = try await world.waitRollout(third.rolloutID) { ($0.stepIndex >= 0 && !$0.settingsPending) || !Self.active.contains($0.state) }
            let during = try await world.settings()
            #expect(stepping.state == "stepping" && during?.canaryPercent == 10 && during?.canaryVersion == "v2")
            let aborted = try await world.control(third.rolloutID, "abort")
            #expect(aborted.state == "aborted" && aborted.history.last?.action == "aborted" && aborted.history.last?.actor.contains("ci") == true)
            let restored = try await world.settings()
            #expect(restored?.stableVersion == "v1" && restored?.canaryPercent == 0 && restored?.canaryVersion == "",
                    "\(String(describing: restored))")
            // The agent removed from the manifest mid-rollout: the rollout fails with the reason (it can't be set).
            let fourth = try await Self.start(world, StartRolloutRequest(
                tenantID: Self.tenant, agent: Self.agent, candidateVersion: "v2", holdMillis: hold, minRequests: 100))
            _ = try await world.waitRollout(fourth.rolloutID) { ($0.stepIndex >= 0 && !$0.settingsPending) || !Self.active.contains($0.state) }
            let current = try #require(try await world.admin.call(.get, GetTenantRequest(tenantID: Self.tenant),
                                                                  as: GetTenantResponse.self).manifest)
            var without = current
            without.agents.removeAll { $0.agent == Self.agent }
            for index in without.agents.indices where without.agents[index].fallbackAgent == Self.agent {
                without.agents[index].fallbackAgent = ""
            }
            if without.defaultAgent == Self.agent { without.defaultAgent = "" }
            _ = try await world.admin.call(.setManifest, SetManifestRequest(tenantID: Self.tenant, manifest: without),
                                           as: SetManifestResponse.self)
            let orphaned = try await world.waitRollout(fourth.rolloutID) { !Self.active.contains($0.state) }
            #expect(orphaned.state == "failed" && orphaned.reason.contains("no longer in tenant"), "\(orphaned.state): \(orphaned.reason)")
            // A finished rollout cannot be resumed.
            do {
                _ = try await world.admin.call(EvalAdminCommand.rolloutControl, ControlRolloutRequest(
                    tenantID: Self.tenant, rolloutID: candidate.rolloutID, action: "resume"), as: RolloutResponse.self)
                Issue.record("a rolled-back rollout was resumed")
            } catch let failure as AdminFailure {
                #expect(failure.code == .conflict)
            }
        }
    }
}
