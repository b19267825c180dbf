import ServiceKit

/// Gateway settings beyond `ServiceConfiguration`.
public struct GatewayConfiguration: Sendable {
    /// Request body, message, token limits.
    public var limits: GatewayLimits
    /// How long a client waits for an answer before a 504 (`SWITCHYARD_REQUEST_TIMEOUT_MS`, default 30000).
    public var requestTimeout: Duration
    /// HMAC pepper for API key hashes (`SWITCHYARD_KEY_PEPPER`, hex; unset = plain SHA-256).
    public var keyPepper: [UInt8]?
    /// How long an admitted request's budget hold counts if billing never settles it, e.g. a request that left
    /// no usage (`SWITCHYARD_BUDGET_HOLD_SECONDS`, default 600; docs/adr/0014).
    public var budgetHoldLease: Duration

    public init(limits: GatewayLimits = GatewayLimits(), requestTimeout: Duration = .seconds(30), keyPepper: [UInt8]? = nil,
                budgetHoldLease: Duration = .seconds(600)) {
        self.limits = limits
        self.requestTimeout = requestTimeout
        self.keyPepper = keyPepper
        self.budgetHoldLease = budgetHoldLease
    }

    public init(environment: EnvironmentReader = EnvironmentReader()) throws(ConfigurationError) {
        self.init(requestTimeout: try environment.milliseconds("SWITCHYARD_REQUEST_TIMEOUT_MS", default: .seconds(30),
                                                               range: 1...600_000),
                  keyPepper: try environment.keyPepper(),
                  budgetHoldLease: .seconds(try environment.integer("SWITCHYARD_BUDGET_HOLD_SECONDS", default: 600,
                                                                    range: 10...86_400)))
    }
}
