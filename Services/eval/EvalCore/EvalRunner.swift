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

    let pool: PostgresPool
    let jetStream: JetStream
    let inbox: ReplyInbox
    let metrics: TelemetryMetrics
    let logger: Logger
    private let tasks = Mutex<[String: Task<Void, Never>]>([:])

    public init(pool: PostgresPool, jetStream: JetStream, inbox: ReplyInbox, metrics: TelemetryMetrics, logger: Logger) {
        self.pool = pool
        self.jetStream = jetStream
        self.inbox = inbox
        self.metrics = metrics
        self.logger = logger
    }

    /// Runs in progress in this process.
    public var running: Int { tasks.withLock { $0.count } }

    /// Records the run (status `running`) and starts its cases in the background; returns at once.
    func start(tenant: String, agent: String, version: String, suite: EvalSuite, concurrency: Int, actor: String)
        async throws -> EvalRun
    {
        let run = EvalRun(runID: "run-" + EventID.random().prefix(16), tenantID: tenant, agent: agent,
                          agentVersion: version, suite: suite.name, status: "running",
                          casesTotal: UInt32(suite.cases.count), startedAtUnixNanos: EventClock.nowUnixNanos(),
                          startedBy: actor)
        try await pool.transaction { connection in
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
        let task = Task { [self] in
            await execute(run, suite: suite, concurrency: concurrency)
            _ = tasks.withLock { $0.removeValue(forKey: run.runID) }
        }
        tasks.withLock { $0[run.runID] = task }
        logger.info("eval run started", metadata: [
            "tenant.id": "\(tenant)", "agent": "\(agent)", "version": "\(version)", "suite": "\(suite.name)",
            "run": "\(run.runID)", "cases": "\(suite.cases.count)", "actor": "\(actor)",
        ])
        return run
    }

    /// Stops this process's runs (graceful shutdown): cases in flight end at once, each run is closed as failed
    /// ("interrupted"), so nobody waits for a run nobody drives.
    func drain() async {
        let running = tasks.withLock { Array($0.values) }
        for task in running { task.cancel() }
        for task in running { await task.value }
    }

    // MARK: one run

    func execute(_ run: EvalRun, suite: EvalSuite, concurrency: Int) async {
        let width = max(1, min(concurrency, Self.maxConcurrency))
        var results: [EvalCaseResult] = []
        var failure: String?
        await withTaskGroup(of: (Int, EvalCaseResult).self) { group in
            var next = 0
            func launch() {
                let index = next
                let evalCase = suite.cases[index]
                next += 1
                group.addTask { [self] in (index, await runCase(evalCase, of: run)) }
            }
            while next < min(width, suite.cases.count) { launch() }
            while let (index, result) = await group.next() {
                results.append(result)
                do {
                    try await record(result, position: index, of: run)
                } catch {
                    failure = "storing case results failed: \(error)"
                }
                if next < suite.cases.count && !Task.isCancelled { launch() }
            }
        }
        if Task.isCancelled && results.count < suite.cases.count {
            failure = "interrupted: the eval service stopped during the run; start it again"
        }
        var finished = run
        finished.results = results
        Self.summarize(&finished, cases: suite.cases)
        finished.status = failure == nil ? "completed" : "failed"
        finished.error = failure ?? ""
        finished.finishedAtUnixNanos = EventClock.nowUnixNanos()
        do {
            try await finish(finished)
            var event = finished
            event.results = []
            let completed = EvalCompleted(meta: EventMeta.make(tenantID: run.tenantID, producer: ServiceName.eval.rawValue),
                                          run: event)
            try await jetStream.publishEvent(.evalCompleted, tenant: run.tenantID, eventID: completed.meta!.eventID,
                                             payload: completed.protobufBytes())
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
        observed.content = completed.content
        observed.handedOff = completed.handedOff
        let score = Scorer.score(evalCase, observed)
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

    // MARK: storage

    func record(_ result: EvalCaseResult, position: Int, of run: EvalRun) async throws {
        try await pool.transaction { connection in
            _ = try await connection.query("""
                INSERT INTO eval_case_results (run_id, position, case_id, score, passed, result)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, position) DO NOTHING
                """, [.text(run.runID), .int64(Int64(position)), .text(result.caseID), .double(result.score),
                      .bool(result.passed), .bytea(result.protobufBytes())])
            _ = try await connection.query("""
                UPDATE eval_runs SET cases_done = cases_done + 1, cases_passed = cases_passed + $2, updated_at = now()
                WHERE run_id = $1
                """, [.text(run.runID), .int64(result.passed ? 1 : 0)])
        }
    }

    func finish(_ run: EvalRun) async throws {
        var summary = run
        summary.results = []
        try await pool.transaction { connection in
            _ = try await connection.query("""
                UPDATE eval_runs SET status = $2, score = $3, cases_done = $4, cases_passed = $5, error = $6,
                    finished_at = now(), updated_at = now(), summary = $7
                WHERE run_id = $1
                """, [.text(run.runID), .text(run.status), .double(run.score), .int64(Int64(run.casesDone)),
                      .int64(Int64(run.casesPassed)), .text(run.error), .bytea(summary.protobufBytes())])
            _ = try await connection.query("""
                INSERT INTO eval_audit (actor, action, tenant_id, target, detail) VALUES ($1, 'run-finish', $2, $3, $4)
                """, [.text(run.startedBy), .text(run.tenantID), .text("\(run.agent)/\(run.suite)"),
                      .text("\(run.runID) \(run.status): score \(String(format: "%.3f", run.score)), "
                            + "\(run.casesPassed)/\(run.casesTotal) passed")])
        }
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
