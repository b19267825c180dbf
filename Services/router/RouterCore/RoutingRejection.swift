/// Why the router refused a request. The message is a constant sentence: it never contains tenant ids,
/// agent names, model names or message content, so it is safe to log and to return to the client.
public struct RoutingRejection: Error, Sendable, Hashable, CustomStringConvertible {
    /// Opaque rejection code; compare against the static members.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        /// Stable wire spelling (for `ChatFailed.errorCode` and metric labels).
        public var description: String { raw }

        /// The tenant's status is not "active" (suspended, deleted or unknown).
        public static let tenantSuspended = Code("tenant_suspended")
        /// `model` names neither an enabled agent nor a generic model alias.
        public static let unknownModel = Code("unknown_model")
        /// No package manifest is known for the tenant.
        public static let noManifest = Code("no_manifest")
        /// The manifest has no enabled agent.
        public static let noEnabledAgent = Code("no_enabled_agent")
        /// The chosen agent is kill-switched and its fallback chain leads nowhere usable
        /// (missing/disabled fallback, a loop, or more than `RoutingPolicy.maxFallbackHops` hops).
        public static let fallbackLoop = Code("fallback_loop")
        /// An eval run pinned a version its agent doesn't have (neither in the manifest nor in the rollout).
        public static let unknownVersion = Code("unknown_version")
    }

    public let code: Code
    /// HTTP status the gateway should answer with: 403, 404 or 503.
    public let httpStatus: Int
    /// Constant, client-safe explanation.
    public let message: String

    public init(_ code: Code, httpStatus: Int, message: String) {
        self.code = code
        self.httpStatus = httpStatus
        self.message = message
    }

    /// Whether the same request may succeed later without the client changing it (configuration may be fixed
    /// or arrive): true for the 503 family.
    public var isRetriable: Bool { httpStatus == 503 }

    public var description: String { "RoutingRejection(\(code), \(httpStatus)): \(message)" }
}

extension RoutingRejection {
    static let tenantSuspended = RoutingRejection(
        .tenantSuspended, httpStatus: 403, message: "tenant is not active")
    static let unknownModel = RoutingRejection(
        .unknownModel, httpStatus: 404, message: "the requested model does not exist or is not available")
    static let noManifest = RoutingRejection(
        .noManifest, httpStatus: 503, message: "no agent package is configured for this tenant")
    static let noEnabledAgent = RoutingRejection(
        .noEnabledAgent, httpStatus: 503, message: "no agent is enabled for this tenant")
    static let fallbackMissing = RoutingRejection(
        .fallbackLoop, httpStatus: 503, message: "agent is switched off and has no enabled fallback agent")
    static let fallbackCycle = RoutingRejection(
        .fallbackLoop, httpStatus: 503, message: "agent is switched off and its fallback chain loops")
    static let unknownVersion = RoutingRejection(
        .unknownVersion, httpStatus: 404, message: "the pinned agent version does not exist")
    static let fallbackTooLong = RoutingRejection(
        .fallbackLoop, httpStatus: 503, message: "agent is switched off and its fallback chain is too long")
}
