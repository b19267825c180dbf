import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceLifecycle
import Storage
import Tenancy

/// The rollout controller (docs/adr/0021): walks a candidate version of a tenant's agent through its steps
/// (10 → 25 → 50 → 100 % by default) on its own. Before the first step it runs the golden suite (and a replay, if
/// asked) and refuses a candidate that misses the `eval`/`replay` gates; at each step it waits at least the hold
/// time and the minimum traffic, reads canary vs stable from analytics, and advances, holds, or rolls back (canary
/// 0 %, the previous stable version) as soon as a live gate fails.
///
/// State lives in `eval_rollouts` (the `Rollout` protobuf plus the columns the controller selects on). Every eval
/// replica ticks; a rollout is driven by the replica holding its lease (`lease_owner`, `lease_until`), which it
/// renews each tick, and a replica that dies loses it when it expires. Every write is a compare-and-set on the
/// row's `revision` (and, for the driver, on its unexpired lease), so two replicas can never both take a step.
/// Each change is a `RolloutChanged` event, written in the same transaction (`eval_rollout_events`, an outbox)
/// and then published on `evt.rollout.changed.<tenant>`, de-duplicated by rollout id and sequence.
///
/// The controller changes the tenant's rollout settings through `admin.tenant.set-rollout` and reads figures
/// through `admin.analytics.stats`, with its own admin token (`SWITCHYARD_ROLLOUT_ADMIN_TOKEN`); the eval NATS user
/// may publish those two commands and no other admin command.
public final class RolloutController: Sendable {
    static let activeStates = ["evaluating", "stepping", "paused"]
    static let sqlActive = "state IN ('evaluating', 'stepping', 'paused')"

    let pool: PostgresPool
    let runner: EvalRunner
    let jetStream: JetStream
    let directory: TenantDirectory
    /// Admin calls to the tenant and analytics services (nil: no `SWITCHYARD_ROLLOUT_ADMIN_TOKEN`; rollouts are refused).
    let client: AdminClient?
    let instance: String
    let lease: Duration
    let tick: Duration
    let logger: Logger

    public init(pool: PostgresPool, runner: EvalRunner, jetStream: JetStream, directory: TenantDirectory,
                client: AdminClient?, instance: String, lease: Duration = .seconds(15), tick: Duration = .seconds(1),
                logger: Logger) {
        self.pool = pool
        self.runner = runner
        self.jetStream = jetStream
        self.directory = directory
        self.client = client
        self.instance = instance
        self.lease = lease
        self.tick = tick
        self.logger = logger
    }

    var controllerActor: String { "controller/\(instance)" }
    var leaseMillis: Int64 { lease.nanosecondsValue / 1_000_000 }

    // MARK: storage

    /// A rollout as stored, with the revision a write must match.
    struct Stored: Sendable {
        var rollout: Rollout
        var revision: Int64
    }

    static func load(_ connection: PostgresConnection, rolloutID: String) async throws -> Stored? {
        guard let row = try await connection.query(
            "SELECT rollout, revision FROM eval_rollouts WHERE rollout_id = $1", [.text(rolloutID)]).first else { return nil }
        return Stored(rollout: try Rollout(protobuf: try row.decode([UInt8].self, at: 0)),
                      revision: try row.decode(Int64.self, at: 1))
    }

    func load(_ rolloutID: String) async throws -> Stored? {
        try await pool.withConnection { try await Self.load($0, rolloutID: rolloutID) }
    }

    /// Inserts a new rollout with its `started` event; nil when the agent already has an unfinished rollout.
    func insert(_ rollout: Rollout, actor: String, detail: String) async throws -> Bool {
        let inserted = try await pool.transaction { connection -> Bool in
            let rows = try await connection.query("""
                INSERT INTO eval_rollouts (rollout_id, tenant_id, agent, state, settings_pending, rollout)
                VALUES ($1, $2, $3, $4, false, $5) ON CONFLICT DO NOTHING RETURNING rollout_id
                """, [.text(rollout.rolloutID), .text(rollout.tenantID), .text(rollout.agent), .text(rollout.state),
                      .bytea(rollout.protobufBytes())])
            guard !rows.isEmpty else { return false }
            try await Self.appendEvent(connection, rollout, action: "started", actor: actor, detail: detail)
            return true
        }
        if inserted { await publishPending(rolloutID: rollout.rolloutID) }
        return inserted
    }

    /// Writes `next` over the row if it is still at `expected` (and, with `asDriver`, this replica's lease has not
    /// expired), with an event for `action` unless it is nil. False: someone else changed it first; nothing written.
    func commit(_ next: Rollout, expected: Int64, action: String?, actor: String, detail: String = "",
                asDriver: Bool) async throws -> Bool {
        var next = next
        next.updatedAtUnixNanos = EventClock.nowUnixNanos()
        let written = next
        // The driver's writes also renew its lease (a slow tick cannot outlast it between two claims).
        let leaseCondition = asDriver ? " AND lease_owner = $6 AND lease_until > now()" : ""
        let renewal = asDriver ? ", lease_until = now() + make_interval(secs => $7)" : ""
        var parameters: [PostgresValue] = [.text(written.rolloutID), .int64(expected), .text(written.state),
                                           .bool(written.settingsPending), .bytea(written.protobufBytes())]
        if asDriver { parameters += [.text(instance), .double(Double(leaseMillis) / 1_000)] }
        let committed = try await pool.transaction { connection -> Bool in
            let rows = try await connection.query("""
                UPDATE eval_rollouts SET state = $3, settings_pending = $4, rollout = $5, revision = revision + 1,
                    updated_at = now()\(renewal)
                WHERE rollout_id = $1 AND revision = $2\(leaseCondition) RETURNING revision
                """, parameters)
            guard !rows.isEmpty else { return false }
            if let action {
                try await Self.appendEvent(connection, written, action: action, actor: actor, detail: detail)
            }
            return true
        }
        if committed && action != nil { await publishPending(rolloutID: written.rolloutID) }
        return committed
    }

    static func appendEvent(_ connection: PostgresConnection, _ rollout: Rollout, action: String, actor: String,
                            detail: String) async throws {
        let sequence = try await connection.query(
            "SELECT coalesce(max(sequence), 0) + 1 FROM eval_rollout_events WHERE rollout_id = $1",
            [.text(rollout.rolloutID)]).first?.decode(Int64.self, at: 0) ?? 1
        var meta = EventMeta.make(tenantID: rollout.tenantID, producer: ServiceName.eval.rawValue)
        meta.eventID = DerivedEventID.make(from: rollout.rolloutID, kind: "rollout.changed.\(sequence)")
        let event = RolloutChanged(meta: meta, rolloutID: rollout.rolloutID, sequence: UInt64(sequence),
                                   action: action, agent: rollout.agent, candidateVersion: rollout.candidateVersion,
                                   canaryPercent: rollout.canaryPercent, stepIndex: rollout.stepIndex,
                                   detail: detail, actor: actor, figures: rollout.figures, state: rollout.state)
        _ = try await connection.query("""
            INSERT INTO eval_rollout_events (rollout_id, sequence, action, event) VALUES ($1, $2, $3, $4)
            """, [.text(rollout.rolloutID), .int64(sequence), .text(action), .bytea(event.protobufBytes())])
    }

    /// Publishes the outbox's unpublished events (of one rollout, or of any), oldest first; what fails stays
    /// for the next tick (the message id makes a second publish harmless).
    func publishPending(rolloutID: String? = nil) async {
        do {
            let rows = try await pool.query("""
                SELECT rollout_id, sequence, event FROM eval_rollout_events
                WHERE NOT published AND ($1 = '' OR rollout_id = $1) ORDER BY at, rollout_id, sequence LIMIT 200
                """, [.text(rolloutID ?? "")])
            for row in rows {
                let id = try row.decode(String.self, at: 0)
                let sequence = try row.decode(Int64.self, at: 1)
                let event = try RolloutChanged(protobuf: try row.decode([UInt8].self, at: 2))
                guard let meta = event.meta else { continue }
                try await jetStream.publishEvent(.rolloutChanged, tenant: meta.tenantID, eventID: meta.eventID,
                                                 payload: event.protobufBytes())
                _ = try await pool.execute(
                    "UPDATE eval_rollout_events SET published = true WHERE rollout_id = $1 AND sequence = $2",
                    [.text(id), .int64(sequence)])
            }
        } catch {
            logger.warning("rollout events not published yet", metadata: ["error": "\(error)"])
        }
    }

    static func history(_ pool: PostgresPool, rolloutID: String) async throws -> [RolloutChanged] {
        try await pool.query("SELECT event FROM eval_rollout_events WHERE rollout_id = $1 ORDER BY sequence",
                             [.text(rolloutID)]).map { try RolloutChanged(protobuf: try $0.decode([UInt8].self, at: 0)) }
    }

    // MARK: the loop

    /// Claims (or renews) the lease of every unfinished rollout whose lease is free or ours, and of finished ones
    /// whose tenant settings are still to be set; returns them with the previous lease owner.
    func claim() async throws -> [(stored: Stored, previousOwner: String)] {
        let rows = try await pool.query("""
            WITH candidates AS (
                SELECT rollout_id, lease_owner AS previous FROM eval_rollouts
                WHERE (\(Self.sqlActive) OR settings_pending) AND (lease_owner = $1 OR lease_until < now())
                ORDER BY rollout_id LIMIT 100 FOR UPDATE SKIP LOCKED)
            UPDATE eval_rollouts r SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
            FROM candidates c WHERE r.rollout_id = c.rollout_id
            RETURNING r.rollout, r.revision, c.previous
            """, [.text(instance), .double(Double(leaseMillis) / 1_000)])
        return try rows.map { row in
            (Stored(rollout: try Rollout(protobuf: try row.decode([UInt8].self, at: 0)),
                    revision: try row.decode(Int64.self, at: 1)),
             try row.decode(String.self, at: 2))
        }
    }

    /// One pass: claim, drive each claimed rollout one transition, publish what the outbox holds.
    func tickOnce() async {
        let claimed: [(stored: Stored, previousOwner: String)]
        do {
            claimed = try await claim()
        } catch {
            logger.warning("rollout leases not claimed", metadata: ["error": "\(error)"])
            return
        }
        for (stored, previous) in claimed {
            do {
                try await drive(stored, previousOwner: previous)
            } catch {
                logger.warning("rollout not driven this tick", metadata: [
                    "rollout": "\(stored.rollout.rolloutID)", "error": "\(error)"])
            }
        }
        await publishPending()
    }

    /// Releases this replica's leases (at shutdown), so another replica takes over at once.
    func releaseLeases() async {
        _ = try? await pool.execute(
            "UPDATE eval_rollouts SET lease_owner = '', lease_until = '-infinity' WHERE lease_owner = $1", [.text(instance)])
    }

    func drive(_ stored: Stored, previousOwner: String) async throws {
        var stored = stored
        if stored.rollout.driver != instance && Self.activeStates.contains(stored.rollout.state) {
            var next = stored.rollout
            next.driver = instance
            let before = stored.rollout.driver.isEmpty ? previousOwner : stored.rollout.driver
            // A new rollout's first driver is no change; taking one over (lease expired or handed back) is.
            let action: String? = before.isEmpty ? nil : "driver-changed"
            let detail = previousOwner.isEmpty
                ? "\(instance) took over from \(before) (it stopped and handed its lease back)"
                : "\(instance) took over from \(before) (its lease expired)"
            guard try await commit(next, expected: stored.revision, action: action, actor: controllerActor,
                                   detail: detail, asDriver: true),
                  let reloaded = try await load(next.rolloutID) else { return }
            if action != nil {
                logger.info("rollout taken over", metadata: ["rollout": "\(next.rolloutID)", "from": "\(before)"])
            }
            stored = reloaded
        }
        if Self.activeStates.contains(stored.rollout.state), let gone = agentGone(stored.rollout) {
            return try await finish(stored, stored.rollout, state: "failed", action: "failed", reason: gone, restore: false)
        }
        if stored.rollout.settingsPending {
            guard try await applySettings(stored.rollout) else { return }
            var next = stored.rollout
            next.settingsPending = false
            guard try await commit(next, expected: stored.revision, action: nil, actor: controllerActor, asDriver: true),
                  let reloaded = try await load(next.rolloutID) else { return }
            stored = reloaded
        }
        switch stored.rollout.state {
        case "evaluating": try await evaluate(stored)
        case "stepping": try await step(stored)
        default: break
        }
    }

    /// Why the rollout cannot go on: its tenant's manifest (as the mirror has it) no longer lists the agent — the
    /// tenant service dropped the agent's rollout settings with it. nil while the mirror does not know the tenant.
    func agentGone(_ rollout: Rollout) -> String? {
        guard let manifest = directory.snapshot(tenant: rollout.tenantID)?.manifest else { return nil }
        guard !manifest.agents.contains(where: { $0.agent == rollout.agent }) else { return nil }
        return "agent \(rollout.agent) is no longer in tenant \(rollout.tenantID)'s manifest"
    }

    // MARK: before the first step

    /// The checks before the first step: the golden suite (gate `eval`) and the replay of recorded traffic (gate
    /// `replay`), each a run of the eval runner; a score of 0 in the rollout means "not scored yet".
    enum PreStep: String {
        case suite, replay

        var metric: String { self == .suite ? "eval" : "replay" }
        func wanted(_ rollout: Rollout) -> Bool { self == .suite ? !rollout.suite.isEmpty : rollout.replayLimit > 0 }
        func runID(_ rollout: Rollout) -> String { self == .suite ? rollout.evalRunID : rollout.replayRunID }
        func score(_ rollout: Rollout) -> Double { self == .suite ? rollout.evalScore : rollout.replayScore }

        func record(run runID: String, in rollout: inout Rollout) {
            if self == .suite { rollout.evalRunID = runID } else { rollout.replayRunID = runID }
        }

        func record(score: Double, in rollout: inout Rollout) {
            if self == .suite { rollout.evalScore = score } else { rollout.replayScore = score }
        }

        func describe(_ rollout: Rollout, score: Double) -> String {
            let what = self == .suite ? "suite \(rollout.suite)" : "replay of \(rollout.replayLimit) recorded requests"
            return what + ": score " + String(format: "%.3f", score)
        }
    }

    func evaluate(_ stored: Stored) async throws {
        for check in [PreStep.suite, .replay] where check.wanted(stored.rollout) && check.score(stored.rollout) == 0 {
            let runID = check.runID(stored.rollout)
            if runID.isEmpty { return try await startRun(stored, check) }
            let score: Double
            switch try await outcome(stored, runID: runID, check) {
            case .pending:
                return
            case .refused(let why):
                return try await finish(stored, stored.rollout, state: "refused", action: "refused", reason: why,
                                        restore: false)
            case .failed(let why):
                return try await finish(stored, stored.rollout, state: "failed", action: "failed", reason: why,
                                        restore: false)
            case .scored(let value):
                score = value
            }
            var rollout = stored.rollout
            check.record(score: score, in: &rollout)
            if let refusal = preStepFailure(rollout, metric: check.metric, score) {
                return try await finish(stored, rollout, state: "refused", action: "refused", reason: refusal,
                                        restore: false)
            }
            _ = try await commit(rollout, expected: stored.revision, action: "evaluated", actor: controllerActor,
                                 detail: check.describe(rollout, score: score), asDriver: true)
            return
        }
        try await enterStep(stored, index: 0)
    }

    /// The failed pre-step gate's description, nil when the score meets every gate on `metric`.
    func preStepFailure(_ rollout: Rollout, metric: String, _ score: Double) -> String? {
        let failed = rollout.gates.filter { $0.metric == metric && !RolloutPlan.holds($0, score) }
        guard !failed.isEmpty else { return nil }
        return failed.map { "\($0.text) not met: \(metric) score \(String(format: "%.3f", score))" }
            .joined(separator: "; ")
    }

    func startRun(_ stored: Stored, _ check: PreStep) async throws {
        var rollout = stored.rollout
        let run: EvalRun
        if check == .suite {
            guard let suite = try await Self.suite(pool, tenant: rollout.tenantID, agent: rollout.agent, name: rollout.suite) else {
                return try await finish(stored, rollout, state: "failed", action: "failed",
                                        reason: "suite \(rollout.suite) no longer exists", restore: false)
            }
            run = try await runner.start(tenant: rollout.tenantID, agent: rollout.agent, version: rollout.candidateVersion,
                                         suite: suite, concurrency: EvalRunner.defaultConcurrency, actor: controllerActor)
        } else {
            run = try await runner.startReplay(tenant: rollout.tenantID, agent: rollout.agent,
                                               candidate: rollout.candidateVersion,
                                               since: EventClock.nowUnixNanos() - 86_400_000_000_000,
                                               limit: Int(rollout.replayLimit), concurrency: EvalRunner.defaultConcurrency,
                                               actor: controllerActor)
        }
        check.record(run: run.runID, in: &rollout)
        _ = try await commit(rollout, expected: stored.revision, action: nil, actor: controllerActor, asDriver: true)
    }

    /// Where a pre-step run stands.
    enum RunOutcome: Equatable {
        /// Still running here, or started again (it had died with its replica).
        case pending
        case scored(Double)
        /// Nothing to score (a replay with no recorded requests): the gate cannot be met.
        case refused(String)
        /// The run failed for a reason a retry would not change.
        case failed(String)
    }

    /// The run's outcome. A run that was interrupted (its replica stopped or died) is started again; the stale
    /// sweep fails an orphan that still says "running".
    func outcome(_ stored: Stored, runID: String, _ check: PreStep) async throws -> RunOutcome {
        guard let run = try await EvalAdmin.runs(pool, where: "run_id = $1", [.text(runID)], limit: 1).first else {
            try await clearRun(stored, check)
            return .pending
        }
        switch run.status {
        case "completed" where run.casesTotal == 0:
            return .refused("nothing to \(check == .suite ? "run" : "replay"): \(check == .suite ? "the suite has no cases" : "no recorded requests of \(run.agent) in the last 24 h")")
        case "completed":
            return .scored(max(run.score, Double.leastNonzeroMagnitude))
        case "running" where runner.isRunningHere(runID):
            return .pending
        case "failed" where !run.error.hasPrefix(EvalRunner.interrupted):
            return .failed("the \(check.rawValue) run \(runID) failed: \(run.error)")
        case "cancelled":
            // An operator stopped the check: the rollout does not go on without it, nor start it again.
            return .failed("the \(check.rawValue) run \(runID) was \(run.error)")
        default:
            logger.info("rollout's \(check.rawValue) run is started again", metadata: [
                "rollout": "\(stored.rollout.rolloutID)", "run": "\(runID)", "status": "\(run.status)"])
            try await clearRun(stored, check)
            return .pending
        }
    }

    func clearRun(_ stored: Stored, _ check: PreStep) async throws {
        var rollout = stored.rollout
        check.record(run: "", in: &rollout)
        _ = try await commit(rollout, expected: stored.revision, action: nil, actor: controllerActor, asDriver: true)
    }

    static func suite(_ pool: PostgresPool, tenant: String, agent: String, name: String) async throws -> EvalSuite? {
        guard let bytes = try await pool.query(
            "SELECT suite FROM eval_suites WHERE tenant_id = $1 AND agent = $2 AND name = $3",
            [.text(tenant), .text(agent), .text(name)]).first?.decode([UInt8].self, at: 0) else { return nil }
        return try EvalSuite(protobuf: bytes)
    }

    // MARK: steps

    /// Moves to step `index`: the counters at its start become the baseline, the canary share is set.
    func enterStep(_ stored: Stored, index: Int) async throws {
        var rollout = stored.rollout
        let now = EventClock.nowUnixNanos()
        if rollout.baseline == nil || rollout.baseline?.sinceUnixNanos == 0 {
            rollout.baseline = RolloutBaseline(sinceUnixNanos: now)
        }
        // The counters so far (since the first step); analytics unavailable = stay where we are.
        guard let cumulative = try await counters(rollout, since: rollout.baseline!.sinceUnixNanos) else { return }
        rollout.baseline = RolloutBaseline(sinceUnixNanos: rollout.baseline!.sinceUnixNanos,
                                           canarySettled: cumulative.canarySettled, canaryFailures: cumulative.canaryFailures,
                                           canaryHandoffs: cumulative.canaryHandoffs, stableSettled: cumulative.stableSettled,
                                           stableFailures: cumulative.stableFailures, stableHandoffs: cumulative.stableHandoffs)
        let previousFigures = rollout.figures
        rollout.state = "stepping"
        rollout.stepIndex = Int32(index)
        rollout.canaryPercent = rollout.steps[index]
        rollout.stepStartedAtUnixNanos = now
        rollout.settingsPending = true
        rollout.figures = previousFigures
        let detail = index == 0
            ? "step 1 of \(rollout.steps.count): \(rollout.canaryPercent) % of requests on \(rollout.candidateVersion)"
            : "step \(index + 1) of \(rollout.steps.count): \(rollout.canaryPercent) % (\(previousFigures?.verdict ?? "pass"))"
        guard try await commit(rollout, expected: stored.revision, action: "stepped", actor: controllerActor,
                               detail: detail, asDriver: true) else { return }
        logger.info("rollout stepped", metadata: ["rollout": "\(rollout.rolloutID)", "percent": "\(rollout.canaryPercent)"])
        try await applyAndClear(rollout.rolloutID)
    }

    /// Sets the tenant's rollout settings to match the rollout now (else the next tick tries again).
    func applyAndClear(_ rolloutID: String) async throws {
        guard let stored = try await load(rolloutID), stored.rollout.settingsPending,
              try await applySettings(stored.rollout) else { return }
        var next = stored.rollout
        next.settingsPending = false
        _ = try await commit(next, expected: stored.revision, action: nil, actor: controllerActor, asDriver: false)
    }

    func step(_ stored: Stored) async throws {
        var rollout = stored.rollout
        let now = EventClock.nowUnixNanos()
        guard var figures = try await stepFigures(rollout) else {
            rollout.figures = RolloutFigures(checkedAtUnixNanos: now, verdict: "hold: analytics did not answer")
            _ = try await commit(rollout, expected: stored.revision, action: nil, actor: controllerActor, asDriver: true)
            return
        }
        let holdOver = now - rollout.stepStartedAtUnixNanos >= rollout.holdMillis * 1_000_000
        let verdict = RolloutPlan.verdict(figures, gates: rollout.gates, holdOver: holdOver, minRequests: rollout.minRequests)
        figures.checkedAtUnixNanos = now
        figures.verdict = verdict.text
        rollout.figures = figures
        switch verdict {
        case .hold:
            _ = try await commit(rollout, expected: stored.revision, action: nil, actor: controllerActor, asDriver: true)
        case .fail(let why):
            try await finish(stored, rollout, state: "rolled-back", action: "rolled-back",
                             reason: "step \(rollout.stepIndex + 1) (\(rollout.canaryPercent) %): \(why)", restore: true)
        case .pass:
            let next = Int(rollout.stepIndex) + 1
            if next < rollout.steps.count {
                var moving = stored
                moving.rollout = rollout
                try await enterStep(moving, index: next)
            } else {
                try await finish(stored, rollout, state: "completed", action: "completed",
                                 reason: "every step passed: \(rollout.candidateVersion) is the stable version", restore: false,
                                 promote: true)
            }
        }
    }

    /// Ends a rollout: `restore` puts the previous stable version back with the canary at 0 %, `promote` makes
    /// the candidate the stable version; neither (refused before any step) leaves the settings alone.
    func finish(_ stored: Stored, _ rollout: Rollout, state: String, action: String, reason: String, restore: Bool,
                promote: Bool = false, actor: String? = nil, asDriver: Bool = true) async throws {
        var rollout = rollout
        rollout.state = state
        rollout.reason = reason
        if restore || promote {
            rollout.canaryPercent = promote ? 100 : 0
            rollout.settingsPending = true
        }
        guard try await commit(rollout, expected: stored.revision, action: action, actor: actor ?? controllerActor,
                               detail: reason, asDriver: asDriver) else { return }
        logger.info("rollout finished", metadata: ["rollout": "\(rollout.rolloutID)", "state": "\(state)",
                                                   "reason": "\(reason)"])
        if rollout.settingsPending { try await applyAndClear(rollout.rolloutID) }
    }

    // MARK: the tenant's settings and analytics

    /// The tenant's rollout settings for where the rollout is: stepping/paused = candidate as canary at the
    /// step's share; completed = candidate stable, no canary; rolled back/aborted = the previous stable version,
    /// no canary. The kill switch is not the controller's: ``applySettings`` asks the tenant service to keep the
    /// stored one (`keep_kill_switch`), whatever the mirror said.
    static func settings(for rollout: Rollout, current: RolloutSettings?) -> RolloutSettings {
        var settings = current ?? RolloutSettings(agent: rollout.agent, tenantID: rollout.tenantID)
        settings.agent = rollout.agent
        settings.tenantID = rollout.tenantID
        switch rollout.state {
        case "completed":
            settings.stableVersion = rollout.candidateVersion
            settings.canaryVersion = ""
            settings.canaryPercent = 0
        case "rolled-back", "aborted", "failed":
            settings.stableVersion = rollout.stableVersion
            settings.canaryVersion = ""
            settings.canaryPercent = 0
        default:
            settings.stableVersion = rollout.stableVersion
            settings.canaryVersion = rollout.candidateVersion
            settings.canaryPercent = rollout.canaryPercent
        }
        return settings
    }

    /// Calls `admin.tenant.set-rollout`; false (logged) when the tenant service did not take it.
    func applySettings(_ rollout: Rollout) async throws -> Bool {
        guard let client else { return false }
        let current = directory.snapshot(tenant: rollout.tenantID)?.rollouts[rollout.agent]
        let wanted = Self.settings(for: rollout, current: current)
        do {
            _ = try await client.call(.setRollout, SetRolloutRequest(tenantID: rollout.tenantID, rollout: wanted,
                                                                     keepKillSwitch: true),
                                      as: SetRolloutResponse.self)
            return true
        } catch {
            logger.warning("rollout settings not set yet", metadata: [
                "rollout": "\(rollout.rolloutID)", "error": "\(error)"])
            return false
        }
    }

    /// Cumulative counters per version since `since` (nil: analytics did not answer).
    func counters(_ rollout: Rollout, since: Int64) async throws -> RolloutFigures? {
        guard let client else { return nil }
        let response: StatsResponse
        do {
            response = try await client.call(AnalyticsAdminCommand.stats, StatsRequest(
                tenantID: rollout.tenantID, sinceUnixNanos: since, by: "version", agent: rollout.agent),
                as: StatsResponse.self)
        } catch {
            logger.warning("analytics did not answer the rollout's query", metadata: [
                "rollout": "\(rollout.rolloutID)", "error": "\(error)"])
            return nil
        }
        var figures = RolloutFigures()
        for row in response.rows {
            let p95 = row.latency.first { $0.hop == "total" }?.p95Micros ?? 0
            if row.agentVersion == rollout.candidateVersion {
                figures.canarySettled += row.completions + row.failures
                figures.canaryFailures += row.failures
                figures.canaryHandoffs += row.handoffs
                figures.canaryP95Micros = p95
            } else if row.agentVersion == rollout.stableVersion {
                figures.stableSettled += row.completions + row.failures
                figures.stableFailures += row.failures
                figures.stableHandoffs += row.handoffs
                figures.stableP95Micros = p95
            }
        }
        return figures
    }

    /// The current step's figures: counters since the first step minus those at the step's start; p95 over the
    /// minutes since the step began (analytics keeps whole minutes).
    func stepFigures(_ rollout: Rollout) async throws -> RolloutFigures? {
        guard let baseline = rollout.baseline,
              let cumulative = try await counters(rollout, since: baseline.sinceUnixNanos),
              let recent = try await counters(rollout, since: rollout.stepStartedAtUnixNanos) else { return nil }
        return RolloutFigures(
            canarySettled: cumulative.canarySettled - baseline.canarySettled,
            canaryFailures: cumulative.canaryFailures - baseline.canaryFailures,
            canaryHandoffs: cumulative.canaryHandoffs - baseline.canaryHandoffs,
            canaryP95Micros: recent.canaryP95Micros,
            stableSettled: cumulative.stableSettled - baseline.stableSettled,
            stableFailures: cumulative.stableFailures - baseline.stableFailures,
            stableHandoffs: cumulative.stableHandoffs - baseline.stableHandoffs,
            stableP95Micros: recent.stableP95Micros)
    }
}

/// Ticks the rollout controller until shutdown, then hands its leases back.
struct RolloutControllerService: Service {
    let controller: RolloutController

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await controller.tickOnce()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: controller.tick) }
        }
        await controller.releaseLeases()
    }
}
