import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import Telemetry
import Tenancy

/// Budget admission at the gateway (docs/adr/0014): for a tenant whose plan has a daily or monthly budget, each
/// request takes a hold of the tenant's request estimate in its KV `budgets` entry, with a compare-and-set that
/// every replica goes through, or is refused with 429 `insufficient_quota`. Tenants without a budget cost
/// nothing here: no KV round trip.
struct BudgetGate: Sendable {
    let book: BudgetBook
    let jetStream: JetStream
    /// How long a hold counts if billing never settles it (a request that left no usage).
    let lease: Duration
    let metrics: TelemetryMetrics
    let logger: Logger

    /// nil = admitted (and a hold taken); otherwise the error to answer with.
    func admit(tenant: String, requestID: String, limits: BudgetLimits, timeZone: String) async -> GatewayError? {
        let now = EventClock.nowUnixNanos()
        let decision: BudgetDecision?
        do {
            decision = try await book.modify(tenant: tenant) { state -> (write: Bool, result: BudgetDecision?) in
                guard var current = state else { return (false, nil) }
                let decision = current.admit(requestID: requestID, limits: limits, nowUnixNanos: now, lease: lease,
                                             timeZone: timeZone)
                switch decision {
                case .admitted:
                    state = current
                    return (true, decision)
                case .refused(_, _, _, _, _, let notices):
                    // Only the event flags changed: write them so the event goes out once per period.
                    if !notices.isEmpty { state = current }
                    return (!notices.isEmpty, decision)
                case .probing:
                    return (false, decision)
                }
            }
        } catch {
            count("unavailable", period: "none", tenant: tenant)
            logger.error("budget check failed", metadata: [LogKey.tenantID: "\(tenant)", "error": "\(error)"])
            return .serviceUnavailable("The account's budget cannot be checked right now; retry shortly.",
                                       retryAfterSeconds: 1)
        }
        switch decision {
        case nil:
            // Billing publishes a budgeted tenant's figures within a second of the budget being set; until then
            // the spend is unknown, and a request is not admitted on missing data.
            count("unavailable", period: "none", tenant: tenant)
            return .serviceUnavailable("The account's budget figures are not available yet; retry shortly.",
                                       retryAfterSeconds: 1)
        case .probing:
            count("probing", period: "none", tenant: tenant)
            return .rateLimitExceeded(retryAfterSeconds: 1, message: "The account has a budget and the cost of its "
                + "requests is not known yet: its first request runs alone until it has been priced.")
        case .admitted(_, let notices)?:
            await publish(notices, tenant: tenant)
            return nil
        case .refused(let period, let limit, let committed, let estimate, let retryAfter, let notices)?:
            await publish(notices, tenant: tenant)
            count("refused", period: period, tenant: tenant)
            let message = "The request would exceed the account's \(period) budget of \(limit) micro-units "
                + "(committed \(committed), a request is estimated at \(estimate)). The budget resets at the start "
                + "of the next \(period == "daily" ? "day" : "month") (\(timeZone.isEmpty ? "UTC" : timeZone))."
            return .budgetExceeded(message, retryAfterSeconds: retryAfter)
        }
    }

    /// Drops the hold of a request that was admitted but never published (so it can't reach billing).
    func release(tenant: String, requestID: String) async {
        do {
            try await book.modify(tenant: tenant) { state -> (write: Bool, result: Void) in
                guard var current = state, current.release(requestID: requestID) else { return (false, ()) }
                state = current
                return (true, ())
            }
        } catch {
            logger.warning("budget hold not released; it expires with its lease", metadata: [
                LogKey.tenantID: "\(tenant)", LogKey.requestID: "\(requestID)", "error": "\(error)",
            ])
        }
    }

    private func publish(_ notices: [BudgetNotice], tenant: String) async {
        for notice in notices {
            do {
                _ = try await jetStream.publishEvent(notice.eventKind, tenant: tenant, eventID: notice.eventID(tenant: tenant),
                                                     payload: notice.payload(tenant: tenant,
                                                                             producer: ServiceName.apiGateway.rawValue))
            } catch {
                logger.error("budget event not published", metadata: [
                    LogKey.tenantID: "\(tenant)", "event": "\(notice.eventKind.rawValue)", "error": "\(error)",
                ])
            }
        }
    }

    private func count(_ outcome: String, period: String, tenant: String) {
        metrics.counter(.gatewayBudgetRejectionsTotal, [(.tenant, tenant), (.period, period), (.outcome, outcome)])
            .increment()
    }
}
