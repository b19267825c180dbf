import Contracts
import Logging
import Messaging
import Schemas
import Security
import ServiceLifecycle
import Storage
import Tenancy

/// One write to the KV mirror.
enum MirrorWrite: Sendable, Equatable {
    case putTenant(String, [UInt8])
    case deleteTenant(String)
    case putKey(String, [UInt8])
    case deleteKey(String)

    static func tenant(_ tenant: Tenant) -> MirrorWrite { .putTenant(TenancyKeys.tenant(tenant.id), tenant.protobufBytes()) }
    static func plan(_ plan: Plan, tenant: String) -> MirrorWrite { .putTenant(TenancyKeys.plan(tenant), plan.protobufBytes()) }
    static func manifest(_ manifest: PackageManifest, tenant: String) -> MirrorWrite {
        .putTenant(TenancyKeys.manifest(tenant), manifest.protobufBytes())
    }
    static func rollout(_ rollout: RolloutSettings, tenant: String) -> MirrorWrite {
        .putTenant(TenancyKeys.rollout(tenant, agent: rollout.agent), rollout.protobufBytes())
    }
    /// The tenant a `tenants`-bucket write belongs to.
    var tenantsBucketOwner: String? {
        switch self {
        case .putTenant(let key, _), .deleteTenant(let key): TenantMirror.owner(ofTenantsKey: key)
        case .putKey, .deleteKey: nil
        }
    }

    static func key(_ record: ApiKeyRecord) -> MirrorWrite {
        .putKey(APIKeyFormat.kvKey(lookupID: record.keyID), mirrored(record).protobufBytes())
    }

    /// The KV copy of a key leaves out what changes on every use or only admins read (no churn on the
    /// watchers, no rewrite at rebuild).
    static func mirrored(_ record: ApiKeyRecord) -> ApiKeyRecord {
        var record = record
        record.lastUsedAtUnixNanos = 0
        record.env = ""
        return record
    }
}

/// Writes PostgreSQL's tenancy state into the `tenants` and `apikeys` KV buckets that every gateway and router
/// replica watches, and rebuilds that mirror from PostgreSQL (at start-up, or after a failed change).
public struct TenantMirror: Sendable {
    let tenants: KeyValueBucket
    let apiKeys: KeyValueBucket
    let signer: Ed25519.SigningKey?
    let logger: Logger

    /// - Parameter signer: signs every value written (`MirrorSignature`); readers holding the public key
    ///   ignore values it didn't sign.
    public init(jetStream: JetStream, signer: Ed25519.SigningKey? = nil, logger: Logger) async throws {
        tenants = try await jetStream.keyValue(TenancyKeys.tenantsBucket)
        apiKeys = try await jetStream.keyValue(TenancyKeys.apiKeysBucket)
        self.signer = signer
        self.logger = logger
    }

    /// The stored form of a payload (signed when this mirror has a signing key).
    func sealed(bucket: String, key: String, _ payload: [UInt8]) -> [UInt8] {
        MirrorSignature.seal(bucket: bucket, key: key, payload: payload, signer: signer)
    }

    func apply(_ writes: [MirrorWrite]) async throws {
        let tenantsName = TenancyKeys.tenantsBucket.name
        let keysName = TenancyKeys.apiKeysBucket.name
        for write in writes {
            switch write {
            case .putTenant(let key, let value): _ = try await tenants.put(key, sealed(bucket: tenantsName, key: key, value))
            case .deleteTenant(let key): try await tenants.delete(key)
            case .putKey(let key, let value): _ = try await apiKeys.put(key, sealed(bucket: keysName, key: key, value))
            case .deleteKey(let key): try await apiKeys.delete(key)
            }
        }
    }

    /// The desired mirror of one tenant, read from PostgreSQL on `connection` (inside the tenant's lock).
    static func desiredState(tenant id: String, on connection: PostgresConnection) async throws
        -> (tenants: [String: [UInt8]], keys: [String: [UInt8]])
    {
        guard let tenant = try await TenantStore.tenant(id, on: connection), tenant.status != "deleted" else {
            return ([:], [:])
        }
        var tenantEntries: [String: [UInt8]] = [TenancyKeys.tenant(id): tenant.protobufBytes()]
        if let plan = try await TenantStore.plan(tenant.planID, on: connection) {
            tenantEntries[TenancyKeys.plan(id)] = plan.protobufBytes()
        }
        if let manifest = try await TenantStore.manifest(tenant: id, on: connection) {
            tenantEntries[TenancyKeys.manifest(id)] = manifest.protobufBytes()
        }
        for rollout in try await TenantStore.rollouts(tenant: id, on: connection) {
            tenantEntries[TenancyKeys.rollout(id, agent: rollout.agent)] = rollout.protobufBytes()
        }
        var keyEntries: [String: [UInt8]] = [:]
        for key in try await TenantStore.keys(tenant: id, on: connection) {
            keyEntries[APIKeyFormat.kvKey(lookupID: key.keyID)] = MirrorWrite.mirrored(key).protobufBytes()
        }
        return (tenantEntries, keyEntries)
    }

    /// Current contents of both buckets (live values only).
    func snapshot() async throws -> (tenants: [String: [UInt8]], keys: [String: [UInt8]]) {
        async let tenantValues = Self.values(of: tenants)
        async let keyValues = Self.values(of: apiKeys)
        return try await (tenantValues, keyValues)
    }

    private static func values(of bucket: KeyValueBucket) async throws -> [String: [UInt8]] {
        var values: [String: [UInt8]] = [:]
        for try await event in try await bucket.watchAll() {
            switch event {
            case .initialValuesDone: return values
            case .entry(let entry): values[entry.key] = entry.operation == .put ? entry.value : nil
            }
        }
        return values
    }

    /// A stored key record, signed or not (for finding its owner; trust comes from PostgreSQL here).
    static func record(key: String, value: [UInt8]) -> ApiKeyRecord? {
        MirrorSignature.open(bucket: TenancyKeys.apiKeysBucket.name, key: key, value: value, verifier: nil)
            .flatMap { try? ApiKeyRecord(protobuf: $0) }
    }

    /// The tenant id a `tenants`-bucket key or an `apikeys` record belongs to.
    static func owner(ofTenantsKey key: String) -> String {
        String(key.prefix { $0 != "." })
    }

    /// Makes the mirror equal PostgreSQL: every tenant's entries are rewritten where they differ, entries of
    /// unknown or deleted tenants and keys are removed. Each tenant is reconciled under its advisory lock, so
    /// admin commands running at the same time (on any replica) are never overwritten with stale data.
    /// Returns the number of KV writes it made.
    @discardableResult
    public func rebuild(pool: PostgresPool) async throws -> Int {
        let current = try await snapshot()
        var owners = Set(try await TenantStore.allTenantIDs(on: pool))
        for key in current.tenants.keys { owners.insert(Self.owner(ofTenantsKey: key)) }
        var keyOwners: [String: [String]] = [:]
        for (key, value) in current.keys {
            let owner = Self.record(key: key, value: value)?.tenantID ?? ""
            keyOwners[owner, default: []].append(key)
            owners.insert(owner)
        }
        var writes = 0
        for owner in owners.sorted() {
            writes += try await reconcile(
                tenant: owner, pool: pool,
                currentTenants: current.tenants.filter { Self.owner(ofTenantsKey: $0.key) == owner },
                currentKeys: current.keys.filter { keyOwners[owner, default: []].contains($0.key) })
        }
        if writes > 0 { logger.notice("kv mirror repaired from postgres", metadata: ["kv.writes": "\(writes)"]) }
        return writes
    }

    /// Reconciles one tenant (after a change whose commit failed, or during `rebuild`).
    func reconcile(tenant: String, pool: PostgresPool) async throws {
        let current = try await snapshot()
        _ = try await reconcile(
            tenant: tenant, pool: pool,
            currentTenants: current.tenants.filter { Self.owner(ofTenantsKey: $0.key) == tenant },
            currentKeys: current.keys.filter { Self.record(key: $0.key, value: $0.value)?.tenantID == tenant })
    }

    private func reconcile(tenant: String, pool: PostgresPool, currentTenants: [String: [UInt8]],
                           currentKeys: [String: [UInt8]]) async throws -> Int {
        try await pool.transaction { connection in
            // Same lock order as the commands: plans (shared; set-plan writes other tenants' plan entries), tenant.
            try await TenantStore.lockPlans(exclusive: false, on: connection)
            if TenantID.isValid(tenant) { try await TenantStore.lockTenant(tenant, on: connection) }
            let desired: (tenants: [String: [UInt8]], keys: [String: [UInt8]]) = TenantID.isValid(tenant)
                ? try await Self.desiredState(tenant: tenant, on: connection) : ([:], [:])
            var writes: [MirrorWrite] = []
            let tenantsName = TenancyKeys.tenantsBucket.name
            let keysName = TenancyKeys.apiKeysBucket.name
            // Ed25519 signatures are deterministic: an entry already stored as desired compares equal.
            for (key, value) in desired.tenants where currentTenants[key] != sealed(bucket: tenantsName, key: key, value) {
                writes.append(.putTenant(key, value))
            }
            for key in currentTenants.keys where desired.tenants[key] == nil { writes.append(.deleteTenant(key)) }
            for (key, value) in desired.keys where currentKeys[key] != sealed(bucket: keysName, key: key, value) {
                writes.append(.putKey(key, value))
            }
            for key in currentKeys.keys where desired.keys[key] == nil {
                // A record whose key id PostgreSQL gives to another tenant is rewritten by that tenant's pass.
                let owned = try await connection.query("""
                    SELECT 1 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                    WHERE k.key_id = $1 AND k.tenant_id <> $2 AND t.status <> 'deleted'
                    """, [.text(key), .text(tenant)])
                if owned.isEmpty { writes.append(.deleteKey(key)) }
            }
            try await apply(writes)
            return writes.count
        }
    }
}

/// Watches both buckets and puts PostgreSQL's truth back whenever an entry differs from it: a replayed old
/// (validly signed) value, a forged delete, or KV writes of a transaction that then failed. Every change —
/// including this service's own writes — is checked under the tenant's lock, so a check never races a
/// command in flight; once the buckets equal PostgreSQL a check writes nothing.
public struct MirrorGuardService: Service {
    let mirror: TenantMirror
    let pool: PostgresPool
    let logger: Logger

    public init(mirror: TenantMirror, pool: PostgresPool, logger: Logger) {
        self.mirror = mirror
        self.pool = pool
        self.logger = logger
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.guardBucket(self.mirror.tenants, tenants: true) }
            group.addTask { await self.guardBucket(self.mirror.apiKeys, tenants: false) }
        }
    }

    private func guardBucket(_ bucket: KeyValueBucket, tenants: Bool) async {
        // Only live changes: the initial values were checked by the start-up rebuild.
        await KVWatchLoop.run(bucket: "\(tenants ? "tenants" : "apikeys") guard", logger: logger, open: { bucket }) {
            event, live in
            if live, case .entry(let entry) = event { try await self.check(entry, tenants: tenants) }
        }
    }

    /// Rewrites one entry from PostgreSQL if it differs.
    func check(_ entry: KVEntry, tenants: Bool) async throws {
        let bucketName = tenants ? TenancyKeys.tenantsBucket.name : TenancyKeys.apiKeysBucket.name
        let bucket = tenants ? mirror.tenants : mirror.apiKeys
        try await pool.transaction { connection in
            // The owner decides the lock. For a key record it is the tenant the record names (a command issuing
            // it may not have committed yet, so PostgreSQL can't be asked before taking that tenant's lock);
            // for a delete marker, PostgreSQL's owner.
            var owner: String
            if tenants {
                owner = TenantMirror.owner(ofTenantsKey: entry.key)
            } else if entry.operation == .put, let record = TenantMirror.record(key: entry.key, value: entry.value) {
                owner = record.tenantID
            } else {
                let rows = try await connection.query("SELECT tenant_id FROM api_keys WHERE key_id = $1", [.text(entry.key)])
                owner = try rows.first?.decode(String.self, column: "tenant_id") ?? ""
            }
            try await TenantStore.lockPlans(exclusive: false, on: connection)
            if TenantID.isValid(owner) { try await TenantStore.lockTenant(owner, on: connection) } else { owner = "" }
            if !tenants {
                // Under the lock: a record claiming the wrong tenant is judged by its real owner's state.
                let rows = try await connection.query("SELECT tenant_id FROM api_keys WHERE key_id = $1", [.text(entry.key)])
                if let real = try rows.first?.decode(String.self, column: "tenant_id"), real != owner {
                    owner = real
                }
            }
            let desired: (tenants: [String: [UInt8]], keys: [String: [UInt8]]) = owner.isEmpty
                ? ([:], [:]) : try await TenantMirror.desiredState(tenant: owner, on: connection)
            let want = (tenants ? desired.tenants : desired.keys)[entry.key]
                .map { mirror.sealed(bucket: bucketName, key: entry.key, $0) }
            // Re-read under the lock: the event may be stale by now.
            let current = try await bucket.get(entry.key)
            let have = current?.operation == .put ? current?.value : nil
            guard have != want else { return }
            if let want {
                _ = try await bucket.put(entry.key, want)
            } else {
                try await bucket.delete(entry.key)
            }
            logger.warning("kv mirror entry differed from postgres and was rewritten",
                           metadata: ["kv.bucket": "\(bucketName)", "kv.key": "\(entry.key.prefix(80))"])
        }
    }
}
