import Foundation
import Logging
import Schemas
import ServiceKit
import ServiceKitPostgres
import Storage
import Tenancy

/// The billing service's admin commands (`admin.billing.*`, `POST /admin/v1/billing/*`): price versions and
/// usage reports. Every command needs an admin token (`SWITCHYARD_ADMIN_TOKENS`, the same as the tenant
/// service's); the authenticated name is recorded as a price's `created_by`.
public struct BillingAdmin: Sendable {
    let pool: PostgresPool
    let authenticator: AdminAuthenticator
    let logger: Logger
    /// The tenancy mirror: a tenant's time zone decides when its invoice month is closed.
    var directory: TenantDirectory?
    /// Runs after a recompute committed (billing republishes the budget figures, which it may have lowered).
    var afterRecompute: (@Sendable () async -> Void)?

    /// The highest price accepted, in micro-units per million tokens (100,000 currency units): it keeps
    /// `tokens × price` far inside 64 bits for the largest request billing accepts.
    public static let maxMicrosPerMillion: Int64 = 100_000_000_000

    public init(pool: PostgresPool, authenticator: AdminAuthenticator, logger: Logger) {
        self.pool = pool
        self.authenticator = authenticator
        self.logger = logger
    }

    /// The audited actor (see `AdminAuthenticator.actor(for:)`).
    func authenticate(_ request: some AdminRequest) throws(AdminFailure) -> String {
        try authenticator.actor(for: request)
    }

    /// Provider and model names: what providers use (`gpt-4o-mini`, `claude-3-5-sonnet-20241022`,
    /// `meta-llama/Llama-3.1-8B`), at most 128 bytes.
    static func name(_ value: String, field: String) throws(AdminFailure) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+-".utf8)
        guard !value.isEmpty, value.utf8.count <= 128, value.utf8.allSatisfy(allowed.contains) else {
            throw AdminFailure(.invalidArgument, "\(field) must be 1–128 characters of [A-Za-z0-9._:/@+-]")
        }
        return value
    }

    // MARK: prices

    public func setPrice(_ request: SetPriceRequest) async throws(AdminFailure) -> SetPriceResponse {
        let actor = try authenticate(request)
        guard var price = request.price else { throw AdminFailure(.invalidArgument, "price is required") }
        price.provider = try Self.name(price.provider, field: "provider")
        price.model = try Self.name(price.model, field: "model")
        for (field, value) in [("input_micros_per_million", price.inputMicrosPerMillion),
                               ("output_micros_per_million", price.outputMicrosPerMillion)]
            where value < 0 || value > Self.maxMicrosPerMillion {
            throw AdminFailure(.invalidArgument, "\(field) must be between 0 and \(Self.maxMicrosPerMillion)")
        }
        price.currency = price.currency.isEmpty ? "USD" : price.currency
        guard price.currency.utf8.count == 3, price.currency.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }) else {
            throw AdminFailure(.invalidArgument, "currency must be an ISO 4217 code such as USD or EUR")
        }
        if price.effectiveFromUnixNanos == 0 { price.effectiveFromUnixNanos = EventClock.nowUnixNanos() }
        guard price.effectiveFromUnixNanos > 0 else {
            throw AdminFailure(.invalidArgument, "effective_from must be a time after 1970")
        }
        price.createdBy = actor
        let candidate = price
        do {
            let stored = try await pool.transaction { connection -> Price in
                // One currency for the whole price table: totals add costs across models.
                _ = try await connection.execute("LOCK TABLE billing_prices IN SHARE ROW EXCLUSIVE MODE")
                let currencies = try await connection.query("SELECT DISTINCT currency FROM billing_prices")
                if let existing = try currencies.first?.decode(String.self, at: 0), existing != candidate.currency {
                    throw AdminFailure(.conflict, "prices are in \(existing); all prices must use one currency")
                }
                let rows = try await connection.query("""
                    INSERT INTO billing_prices (provider, model, effective_from, input_micros_per_million,
                                                output_micros_per_million, currency, created_by)
                    VALUES ($1, $2, to_timestamp($3::double precision / 1e9), $4, $5, $6, $7)
                    ON CONFLICT (provider, model, effective_from) DO NOTHING
                    RETURNING id
                    """, [.text(candidate.provider), .text(candidate.model), .int64(candidate.effectiveFromUnixNanos),
                          .int64(candidate.inputMicrosPerMillion), .int64(candidate.outputMicrosPerMillion),
                          .text(candidate.currency), .text(candidate.createdBy)])
                guard let id = try rows.first?.decode(Int64.self, at: 0) else {
                    throw AdminFailure(.conflict, "a price for this provider and model already starts at that time")
                }
                var stored = candidate
                stored.id = id
                return stored
            }
            logger.info("price set", metadata: [
                "provider": "\(stored.provider)", "model": "\(stored.model)", "actor": "\(actor)",
            ])
            return SetPriceResponse(price: stored)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    public func listPrices(_ request: ListPricesRequest) async throws(AdminFailure) -> ListPricesResponse {
        _ = try authenticate(request)
        let provider = request.provider.isEmpty ? "" : try Self.name(request.provider, field: "provider")
        let model = request.model.isEmpty ? "" : try Self.name(request.model, field: "model")
        do {
            let rows = try await pool.query("""
                SELECT id, provider, model, (extract(epoch FROM effective_from) * 1e9)::bigint,
                       input_micros_per_million, output_micros_per_million, currency, created_by
                FROM billing_prices
                WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR model = $2)
                ORDER BY provider, model, effective_from
                """, [.text(provider), .text(model)])
            return ListPricesResponse(prices: try rows.map { row in
                Price(id: try row.decode(Int64.self, at: 0), provider: try row.decode(String.self, at: 1),
                      model: try row.decode(String.self, at: 2),
                      effectiveFromUnixNanos: try row.decode(Int64.self, at: 3),
                      inputMicrosPerMillion: try row.decode(Int64.self, at: 4),
                      outputMicrosPerMillion: try row.decode(Int64.self, at: 5),
                      currency: try row.decode(String.self, at: 6), createdBy: try row.decode(String.self, at: 7))
            })
        } catch {
            throw Self.storageFailure(error)
        }
    }

    // MARK: usage

    /// The groupings of a usage report and the ledger expression each groups by.
    static let groupings: [String: String] = [
        "day": "to_char(day, 'YYYY-MM-DD')",  // the tenant-local day each line counts toward
        "agent": "agent",
        "model": "provider || '/' || model",
        "conversation": "conversation_id",
    ]

    public func usage(_ request: UsageReportRequest) async throws(AdminFailure) -> UsageReportResponse {
        _ = try authenticate(request)
        return try await Self.usageReport(request, pool: pool)
    }

    /// A tenant's usage from the ledger, grouped (shared by the admin command and the gateways' query).
    static func usageReport(_ request: UsageReportRequest, pool: PostgresPool) async throws(AdminFailure)
        -> UsageReportResponse
    {
        guard TenantID.isValid(request.tenantID) else {
            throw AdminFailure(.invalidArgument, "tenant_id must match [a-z0-9][a-z0-9-]{0,62}")
        }
        let by = request.by.isEmpty ? "day" : request.by
        guard let expression = Self.groupings[by] else {
            throw AdminFailure(.invalidArgument, "by must be one of: day, agent, model, conversation")
        }
        let to = request.toUnixNanos == 0 ? Int64.max : request.toUnixNanos
        guard request.fromUnixNanos >= 0, to > request.fromUnixNanos else {
            throw AdminFailure(.invalidArgument, "from must be before to")
        }
        do {
            // The grouping expression comes from the fixed table above, never from the request.
            let rows = try await pool.query("""
                SELECT \(expression) AS key, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros),
                       count(*) FILTER (WHERE unpriced), count(*) FILTER (WHERE estimated)
                FROM billing_ledger
                WHERE tenant_id = $1
                  AND occurred_at >= to_timestamp($2::double precision / 1e9)
                  AND ($3 = 9223372036854775807 OR occurred_at < to_timestamp($3::double precision / 1e9))
                GROUP BY 1
                ORDER BY 1
                LIMIT 10001
                """, [.text(request.tenantID), .int64(request.fromUnixNanos), .int64(to)])
            guard rows.count <= 10_000 else {
                throw AdminFailure(.invalidArgument, "more than 10,000 groups: narrow the time range")
            }
            var total = UsageRow(key: "total")
            let groups = try rows.map { row -> UsageRow in
                let usage = UsageRow(
                    key: try row.decode(String.self, at: 0), requests: try row.decode(Int64.self, at: 1),
                    promptTokens: try row.decode(Int64.self, at: 2), completionTokens: try row.decode(Int64.self, at: 3),
                    costMicros: try row.decode(Int64.self, at: 4), unpricedRequests: try row.decode(Int64.self, at: 5),
                    estimatedRequests: try row.decode(Int64.self, at: 6))
                total.requests += usage.requests
                total.promptTokens += usage.promptTokens
                total.completionTokens += usage.completionTokens
                total.costMicros += usage.costMicros
                total.unpricedRequests += usage.unpricedRequests
                total.estimatedRequests += usage.estimatedRequests
                return usage
            }
            return UsageReportResponse(rows: groups, total: total)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    static func storageFailure(_ error: any Error) -> AdminFailure { .storage(error, service: "billing") }
}

/// Routes `admin.billing.<command>` to ``BillingAdmin``.
public struct BillingAdminDispatcher: AdminCommandDispatcher {
    let admin: BillingAdmin

    public init(admin: BillingAdmin) { self.admin = admin }

    public var service: String { BillingAdminCommand.service }
    public var commandNames: [String] { BillingAdminCommand.allCases.map(\.rawValue) }

    public func handle(command name: String, body: [UInt8], wire: AdminWire, bearerToken: String?) async
        -> (error: AdminErrorCode?, body: [UInt8])?
    {
        guard let command = BillingAdminCommand(rawValue: name) else { return nil }
        let a = admin
        switch command {
        case .priceSet:
            return await AdminCall.run(body, wire, bearerToken, SetPriceRequest.self) { r throws(AdminFailure) in
                try await a.setPrice(r)
            }
        case .priceList:
            return await AdminCall.run(body, wire, bearerToken, ListPricesRequest.self) { r throws(AdminFailure) in
                try await a.listPrices(r)
            }
        case .usage:
            return await AdminCall.run(body, wire, bearerToken, UsageReportRequest.self) { r throws(AdminFailure) in
                try await a.usage(r)
            }
        case .invoice:
            return await AdminCall.run(body, wire, bearerToken, InvoiceRequest.self) { r throws(AdminFailure) in
                try await a.invoice(r)
            }
        case .recompute:
            return await AdminCall.run(body, wire, bearerToken, RecomputeRequest.self) { r throws(AdminFailure) in
                try await a.recompute(r)
            }
        }
    }
}
