import Foundation
import Schemas
import ServiceKit
import Storage
import Tenancy

/// `admin.eval.rollout-*`: start a gated rollout, read it (with its history), list them, pause, resume or abort.
extension EvalAdmin {
    func controller() throws(AdminFailure) -> RolloutController {
        guard let rollouts else { throw AdminFailure(.unavailable, "this eval process does not drive rollouts") }
        guard rollouts.client != nil else {
            throw AdminFailure(.unavailable, "the eval service has no SWITCHYARD_ROLLOUT_ADMIN_TOKEN: it cannot set "
                               + "rollouts or read analytics, so it refuses to start rollouts")
        }
        return rollouts
    }

    public func startRollout(_ request: StartRolloutRequest) async throws(AdminFailure) -> RolloutResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: true)
        let controller = try controller()
        try checkVersion(request.candidateVersion, tenant: request.tenantID, agent: request.agent)
        let steps = try RolloutPlan.steps(request.steps)
        let hold = request.holdMillis == 0 ? RolloutPlan.defaultHoldMillis : request.holdMillis
        guard (100...RolloutPlan.maxHoldMillis).contains(hold) else {
            throw AdminFailure(.invalidArgument, "hold must be 100 ms to 7 days")
        }
        guard request.replayLimit <= 1_000 else { throw AdminFailure(.invalidArgument, "replay must be 0 to 1000 requests") }
        guard request.minRequests <= 1_000_000 else { throw AdminFailure(.invalidArgument, "min_requests must be at most 1000000") }
        let gates = try RolloutPlan.gates(request.gates, suite: !request.suite.isEmpty, replay: request.replayLimit > 0)
        if !request.suite.isEmpty {
            guard EvalNames.isValid(request.suite) else {
                throw AdminFailure(.invalidArgument, "suite must match [a-z0-9][a-z0-9._-]{0,62}")
            }
            let found: EvalSuite?
            do {
                found = try await RolloutController.suite(pool, tenant: request.tenantID, agent: request.agent, name: request.suite)
            } catch {
                throw storage(error)
            }
            guard let found, !found.cases.isEmpty else {
                throw AdminFailure(.notFound, "no suite \(request.suite) with cases for agent \(request.agent) of tenant \(request.tenantID)")
            }
            try checkJudge(found, runner: controller.runner)
        }
        // Where live users are now: the stable version (rollout settings, else the manifest's entry) and any canary.
        let snapshot = directory?.snapshot(tenant: request.tenantID)
        let current = snapshot?.rollouts[request.agent]
        let manifestVersion = snapshot?.manifest?.agents.first { $0.agent == request.agent && $0.enabled }?.version ?? ""
        let stable = current.map(\.stableVersion).flatMap { $0.isEmpty ? nil : $0 } ?? manifestVersion
        guard request.candidateVersion != stable else {
            throw AdminFailure(.invalidArgument, "\(request.candidateVersion) is already the stable version of agent \(request.agent)")
        }
        let now = EventClock.nowUnixNanos()
        let rollout = Rollout(
            rolloutID: "rollout-" + EventID.random().prefix(16), tenantID: request.tenantID, agent: request.agent,
            candidateVersion: request.candidateVersion, stableVersion: stable,
            previousCanaryVersion: current?.canaryVersion ?? "", previousCanaryPercent: current?.canaryPercent ?? 0,
            steps: steps, holdMillis: hold, gates: gates,
            minRequests: request.minRequests == 0 ? RolloutPlan.defaultMinRequests : request.minRequests,
            suite: request.suite, replayLimit: request.replayLimit, state: "evaluating", stepIndex: -1,
            canaryPercent: current?.canaryPercent ?? 0, startedBy: actor, startedAtUnixNanos: now,
            updatedAtUnixNanos: now)
        let stepList = steps.map(String.init).joined(separator: ",")
        let gateList = gates.map(\.text).joined(separator: ",")
        let detail = "candidate \(rollout.candidateVersion) over stable \(stable.isEmpty ? "(manifest)" : stable); "
            + "steps \(stepList); hold \(hold) ms; min \(rollout.minRequests) requests; gates \(gateList)"
        let inserted: Bool
        do {
            inserted = try await controller.insert(rollout, actor: actor, detail: detail)
        } catch {
            throw storage(error)
        }
        guard inserted else {
            throw AdminFailure(.conflict, "agent \(request.agent) of tenant \(request.tenantID) already has an "
                               + "unfinished rollout: pause, abort or wait for it (switchyard rollout status)")
        }
        logger.info("rollout started", metadata: ["tenant.id": "\(rollout.tenantID)", "rollout": "\(rollout.rolloutID)",
                                                  "candidate": "\(rollout.candidateVersion)", "actor": "\(actor)"])
        return RolloutResponse(error: nil, rollout: rollout)
    }

    public func getRollout(_ request: GetRolloutRequest) async throws(AdminFailure) -> RolloutResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: false)
        guard !request.rolloutID.isEmpty || !request.agent.isEmpty else {
            throw AdminFailure(.invalidArgument, "give a rollout_id or an agent (its latest rollout)")
        }
        do {
            let found = request.rolloutID.isEmpty
                ? try await Self.rollouts(pool, where: "tenant_id = $1 AND agent = $2",
                                          [.text(request.tenantID), .text(request.agent)], limit: 1).first
                : try await Self.rollouts(pool, where: "tenant_id = $1 AND rollout_id = $2",
                                          [.text(request.tenantID), .text(request.rolloutID)], limit: 1).first
            guard var rollout = found else {
                throw AdminFailure(.notFound, request.rolloutID.isEmpty
                    ? "agent \(request.agent) of tenant \(request.tenantID) has no rollout"
                    : "no rollout \(request.rolloutID) for tenant \(request.tenantID)")
            }
            if request.includeHistory {
                rollout.history = try await RolloutController.history(pool, rolloutID: rollout.rolloutID)
            }
            return RolloutResponse(error: nil, rollout: rollout)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw storage(error)
        }
    }

    public func listRollouts(_ request: ListRolloutsRequest) async throws(AdminFailure) -> ListRolloutsResponse {
        _ = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: request.agent, agentRequired: false)
        let limit = request.limit == 0 ? 20 : min(Int(request.limit), 500)
        do {
            return ListRolloutsResponse(error: nil, rollouts: try await Self.rollouts(
                pool, where: "tenant_id = $1 AND ($2 = '' OR agent = $2)", [.text(request.tenantID), .text(request.agent)],
                limit: limit))
        } catch {
            throw storage(error)
        }
    }

    /// pause: no more steps (the canary share stays); resume: the step starts its hold again; abort: the rollout
    /// ends and live users get the previous stable version back (canary 0 %).
    public func controlRollout(_ request: ControlRolloutRequest) async throws(AdminFailure) -> RolloutResponse {
        let actor = try authenticator.actor(for: request)
        try checkTarget(tenant: request.tenantID, agent: "", agentRequired: false)
        let controller = try controller()
        guard ["pause", "resume", "abort"].contains(request.action) else {
            throw AdminFailure(.invalidArgument, "action must be pause, resume or abort")
        }
        // The rollout as it is after the change, with its history.
        func changed() async throws(AdminFailure) -> RolloutResponse {
            try await getRollout(GetRolloutRequest(adminToken: request.adminToken, actor: request.actor,
                                                   tenantID: request.tenantID, rolloutID: request.rolloutID,
                                                   includeHistory: true))
        }
        do {
            // A compare-and-set on the row's revision: retried if the driver wrote in between.
            for _ in 0..<20 {
                guard let stored = try await controller.load(request.rolloutID),
                      stored.rollout.tenantID == request.tenantID else {
                    throw AdminFailure(.notFound, "no rollout \(request.rolloutID) for tenant \(request.tenantID)")
                }
                var rollout = stored.rollout
                switch (request.action, rollout.state) {
                case ("pause", "evaluating"), ("pause", "stepping"):
                    rollout.state = "paused"
                    rollout.reason = "paused by \(actor)"
                    if try await controller.commit(rollout, expected: stored.revision, action: "paused", actor: actor,
                                                   detail: rollout.reason, asDriver: false) {
                        return try await changed()
                    }
                case ("resume", "paused"):
                    rollout.state = rollout.stepIndex < 0 ? "evaluating" : "stepping"
                    rollout.reason = ""
                    rollout.stepStartedAtUnixNanos = EventClock.nowUnixNanos()
                    if try await controller.commit(rollout, expected: stored.revision, action: "resumed", actor: actor,
                                                   detail: "resumed by \(actor); the step's hold starts again", asDriver: false) {
                        return try await changed()
                    }
                case ("abort", "evaluating"), ("abort", "stepping"), ("abort", "paused"):
                    try await controller.finish(stored, rollout, state: "aborted", action: "aborted",
                                                reason: "aborted by \(actor)", restore: rollout.stepIndex >= 0,
                                                actor: actor, asDriver: false)
                    let after = try await controller.load(request.rolloutID)
                    if after?.rollout.state == "aborted" { return try await changed() }
                default:
                    throw AdminFailure(.conflict, "rollout \(request.rolloutID) is \(rollout.state): cannot \(request.action) it")
                }
            }
            throw AdminFailure(.unavailable, "the rollout kept changing; try again")
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw storage(error)
        }
    }

    static func rollouts(_ pool: PostgresPool, where condition: String, _ parameters: [PostgresValue], limit: Int)
        async throws -> [Rollout]
    {
        try await pool.query("""
            SELECT rollout FROM eval_rollouts WHERE \(condition) ORDER BY started_at DESC, rollout_id LIMIT \(limit)
            """, parameters).map { try Rollout(protobuf: try $0.decode([UInt8].self, at: 0)) }
    }
}
