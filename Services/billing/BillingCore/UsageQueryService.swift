import Contracts
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Storage
import Tenancy

/// Answers the gateways' usage queries (`billing.query.usage`, for `GET /v1/usage`): a `UsageReportRequest`
/// whose tenant the gateway took from the caller's API key. No admin token: only the platform's service users
/// can publish here, and the gateway never lets a caller choose the tenant. Replicas share a queue group.
public struct UsageQueryService: Service {
    let connection: NATSConnection
    let pool: PostgresPool
    let logger: Logger

    public init(connection: NATSConnection, pool: PostgresPool, logger: Logger) {
        self.connection = connection
        self.pool = pool
        self.logger = logger
    }

    public func run() async throws {
        let subscription = try connection.subscribe(Subjects.billingUsageQuery, queue: ServiceName.billing.rawValue)
        try await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                var inFlight = 0
                for await message in subscription.messages {
                    if inFlight >= 16 {
                        await group.next()
                        inFlight -= 1
                    }
                    inFlight += 1
                    group.addTask { await self.answer(message) }
                }
            }
        }
        subscription.unsubscribe()
    }

    func answer(_ message: NATSMessage) async {
        guard let reply = message.reply, ReplySubjects.isInbox(reply) else { return }
        var response: UsageReportResponse
        do {
            let request = try UsageReportRequest(protobuf: message.payload)
            response = try await BillingAdmin.usageReport(request, pool: pool)
        } catch let failure as AdminFailure {
            response = UsageReportResponse(error: failure.adminError)
        } catch {
            response = UsageReportResponse(error: AdminFailure(.invalidArgument, "malformed usage query").adminError)
        }
        do {
            try connection.publish(reply, payload: response.protobufBytes())
        } catch {
            logger.warning("usage query reply failed", metadata: ["error": "\(error)"])
        }
    }
}
