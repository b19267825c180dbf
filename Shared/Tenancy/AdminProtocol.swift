import Contracts
import Messaging
import Schemas

/// The tenant service's admin commands: core NATS request/reply on `admin.tenant.<command>`, protobuf in and
/// out (Proto/switchyard/v1/admin.proto). The HTTP admin API serves the same commands as JSON on
/// `POST /admin/v1/tenant/<command>`.
public enum AdminCommand: String, Sendable, CaseIterable {
    case create
    case update
    case suspend
    case delete
    case get
    case list
    case issueKey = "issue-key"
    case revokeKey = "revoke-key"
    case rotateKey = "rotate-key"
    case listKeys = "list-keys"
    case setPlan = "set-plan"
    case setManifest = "set-manifest"
    case setRollout = "set-rollout"
    case knowledgeUpsert = "knowledge-upsert"
    case knowledgeDelete = "knowledge-delete"
    case knowledgeList = "knowledge-list"
    case doctor

    public static let service = "tenant"

    /// `admin.tenant.<command>`
    public var subject: String { Subjects.admin(service: Self.service, command: rawValue) }

    /// Whether the command changes state (and is therefore audited).
    public var isMutation: Bool {
        switch self {
        case .get, .list, .listKeys, .knowledgeList, .doctor: false
        default: true
        }
    }
}

/// The billing service's admin commands: `admin.billing.<command>` (Proto/switchyard/v1/billing.proto), and
/// `POST /admin/v1/billing/<command>` as JSON.
public enum BillingAdminCommand: String, Sendable, CaseIterable {
    case priceSet = "price-set"
    case priceList = "price-list"
    case usage
    case invoice
    case recompute

    public static let service = "billing"

    /// `admin.billing.<command>`
    public var subject: String { Subjects.admin(service: Self.service, command: rawValue) }
}

public enum AnalyticsAdminCommand: String, Sendable, CaseIterable {
    case stats
    case rebuild
    case rebuildStatus = "rebuild-status"

    public static let service = "analytics"

    /// `admin.analytics.<command>`
    public var subject: String { Subjects.admin(service: Self.service, command: rawValue) }
}

public enum EvalAdminCommand: String, Sendable, CaseIterable {
    case suiteImport = "suite-import"
    case suiteList = "suite-list"
    case suiteGet = "suite-get"
    case runStart = "run-start"
    case replayStart = "replay-start"
    case runGet = "run-get"
    case runList = "run-list"
    case runCancel = "run-cancel"
    case rolloutStart = "rollout-start"
    case rolloutGet = "rollout-get"
    case rolloutList = "rollout-list"
    case rolloutControl = "rollout-control"

    public static let service = "eval"

    /// `admin.eval.<command>`
    public var subject: String { Subjects.admin(service: Self.service, command: rawValue) }
}

/// Every admin request carries the caller's admin token and a declared actor name.
public protocol AdminRequest: ProtoMessage {
    var adminToken: String { get set }
    var actor: String { get set }
}

/// Every admin response carries `error` (nil = success).
public protocol AdminResponse: ProtoMessage {
    var error: AdminError? { get set }
    init()
}

extension CreateTenantRequest: AdminRequest {}
extension UpdateTenantRequest: AdminRequest {}
extension SuspendTenantRequest: AdminRequest {}
extension DeleteTenantRequest: AdminRequest {}
extension GetTenantRequest: AdminRequest {}
extension ListTenantsRequest: AdminRequest {}
extension IssueKeyRequest: AdminRequest {}
extension RevokeKeyRequest: AdminRequest {}
extension RotateKeyRequest: AdminRequest {}
extension ListKeysRequest: AdminRequest {}
extension SetPlanRequest: AdminRequest {}
extension SetManifestRequest: AdminRequest {}
extension SetRolloutRequest: AdminRequest {}
extension KnowledgeUpsertRequest: AdminRequest {}
extension KnowledgeDeleteRequest: AdminRequest {}
extension KnowledgeListRequest: AdminRequest {}
extension SetPriceRequest: AdminRequest {}
extension ListPricesRequest: AdminRequest {}
extension UsageReportRequest: AdminRequest {}
extension InvoiceRequest: AdminRequest {}
extension RecomputeRequest: AdminRequest {}
extension StatsRequest: AdminRequest {}
extension RebuildRequest: AdminRequest {}
extension RebuildStatusRequest: AdminRequest {}
extension DoctorRequest: AdminRequest {}
extension ImportSuiteRequest: AdminRequest {}
extension ListSuitesRequest: AdminRequest {}
extension GetSuiteRequest: AdminRequest {}
extension StartRunRequest: AdminRequest {}
extension StartReplayRequest: AdminRequest {}
extension GetRunRequest: AdminRequest {}
extension CancelRunRequest: AdminRequest {}
extension ListRunsRequest: AdminRequest {}
extension StartRolloutRequest: AdminRequest {}
extension GetRolloutRequest: AdminRequest {}
extension ListRolloutsRequest: AdminRequest {}
extension ControlRolloutRequest: AdminRequest {}

extension CreateTenantResponse: AdminResponse {}
extension UpdateTenantResponse: AdminResponse {}
extension SuspendTenantResponse: AdminResponse {}
extension DeleteTenantResponse: AdminResponse {}
extension GetTenantResponse: AdminResponse {}
extension ListTenantsResponse: AdminResponse {}
extension IssueKeyResponse: AdminResponse {}
extension RevokeKeyResponse: AdminResponse {}
extension RotateKeyResponse: AdminResponse {}
extension ListKeysResponse: AdminResponse {}
extension SetPlanResponse: AdminResponse {}
extension SetManifestResponse: AdminResponse {}
extension SetRolloutResponse: AdminResponse {}
extension KnowledgeUpsertResponse: AdminResponse {}
extension KnowledgeDeleteResponse: AdminResponse {}
extension KnowledgeListResponse: AdminResponse {}
extension SetPriceResponse: AdminResponse {}
extension ListPricesResponse: AdminResponse {}
extension UsageReportResponse: AdminResponse {}
extension InvoiceResponse: AdminResponse {}
extension RecomputeResponse: AdminResponse {}
extension StatsResponse: AdminResponse {}
extension RebuildResponse: AdminResponse {}
extension DoctorResponse: AdminResponse {}
extension ImportSuiteResponse: AdminResponse {}
extension ListSuitesResponse: AdminResponse {}
extension GetSuiteResponse: AdminResponse {}
extension StartRunResponse: AdminResponse {}
extension StartReplayResponse: AdminResponse {}
extension GetRunResponse: AdminResponse {}
extension CancelRunResponse: AdminResponse {}
extension ListRunsResponse: AdminResponse {}
extension RolloutResponse: AdminResponse {}
extension ListRolloutsResponse: AdminResponse {}

/// The error codes of `AdminError.code`, with their HTTP statuses for the admin HTTP API.
public enum AdminErrorCode: String, Sendable, CaseIterable {
    case invalidArgument = "invalid_argument"
    case unauthorized
    case notFound = "not_found"
    case conflict
    case internalError = "internal"
    case unavailable

    public var httpStatus: Int {
        switch self {
        case .invalidArgument: 400
        case .unauthorized: 401
        case .notFound: 404
        case .conflict: 409
        case .internalError: 500
        case .unavailable: 503
        }
    }
}

/// A failed admin command, as thrown by `AdminClient` (and by the tenant service's command handlers).
public struct AdminFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: AdminErrorCode
    public var message: String

    public init(_ code: AdminErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public init(_ error: AdminError) {
        self.code = AdminErrorCode(rawValue: error.code) ?? .internalError
        self.message = error.message
    }

    public var adminError: AdminError { AdminError(code: code.rawValue, message: message) }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// Sends admin commands over NATS (used by the CLI, `make run`'s demo seed and tests).
public struct AdminClient: Sendable {
    public let connection: NATSConnection
    public let token: String
    public let actor: String
    public let timeout: Duration

    public init(connection: NATSConnection, token: String, actor: String, timeout: Duration = .seconds(10)) {
        self.connection = connection
        self.token = token
        self.actor = actor
        self.timeout = timeout
    }

    /// Sends a tenant service command.
    public func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: AdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await call(subject: command.subject, service: "tenant service", request)
    }

    /// Sends a billing service command.
    public func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: BillingAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await call(subject: command.subject, service: "billing service", request)
    }

    public func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: AnalyticsAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await call(subject: command.subject, service: "analytics service", request)
    }

    /// Sends an eval admin command (`admin.eval.<command>`).
    public func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: EvalAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await call(subject: command.subject, service: "eval service", request)
    }

    /// Sends `request` (with this client's token and actor) to `subject` and returns the response, or throws
    /// the `AdminFailure` it carries. Transport problems surface as `AdminFailure(.unavailable, …)` naming
    /// `service`.
    public func call<Request: AdminRequest, Response: AdminResponse>(
        subject: String, service: String, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        var request = request
        request.adminToken = token
        request.actor = actor
        let reply: NATSMessage
        do {
            reply = try await connection.request(subject, payload: request.protobufBytes(), timeout: timeout)
        } catch {
            if error.code == .noResponders {
                throw AdminFailure(.unavailable, "no \(service) is answering admin commands (is it running?)")
            }
            if error.code == .timeout {
                let pattern = subject.split(separator: ".").dropLast().joined(separator: ".") + ".*"
                throw AdminFailure(.unavailable, "the \(service) did not answer within \(timeout) "
                    + "(is it running, and may this NATS user publish to \(pattern)?)")
            }
            throw AdminFailure(.unavailable, "NATS request failed: \(error)")
        }
        let response: Response
        do {
            response = try Response(protobuf: reply.payload)
        } catch {
            throw AdminFailure(.internalError, "undecodable response from the \(service): \(error)")
        }
        if let failure = response.error, !failure.code.isEmpty { throw AdminFailure(failure) }
        return response
    }
}
