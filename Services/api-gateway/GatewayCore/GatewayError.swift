import Schemas

/// An error the gateway answers a client with. It renders itself as an OpenAI-shaped HTTP error:
///
/// ```json
/// {"error":{"message":"...","type":"invalid_request_error","param":"max_tokens","code":"invalid_request_error"}}
/// ```
///
/// `message` is always text chosen by the gateway: it may name a field (`messages[2].role`) or one of the
/// gateway's own limits, but never contains request values, keys, header values or tenant data — so the
/// error is safe to log and to return.
public struct GatewayError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Opaque, comparable error code; rendered as `error.code`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case invalidRequest = "invalid_request_error"
            case invalidAPIKey = "invalid_api_key"
            case tenantSuspended = "tenant_suspended"
            case notFound = "not_found"
            case methodNotAllowed = "method_not_allowed"
            case modelNotFound = "model_not_found"
            case requestTooLarge = "request_too_large"
            case rateLimitExceeded = "rate_limit_exceeded"
            case budgetExceeded = "insufficient_quota"
            case upstreamError = "upstream_error"
            case serviceUnavailable = "service_unavailable"
            case deadlineExceeded = "deadline_exceeded"
            case internalError = "internal_error"
        }

        fileprivate let base: Base

        /// 400: the request body or a parameter is invalid.
        public static let invalidRequest = Code(base: .invalidRequest)
        /// 401: missing, malformed, unknown, revoked or expired API key, or its tenant is gone.
        public static let invalidAPIKey = Code(base: .invalidAPIKey)
        /// 403: the key is valid but its tenant is suspended.
        public static let tenantSuspended = Code(base: .tenantSuspended)
        /// 404: no such route / object (also used when one tenant asks for another tenant's object).
        public static let notFound = Code(base: .notFound)
        /// 405: the path exists, not with this method (`Allow` names the one it takes).
        public static let methodNotAllowed = Code(base: .methodNotAllowed)
        /// 404: the requested model (agent) does not exist or is not enabled for the tenant.
        public static let modelNotFound = Code(base: .modelNotFound)
        /// 413: the body is larger than the gateway accepts.
        public static let requestTooLarge = Code(base: .requestTooLarge)
        /// 429: RPM/TPM limit reached; carries `retryAfterSeconds`.
        public static let rateLimitExceeded = Code(base: .rateLimitExceeded)
        /// 429 `insufficient_quota` (OpenAI's code): the request would exceed the tenant's remaining budget
        /// (KV `budgets`, docs/adr/0014).
        public static let budgetExceeded = Code(base: .budgetExceeded)
        /// 502: the agent/provider failed.
        public static let upstreamError = Code(base: .upstreamError)
        /// 503: the platform cannot take the request right now (NATS down, draining, no responders).
        public static let serviceUnavailable = Code(base: .serviceUnavailable)
        /// 504: no answer before the request's deadline.
        public static let deadlineExceeded = Code(base: .deadlineExceeded)
        /// 500: a bug or unexpected state in the gateway.
        public static let internalError = Code(base: .internalError)

        public var description: String { base.rawValue }
    }

    /// Opaque error code (`error.code`).
    public let code: Code
    /// HTTP status code.
    public let status: Int
    /// Client-facing explanation. Never contains request values or secrets.
    public let message: String
    /// The offending parameter (`error.param`), e.g. `messages[0].role`; `nil` renders as `null`.
    public let param: String?
    /// For 429 (and optionally 503): the `Retry-After` header value in whole seconds (≥ 1).
    public let retryAfterSeconds: Int?

    public init(_ code: Code, status: Int, message: String, param: String? = nil, retryAfterSeconds: Int? = nil) {
        self.code = code
        self.status = status
        self.message = message
        self.param = param
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// OpenAI's `error.type` for this code.
    public var type: String {
        switch code.base {
        case .invalidRequest, .notFound, .methodNotAllowed, .modelNotFound, .requestTooLarge: "invalid_request_error"
        case .invalidAPIKey: "authentication_error"
        case .tenantSuspended: "permission_error"
        case .rateLimitExceeded: "rate_limit_error"
        case .budgetExceeded: "insufficient_quota"
        case .upstreamError, .serviceUnavailable, .deadlineExceeded, .internalError: "api_error"
        }
    }

    /// Whether the client may retry the same request later (429, 502, 503, 504).
    public var isRetriable: Bool {
        switch code.base {
        case .rateLimitExceeded, .upstreamError, .serviceUnavailable, .deadlineExceeded: true
        default: false
        }
    }

    /// The JSON body: `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
    public var body: [UInt8] {
        var writer = JSONWriter(capacity: 128 + message.utf8.count)
        writeObject(into: &writer)
        return writer.bytes
    }

    /// The error as one SSE event (`data: {"error":…}\n\n`), for failures after a stream has started.
    public var sseEvent: [UInt8] {
        var writer = JSONWriter(capacity: 140 + message.utf8.count)
        writer.raw("data: ")
        writeObject(into: &writer)
        writer.raw("\n\n")
        return writer.bytes
    }

    func writeObject(into writer: inout JSONWriter) {
        writer.raw("{\"error\":{\"message\":")
        writer.string(message)
        writer.raw(",\"type\":")
        writer.string(type)
        writer.raw(",\"param\":")
        writer.stringOrNull(param)
        writer.raw(",\"code\":")
        writer.string(code.description)
        writer.raw("}}")
    }

    public var description: String {
        var text = "GatewayError(\(code), \(status)): \(message)"
        if let param { text += " [param: \(param)]" }
        if let retryAfterSeconds { text += " [retry after: \(retryAfterSeconds)s]" }
        return text
    }
}

// MARK: - Constructors

extension GatewayError {
    /// 400 `invalid_request_error`. `message` must be gateway-chosen text (field names, limits), never values.
    public static func invalidRequest(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError(.invalidRequest, status: 400, message: message, param: param)
    }

    /// 401 `invalid_api_key` (type `authentication_error`).
    public static func invalidAPIKey(_ message: String = "Invalid API key.") -> GatewayError {
        GatewayError(.invalidAPIKey, status: 401, message: message)
    }

    /// 403 `tenant_suspended` (type `permission_error`).
    public static func tenantSuspended() -> GatewayError {
        GatewayError(.tenantSuspended, status: 403, message: "This account is suspended.")
    }

    /// 404 `not_found` for unknown routes and objects.
    public static func notFound(_ message: String = "Not found.") -> GatewayError {
        GatewayError(.notFound, status: 404, message: message)
    }

    /// 404 `model_not_found`. The model name is not echoed.
    public static func modelNotFound() -> GatewayError {
        GatewayError(.modelNotFound, status: 404,
                     message: "The requested model does not exist or is not enabled for this account.",
                     param: "model")
    }

    /// 413 `request_too_large`.
    public static func requestTooLarge(limitBytes: Int) -> GatewayError {
        GatewayError(.requestTooLarge, status: 413,
                     message: "Request body is larger than the limit of \(limitBytes) bytes.")
    }

    /// 429 `rate_limit_exceeded` with a `Retry-After` in whole seconds (clamped to ≥ 1).
    public static func rateLimitExceeded(retryAfterSeconds: Int, message: String = "Rate limit exceeded.")
        -> GatewayError
    {
        GatewayError(.rateLimitExceeded, status: 429, message: message,
                     retryAfterSeconds: max(1, retryAfterSeconds))
    }

    /// 429 `insufficient_quota` (type and code, as OpenAI sends it): the request would exceed the tenant's
    /// remaining budget. Not retriable soon; `Retry-After`, when given, is the time until the period resets.
    public static func budgetExceeded(_ message: String = "The account's usage budget is exhausted.",
                                      retryAfterSeconds: Int? = nil) -> GatewayError {
        GatewayError(.budgetExceeded, status: 429, message: message, retryAfterSeconds: retryAfterSeconds.map { max(1, $0) })
    }

    /// 405 `method_not_allowed`.
    public static func methodNotAllowed(_ method: String, path: String, allowed: String) -> GatewayError {
        GatewayError(.methodNotAllowed, status: 405, message: "\(path) takes \(allowed), not \(method).")
    }

    /// 502 `upstream_error`.
    public static func upstreamError(_ message: String = "The agent failed to produce an answer.") -> GatewayError {
        GatewayError(.upstreamError, status: 502, message: message)
    }

    /// 503 `service_unavailable`.
    public static func serviceUnavailable(
        _ message: String = "The service is temporarily unavailable.", retryAfterSeconds: Int? = nil
    ) -> GatewayError {
        GatewayError(.serviceUnavailable, status: 503, message: message,
                     retryAfterSeconds: retryAfterSeconds.map { max(1, $0) })
    }

    /// 504 `deadline_exceeded`.
    public static func deadlineExceeded() -> GatewayError {
        GatewayError(.deadlineExceeded, status: 504, message: "No answer before the request deadline.")
    }

    /// 500 `internal_error`.
    public static func internalError() -> GatewayError {
        GatewayError(.internalError, status: 500, message: "Internal error.")
    }
}

// MARK: - ChatFailed mapping

extension GatewayError {
    /// Maps a `ChatFailed` from the orchestrator/router to the client-facing error.
    ///
    /// `errorCode` wins when it is one the gateway knows; otherwise `httpStatus` decides; anything else is a
    /// 502. The orchestrator's `message` is deliberately **not** forwarded: it may carry provider output or
    /// conversation data, and the client-facing text must stay constant per code.
    public init(failed: ChatFailed) {
        switch failed.errorCode {
        case "invalid_request_error", "invalid_request", "invalid_argument":
            self = .invalidRequest("The request was rejected by the agent.")
        case "model_not_found", "agent_not_found", "no_agent":
            self = .modelNotFound()
        case "tenant_suspended":
            self = .tenantSuspended()
        case "rate_limit_exceeded", "rate_limited":
            self = .rateLimitExceeded(retryAfterSeconds: 1, message: "The agent's provider is rate limited.")
        case "budget_exceeded", "insufficient_quota":
            self = .budgetExceeded()
        case "deadline_exceeded", "timeout":
            self = .deadlineExceeded()
        case "service_unavailable", "circuit_open", "unavailable":
            self = .serviceUnavailable()
        case "upstream_error", "provider_error":
            self = .upstreamError()
        case "internal_error":
            self = .internalError()
        default:
            self = GatewayError(statusOf: failed.httpStatus)
        }
    }

    private init(statusOf httpStatus: UInt32) {
        switch httpStatus {
        case 400, 422: self = .invalidRequest("The request was rejected by the agent.")
        case 401: self = .invalidAPIKey()
        case 403: self = .tenantSuspended()
        case 404: self = .modelNotFound()
        case 413: self = .invalidRequest("The conversation is too large for the agent.")
        case 429: self = .rateLimitExceeded(retryAfterSeconds: 1, message: "The agent's provider is rate limited.")
        case 500: self = .internalError()
        case 503: self = .serviceUnavailable()
        case 504, 408: self = .deadlineExceeded()
        default: self = .upstreamError()
        }
    }
}
