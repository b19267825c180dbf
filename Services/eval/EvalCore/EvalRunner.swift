import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization
import Telemetry
import Tenancy

/// Runs a suite's cases through the real chat path on a pinned agent version (docs/EVAL.md, "Runs").
///
/// Each case becomes an `EvalRequested` on `evt.eval.requested.<tenant>` — a subject only the eval service's NATS
/// user may publish — which the router's eval durable routes to the pinned version with the run id in the meta
/// of every event that follows (billing and the tenant's analytics leave those out). The answer comes back to
/// this instance's reply inbox like a gateway's; the scorers grade it; each case's result is stored as it arrives
/// (`eval_case_results`), the run's progress and final score in `eval_runs`, and `evt.eval.completed` closes it.
public final class EvalRunner: Sendable {
    /// How long one case may take before it counts as failed (`deadline_exceeded`).
    public static let caseTimeout: Duration = .seconds(30)
    /// Cases in flight at once when the request doesn't say; the most it may ask for.
    public static let defaultConcurrency = 4
    public static let maxConcurrency = 32
    /// A run whose row hasn't moved for this long belongs to an eval process that died: it is marked failed.
    public static let staleAfterSeconds = 120
    /// How often a run's driver looks whether an admin cancelled it.
    static let cancelWatchInterval: Duration = .seconds(1)
    /// Runs a tenant may have in progress at once unless configured (`SWITCHYARD_EVAL_MAX_RUNS_PER_TENANT`).
    public static let defaultMaxRunsPerTenant = 4

    /// A start refused because the tenant already has `limit` runs in progress.
    struct RunLimitReached: Error {
        let tenant: String
        let running: Int
        let limit: Int
    }

    let pool: PostgresPool
    let jetStream: JetStream
    let inbox: ReplyInbox
    let metrics: TelemetryMetrics
    let logger: Logger
    /// The operator's LLM judge for `judge` expectations (nil: suites with them are refused).
    let judge: Judge?
    /// Runs in progress per tenant (every replica's, counted in `eval_runs`) beyond which a limited start is refused.
    let maxRunsPerTenant: Int
    private let tasks = Mutex<[String: Task<Void, Never>]>([:])

    public init(pool: PostgresPool, jetStream: JetStream, inbox: ReplyInbox, metrics: TelemetryMetrics, logger: Logger,
                judge: Judge? = nil, maxRunsPerTenant: Int = EvalRunner.defaultMaxRunsPerTenant) {
        self.maxRunsPerTenant = maxRunsPerTenant
        self.pool = pool
        self.jetStream = jetStream
        self.inbox = inbox
        self.metrics = metrics
        self.logger = logger
        self.judge = judge
    }

    /// Runs in progress in this process.
    public var running: Int { tasks.withLock { $0.count } }

    /// Whether the run is in progress in this process (a run of a replica that died is not).
    func isRunningHere(_ runID: String) -> Bool { tasks.withLock { $0[runID] != nil } }

    /// Records the run (status `running`) and starts its cases in the background; returns at once. A replay
    /// passes the recorded answers (by case id) its cases are compared with.
    func start(tenant: String, agent: String, version: String, suite: EvalSuite, concurrency: Int, actor: String,
               replay: Replay? = nil, limited: Bool = false) async throws -> EvalRun
    {
        var run = EvalRun(runID: "run-" + EventID.random().prefix(16), tenantID: tenant, agent: agent,
                          agentVersion: version, suite: suite.name, status: "running",
                          casesTotal: UInt32(suite.cases.count), startedAtUnixNanos: EventClock.nowUnixNanos(),
                          startedBy: actor)
        run.kind = replay == nil ? "suite" : "replay"
        run.replaySinceUnixNanos = replay?.sinceUnixNanos ?? 0
        try await pool.transaction { connection in
            if limited { try await checkRunLimit(tenant: tenant, on: connection) }
            _ = try await connection.query("""
                INSERT INTO eval_runs (run_id, tenant_id, agent, agent_version, suite, status, cases_total, started_by)
                VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)
                """, [.text(run.runID), .text(tenant), .text(agent), .text(version), .text(suite.name),
                      .int64(Int64(suite.cases.count)), .text(actor)])
            _ = try await connection.query("""
                INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'run-start', $2, $3, $4)
                """, [.text(actor), .text(tenant), .text("\(agent)/\(suite.name)"),
                      .text("\(run.runID) on version \(version), \(suite.cases.count) cases")])
        }
        let started = run
        // Registered under the lock before the task can finish and remove itself.
        tasks.withLock { tasks in
            tasks[started.runID] = Task { [self] in
                await execute(started, suite: suite, concurrency: concurrency, replay: replay)
                _ = self.tasks.withLock { $0.removeValue(forKey: started.runID) }
            }
        }
        logger.info("eval run started", metadata: [
            "tenant.id": "\(tenant)", "agent": "\(agent)", "version": "\(version)", "suite": "\(suite.name)",
            "run": "\(run.runID)", "cases": "\(suite.cases.count)", "actor": "\(actor)",
        ])
        return run
    }

    /// Records a replay run and, in the background, reads the recorded traffic (which may take a while on a long
    /// log) and runs it through the candidate; returns at once. A replay with nothing recorded completes empty.
    func startReplay(tenant: String, agent: String, candidate: String, since: Int64, limit: Int, concurrency: Int,
                     actor: String, limited: Bool = false) async throws -> EvalRun
    {
        var run = EvalRun(runID: "run-" + EventID.random().prefix(16), tenantID: tenant, agent: agent,
                          agentVersion: candidate, suite: "replay", status: "running",
                          startedAtUnixNanos: EventClock.nowUnixNanos(), startedBy: actor)
        run.kind = "replay"
        run.replaySinceUnixNanos = since
        try await pool.transaction { connection in
            if limited { try await checkRunLimit(tenant: tenant, on: connection) }
            _ = try await connection.query("""
                INSERT INTO eval_runs (run_id, tenant_id, agent, agent_version, suite, status, cases_total, started_by)
                VALUES ($1, $2, $3, $4, 'replay', 'running', 0, $5)
                """, [.text(run.runID), .text(tenant), .text(agent), .text(candidate), .text(actor)])
            _ = try await connection.query("""
                INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'replay-start', $2, $3, $4)
                """, [.text(actor), .text(tenant), .text(agent),
                      .text("\(run.runID) on version \(candidate), recorded since \(since), at most \(limit)")])
        }
        let started = run
        tasks.withLock { tasks in tasks[started.runID] = Task { [self] in
            do {
                let (suite, replay) = try await recordedTraffic(tenant: tenant, agent: agent, since: since, limit: limit)
                var counted = started
                counted.casesTotal = UInt32(suite.cases.count)
                _ = try await pool.execute("UPDATE eval_runs SET cases_total = $2, updated_at = now() WHERE run_id = $1",
                                           [.text(started.runID), .int64(Int64(suite.cases.count))])
                await execute(counted, suite: suite, concurrency: concurrency, replay: replay)
            } catch {
                var failed = started
                failed.status = "failed"
                failed.error = "reading the recorded traffic failed: \(error)"
                failed.finishedAtUnixNanos = EventClock.nowUnixNanos()
                let closing = failed
                try? await Self.uncancelled { try await self.finish(closing) }
            }
            _ = self.tasks.withLock { $0.removeValue(forKey: started.runID) }
        } }
        logger.info("eval replay started", metadata: [
            "tenant.id": "\(tenant)", "agent": "\(agent)", "version": "\(candidate)", "run": "\(run.runID)",
            "since": "\(since)", "limit": "\(limit)", "actor": "\(actor)",
        ])
        return run
    }

    /// Throws ``RunLimitReached`` when the tenant has ``maxRunsPerTenant`` runs in progress, counted across
    /// replicas in `eval_runs`; the tenant's advisory lock, held to the end of the caller's transaction (which
    /// inserts the new run), makes two replicas' concurrent starts count one after the other.
    func checkRunLimit(tenant: String, on connection: PostgresConnection) async throws {
        _ = try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('switchyard.eval-runs:' || $1, 0))",
                                       [.text(tenant)])
        let rows = try await connection.query(
            "SELECT count(*) FROM eval_runs WHERE tenant_id = $1 AND status = 'running'", [.text(tenant)])
        let running = Int(try rows.first?.decode(Int64.self, at: 0) ?? 0)
        guard running < maxRunsPerTenant else {
            throw RunLimitReached(tenant: tenant, running: running, limit: maxRunsPerTenant)
        }
    }

    /// Stops this process's runs (graceful shutdown): cases in flight end at once, each run is closed as failed
    /// ("interrupted"), so nobody waits for a run nobody drives.
    func drain() async {
        let running = tasks.withLock { Array($0.values) }
        for task in running { task.cancel() }
        for task in running { await task.value }
    }

    // MARK: one run

    func execute(_ run: EvalRun, suite: EvalSuite, concurrency: Int, replay: Replay? = nil) async {
        let width = max(1, min(concurrency, Self.maxConcurrency))
        // The cases run in a task of their own, so that a run-cancel (seen by the watch below) can stop them
        // without looking like a shutdown, which cancels this task.
        let cases = Task { [self] () -> (results: [EvalCaseResult], failure: String?) in
            var results: [EvalCaseResult] = []
            var failure: String?
            await withTaskGroup(of: (Int, EvalCaseResult).self) { group in
                var next = 0
                func launch() {
                    let index = next
                    let evalCase = suite.cases[index]
                    next += 1
                    group.addTask { [self] in
                        var result = await runCase(evalCase, of: run)
                        if let recorded = replay?.recorded[evalCase.id] { Self.compare(&result, with: recorded) }
                        return (index, result)
                    }
                }
                while next < min(width, suite.cases.count) { launch() }
                while let (index, result) = await group.next() {
                    // A case cut short by a shutdown or a cancel is not a result: it is neither stored nor scored.
                    if result.errorCode == Self.interrupted { continue }
                    var running = true
                    do {
                        running = try await Self.uncancelled { try await self.record(result, position: index, of: run) }
                    } catch {
                        failure = "storing case results failed: \(error)"
                    }
                    guard running else {
                        // Cancelled (or swept) meanwhile: this result doesn't count, nothing more starts, and the
                        // cases in flight end at once — without waiting for the watch's next look.
                        group.cancelAll()
                        continue
                    }
                    results.append(result)
                    if next < suite.cases.count && !Task.isCancelled { launch() }
                }
            }
            return (results, failure)
        }
        // Every second: has an admin cancelled the run (through any replica)? Then the cases stop.
        let watch = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.cancelWatchInterval)
                guard !Task.isCancelled else { return }
                if (try? await status(of: run.runID)) == "cancelled" {
                    cases.cancel()
                    return
                }
            }
        }
        let (results, storing) = await withTaskCancellationHandler { await cases.value } onCancel: { cases.cancel() }
        watch.cancel()
        var failure = storing
        if Task.isCancelled {
            failure = "interrupted: the eval service stopped during the run; start it again"
        }
        var finished = run
        finished.results = results
        Self.summarize(&finished, cases: suite.cases)
        if let replay { Self.summarizeRecorded(&finished, replay) }
        // A cancelled run's row already says so (and by whom): finish() keeps that and stores the totals so far.
        finished.status = failure == nil ? "completed" : "failed"
        finished.error = failure ?? ""
        finished.finishedAtUnixNanos = EventClock.nowUnixNanos()
        do {
            // Closing writes run outside this (possibly cancelled) task, so a shutdown still records the outcome.
            let closing = finished
            finished = try await Self.uncancelled { try await self.finish(closing) }
            var event = finished
            event.results = []
            let completed = EvalCompleted(meta: EventMeta.make(tenantID: run.tenantID, producer: ServiceName.eval.rawValue),
                                          run: event)
            let jetStream = self.jetStream
            try await Self.uncancelled {
                try await jetStream.publishEvent(.evalCompleted, tenant: run.tenantID, eventID: completed.meta!.eventID,
                                                 payload: completed.protobufBytes())
            }
        } catch {
            logger.error("eval run could not be closed", metadata: ["run": "\(run.runID)", "error": "\(error)"])
        }
        metrics.counter(.evalRunsTotal, [(.outcome, finished.status)]).increment()
        logger.info("eval run finished", metadata: [
            "tenant.id": "\(run.tenantID)", "run": "\(run.runID)", "status": "\(finished.status)",
            "score": "\(finished.score)", "passed": "\(finished.casesPassed)/\(finished.casesTotal)",
        ])
    }

    /// Totals of a run from its case results (score weighted by the cases' weights).
    static func summarize(_ run: inout EvalRun, cases: [EvalCase]) {
        let results = run.results
        run.casesDone = UInt32(results.count)
        run.casesPassed = UInt32(results.filter(\.passed).count)
        let total = results.reduce(0) { $0 + $1.weight }
        run.score = total > 0 ? results.reduce(0) { $0 + $1.score * $1.weight } / total : 0
        run.handoffs = UInt32(results.filter(\.handedOff).count)
        run.errors = UInt32(results.filter { !$0.errorCode.isEmpty }.count)
        run.promptTokens = results.reduce(0) { $0 + UInt64($1.promptTokens) }
        run.completionTokens = results.reduce(0) { $0 + UInt64($1.completionTokens) }
        let latencies = results.map(\.latencyMs).sorted()
        if !latencies.isEmpty {
            // Nearest rank: the smallest latency at or above 95 % of the cases.
            let rank = Int((Double(latencies.count) * 0.95).rounded(.up))
            run.latencyP95Ms = latencies[max(0, min(latencies.count, rank) - 1)]
        }
    }

    /// Sends one case and grades the answer; a case that gets no answer scores 0 with its error.
    func runCase(_ evalCase: EvalCase, of run: EvalRun) async -> EvalCaseResult {
        let requestID = EventID.random()
        let now = EventClock.nowUnixNanos()
        let replySubject = inbox.subject(for: requestID)
        let request = ChatRequested(
            meta: EventMeta(eventID: EventID.random(), tenantID: run.tenantID, occurredAtUnixNanos: now,
                            producer: ServiceName.eval.rawValue, schemaVersion: EventMeta.currentSchemaVersion,
                            requestID: requestID, traceID: EventID.random(), evalRunID: run.runID),
            messages: evalCase.messages, model: run.agent, channel: "eval", replySubject: replySubject,
            deadlineUnixNanos: now + Self.caseTimeout.nanosecondsValue, includeUsage: true,
            hops: [HopStamp(hop: "gateway.in", unixNanos: now)])
        let message = EvalRequested(
            meta: EventMeta(eventID: EventID.random(), tenantID: run.tenantID, occurredAtUnixNanos: now,
                            producer: ServiceName.eval.rawValue, schemaVersion: EventMeta.currentSchemaVersion,
                            requestID: requestID, traceID: request.meta!.traceID, evalRunID: run.runID),
            request: request, pinnedAgentVersion: run.agentVersion, caseID: evalCase.id)
        var result = EvalCaseResult(caseID: evalCase.id, weight: evalCase.weight > 0 ? evalCase.weight : 1,
                                    agentVersion: run.agentVersion)
        let clock = ContinuousClock()
        let started = clock.now
        let replies = inbox.register(requestID, deadline: started + Self.caseTimeout)
        defer { inbox.unregister(requestID) }
        do {
            try await jetStream.publishEvent(.evalRequested, tenant: run.tenantID, eventID: message.meta!.eventID,
                                             payload: message.protobufBytes(), headers: [Headers.replyTo: replySubject])
        } catch {
            result.errorCode = "service_unavailable"
            result.answer = "the case could not be sent: \(error)"
            result.failures = ["not sent"]
            return result
        }
        var final: NATSMessage?
        for await reply in replies where !ReplyType.isChunk(reply.headers[Headers.eventType]) {
            final = reply
            break
        }
        if Task.isCancelled {
            result.errorCode = Self.interrupted
            return result
        }
        let latency = clock.now - started
        result.latencyMs = UInt32(clamping: latency.nanosecondsValue / 1_000_000)
        guard let final else {
            result.errorCode = "deadline_exceeded"
            result.answer = "no answer within \(Self.caseTimeout)"
            result.failures = ["no answer"]
            return result
        }
        var observed = ObservedAnswer(content: "", handedOff: false, latencyMilliseconds: Int(result.latencyMs))
        if ReplyType.isFailure(final.headers[Headers.eventType]) {
            let failed = (try? ChatFailed(protobuf: final.payload)) ?? ChatFailed(errorCode: "garbled_reply")
            result.errorCode = failed.errorCode.isEmpty ? "unknown" : failed.errorCode
            result.answer = failed.message
            result.failures = ["failed: \(result.errorCode)"]
            return result
        }
        guard let completed = try? ChatCompleted(protobuf: final.payload) else {
            result.errorCode = "garbled_reply"
            result.failures = ["the answer could not be decoded"]
            return result
        }
        guard completed.agent == run.agent else {
            result.errorCode = "wrong_agent"
            result.answer = "answered by agent \(completed.agent), not \(run.agent)"
            result.failures = ["answered by another agent"]
            return result
        }
        observed.content = completed.content
        observed.handedOff = completed.handedOff
        var judgments: [String?] = []
        let question = evalCase.messages.last { $0.role == "user" }?.content ?? ""
        for expectation in evalCase.expectations where expectation.kind == "judge" {
            if let judge {
                judgments.append(await judge.verdict(question: question, answer: completed.content, rubric: expectation.value))
            } else {
                judgments.append("no judge configured")
            }
        }
        let score = Scorer.score(evalCase, observed, judgments: judgments)
        result.answer = String(completed.content.prefix(4_000))
        result.handedOff = completed.handedOff
        result.promptTokens = completed.usage?.promptTokens ?? 0
        result.completionTokens = completed.usage?.completionTokens ?? 0
        result.score = score.score
        result.passed = score.failed.isEmpty
        result.failures = score.failed
        result.agentVersion = completed.agentVersion
        return result
    }

    /// The error code of a case cut short by a shutdown (never stored).
    static let interrupted = "interrupted"

    /// Runs `body` in a task of its own: it is not cancelled with the caller (a run closing at shutdown).
    static func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await Task { try await body() }.value
    }

    // MARK: replays

    /// What a recorded request got in production, for comparing a candidate's answer with.
    struct Recorded: Sendable {
        var answer: String
        var handedOff: Bool
        var latencyMs: UInt32
        var promptTokens: UInt32
        var completionTokens: UInt32
        var version: String
        var errorCode: String
    }

    /// A replay: the recorded answers by case id (the request id) and where the recorded traffic starts.
    struct Replay: Sendable {
        var sinceUnixNanos: Int64
        var recorded: [String: Recorded]
    }

    /// The most recent `limit` requests of `agent` that the tenant's users sent since `since` (never eval traffic),
    /// with what each got, read from the event log through a temporary durable on `evt.chat.*.<tenant>`.
    func recordedTraffic(tenant: String, agent: String, since: Int64, limit: Int) async throws
        -> (suite: EvalSuite, replay: Replay)
    {
        struct Seen { var routed: ChatRouted?; var completed: ChatCompleted?; var failed: ChatFailed?; var sequence: UInt64 = 0 }
        let state = try await jetStream.streamState(StreamNames.events)
        var seen: [String: Seen] = [:]
        if state.messages > 0 {
            let window = Duration.nanoseconds(max(0, EventClock.nowUnixNanos() - since))
            try await jetStream.readRange(stream: StreamNames.events, filterSubject: "evt.chat.*.\(tenant)",
                                          start: .recent(window), through: state.lastSequence,
                                          durablePrefix: "eval-replay") { delivery in
                switch delivery.subject.split(separator: ".").dropFirst(2).first ?? "" {
                case "routed":
                    guard let event = try? ChatRouted(protobuf: delivery.payload), event.agent == agent,
                          let meta = event.meta, meta.evalRunID.isEmpty, !meta.requestID.isEmpty else { return }
                    seen[meta.requestID, default: Seen()].routed = event
                    seen[meta.requestID]?.sequence = delivery.streamSequence
                case "completed":
                    guard let event = try? ChatCompleted(protobuf: delivery.payload), let id = event.meta?.requestID,
                          event.meta?.evalRunID.isEmpty == true else { return }
                    seen[id, default: Seen()].completed = event
                case "failed":
                    guard let event = try? ChatFailed(protobuf: delivery.payload), let id = event.meta?.requestID,
                          event.meta?.evalRunID.isEmpty == true else { return }
                    seen[id, default: Seen()].failed = event
                default:
                    return
                }
            }
        }
        let picked = seen.filter { $0.value.routed != nil && ($0.value.completed != nil || $0.value.failed != nil) }
            .sorted { $0.value.sequence > $1.value.sequence }.prefix(limit)
        var suite = EvalSuite(tenantID: tenant, agent: agent, name: "replay")
        var recorded: [String: Recorded] = [:]
        for (requestID, entry) in picked.reversed() {
            guard let routed = entry.routed, let request = routed.request else { continue }
            suite.cases.append(EvalCase(id: requestID, messages: request.messages, expectations: [], weight: 1))
            if let completed = entry.completed {
                recorded[requestID] = Recorded(
                    answer: completed.content, handedOff: completed.handedOff, latencyMs: Self.latencyMs(completed.hops),
                    promptTokens: completed.usage?.promptTokens ?? 0, completionTokens: completed.usage?.completionTokens ?? 0,
                    version: completed.agentVersion, errorCode: "")
            } else if let failed = entry.failed {
                recorded[requestID] = Recorded(answer: failed.message, handedOff: false, latencyMs: Self.latencyMs(failed.hops),
                                               promptTokens: 0, completionTokens: 0, version: routed.agentVersion,
                                               errorCode: failed.errorCode.isEmpty ? "unknown" : failed.errorCode)
            }
        }
        return (suite, Replay(sinceUnixNanos: since, recorded: recorded))
    }

    /// From the gateway's first stamp to the last one of the recorded answer.
    static func latencyMs(_ hops: [HopStamp]) -> UInt32 {
        guard let first = hops.first?.unixNanos, let last = hops.map(\.unixNanos).max(), last >= first else { return 0 }
        return UInt32(clamping: (last - first) / 1_000_000)
    }

    /// Words of an answer, lower-cased, for the agreement score.
    static func words(_ text: String) -> Set<String> {
        Set(text.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init))
    }

    /// Grades a replayed case against the recorded answer: agreement = word overlap (Jaccard); a case passes when
    /// the answers agree on at least half their words, hand off alike and neither fails where the other answered.
    static func compare(_ result: inout EvalCaseResult, with recorded: Recorded) {
        result.recordedAnswer = String(recorded.answer.prefix(4_000))
        result.recordedHandedOff = recorded.handedOff
        result.recordedLatencyMs = recorded.latencyMs
        result.recordedPromptTokens = recorded.promptTokens
        result.recordedCompletionTokens = recorded.completionTokens
        result.recordedVersion = recorded.version
        result.recordedErrorCode = recorded.errorCode
        let a = words(result.answer), b = words(recorded.answer)
        let union = a.union(b)
        result.agreement = union.isEmpty ? 1 : Double(a.intersection(b).count) / Double(union.count)
        var failures: [String] = []
        if result.errorCode.isEmpty != recorded.errorCode.isEmpty {
            failures.append(result.errorCode.isEmpty ? "answered where the recorded request failed (\(recorded.errorCode))"
                                                     : "failed (\(result.errorCode)) where the recorded request was answered")
        }
        if result.handedOff != recorded.handedOff {
            failures.append(result.handedOff ? "handed off; the recorded answer did not" : "did not hand off; the recorded answer did")
        }
        if result.agreement < 0.5 { failures.append(String(format: "agreement %.2f with the recorded answer", result.agreement)) }
        result.failures = failures
        result.passed = failures.isEmpty
        result.score = failures.contains { !$0.hasPrefix("agreement") } ? 0 : result.agreement
    }

    /// The recorded side's totals, next to the candidate's.
    static func summarizeRecorded(_ run: inout EvalRun, _ replay: Replay) {
        let recorded = run.results.compactMap { replay.recorded[$0.caseID] }
        run.recordedHandoffs = UInt32(recorded.filter(\.handedOff).count)
        run.recordedErrors = UInt32(recorded.filter { !$0.errorCode.isEmpty }.count)
        run.recordedPromptTokens = recorded.reduce(0) { $0 + UInt64($1.promptTokens) }
        run.recordedCompletionTokens = recorded.reduce(0) { $0 + UInt64($1.completionTokens) }
        let latencies = recorded.map(\.latencyMs).sorted()
        if !latencies.isEmpty {
            let rank = Int((Double(latencies.count) * 0.95).rounded(.up))
            run.recordedLatencyP95Ms = latencies[max(0, min(latencies.count, rank) - 1)]
        }
    }

    // MARK: storage

    /// Stores a case's result and counts it while the run is still running; returns false (storing nothing) once
    /// it no longer is (cancelled, or closed by the sweep).
    func record(_ result: EvalCaseResult, position: Int, of run: EvalRun) async throws -> Bool {
        try await pool.transaction { connection in
            let counted = try await connection.execute("""
                UPDATE eval_runs SET cases_done = cases_done + 1, cases_passed = cases_passed + $2, updated_at = now()
                WHERE run_id = $1 AND status = 'running'
                """, [.text(run.runID), .int64(result.passed ? 1 : 0)])
            guard counted > 0 else { return false }
            _ = try await connection.query("""
                INSERT INTO eval_case_results (run_id, position, case_id, score, passed, result)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, position) DO NOTHING
                """, [.text(run.runID), .int64(Int64(position)), .text(result.caseID), .double(result.score),
                      .bool(result.passed), .bytea(result.protobufBytes())])
            return true
        }
    }

    /// A run's status as stored (nil: no such run).
    func status(of runID: String) async throws -> String? {
        try await pool.query("SELECT status FROM eval_runs WHERE run_id = $1", [.text(runID)]).first?
            .decode(String.self, at: 0)
    }

    /// Stores the run's end and audits it; returns the run as stored: one an admin cancelled meanwhile stays
    /// cancelled (with its canceller and time) and gets the totals of the cases it ran.
    @discardableResult
    func finish(_ run: EvalRun) async throws -> EvalRun {
        var summary = run
        summary.results = []
        let cancelledBy: String? = try await pool.transaction { connection in
            let ended = try await connection.execute("""
                UPDATE eval_runs SET status = $2, score = $3, cases_done = $4, cases_passed = $5, error = $6,
                    finished_at = now(), updated_at = now(), summary = $7
                WHERE run_id = $1 AND status = 'running'
                """, [.text(run.runID), .text(run.status), .double(run.score), .int64(Int64(run.casesDone)),
                      .int64(Int64(run.casesPassed)), .text(run.error), .bytea(summary.protobufBytes())])
            var cancelledBy: String?
            if ended == 0 {
                let rows = try await connection.query("""
                    UPDATE eval_runs SET score = $2, cases_done = $3, cases_passed = $4, updated_at = now(), summary = $5
                    WHERE run_id = $1 AND status = 'cancelled' RETURNING error
                    """, [.text(run.runID), .double(run.score), .int64(Int64(run.casesDone)),
                          .int64(Int64(run.casesPassed)), .bytea(summary.protobufBytes())])
                cancelledBy = try rows.first?.decode(String.self, at: 0)
            }
            let status = cancelledBy == nil ? run.status : "cancelled"
            _ = try await connection.query("""
                INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'run-finish', $2, $3, $4)
                """, [.text(run.startedBy), .text(run.tenantID), .text("\(run.agent)/\(run.suite)"),
                      .text("\(run.runID) \(status): score \(String(format: "%.3f", run.score)), "
                            + "\(run.casesPassed)/\(run.casesTotal) passed")])
            return cancelledBy
        }
        var stored = run
        if let cancelledBy {
            stored.status = "cancelled"
            stored.error = cancelledBy
        }
        return stored
    }

    /// Marks runs failed whose process died (their row stopped moving); returns how many.
    @discardableResult
    func failStaleRuns() async throws -> Int {
        try await pool.execute("""
            UPDATE eval_runs SET status = 'failed', finished_at = now(), updated_at = now(),
                error = 'interrupted: the eval process running it stopped; start the run again'
            WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1)
            """, [.int64(Int64(Self.staleAfterSeconds))])
    }
}

/// Sweeps stale runs once a minute, and on shutdown closes this process's runs as interrupted.
struct EvalRunnerService: Service {
    let runner: EvalRunner

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await runner.failStaleRuns()
            } catch {
                runner.logger.warning("stale eval runs not swept", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(60)) }
        }
        await runner.drain()
    }
}
