import Foundation
import KnowledgeBase
import Logging
import Schemas
import Storage
import Tenancy

/// PostgreSQL, the source of truth for tenancy: tenants, plans, API keys (hashes only), package manifests,
/// rollout settings, the audit log and the event outbox. Knowledge-base entries live in `knowledge_entries`
/// (`Tenancy.KnowledgeStore`, read by the orchestrator). Every statement is parameterized; every query
/// filters by tenant. Timestamps are unix nanoseconds (`bigint`), as in the protobuf contract.
///
/// All reads and writes here run on a connection the caller holds inside a transaction (see `TenantAdmin`).
public enum TenantStore {
    public static let migrationService = "tenant"

    public static let migrations: [Migration] = [
        Migration(version: 1, name: "tenancy", sql: """
            CREATE TABLE plans (
                id                      text    PRIMARY KEY,
                rpm                     integer NOT NULL CHECK (rpm >= 0),
                tpm                     integer NOT NULL CHECK (tpm >= 0),
                daily_budget_micros     bigint  NOT NULL DEFAULT 0 CHECK (daily_budget_micros >= 0),
                monthly_budget_micros   bigint  NOT NULL DEFAULT 0 CHECK (monthly_budget_micros >= 0),
                max_tokens_per_request  integer NOT NULL DEFAULT 0 CHECK (max_tokens_per_request >= 0),
                updated_at_unix_nanos   bigint  NOT NULL DEFAULT 0
            );
            INSERT INTO plans (id, rpm, tpm, daily_budget_micros, monthly_budget_micros, max_tokens_per_request)
            VALUES ('default', 60, 100000, 0, 0, 4096);

            CREATE TABLE tenants (
                id                      text   PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
                name                    text   NOT NULL,
                plan_id                 text   NOT NULL REFERENCES plans (id),
                status                  text   NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
                package_name            text   NOT NULL DEFAULT '',
                consent_policy          text   NOT NULL DEFAULT 'none',
                feature_flags           jsonb  NOT NULL DEFAULT '{}',
                created_at_unix_nanos   bigint NOT NULL,
                updated_at_unix_nanos   bigint NOT NULL
            );

            CREATE TABLE api_keys (
                key_id                  text   PRIMARY KEY,
                tenant_id               text   NOT NULL REFERENCES tenants (id),
                hash_hex                text   NOT NULL,
                env                     text   NOT NULL CHECK (env IN ('live', 'test')),
                scopes                  text   NOT NULL DEFAULT '',
                label                   text   NOT NULL DEFAULT '',
                status                  text   NOT NULL CHECK (status IN ('active', 'revoked')),
                created_at_unix_nanos   bigint NOT NULL,
                expires_at_unix_nanos   bigint NOT NULL DEFAULT 0,
                revoked_at_unix_nanos   bigint NOT NULL DEFAULT 0,
                last_used_at_unix_nanos bigint NOT NULL DEFAULT 0,
                rotated_from            text   NOT NULL DEFAULT ''
            );
            CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

            CREATE TABLE manifests (
                tenant_id               text   PRIMARY KEY REFERENCES tenants (id),
                manifest                jsonb  NOT NULL,
                updated_at_unix_nanos   bigint NOT NULL
            );

            CREATE TABLE rollouts (
                tenant_id               text    NOT NULL REFERENCES tenants (id),
                agent                   text    NOT NULL,
                stable_version          text    NOT NULL DEFAULT '',
                canary_version          text    NOT NULL DEFAULT '',
                canary_percent          integer NOT NULL DEFAULT 0 CHECK (canary_percent BETWEEN 0 AND 100),
                kill_switch             boolean NOT NULL DEFAULT false,
                updated_at_unix_nanos   bigint  NOT NULL,
                PRIMARY KEY (tenant_id, agent)
            );

            CREATE TABLE audit_log (
                id                      bigserial PRIMARY KEY,
                event_id                text   NOT NULL UNIQUE,
                tenant_id               text   NOT NULL,
                actor                   text   NOT NULL,
                action                  text   NOT NULL,
                target                  text   NOT NULL,
                before_json             text   NOT NULL,
                after_json              text   NOT NULL,
                occurred_at_unix_nanos  bigint NOT NULL
            );
            CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

            -- Events committed together with the change they describe; published (de-duplicated by msg_id) and
            -- deleted by the tenant service right after the commit, or by its outbox sweep after a crash.
            CREATE TABLE outbox (
                id                      bigserial PRIMARY KEY,
                subject                 text   NOT NULL,
                msg_id                  text   NOT NULL,
                event_type              text   NOT NULL,
                payload                 bytea  NOT NULL,
                created_at_unix_nanos   bigint NOT NULL
            );
            """),
        Migration(version: 2, name: "tenant time zones", sql: """
            ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT '';
            """),
    ]

    public static func migrate(pool: PostgresPool, logger: Logger) async throws {
        try await Storage.migrate(pool: pool, service: migrationService, migrations: migrations, logger: logger)
        try await KnowledgeStore(pool: pool).migrate(logger: logger)
    }

    // MARK: locks

    /// Serializes every change to one tenant (across replicas) until the transaction ends.
    static func lockTenant(_ id: String, on connection: PostgresConnection) async throws {
        _ = try await connection.query("SELECT pg_advisory_xact_lock(hashtext('switchyard.tenant'), hashtext($1))",
                                       [.text(id)])
    }

    /// Plan definitions are shared by tenants: changing one re-mirrors every tenant on it, so plan changes
    /// take this lock exclusively and tenant creation takes it shared.
    static func lockPlans(exclusive: Bool, on connection: PostgresConnection) async throws {
        let function = exclusive ? "pg_advisory_xact_lock" : "pg_advisory_xact_lock_shared"
        _ = try await connection.query("SELECT \(function)(hashtext('switchyard.plans'), 0)")
    }

    // MARK: tenants

    static let tenantColumns = """
        id, name, plan_id, status, package_name, consent_policy, feature_flags::text AS feature_flags,
        created_at_unix_nanos, updated_at_unix_nanos, time_zone
        """

    static func tenant(_ id: String, on connection: PostgresConnection) async throws -> Tenant? {
        try await connection.query("SELECT \(tenantColumns) FROM tenants WHERE id = $1", [.text(id)])
            .first.map(decodeTenant)
    }

    static func tenants(status: String, after: String, limit: Int, on pool: PostgresPool) async throws -> [Tenant] {
        try await pool.query("""
            SELECT \(tenantColumns) FROM tenants
            WHERE id > $1 AND ($2 = '' OR status = $2) AND ($2 = 'deleted' OR status <> 'deleted')
            ORDER BY id LIMIT $3
            """, [.text(after), .text(status), .int(limit)]).map(decodeTenant)
    }

    static func allTenantIDs(on pool: PostgresPool) async throws -> [String] {
        try await pool.query("SELECT id FROM tenants ORDER BY id").map { try $0.decode(String.self, column: "id") }
    }

    static func decodeTenant(_ row: PostgresRow) throws -> Tenant {
        let flagsJSON = try row.decode(String.self, column: "feature_flags")
        let flags = (try? JSONDecoder().decode([String: Bool].self, from: Data(flagsJSON.utf8))) ?? [:]
        return Tenant(
            id: try row.decode(String.self, column: "id"), name: try row.decode(String.self, column: "name"),
            planID: try row.decode(String.self, column: "plan_id"), status: try row.decode(String.self, column: "status"),
            packageName: try row.decode(String.self, column: "package_name"),
            consentPolicy: try row.decode(String.self, column: "consent_policy"),
            createdAtUnixNanos: try row.decode(Int64.self, column: "created_at_unix_nanos"),
            updatedAtUnixNanos: try row.decode(Int64.self, column: "updated_at_unix_nanos"),
            featureFlags: flags, timeZone: try row.decode(String.self, column: "time_zone"))
    }

    static func flagsJSON(_ flags: [String: Bool]) -> String {
        let data = (try? JSONEncoder.sorted.encode(flags)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func insert(_ tenant: Tenant, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("""
            INSERT INTO tenants (id, name, plan_id, status, package_name, consent_policy, feature_flags,
                                 created_at_unix_nanos, updated_at_unix_nanos, time_zone)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)
            """, [.text(tenant.id), .text(tenant.name), .text(tenant.planID), .text(tenant.status),
                  .text(tenant.packageName), .text(tenant.consentPolicy), .text(flagsJSON(tenant.featureFlags)),
                  .int64(tenant.createdAtUnixNanos), .int64(tenant.updatedAtUnixNanos), .text(tenant.timeZone)])
    }

    static func update(_ tenant: Tenant, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("""
            UPDATE tenants SET name = $2, plan_id = $3, status = $4, package_name = $5, consent_policy = $6,
                               feature_flags = $7::jsonb, updated_at_unix_nanos = $8, time_zone = $9
            WHERE id = $1
            """, [.text(tenant.id), .text(tenant.name), .text(tenant.planID), .text(tenant.status),
                  .text(tenant.packageName), .text(tenant.consentPolicy), .text(flagsJSON(tenant.featureFlags)),
                  .int64(tenant.updatedAtUnixNanos), .text(tenant.timeZone)])
    }

    // MARK: plans

    static func plan(_ id: String, on connection: PostgresConnection) async throws -> Plan? {
        try await connection.query("""
            SELECT id, rpm, tpm, daily_budget_micros, monthly_budget_micros, max_tokens_per_request
            FROM plans WHERE id = $1
            """, [.text(id)]).first.map { row in
            Plan(id: try row.decode(String.self, column: "id"),
                 rpm: UInt32(try row.decode(Int64.self, column: "rpm")),
                 tpm: UInt32(try row.decode(Int64.self, column: "tpm")),
                 dailyBudgetMicros: try row.decode(Int64.self, column: "daily_budget_micros"),
                 monthlyBudgetMicros: try row.decode(Int64.self, column: "monthly_budget_micros"),
                 maxTokensPerRequest: UInt32(try row.decode(Int64.self, column: "max_tokens_per_request")))
        }
    }

    static func upsert(_ plan: Plan, now: Int64, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("""
            INSERT INTO plans (id, rpm, tpm, daily_budget_micros, monthly_budget_micros, max_tokens_per_request,
                               updated_at_unix_nanos)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (id) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm,
                daily_budget_micros = EXCLUDED.daily_budget_micros,
                monthly_budget_micros = EXCLUDED.monthly_budget_micros,
                max_tokens_per_request = EXCLUDED.max_tokens_per_request,
                updated_at_unix_nanos = EXCLUDED.updated_at_unix_nanos
            """, [.text(plan.id), .int64(Int64(plan.rpm)), .int64(Int64(plan.tpm)), .int64(plan.dailyBudgetMicros),
                  .int64(plan.monthlyBudgetMicros), .int64(Int64(plan.maxTokensPerRequest)), .int64(now)])
    }

    static func tenantIDs(onPlan planID: String, on connection: PostgresConnection) async throws -> [String] {
        try await connection.query(
            "SELECT id FROM tenants WHERE plan_id = $1 AND status <> 'deleted' ORDER BY id", [.text(planID)]
        ).map { try $0.decode(String.self, column: "id") }
    }

    // MARK: API keys

    static let keyColumns = """
        key_id, tenant_id, hash_hex, env, scopes, label, status, created_at_unix_nanos, expires_at_unix_nanos,
        revoked_at_unix_nanos, last_used_at_unix_nanos
        """

    static func decodeKey(_ row: PostgresRow) throws -> ApiKeyRecord {
        let keyID = try row.decode(String.self, column: "key_id")
        let scopes = try row.decode(String.self, column: "scopes")
        return ApiKeyRecord(
            keyID: keyID, prefix: keyID, hashHex: try row.decode(String.self, column: "hash_hex"),
            tenantID: try row.decode(String.self, column: "tenant_id"),
            scopes: scopes.isEmpty ? [] : scopes.split(separator: ",").map(String.init),
            status: try row.decode(String.self, column: "status"),
            createdAtUnixNanos: try row.decode(Int64.self, column: "created_at_unix_nanos"),
            expiresAtUnixNanos: try row.decode(Int64.self, column: "expires_at_unix_nanos"),
            revokedAtUnixNanos: try row.decode(Int64.self, column: "revoked_at_unix_nanos"),
            label: try row.decode(String.self, column: "label"),
            lastUsedAtUnixNanos: try row.decode(Int64.self, column: "last_used_at_unix_nanos"),
            env: try row.decode(String.self, column: "env"))
    }

    /// Records that keys were used (from the event log): only ever moves `last_used_at` forward.
    /// - Parameter lastUsed: `(tenant, key id)` → time; a use only counts for the key's own tenant.
    static func markUsed(_ lastUsed: [KeyUse: Int64], on pool: PostgresPool) async throws {
        guard !lastUsed.isEmpty else { return }
        let uses = lastUsed.keys.sorted { ($0.tenant, $0.keyID) < ($1.tenant, $1.keyID) }
        _ = try await pool.execute("""
            UPDATE api_keys k SET last_used_at_unix_nanos = v.at
            FROM unnest(string_to_array($1, ','), string_to_array($2, ','), string_to_array($3, ',')::bigint[])
                 AS v (tenant, id, at)
            WHERE k.key_id = v.id AND k.tenant_id = v.tenant AND k.last_used_at_unix_nanos < v.at
            """, [.text(uses.map(\.tenant).joined(separator: ",")), .text(uses.map(\.keyID).joined(separator: ",")),
                  .text(uses.map { String(lastUsed[$0]!) }.joined(separator: ","))])
    }

    struct KeyUse: Hashable, Sendable {
        var tenant: String
        var keyID: String
    }

    static func key(_ keyID: String, tenant: String, on connection: PostgresConnection) async throws -> ApiKeyRecord? {
        try await connection.query("SELECT \(keyColumns) FROM api_keys WHERE key_id = $1 AND tenant_id = $2",
                                   [.text(keyID), .text(tenant)]).first.map(decodeKey)
    }

    static func keys(tenant: String, on connection: PostgresConnection) async throws -> [ApiKeyRecord] {
        try await connection.query(
            "SELECT \(keyColumns) FROM api_keys WHERE tenant_id = $1 ORDER BY created_at_unix_nanos, key_id",
            [.text(tenant)]).map(decodeKey)
    }

    /// Inserts a key record unless its lookup id is taken (returns false then: the caller draws a new key).
    static func insert(_ key: ApiKeyRecord, env: APIKeyEnvironment, rotatedFrom: String,
                       on connection: PostgresConnection) async throws -> Bool {
        try await connection.execute("""
            INSERT INTO api_keys (key_id, tenant_id, hash_hex, env, scopes, label, status, created_at_unix_nanos,
                                  expires_at_unix_nanos, revoked_at_unix_nanos, rotated_from)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (key_id) DO NOTHING
            """, [.text(key.keyID), .text(key.tenantID), .text(key.hashHex), .text(env.rawValue),
                  .text(key.scopes.joined(separator: ",")), .text(key.label), .text(key.status),
                  .int64(key.createdAtUnixNanos), .int64(key.expiresAtUnixNanos), .int64(key.revokedAtUnixNanos),
                  .text(rotatedFrom)]) == 1
    }

    static func setRevocation(keyID: String, tenant: String, status: String, revokedAt: Int64,
                              on connection: PostgresConnection) async throws {
        _ = try await connection.execute(
            "UPDATE api_keys SET status = $2, revoked_at_unix_nanos = $3 WHERE key_id = $1 AND tenant_id = $4",
            [.text(keyID), .text(status), .int64(revokedAt), .text(tenant)])
    }

    static func revokeAllKeys(tenant: String, now: Int64, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("""
            UPDATE api_keys SET status = 'revoked', revoked_at_unix_nanos = $2
            WHERE tenant_id = $1 AND status = 'active'
            """, [.text(tenant), .int64(now)])
    }

    // MARK: manifests and rollouts

    static func manifest(tenant: String, on connection: PostgresConnection) async throws -> PackageManifest? {
        guard let row = try await connection.query(
            "SELECT manifest::text AS manifest FROM manifests WHERE tenant_id = $1", [.text(tenant)]).first
        else { return nil }
        let json = try row.decode(String.self, column: "manifest")
        return try JSONDecoder().decode(PackageManifest.self, from: Data(json.utf8))
    }

    static func upsert(_ manifest: PackageManifest, tenant: String, now: Int64,
                       on connection: PostgresConnection) async throws {
        let json = String(decoding: try JSONEncoder.sorted.encode(manifest), as: UTF8.self)
        _ = try await connection.execute("""
            INSERT INTO manifests (tenant_id, manifest, updated_at_unix_nanos) VALUES ($1, $2::jsonb, $3)
            ON CONFLICT (tenant_id) DO UPDATE SET manifest = EXCLUDED.manifest,
                updated_at_unix_nanos = EXCLUDED.updated_at_unix_nanos
            """, [.text(tenant), .text(json), .int64(now)])
    }

    static func rollouts(tenant: String, on connection: PostgresConnection) async throws -> [RolloutSettings] {
        try await connection.query("""
            SELECT agent, stable_version, canary_version, canary_percent, kill_switch, updated_at_unix_nanos
            FROM rollouts WHERE tenant_id = $1 ORDER BY agent
            """, [.text(tenant)]).map { row in
            RolloutSettings(
                agent: try row.decode(String.self, column: "agent"),
                stableVersion: try row.decode(String.self, column: "stable_version"),
                canaryVersion: try row.decode(String.self, column: "canary_version"),
                canaryPercent: UInt32(try row.decode(Int64.self, column: "canary_percent")),
                killSwitch: try row.decode(Bool.self, column: "kill_switch"), tenantID: tenant,
                updatedAtUnixNanos: try row.decode(Int64.self, column: "updated_at_unix_nanos"))
        }
    }

    static func upsert(_ rollout: RolloutSettings, tenant: String, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("""
            INSERT INTO rollouts (tenant_id, agent, stable_version, canary_version, canary_percent, kill_switch,
                                  updated_at_unix_nanos)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (tenant_id, agent) DO UPDATE SET stable_version = EXCLUDED.stable_version,
                canary_version = EXCLUDED.canary_version, canary_percent = EXCLUDED.canary_percent,
                kill_switch = EXCLUDED.kill_switch, updated_at_unix_nanos = EXCLUDED.updated_at_unix_nanos
            """, [.text(tenant), .text(rollout.agent), .text(rollout.stableVersion), .text(rollout.canaryVersion),
                  .int64(Int64(rollout.canaryPercent)), .bool(rollout.killSwitch), .int64(rollout.updatedAtUnixNanos)])
    }

    static func deleteRollouts(tenant: String, except agents: [String], on connection: PostgresConnection)
        async throws -> [String]
    {
        try await connection.query("""
            DELETE FROM rollouts WHERE tenant_id = $1 AND NOT (agent = ANY (string_to_array($2, ',')))
            RETURNING agent
            """, [.text(tenant), .text(agents.joined(separator: ","))]).map { try $0.decode(String.self, column: "agent") }
    }

    // MARK: knowledge base

    static func knowledge(tenant: String, query: String, limit: Int, on connection: PostgresConnection) async throws
        -> [KnowledgeEntry]
    {
        try await connection.query("""
            SELECT \(KnowledgeStore.columns) FROM knowledge_entries
            WHERE tenant_id = $1 AND ($2 = '' OR strpos(lower(title || ' ' || content || ' ' || tags), lower($2)) > 0)
            ORDER BY id LIMIT $3
            """, [.text(tenant), .text(query), .int(limit)]).map { try KnowledgeStore.entry($0, tenant: tenant) }
    }

    static func knowledgeEntry(_ id: String, tenant: String, on connection: PostgresConnection) async throws
        -> KnowledgeEntry?
    {
        try await connection.query(
            "SELECT \(KnowledgeStore.columns) FROM knowledge_entries WHERE tenant_id = $1 AND id = $2",
            [.text(tenant), .text(id)]).first.map { try KnowledgeStore.entry($0, tenant: tenant) }
    }

    static func upsert(_ entry: KnowledgeEntry, tenant: String, on connection: PostgresConnection) async throws {
        _ = try await connection.execute(KnowledgeStore.upsertSQL, KnowledgeStore.upsertParameters(entry, tenant: tenant))
    }

    static func deleteKnowledge(_ id: String, tenant: String, on connection: PostgresConnection) async throws -> Bool {
        try await connection.execute("DELETE FROM knowledge_entries WHERE tenant_id = $1 AND id = $2",
                                     [.text(tenant), .text(id)]) == 1
    }

    static func deleteAllKnowledge(tenant: String, on connection: PostgresConnection) async throws {
        _ = try await connection.execute("DELETE FROM knowledge_entries WHERE tenant_id = $1", [.text(tenant)])
    }

    // MARK: audit log and outbox

    static func insertAudit(_ audit: AuditRecorded, on connection: PostgresConnection) async throws {
        let meta = audit.meta ?? EventMeta()
        _ = try await connection.execute("""
            INSERT INTO audit_log (event_id, tenant_id, actor, action, target, before_json, after_json,
                                   occurred_at_unix_nanos)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """, [.text(meta.eventID), .text(meta.tenantID), .text(audit.actor), .text(audit.action),
                  .text(audit.target), .text(audit.beforeJSON), .text(audit.afterJSON),
                  .int64(meta.occurredAtUnixNanos)])
    }

    static func insertOutbox(_ event: OutboxEvent, on connection: PostgresConnection) async throws -> Int64 {
        let rows = try await connection.query("""
            INSERT INTO outbox (subject, msg_id, event_type, payload, created_at_unix_nanos)
            VALUES ($1, $2, $3, $4, $5) RETURNING id
            """, [.text(event.subject), .text(event.messageID), .text(event.eventType), .bytea(event.payload),
                  .int64(EventClock.nowUnixNanos())])
        return try rows[0].decode(Int64.self, column: "id")
    }
}

/// An event waiting in the outbox.
struct OutboxEvent: Sendable {
    var id: Int64 = 0
    var subject: String
    var messageID: String
    var eventType: String
    var payload: [UInt8]
}

extension JSONEncoder {
    /// Deterministic output (sorted keys) for stored JSON and audit snapshots.
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
