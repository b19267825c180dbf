import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Security
import Storage
import Telemetry
import Tenancy

/// What a mutation did, for the audit log, the KV mirror and the `TenantChanged` event; `output` is what the
/// command answers.
struct TenantChange<Output: Sendable>: Sendable {
    var result: Output
    var action: String
    var target: String
    var beforeJSON: String
    var afterJSON: String
    var mirror: [MirrorWrite]
    /// `TenantChanged.change` and the tenant record after the change.
    var tenantChange: (kind: String, tenant: Tenant)?
}

/// The tenant service's commands. Each mutation runs in one PostgreSQL transaction that holds the tenant's
/// advisory lock (so replicas serving commands concurrently serialize per tenant), writes the change, its
/// audit record and its events (outbox), updates the KV mirror, then commits. Events are published right
/// after the commit and deleted from the outbox; the outbox sweep publishes whatever a crash left behind.
/// A command that fails validation, authentication or a precondition writes nothing.
public struct TenantAdmin: Sendable {
    public static let producer = "tenant"

    let pool: PostgresPool
    let mirror: TenantMirror
    let outbox: Outbox
    let authenticator: AdminAuthenticator
    let pepper: [UInt8]?
    let metrics: TelemetryMetrics
    let logger: Logger

    public init(pool: PostgresPool, mirror: TenantMirror, outbox: Outbox, authenticator: AdminAuthenticator,
                pepper: [UInt8]?, metrics: TelemetryMetrics, logger: Logger) {
        self.pool = pool
        self.mirror = mirror
        self.outbox = outbox
        self.authenticator = authenticator
        self.pepper = pepper
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: authentication

    /// The audited actor (see `AdminAuthenticator.actor(for:)`).
    func authenticate(_ request: some AdminRequest) throws(AdminFailure) -> String {
        try authenticator.actor(for: request)
    }

    // MARK: tenants

    public func create(_ request: CreateTenantRequest) async throws(AdminFailure) -> CreateTenantResponse {
        let actor = try authenticate(request)
        var tenant = try AdminValidation.tenant(request.tenant)
        if tenant.planID.isEmpty { tenant.planID = "default" }
        let created = try await mutate(tenant: tenant.id, actor: actor, plans: .shared) { connection in
            if let existing = try await TenantStore.tenant(tenant.id, on: connection) {
                throw AdminFailure(.conflict, existing.status == "deleted"
                    ? "a deleted tenant used this id; ids are never reused" : "the tenant already exists")
            }
            guard let plan = try await TenantStore.plan(tenant.planID, on: connection) else {
                throw AdminFailure(.notFound, "no plan with that plan_id (plans are defined with set-plan)")
            }
            let now = EventClock.nowUnixNanos()
            tenant.status = "active"
            tenant.createdAtUnixNanos = now
            tenant.updatedAtUnixNanos = now
            try await TenantStore.insert(tenant, on: connection)
            return TenantChange(result: tenant, action: "tenant.create", target: "tenant/\(tenant.id)",
                          beforeJSON: "null", afterJSON: Audit.json(tenant),
                          // Plan first: a watcher never sees the tenant without its limits.
                          mirror: [.plan(plan, tenant: tenant.id), .tenant(tenant)],
                          tenantChange: ("created", tenant))
        }
        return CreateTenantResponse(tenant: created)
    }

    public func update(_ request: UpdateTenantRequest) async throws(AdminFailure) -> UpdateTenantResponse {
        let actor = try authenticate(request)
        let input = try AdminValidation.tenant(request.tenant)
        let updated = try await mutate(tenant: input.id, actor: actor, plans: .shared) { connection in
            let before = try await Self.liveTenant(input.id, on: connection)
            var tenant = before
            tenant.name = input.name
            tenant.packageName = input.packageName
            tenant.consentPolicy = input.consentPolicy
            tenant.timeZone = input.timeZone
            tenant.featureFlags = input.featureFlags
            var mirror: [MirrorWrite] = []
            if !input.planID.isEmpty && input.planID != before.planID {
                guard let plan = try await TenantStore.plan(input.planID, on: connection) else {
                    throw AdminFailure(.notFound, "no plan with that plan_id (plans are defined with set-plan)")
                }
                tenant.planID = input.planID
                mirror.append(.plan(plan, tenant: tenant.id))
            }
            tenant.updatedAtUnixNanos = EventClock.nowUnixNanos()
            try await TenantStore.update(tenant, on: connection)
            return TenantChange(result: tenant, action: "tenant.update", target: "tenant/\(tenant.id)",
                          beforeJSON: Audit.json(before), afterJSON: Audit.json(tenant),
                          mirror: [.tenant(tenant)] + mirror, tenantChange: ("updated", tenant))
        }
        return UpdateTenantResponse(tenant: updated)
    }

    public func suspend(_ request: SuspendTenantRequest) async throws(AdminFailure) -> SuspendTenantResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        _ = try AdminValidation.text(request.reason, field: "reason", maxBytes: 500)
        let tenant = try await mutate(tenant: id, actor: actor) { connection in
            let before = try await Self.liveTenant(id, on: connection)
            var tenant = before
            tenant.status = request.suspended ? "suspended" : "active"
            tenant.updatedAtUnixNanos = EventClock.nowUnixNanos()
            try await TenantStore.update(tenant, on: connection)
            return TenantChange(result: tenant, action: request.suspended ? "tenant.suspend" : "tenant.resume",
                          target: "tenant/\(id)", beforeJSON: Audit.json(before),
                          afterJSON: Audit.json(Audit.WithReason(record: tenant, reason: request.reason)),
                          mirror: [.tenant(tenant)], tenantChange: (request.suspended ? "suspended" : "resumed", tenant))
        }
        return SuspendTenantResponse(tenant: tenant)
    }

    /// Soft delete: the tenant row stays (ids are never reused, the audit log keeps pointing at it), its keys
    /// are revoked, its knowledge base is erased and it disappears from the KV mirror (so every gateway
    /// rejects its keys and every router its requests).
    public func delete(_ request: DeleteTenantRequest) async throws(AdminFailure) -> DeleteTenantResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        _ = try await mutate(tenant: id, actor: actor) { connection in
            let before = try await Self.liveTenant(id, on: connection)
            var tenant = before
            let now = EventClock.nowUnixNanos()
            tenant.status = "deleted"
            tenant.updatedAtUnixNanos = now
            try await TenantStore.update(tenant, on: connection)
            let keys = try await TenantStore.keys(tenant: id, on: connection)
            try await TenantStore.revokeAllKeys(tenant: id, now: now, on: connection)
            try await TenantStore.deleteAllKnowledge(tenant: id, on: connection)
            let rollouts = try await TenantStore.rollouts(tenant: id, on: connection)
            var mirror: [MirrorWrite] = [.deleteTenant(TenancyKeys.tenant(id)), .deleteTenant(TenancyKeys.plan(id)),
                                         .deleteTenant(TenancyKeys.manifest(id))]
            mirror += rollouts.map { .deleteTenant(TenancyKeys.rollout(id, agent: $0.agent)) }
            mirror += keys.map { .deleteKey(APIKeyFormat.kvKey(lookupID: $0.keyID)) }
            return TenantChange(result: (), action: "tenant.delete", target: "tenant/\(id)",
                          beforeJSON: Audit.json(before), afterJSON: Audit.json(tenant), mirror: mirror,
                          tenantChange: ("deleted", tenant))
        }
        return DeleteTenantResponse()
    }

    public func get(_ request: GetTenantRequest) async throws(AdminFailure) -> GetTenantResponse {
        _ = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        return try await read { connection in
            guard let tenant = try await TenantStore.tenant(id, on: connection) else {
                throw AdminFailure(.notFound, "no such tenant")
            }
            return GetTenantResponse(
                tenant: tenant, plan: try await TenantStore.plan(tenant.planID, on: connection),
                manifest: try await TenantStore.manifest(tenant: id, on: connection),
                rollouts: try await TenantStore.rollouts(tenant: id, on: connection))
        }
    }

    public func list(_ request: ListTenantsRequest) async throws(AdminFailure) -> ListTenantsResponse {
        _ = try authenticate(request)
        let after = try AdminValidation.token(request.pageToken, field: "page_token", allowEmpty: true)
        guard ["", "active", "suspended", "deleted"].contains(request.status) else {
            throw AdminFailure(.invalidArgument, "status must be active, suspended or deleted")
        }
        let size = request.pageSize == 0 ? 100 : Int(min(request.pageSize, 1000))
        do {
            let tenants = try await TenantStore.tenants(status: request.status, after: after, limit: size + 1, on: pool)
            let page = Array(tenants.prefix(size))
            return ListTenantsResponse(tenants: page, nextPageToken: tenants.count > size ? page.last?.id ?? "" : "")
        } catch {
            throw internalFailure(error, command: "list")
        }
    }

    // MARK: keys

    public func issueKey(_ request: IssueKeyRequest) async throws(AdminFailure) -> IssueKeyResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let scopes = try AdminValidation.scopes(request.scopes)
        let env = try AdminValidation.environment(request.env)
        let label = try AdminValidation.text(request.label, field: "label", maxBytes: AdminValidation.maxLabelLength)
        let now = EventClock.nowUnixNanos()
        guard request.expiresAtUnixNanos == 0 || request.expiresAtUnixNanos > now else {
            throw AdminFailure(.invalidArgument, "expires_at_unix_nanos must be 0 (never) or in the future")
        }
        let (plaintext, record) = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            let (plaintext, record) = try await issue(
                tenant: id, env: env, scopes: scopes, label: label, expiresAt: request.expiresAtUnixNanos,
                rotatedFrom: "", now: now, on: connection)
            return TenantChange(result: (plaintext, record), action: "key.issue", target: "key/\(record.keyID)",
                          beforeJSON: "null", afterJSON: Audit.json(Audit.redacted(record)), mirror: [.key(record)],
                          tenantChange: ("key.issued", tenant))
        }
        return IssueKeyResponse(plaintextKey: plaintext, key: Audit.redacted(record))
    }

    public func revokeKey(_ request: RevokeKeyRequest) async throws(AdminFailure) -> RevokeKeyResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let keyID = try AdminValidation.keyID(request.keyID)
        let record = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            guard let before = try await TenantStore.key(keyID, tenant: id, on: connection) else {
                throw AdminFailure(.notFound, "no such key for this tenant")
            }
            var after = before
            let now = EventClock.nowUnixNanos()
            after.status = "revoked"
            // A key already scheduled to stop (rotation overlap) stops now; an already revoked key keeps its time.
            if before.status != "revoked" { after.revokedAtUnixNanos = now }
            try await TenantStore.setRevocation(keyID: keyID, tenant: id, status: "revoked", revokedAt: after.revokedAtUnixNanos,
                                                on: connection)
            return TenantChange(result: after, action: "key.revoke", target: "key/\(keyID)",
                          beforeJSON: Audit.json(Audit.redacted(before)), afterJSON: Audit.json(Audit.redacted(after)),
                          mirror: [.key(after)], tenantChange: ("key.revoked", tenant))
        }
        return RevokeKeyResponse(key: Audit.redacted(record))
    }

    /// Issues a replacement with the old key's scopes, label, environment and expiry; the old key keeps
    /// working for `overlap_seconds` (0 = stops now), enforced by every gateway from `revoked_at`.
    public func rotateKey(_ request: RotateKeyRequest) async throws(AdminFailure) -> RotateKeyResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let keyID = try AdminValidation.keyID(request.keyID)
        guard request.overlapSeconds <= AdminValidation.maxOverlapSeconds else {
            throw AdminFailure(.invalidArgument, "overlap_seconds must be at most \(AdminValidation.maxOverlapSeconds)")
        }
        let (plaintext, fresh, old) = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            guard let before = try await TenantStore.key(keyID, tenant: id, on: connection) else {
                throw AdminFailure(.notFound, "no such key for this tenant")
            }
            let now = EventClock.nowUnixNanos()
            guard before.status == "active", before.revokedAtUnixNanos == 0,
                  before.expiresAtUnixNanos == 0 || before.expiresAtUnixNanos > now else {
                throw AdminFailure(.conflict, "only an active key that is not already being rotated can be rotated")
            }
            let env = APIKeyEnvironment(rawValue: before.env) ?? .live
            let (plaintext, fresh) = try await issue(
                tenant: id, env: env, scopes: before.scopes, label: before.label, expiresAt: before.expiresAtUnixNanos,
                rotatedFrom: keyID, now: now, on: connection)
            var old = before
            old.revokedAtUnixNanos = now + Int64(request.overlapSeconds) * 1_000_000_000
            if request.overlapSeconds == 0 { old.status = "revoked" }
            try await TenantStore.setRevocation(keyID: keyID, tenant: id, status: old.status, revokedAt: old.revokedAtUnixNanos,
                                                on: connection)
            return TenantChange(result: (plaintext, fresh, old), action: "key.rotate", target: "key/\(keyID)",
                          beforeJSON: Audit.json(Audit.redacted(before)),
                          afterJSON: Audit.json(Audit.Rotation(old: Audit.redacted(old), new: Audit.redacted(fresh))),
                          mirror: [.key(fresh), .key(old)], tenantChange: ("key.rotated", tenant))
        }
        return RotateKeyResponse(plaintextKey: plaintext, newKey: Audit.redacted(fresh), oldKey: Audit.redacted(old))
    }

    public func listKeys(_ request: ListKeysRequest) async throws(AdminFailure) -> ListKeysResponse {
        _ = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        return try await read { connection in
            guard try await TenantStore.tenant(id, on: connection) != nil else {
                throw AdminFailure(.notFound, "no such tenant")
            }
            return ListKeysResponse(keys: try await TenantStore.keys(tenant: id, on: connection).map(Audit.redacted))
        }
    }

    /// Draws keys until the lookup id is free (40-bit ids collide rarely, never silently).
    private func issue(tenant: String, env: APIKeyEnvironment, scopes: [String], label: String, expiresAt: Int64,
                       rotatedFrom: String, now: Int64, on connection: PostgresConnection) async throws
        -> (String, ApiKeyRecord)
    {
        for _ in 0..<5 {
            let (plaintext, record) = APIKeyGenerator.generate(
                env: env, pepper: pepper, tenantID: tenant, scopes: scopes, label: label, nowUnixNanos: now,
                expiresAtUnixNanos: expiresAt)
            if try await TenantStore.insert(record, env: env, rotatedFrom: rotatedFrom, on: connection) {
                var record = record
                record.env = env.rawValue
                return (plaintext, record)
            }
        }
        throw AdminFailure(.internalError, "could not draw an unused key id")
    }

    // MARK: plans, manifests, rollouts

    public func setPlan(_ request: SetPlanRequest) async throws(AdminFailure) -> SetPlanResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let planID = try AdminValidation.token(request.planID, field: "plan_id")
        let definition = try request.plan.map { plan throws(AdminFailure) in try AdminValidation.plan(plan, id: planID) }
        let (tenant, plan) = try await mutate(tenant: id, actor: actor, plans: .exclusive) { connection in
            let before = try await Self.liveTenant(id, on: connection)
            let previousPlan = try await TenantStore.plan(before.planID, on: connection)
            var mirror: [MirrorWrite] = []
            let now = EventClock.nowUnixNanos()
            if let definition {
                try await TenantStore.upsert(definition, now: now, on: connection)
                // Every tenant on this plan sees the new limits.
                for other in try await TenantStore.tenantIDs(onPlan: planID, on: connection) where other != id {
                    mirror.append(.plan(definition, tenant: other))
                }
            }
            guard let plan = try await TenantStore.plan(planID, on: connection) else {
                throw AdminFailure(.notFound, "no plan with that plan_id (send `plan` to define it)")
            }
            var tenant = before
            tenant.planID = planID
            tenant.updatedAtUnixNanos = now
            try await TenantStore.update(tenant, on: connection)
            mirror = [.tenant(tenant), .plan(plan, tenant: id)] + mirror
            return TenantChange(result: (tenant, plan), action: "plan.set", target: "tenant/\(id)/plan",
                          beforeJSON: Audit.json(Audit.PlanAssignment(planID: before.planID, plan: previousPlan)),
                          afterJSON: Audit.json(Audit.PlanAssignment(planID: planID, plan: plan)),
                          mirror: mirror, tenantChange: ("plan", tenant))
        }
        return SetPlanResponse(tenant: tenant, plan: plan)
    }

    public func setManifest(_ request: SetManifestRequest) async throws(AdminFailure) -> SetManifestResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let manifest = try AdminValidation.manifest(request.manifest, tenant: id)
        let stored = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            let before = try await TenantStore.manifest(tenant: id, on: connection)
            try await TenantStore.upsert(manifest, tenant: id, now: EventClock.nowUnixNanos(), on: connection)
            // Rollouts of agents the package no longer has go away with them.
            let removed = try await TenantStore.deleteRollouts(tenant: id, except: manifest.agents.map(\.agent),
                                                               on: connection)
            return TenantChange(result: manifest, action: "manifest.set", target: "tenant/\(id)/manifest",
                          beforeJSON: Audit.json(before), afterJSON: Audit.json(manifest),
                          mirror: [.manifest(manifest, tenant: id)]
                            + removed.map { .deleteTenant(TenancyKeys.rollout(id, agent: $0)) },
                          tenantChange: ("manifest", tenant))
        }
        return SetManifestResponse(manifest: stored)
    }

    public func setRollout(_ request: SetRolloutRequest) async throws(AdminFailure) -> SetRolloutResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        var rollout = try AdminValidation.rollout(request.rollout, tenant: id)
        let stored = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            guard let manifest = try await TenantStore.manifest(tenant: id, on: connection),
                  manifest.agents.contains(where: { $0.agent == rollout.agent }) else {
                throw AdminFailure(.notFound, "the tenant's manifest has no such agent")
            }
            let before = try await TenantStore.rollouts(tenant: id, on: connection).first { $0.agent == rollout.agent }
            // The rollout controller changes versions and shares only: the kill switch stays as stored, decided here
            // in the transaction (a switch turned on a moment before a step is never undone by it).
            if request.keepKillSwitch { rollout.killSwitch = before?.killSwitch ?? false }
            rollout.updatedAtUnixNanos = EventClock.nowUnixNanos()
            try await TenantStore.upsert(rollout, tenant: id, on: connection)
            return TenantChange(result: rollout, action: "rollout.set", target: "tenant/\(id)/rollout/\(rollout.agent)",
                          beforeJSON: Audit.json(before), afterJSON: Audit.json(rollout),
                          mirror: [.rollout(rollout, tenant: id)], tenantChange: ("rollout", tenant))
        }
        return SetRolloutResponse(rollout: stored)
    }

    // MARK: knowledge base

    public func knowledgeUpsert(_ request: KnowledgeUpsertRequest) async throws(AdminFailure) -> KnowledgeUpsertResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        var entry = try AdminValidation.knowledge(request.entry, tenant: id)
        let stored = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            let before = try await TenantStore.knowledgeEntry(entry.id, tenant: id, on: connection)
            entry.updatedAtUnixNanos = EventClock.nowUnixNanos()
            try await TenantStore.upsert(entry, tenant: id, on: connection)
            return TenantChange(result: entry, action: "knowledge.upsert", target: "tenant/\(id)/knowledge/\(entry.id)",
                          beforeJSON: Audit.json(before), afterJSON: Audit.json(entry), mirror: [],
                          tenantChange: ("knowledge", tenant))
        }
        return KnowledgeUpsertResponse(entry: stored)
    }

    public func knowledgeDelete(_ request: KnowledgeDeleteRequest) async throws(AdminFailure) -> KnowledgeDeleteResponse {
        let actor = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let entryID = try AdminValidation.identifier(request.entryID, field: "entry_id")
        _ = try await mutate(tenant: id, actor: actor) { connection in
            let tenant = try await Self.liveTenant(id, on: connection)
            guard let before = try await TenantStore.knowledgeEntry(entryID, tenant: id, on: connection) else {
                throw AdminFailure(.notFound, "no such knowledge entry")
            }
            _ = try await TenantStore.deleteKnowledge(entryID, tenant: id, on: connection)
            return TenantChange(result: (), action: "knowledge.delete", target: "tenant/\(id)/knowledge/\(entryID)",
                          beforeJSON: Audit.json(before), afterJSON: "null", mirror: [],
                          tenantChange: ("knowledge", tenant))
        }
        return KnowledgeDeleteResponse()
    }

    public func knowledgeList(_ request: KnowledgeListRequest) async throws(AdminFailure) -> KnowledgeListResponse {
        _ = try authenticate(request)
        let id = try AdminValidation.token(request.tenantID, field: "tenant_id")
        let query = try AdminValidation.text(request.query, field: "query", maxBytes: 200)
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1000))
        return try await read { connection in
            guard try await TenantStore.tenant(id, on: connection) != nil else {
                throw AdminFailure(.notFound, "no such tenant")
            }
            return KnowledgeListResponse(
                entries: try await TenantStore.knowledge(tenant: id, query: query, limit: limit, on: connection))
        }
    }

    // MARK: transactions

    enum PlansLock { case none, shared, exclusive }

    /// A tenant that exists and isn't deleted, or `not_found`.
    static func liveTenant(_ id: String, on connection: PostgresConnection) async throws -> Tenant {
        guard let tenant = try await TenantStore.tenant(id, on: connection), tenant.status != "deleted" else {
            throw AdminFailure(.notFound, "no such tenant")
        }
        return tenant
    }

    private func read<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws(AdminFailure) -> T {
        do {
            return try await pool.withConnection { connection in try await body(connection) }
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw internalFailure(error, command: "read")
        }
    }

    func mutate<R: Sendable>(
        tenant: String, actor: String, plans: PlansLock = .none,
        _ body: (PostgresConnection) async throws -> TenantChange<R>
    ) async throws(AdminFailure) -> R {
        let mirrorTouched = MirrorFlag()
        let reachedCommit = MirrorFlag()
        do {
            let committed: (result: R, events: [OutboxEvent], action: String, target: String)
            committed = try await pool.transaction { connection in
                switch plans {
                case .none: break
                case .shared: try await TenantStore.lockPlans(exclusive: false, on: connection)
                case .exclusive: try await TenantStore.lockPlans(exclusive: true, on: connection)
                }
                try await TenantStore.lockTenant(tenant, on: connection)
                let change = try await body(connection)
                let now = EventClock.nowUnixNanos()
                let audit = AuditRecorded(
                    meta: EventMeta.make(tenantID: tenant, producer: Self.producer, occurredAtUnixNanos: now),
                    actor: actor, action: change.action, target: change.target,
                    beforeJSON: change.beforeJSON, afterJSON: change.afterJSON)
                try await TenantStore.insertAudit(audit, on: connection)
                var events = [Outbox.event(.auditRecorded, tenant: tenant, eventID: audit.meta!.eventID,
                                           payload: audit.protobufBytes())]
                if let (kind, record) = change.tenantChange {
                    let changed = TenantChanged(
                        meta: EventMeta.make(tenantID: tenant, producer: Self.producer, occurredAtUnixNanos: now),
                        change: kind, tenant: record)
                    events.append(Outbox.event(.tenantChanged, tenant: tenant, eventID: changed.meta!.eventID,
                                               payload: changed.protobufBytes()))
                }
                for index in events.indices {
                    events[index].id = try await TenantStore.insertOutbox(events[index], on: connection)
                }
                mirrorTouched.set(tenants: [tenant] + change.mirror.compactMap(\.tenantsBucketOwner))
                try await mirror.apply(change.mirror)
                reachedCommit.set(tenants: [tenant])
                return (change.result, events, change.action, change.target)
            }
            logger.info("tenancy changed", metadata: [
                LogKey.tenantID: "\(tenant)", "action": "\(committed.action)", "target": "\(committed.target)",
                "actor": "\(actor)",
            ])
            await outbox.publish(committed.events)
            return committed.result
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            // The KV writes may have happened while the transaction did not commit: put PostgreSQL's truth back
            // for every tenant they touched (set-plan writes other tenants' plan entries too).
            for touched in mirrorTouched.tenants {
                do { try await mirror.reconcile(tenant: touched, pool: pool) } catch {
                    logger.error("kv mirror repair failed; the mirror guard or the next start repairs it",
                                 metadata: [LogKey.tenantID: "\(touched)", "error": "\(error)"])
                }
            }
            if let postgres = error as? PostgresError, postgres.sqlState == "23505" {
                throw AdminFailure(.conflict, "a concurrent change conflicted; retry")
            }
            if !reachedCommit.tenants.isEmpty {
                // COMMIT itself failed (e.g. the connection dropped): the server may have committed.
                logger.error("admin change commit outcome unknown", metadata: [LogKey.tenantID: "\(tenant)",
                                                                               "error": "\(error)"])
                throw AdminFailure(.internalError, "the database connection failed while committing: the change may "
                    + "or may not be stored; check with get/list before retrying")
            }
            throw internalFailure(error, command: "mutation")
        }
    }

    func internalFailure(_ error: any Error, command: String) -> AdminFailure {
        logger.error("admin command failed", metadata: ["command": "\(command)", "error": "\(error)"])
        if error is NATSError { return AdminFailure(.unavailable, "the KV mirror is unavailable; nothing was changed") }
        return AdminFailure(.internalError, "the change could not be stored; nothing was changed")
    }
}

/// The tenants whose KV entries may have been written during a transaction.
final class MirrorFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var touched: [String] = []
    func set(tenants: [String]) { lock.withLock { touched = Array(Set(tenants)).sorted() } }
    var tenants: [String] { lock.withLock { touched } }
}

/// Audit snapshots: JSON of the records, never secrets (key hashes are blanked, plaintext keys never exist here).
enum Audit {
    struct WithReason<Record: Encodable>: Encodable {
        var record: Record
        var reason: String
    }

    struct Rotation: Encodable {
        var old: ApiKeyRecord
        var new: ApiKeyRecord
    }

    struct PlanAssignment: Encodable {
        var planID: String
        var plan: Plan?
    }

    static func redacted(_ record: ApiKeyRecord) -> ApiKeyRecord {
        var record = record
        record.hashHex = ""
        return record
    }

    /// Snapshots above this size are recorded as their size and SHA-256 (keeps every audit event well below
    /// the NATS payload limit).
    static let maxSnapshotBytes = 64 * 1024

    static func json(_ value: (some Encodable)?) -> String {
        guard let value else { return "null" }
        guard let data = try? JSONEncoder.sorted.encode(value) else { return "null" }
        guard data.count <= maxSnapshotBytes else {
            return #"{"truncated":true,"bytes":\#(data.count),"sha256":"\#(Hex.encode(SHA256.hash(data)))"}"#
        }
        return String(decoding: data, as: UTF8.self)
    }
}
