import Foundation
import Schemas
import Tenancy

/// Input rules for admin commands. Pure: a value in, the value (normalized) or an `invalid_argument` failure
/// out. Nothing reaches PostgreSQL or KV before these checks pass. Messages name the field, never echo input.
public enum AdminValidation {
    public static let maxNameLength = 200
    public static let maxLabelLength = 100
    public static let maxAgents = 50
    public static let maxIntentsPerAgent = 50
    public static let maxKeywordsPerIntent = 100
    public static let maxSystemPromptBytes = 32 * 1024
    public static let maxManifestBytes = 256 * 1024
    public static let maxKnowledgeContentBytes = 64 * 1024
    public static let maxFeatureFlags = 100
    public static let maxScopes = 16
    public static let maxOverlapSeconds: UInt32 = 30 * 24 * 3600
    public static let consentPolicies: Set<String> = ["none", "required"]
    public static let providers: Set<String> = ["local", "openai", "anthropic"]

    static func fail(_ message: String) -> AdminFailure { AdminFailure(.invalidArgument, message) }

    /// `[a-z0-9][a-z0-9-]{0,62}` — tenant ids, plan ids, agent names and package names become subject
    /// tokens or KV key parts.
    public static func token(_ value: String, field: String, allowEmpty: Bool = false) throws(AdminFailure) -> String {
        if value.isEmpty && allowEmpty { return value }
        guard TenantID.isValid(value) else {
            throw fail("\(field) must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, '-')")
        }
        return value
    }

    /// Free text: bounded, valid UTF-8 (guaranteed by decoding), no control characters except tab/newline
    /// where `multiline`, no NUL.
    public static func text(_ value: String, field: String, maxBytes: Int, required: Bool = false,
                            multiline: Bool = false) throws(AdminFailure) -> String {
        if required && value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { throw fail("\(field) is required") }
        guard value.utf8.count <= maxBytes else { throw fail("\(field) is longer than \(maxBytes) bytes") }
        for scalar in value.unicodeScalars {
            let v = scalar.value
            if v == 0 || (v < 0x20 && !(multiline && (v == 0x0A || v == 0x09 || v == 0x0D))) || v == 0x7F {
                throw fail("\(field) contains control characters")
            }
        }
        return value
    }

    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`: knowledge entry ids, versions, feature flag names, scopes.
    public static func identifier(_ value: String, field: String, maxLength: Int = 128,
                                  allowEmpty: Bool = false) throws(AdminFailure) -> String {
        if value.isEmpty && allowEmpty { return value }
        let bytes = Array(value.utf8)
        func ok(_ b: UInt8, first: Bool) -> Bool {
            (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
                || (!first && (b == 0x2E || b == 0x5F || b == 0x2D || b == 0x3A))
        }
        guard !bytes.isEmpty, bytes.count <= maxLength, ok(bytes[0], first: true),
              bytes.dropFirst().allSatisfy({ ok($0, first: false) }) else {
            throw fail("\(field) must match [A-Za-z0-9][A-Za-z0-9._:-]{0,\(maxLength - 1)}")
        }
        return value
    }

    /// A record's own `tenant_id`: empty (filled in) or the command's tenant.
    static func owner(_ value: String, field: String, tenant: String) throws(AdminFailure) -> String {
        guard value.isEmpty || value == tenant else { throw fail("\(field).tenant_id differs from tenant_id") }
        return tenant
    }

    /// A tenant as given to `create` / `update` (the server sets status and timestamps).
    public static func tenant(_ tenant: Tenant?) throws(AdminFailure) -> Tenant {
        guard var tenant else { throw fail("tenant is required") }
        tenant.id = try token(tenant.id, field: "tenant.id")
        tenant.name = try text(tenant.name, field: "tenant.name", maxBytes: maxNameLength, required: true)
        tenant.planID = try token(tenant.planID, field: "tenant.plan_id", allowEmpty: true)
        tenant.packageName = try token(tenant.packageName, field: "tenant.package_name", allowEmpty: true)
        if tenant.consentPolicy.isEmpty { tenant.consentPolicy = "none" }
        guard consentPolicies.contains(tenant.consentPolicy) else {
            throw fail("tenant.consent_policy must be one of: none, required")
        }
        if !tenant.timeZone.isEmpty {
            guard tenant.timeZone.utf8.count <= 64, TimeZone(identifier: tenant.timeZone) != nil,
                  tenant.timeZone.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f })
            else {
                throw fail("tenant.time_zone must be an IANA time zone name such as Europe/Berlin (empty = UTC)")
            }
        }
        guard tenant.featureFlags.count <= maxFeatureFlags else {
            throw fail("tenant.feature_flags has more than \(maxFeatureFlags) entries")
        }
        for name in tenant.featureFlags.keys { _ = try identifier(name, field: "tenant.feature_flags key", maxLength: 64) }
        return tenant
    }

    public static func plan(_ plan: Plan, id: String) throws(AdminFailure) -> Plan {
        var plan = plan
        if plan.id.isEmpty { plan.id = id }
        guard plan.id == id else { throw fail("plan.id differs from plan_id") }
        _ = try token(plan.id, field: "plan.id")
        guard plan.rpm <= Int32.max, plan.tpm <= Int32.max, plan.maxTokensPerRequest <= Int32.max else {
            throw fail("plan limits must be below 2^31")
        }
        guard plan.dailyBudgetMicros >= 0, plan.monthlyBudgetMicros >= 0 else {
            throw fail("plan budgets must not be negative")
        }
        return plan
    }

    public static func scopes(_ scopes: [String]) throws(AdminFailure) -> [String] {
        let scopes = scopes.isEmpty ? ["chat"] : scopes
        guard scopes.count <= maxScopes else { throw fail("more than \(maxScopes) scopes") }
        for scope in scopes { _ = try identifier(scope, field: "scope", maxLength: 32) }
        return Array(Set(scopes)).sorted()
    }

    public static func environment(_ value: String) throws(AdminFailure) -> APIKeyEnvironment {
        if value.isEmpty { return .live }
        guard let env = APIKeyEnvironment(rawValue: value) else { throw fail("env must be live or test") }
        return env
    }

    /// A lookup id as printed by `key list` (8 lower-case base32 characters).
    public static func keyID(_ value: String) throws(AdminFailure) -> String {
        guard value.utf8.count == APIKeyFormat.lookupIDLength,
              value.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x32 && $0 <= 0x37) }) else {
            throw fail("key_id must be the 8-character key id shown by `key list`")
        }
        return value
    }

    public static func manifest(_ manifest: PackageManifest?, tenant: String) throws(AdminFailure) -> PackageManifest {
        guard var manifest else { throw fail("manifest is required") }
        manifest.tenantID = try owner(manifest.tenantID, field: "manifest", tenant: tenant)
        manifest.packageName = try token(manifest.packageName, field: "manifest.package_name", allowEmpty: true)
        guard !manifest.agents.isEmpty else { throw fail("manifest.agents must list at least one agent") }
        guard manifest.agents.count <= maxAgents else { throw fail("manifest.agents has more than \(maxAgents) agents") }
        var names = Set<String>()
        var versions = Set<String>()
        for index in manifest.agents.indices {
            var agent = manifest.agents[index]
            let field = "manifest.agents[\(index)]"
            agent.agent = try token(agent.agent, field: "\(field).agent")
            // An agent may be listed once per version: the first entry routes (intents, fallback), the others
            // configure their version (prompt, provider, model, threshold) for rollouts and eval runs.
            if !names.insert(agent.agent).inserted {
                guard !agent.version.isEmpty,
                      versions.insert("\(agent.agent)\u{0}\(agent.version)").inserted,
                      manifest.agents.first(where: { $0.agent == agent.agent })?.version != agent.version
                else { throw fail("\(field).agent is listed twice with the same version") }
            } else {
                versions.insert("\(agent.agent)\u{0}\(agent.version)")
            }
            if agent.provider.isEmpty { agent.provider = "local" }
            guard providers.contains(agent.provider) else {
                throw fail("\(field).provider must be one of: local, openai, anthropic")
            }
            agent.model = try text(agent.model, field: "\(field).model", maxBytes: 100)
            agent.systemPrompt = try text(agent.systemPrompt, field: "\(field).system_prompt",
                                          maxBytes: maxSystemPromptBytes, multiline: true)
            agent.version = try identifier(agent.version, field: "\(field).version", maxLength: 64, allowEmpty: true)
            guard agent.handoffThreshold.isFinite, (0...1).contains(agent.handoffThreshold) else {
                throw fail("\(field).handoff_threshold must be between 0 and 1")
            }
            guard agent.intents.count <= maxIntentsPerAgent else {
                throw fail("\(field).intents has more than \(maxIntentsPerAgent) rules")
            }
            for (i, intent) in agent.intents.enumerated() {
                _ = try text(intent.name, field: "\(field).intents[\(i)].name", maxBytes: 64, required: true)
                _ = try text(intent.pattern, field: "\(field).intents[\(i)].pattern", maxBytes: 512)
                guard intent.keywords.count <= maxKeywordsPerIntent else {
                    throw fail("\(field).intents[\(i)].keywords has more than \(maxKeywordsPerIntent) entries")
                }
                for keyword in intent.keywords {
                    _ = try text(keyword, field: "\(field).intents[\(i)].keywords", maxBytes: 100, required: true)
                }
            }
            manifest.agents[index] = agent
        }
        for (index, agent) in manifest.agents.enumerated() where !agent.fallbackAgent.isEmpty {
            guard names.contains(agent.fallbackAgent), agent.fallbackAgent != agent.agent else {
                throw fail("manifest.agents[\(index)].fallback_agent must name another agent of the manifest")
            }
        }
        if manifest.defaultAgent.isEmpty { manifest.defaultAgent = manifest.agents[0].agent }
        guard names.contains(manifest.defaultAgent) else {
            throw fail("manifest.default_agent must name an agent of the manifest")
        }
        // Every gateway and router holds it in memory and it travels in one KV value and one event.
        guard manifest.protobufBytes().count <= maxManifestBytes else {
            throw fail("manifest is larger than \(maxManifestBytes / 1024) KiB")
        }
        return manifest
    }

    public static func rollout(_ rollout: RolloutSettings?, tenant: String) throws(AdminFailure) -> RolloutSettings {
        guard var rollout else { throw fail("rollout is required") }
        rollout.tenantID = try owner(rollout.tenantID, field: "rollout", tenant: tenant)
        rollout.agent = try token(rollout.agent, field: "rollout.agent")
        rollout.stableVersion = try identifier(rollout.stableVersion, field: "rollout.stable_version", maxLength: 64,
                                               allowEmpty: true)
        rollout.canaryVersion = try identifier(rollout.canaryVersion, field: "rollout.canary_version", maxLength: 64,
                                               allowEmpty: true)
        guard rollout.canaryPercent <= 100 else { throw fail("rollout.canary_percent must be 0...100") }
        return rollout
    }

    public static func knowledge(_ entry: KnowledgeEntry?, tenant: String) throws(AdminFailure) -> KnowledgeEntry {
        guard var entry else { throw fail("entry is required") }
        entry.tenantID = try owner(entry.tenantID, field: "entry", tenant: tenant)
        entry.id = try identifier(entry.id, field: "entry.id")
        entry.title = try text(entry.title, field: "entry.title", maxBytes: 500, required: true)
        entry.content = try text(entry.content, field: "entry.content", maxBytes: maxKnowledgeContentBytes,
                                 required: true, multiline: true)
        entry.language = try identifier(entry.language, field: "entry.language", maxLength: 35, allowEmpty: true)
        guard entry.tags.count <= 50 else { throw fail("entry.tags has more than 50 entries") }
        for tag in entry.tags {
            _ = try text(tag, field: "entry.tags", maxBytes: 64, required: true)
            guard !tag.contains(",") else { throw fail("entry.tags must not contain ','") }
        }
        return entry
    }
}
