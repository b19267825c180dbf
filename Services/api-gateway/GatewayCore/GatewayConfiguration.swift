import ServiceKit

/// Gateway settings beyond `ServiceConfiguration`.
public struct GatewayConfiguration: Sendable {
    /// Request body, message, token limits.
    public var limits: GatewayLimits
    /// How long a client waits for an answer before a 504 (`SWITCHYARD_REQUEST_TIMEOUT_MS`, default 30000).
    public var requestTimeout: Duration
    /// HMAC pepper for API key hashes (`SWITCHYARD_KEY_PEPPER`, hex; unset = plain SHA-256).
    public var keyPepper: [UInt8]?

    public init(limits: GatewayLimits = GatewayLimits(), requestTimeout: Duration = .seconds(30), keyPepper: [UInt8]? = nil) {
        self.limits = limits
        self.requestTimeout = requestTimeout
        self.keyPepper = keyPepper
    }

    public init(environment: EnvironmentReader = EnvironmentReader()) throws(ConfigurationError) {
        self.init(requestTimeout: try environment.milliseconds("SWITCHYARD_REQUEST_TIMEOUT_MS", default: .seconds(30),
                                                               range: 1...600_000),
                  keyPepper: try environment.keyPepper())
    }
}
