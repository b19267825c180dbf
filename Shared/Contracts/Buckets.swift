import Messaging

public enum BucketNames {
    public static let tenants = "tenants"
    public static let apiKeys = "apikeys"
    public static let budgets = "budgets"
}

/// Key layout of the `tenants` and `apikeys` KV buckets, owned by the tenant service (docs/adr/0008).
///
/// tenants bucket:  `<tenant>` → Tenant, `<tenant>.plan` → Plan, `<tenant>.manifest` → PackageManifest,
///                  `<tenant>.rollout.<agent>` → RolloutSettings
/// apikeys bucket:  `<lookup id>` → ApiKeyRecord (only the hash of the key)
public enum TenancyKeys {
    public static func tenant(_ id: String) -> String { id }
    public static func plan(_ id: String) -> String { "\(id).plan" }
    public static func manifest(_ id: String) -> String { "\(id).manifest" }
    public static func rollout(_ id: String, agent: String) -> String { "\(id).rollout.\(agent)" }

    public static let tenantsBucket = KVBucketSpec(name: BucketNames.tenants, history: 5)
    public static let apiKeysBucket = KVBucketSpec(name: BucketNames.apiKeys, history: 5)
}
