import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import Storage
import Tenancy

/// Answers the gateways' usage queries (`billing.query.usage`, for `GET /v1/usage`): a `UsageReportRequest`
/// whose tenant the gateway took from the caller's API key. No admin token: only the platform's service users
/// can publish here, and the gateway never lets a caller choose the tenant. Replicas share a queue group.
public enum UsageQueryService {
    public static func responder(connection: NATSConnection, pool: PostgresPool, logger: Logger)
        -> NATSResponderService
    {
        NATSResponderService(connection: connection, subject: Subjects.billingUsageQuery,
                             queueGroup: ServiceName.billing.rawValue, maxInFlight: 16, logger: logger) { message in
            await answer(message.payload, pool: pool).protobufBytes()
        }
    }

    static func answer(_ payload: [UInt8], pool: PostgresPool) async -> UsageReportResponse {
        do {
            return try await BillingAdmin.usageReport(try UsageReportRequest(protobuf: payload), pool: pool)
        } catch let failure as AdminFailure {
            return UsageReportResponse(error: failure.adminError)
        } catch {
            return UsageReportResponse(error: AdminFailure(.invalidArgument, "malformed usage query").adminError)
        }
    }
}
