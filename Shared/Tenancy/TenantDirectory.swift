import Contracts
import Logging
import Messaging
import Schemas
import Security
import ServiceLifecycle
import Synchronization

/// Everything the gateway and router need to know about one tenant, as mirrored in KV.
public struct TenantSnapshot: Sendable, Equatable {
    public var tenant: Tenant
    public var plan: Plan?
    public var manifest: PackageManifest?
    public var rollouts: [String: RolloutSettings]
}

/// An in-memory mirror of the `tenants` and `apikeys` buckets, kept current by KV watches so a change
/// (revoked key, suspended tenant, new rollout) reaches every replica within milliseconds. Lookups never
/// touch the network. Malformed KV values are logged and skipped, never crash the watcher.
public final class TenantDirectory: Sendable {
    private struct State {
        var tenants: [String: Tenant] = [:]
        var plans: [String: Plan] = [:]
        var manifests: [String: PackageManifest] = [:]
        var rollouts: [String: [String: RolloutSettings]] = [:]
        var keys: [String: ApiKeyRecord] = [:]
        var tenantsSynced = false
        var keysSynced = false
        var lastChangeUnixNanos: Int64 = 0
    }

    private let state = Mutex(State())
    private let logger: Logger
    private let verifier: Ed25519.VerifyingKey?

    /// - Parameter verifier: the tenant service's mirror public key; when set, values without its valid
    ///   signature are ignored (the previous value stays) and logged (`MirrorSignature`).
    public init(logger: Logger, verifier: Ed25519.VerifyingKey? = nil) {
        self.logger = logger
        self.verifier = verifier
    }

    /// The payload of a put, or nil (logged) when its signature doesn't verify.
    private func payload(of entry: KVEntry, bucket: String) -> [UInt8]? {
        guard let payload = MirrorSignature.open(bucket: bucket, key: entry.key, value: entry.value, verifier: verifier)
        else {
            logger.error("kv value without a valid mirror signature ignored",
                         metadata: ["kv.bucket": "\(bucket)", "kv.key": "\(entry.key.prefix(80))"])
            return nil
        }
        return payload
    }

    public func snapshot(tenant id: String) -> TenantSnapshot? {
        state.withLock { state in
            guard let tenant = state.tenants[id] else { return nil }
            return TenantSnapshot(tenant: tenant, plan: state.plans[id], manifest: state.manifests[id],
                                  rollouts: state.rollouts[id] ?? [:])
        }
    }

    public func apiKey(lookup: String) -> ApiKeyRecord? { state.withLock { $0.keys[lookup] } }

    /// The tenants whose plan has a daily or monthly budget, with their budgets.
    public func budgetedTenants() -> [String: BudgetLimits] {
        state.withLock { state in
            var result: [String: BudgetLimits] = [:]
            for (tenant, plan) in state.plans where state.tenants[tenant] != nil {
                let limits = BudgetLimits(plan: plan)
                if limits.isLimited { result[tenant] = limits }
            }
            return result
        }
    }

    /// True once both buckets' initial values have been loaded.
    public var isSynced: Bool { state.withLock { $0.tenantsSynced && $0.keysSynced } }

    // MARK: applying KV entries

    func applyTenantEntry(_ entry: KVEntry) {
        let key = entry.key
        let deleted = entry.operation != .put
        let parts = key.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        var bytes: [UInt8] = []
        if !deleted {
            guard let payload = payload(of: entry, bucket: TenancyKeys.tenantsBucket.name) else { return }
            bytes = payload
        }
        do {
            switch parts.count {
            case 1:
                let value = deleted ? nil : try Tenant(protobuf: bytes)
                state.withLock { $0.tenants[parts[0]] = value }
            case 2 where parts[1] == "plan":
                let value = deleted ? nil : try Plan(protobuf: bytes)
                state.withLock { $0.plans[parts[0]] = value }
            case 2 where parts[1] == "manifest":
                let value = deleted ? nil : try PackageManifest(protobuf: bytes)
                state.withLock { $0.manifests[parts[0]] = value }
            case 3 where parts[1] == "rollout":
                let value = deleted ? nil : try RolloutSettings(protobuf: bytes)
                state.withLock { $0.rollouts[parts[0], default: [:]][parts[2]] = value }
            default:
                logger.warning("unknown tenants key skipped", metadata: ["kv.key": "\(key)"])
            }
        } catch {
            logger.error("malformed tenants value skipped", metadata: ["kv.key": "\(key)", "error": "\(error)"])
        }
        state.withLock { $0.lastChangeUnixNanos = EventClock.nowUnixNanos() }
    }

    func applyKeyEntry(_ entry: KVEntry) {
        var bytes: [UInt8] = []
        if entry.operation == .put {
            guard let payload = payload(of: entry, bucket: TenancyKeys.apiKeysBucket.name) else { return }
            bytes = payload
        }
        do {
            let value = entry.operation != .put ? nil : try ApiKeyRecord(protobuf: bytes)
            state.withLock { $0.keys[entry.key] = value }
        } catch {
            logger.error("malformed apikeys value skipped", metadata: ["error": "\(error)"])
        }
    }

    func markSynced(tenants: Bool) {
        state.withLock { tenants ? ($0.tenantsSynced = true) : ($0.keysSynced = true) }
    }

    /// Waits until both buckets are loaded (for start-up ordering and tests).
    public func waitUntilSynced(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isSynced {
            if ContinuousClock.now >= deadline { throw NATSError(.timeout, context: "waiting for the KV mirror") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}

/// Keeps a `TenantDirectory` current: watches both buckets until shutdown; re-watches after errors.
public struct TenantDirectoryService: Service {
    private let directory: TenantDirectory
    private let jetStream: JetStream
    private let logger: Logger

    public init(directory: TenantDirectory, jetStream: JetStream, logger: Logger) {
        self.directory = directory
        self.jetStream = jetStream
        self.logger = logger
    }

    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.watch(TenancyKeys.tenantsBucket, tenants: true) }
            group.addTask { try await self.watch(TenancyKeys.apiKeysBucket, tenants: false) }
            try await group.waitForAll()
        }
    }

    private func watch(_ spec: KVBucketSpec, tenants: Bool) async throws {
        await KVWatchLoop.run(bucket: spec.name, logger: logger, open: { try await jetStream.keyValue(spec) }) { event, _ in
            switch event {
            case .initialValuesDone: directory.markSynced(tenants: tenants)
            case .entry(let entry):
                if tenants { directory.applyTenantEntry(entry) } else { directory.applyKeyEntry(entry) }
            }
        }
    }
}

/// Watches a KV bucket until graceful shutdown or cancellation, starting a new watch (after 500 ms) whenever
/// one fails. Shared by every KV mirror reader and the tenant service's mirror guard. `onEvent` gets each
/// event and whether this watch has already delivered its initial values (i.e. the event is a live change).
public enum KVWatchLoop {
    public static func run(bucket name: String, logger: Logger, open: () async throws -> KeyValueBucket,
                           onEvent: @escaping @Sendable (KVWatchEvent, _ live: Bool) async throws -> Void) async {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let events = try await open().watchAll()
                try await cancelWhenGracefulShutdown {
                    var live = false
                    for try await event in events {
                        try await onEvent(event, live)
                        if case .initialValuesDone = event { live = true }
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { return }
                logger.warning("kv watch failed, retrying", metadata: ["bucket": "\(name)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

/// Writes tenancy records into KV (used by the tenant service and by `make run`'s demo seed).
public struct TenancyWriter: Sendable {
    let tenants: KeyValueBucket
    let apiKeys: KeyValueBucket

    public init(jetStream: JetStream) async throws {
        tenants = try await jetStream.keyValue(TenancyKeys.tenantsBucket)
        apiKeys = try await jetStream.keyValue(TenancyKeys.apiKeysBucket)
    }

    public func put(_ tenant: Tenant) async throws {
        try await tenants.put(TenancyKeys.tenant(tenant.id), tenant.protobufBytes())
    }
    public func put(_ plan: Plan, tenant: String) async throws {
        try await tenants.put(TenancyKeys.plan(tenant), plan.protobufBytes())
    }
    public func put(_ manifest: PackageManifest, tenant: String) async throws {
        try await tenants.put(TenancyKeys.manifest(tenant), manifest.protobufBytes())
    }
    public func put(_ rollout: RolloutSettings, tenant: String) async throws {
        try await tenants.put(TenancyKeys.rollout(tenant, agent: rollout.agent), rollout.protobufBytes())
    }
    public func put(_ key: ApiKeyRecord) async throws {
        try await apiKeys.put(key.prefix, key.protobufBytes())
    }
}

extension TenancyWriter {
    /// Whether `plaintext` is a key whose record exists and is active (used to keep the demo key stable).
    public func keyIsActive(_ plaintext: String) async -> Bool {
        let parts = plaintext.split(separator: "_")
        guard parts.count == 3, parts[2].count >= 8 else { return false }
        let lookup = String(parts[2].prefix(8))
        guard let entry = try? await apiKeys.get(lookup), entry.operation == .put,
              let payload = MirrorSignature.open(bucket: TenancyKeys.apiKeysBucket.name, key: lookup, value: entry.value,
                                                 verifier: nil),
              let record = try? ApiKeyRecord(protobuf: payload) else { return false }
        return record.status == "active"
    }
}
