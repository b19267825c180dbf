import ServiceKit

/// Billing's own settings (the shared ones are in `ServiceConfiguration`).
public struct BillingConfiguration: Sendable {
    /// `SWITCHYARD_BILLING_FAILPOINT_KILL_AFTER_COMMITS`: fault injection for the crash tests, unset in
    /// production. After that many committed ledger batches the process kills itself with SIGKILL — after
    /// COMMIT and before the batch's acks are sent, the one moment a plain kill from outside rarely hits.
    public var killAfterCommits: Int?
    /// `SWITCHYARD_ADMIN_TOKENS`: `name:token` pairs for the admin commands (the tenant service's format);
    /// unset = every admin command is refused.
    public var adminTokens: [(name: String, token: String)]

    public init(killAfterCommits: Int? = nil, adminTokens: [(name: String, token: String)] = []) {
        self.killAfterCommits = killAfterCommits
        self.adminTokens = adminTokens
    }

    public init(environment: EnvironmentReader) throws(ConfigurationError) {
        let name = "SWITCHYARD_BILLING_FAILPOINT_KILL_AFTER_COMMITS"
        killAfterCommits = environment.optional(name) == nil
            ? nil : try environment.integer(name, default: 1, range: 1...1_000_000)
        adminTokens = try AdminAuthenticator.tokens(from: environment)
    }
}
