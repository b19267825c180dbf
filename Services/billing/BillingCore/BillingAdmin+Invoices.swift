import Foundation
import Schemas
import ServiceKit
import Storage
import Tenancy

extension BillingAdmin {
    /// `YYYY-MM` → the month's first day (`YYYY-MM-01`) and whether it is over in `timeZone` (empty = UTC).
    static func month(_ text: String, timeZone: String = "") throws(AdminFailure) -> (firstDay: String, closed: Bool) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int(parts[0]),
              let month = Int(parts[1]), (2000...9999).contains(year), (1...12).contains(month) else {
            throw AdminFailure(.invalidArgument, "month must be YYYY-MM")
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: timeZone.isEmpty ? "UTC" : timeZone) ?? TimeZone(identifier: "UTC")!
        let next = calendar.date(from: DateComponents(year: month == 12 ? year + 1 : year,
                                                      month: month == 12 ? 1 : month + 1, day: 1))!
        return (String(format: "%04d-%02d-01", year, month), next <= Date())
    }

    /// A tenant's invoice for a month: one line per provider model and price version, amounts the sums of the
    /// requests' costs. A closed month's invoice is stored the first time and returned byte for byte after.
    public func invoice(_ request: InvoiceRequest) async throws(AdminFailure) -> InvoiceResponse {
        _ = try authenticate(request)
        guard TenantID.isValid(request.tenantID) else {
            throw AdminFailure(.invalidArgument, "tenant_id must match [a-z0-9][a-z0-9-]{0,62}")
        }
        let timeZone = directory?.snapshot(tenant: request.tenantID)?.tenant.timeZone ?? ""
        let (firstDay, closed) = try Self.month(request.month, timeZone: timeZone)
        let tenant = request.tenantID
        let monthText = request.month
        do {
            let invoice = try await pool.transaction { connection -> Invoice in
                if closed {
                    let stored = try await connection.query(
                        "SELECT body FROM billing_invoices WHERE tenant_id = $1 AND month = $2::date",
                        [.text(tenant), .text(firstDay)])
                    if let body = try stored.first?.decode([UInt8].self, at: 0) { return try Invoice(protobuf: body) }
                }
                let rows = try await connection.query("""
                    SELECT l.provider, l.model, COALESCE(l.price_id, 0), COALESCE(p.input_micros_per_million, 0),
                           COALESCE(p.output_micros_per_million, 0), count(*), sum(l.prompt_tokens),
                           sum(l.completion_tokens), sum(l.cost_micros)
                    FROM billing_ledger l LEFT JOIN billing_prices p ON p.id = l.price_id
                    WHERE l.tenant_id = $1 AND l.day >= $2::date AND l.day < $2::date + interval '1 month'
                      -- the lines' tenant-local days lie within a day of UTC: this bounds the index range
                      AND l.occurred_at >= ($2::date - 1) AT TIME ZONE 'UTC'
                      AND l.occurred_at < ($2::date + interval '1 month' + interval '1 day') AT TIME ZONE 'UTC'
                    GROUP BY 1, 2, 3, 4, 5
                    ORDER BY 1, 2, 3
                    """, [.text(tenant), .text(firstDay)])
                let currencies = try await connection.query("SELECT DISTINCT currency FROM billing_prices")
                var invoice = Invoice(tenantID: tenant, month: monthText,
                                      currency: try currencies.first?.decode(String.self, at: 0) ?? "USD",
                                      closed: closed)
                for row in rows {
                    let line = InvoiceLine(
                        provider: try row.decode(String.self, at: 0), model: try row.decode(String.self, at: 1),
                        priceID: try row.decode(Int64.self, at: 2),
                        inputMicrosPerMillion: try row.decode(Int64.self, at: 3),
                        outputMicrosPerMillion: try row.decode(Int64.self, at: 4),
                        requests: try row.decode(Int64.self, at: 5), promptTokens: try row.decode(Int64.self, at: 6),
                        completionTokens: try row.decode(Int64.self, at: 7),
                        amountMicros: try row.decode(Int64.self, at: 8))
                    invoice.lines.append(line)
                    invoice.requests += line.requests
                    invoice.promptTokens += line.promptTokens
                    invoice.completionTokens += line.completionTokens
                    invoice.totalMicros += line.amountMicros
                    if line.priceID == 0 { invoice.unpricedRequests += line.requests }
                }
                if closed {
                    _ = try await connection.execute("""
                        INSERT INTO billing_invoices (tenant_id, month, body) VALUES ($1, $2::date, $3)
                        ON CONFLICT DO NOTHING
                        """, [.text(tenant), .text(firstDay), .bytea(invoice.protobufBytes())])
                }
                return invoice
            }
            return InvoiceResponse(invoice: invoice)
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }

    /// Re-prices a tenant's ledger lines in [from, to) with the price table as it is now, rebuilds the running
    /// totals of the affected days and months from the ledger, drops stored invoices of the affected months,
    /// and writes an audit record — one transaction.
    public func recompute(_ request: RecomputeRequest) async throws(AdminFailure) -> RecomputeResponse {
        let actor = try authenticate(request)
        guard TenantID.isValid(request.tenantID) else {
            throw AdminFailure(.invalidArgument, "tenant_id must match [a-z0-9][a-z0-9-]{0,62}")
        }
        guard request.fromUnixNanos > 0, request.toUnixNanos > request.fromUnixNanos else {
            throw AdminFailure(.invalidArgument, "from and to are required, from before to")
        }
        let tenant = request.tenantID
        let range: [PostgresValue] = [.text(tenant), .int64(request.fromUnixNanos), .int64(request.toUnixNanos)]
        do {
            let response = try await pool.transaction { connection -> RecomputeResponse in
                // No ledger batch may commit while the totals are rebuilt (each batch holds this lock shared).
                _ = try await connection.query("SELECT pg_advisory_xact_lock($1)", [.int64(Ledger.writeLock)])
                let inRange = """
                    tenant_id = $1 AND occurred_at >= to_timestamp($2::double precision / 1e9)
                    AND occurred_at < to_timestamp($3::double precision / 1e9)
                    """
                let before = try await connection.query(
                    "SELECT count(*), COALESCE(sum(cost_micros), 0)::bigint FROM billing_ledger WHERE \(inRange)", range)
                let changed = try await connection.execute("""
                    UPDATE billing_ledger l SET price_id = n.price_id, cost_micros = n.cost_micros, unpriced = n.unpriced
                    FROM (
                        SELECT r.tenant_id, r.event_id, p.id AS price_id, p.id IS NULL AS unpriced,
                               COALESCE((r.prompt_tokens * p.input_micros_per_million
                                         + r.completion_tokens * p.output_micros_per_million + 500000) / 1000000, 0)
                                   AS cost_micros
                        FROM billing_ledger r
                        LEFT JOIN LATERAL (
                            SELECT id, input_micros_per_million, output_micros_per_million FROM billing_prices
                            WHERE provider = r.provider AND model = r.model AND effective_from <= r.occurred_at
                            ORDER BY effective_from DESC LIMIT 1
                        ) p ON true
                        WHERE r.\(inRange.replacingOccurrences(of: "AND occurred_at", with: "AND r.occurred_at"))
                    ) n
                    WHERE l.tenant_id = n.tenant_id AND l.event_id = n.event_id
                      AND (l.price_id IS DISTINCT FROM n.price_id OR l.cost_micros <> n.cost_micros)
                    """, range)
                // Rebuild the totals of every day the range touches (and with them its months), from the ledger.
                let days = """
                    SELECT DISTINCT day AS start FROM billing_ledger
                    WHERE \(inRange)
                    """
                _ = try await connection.execute("""
                    DELETE FROM billing_totals t USING (\(days)) a
                    WHERE t.tenant_id = $1 AND t.period = 'day' AND t.period_start = a.start
                    """, range)
                _ = try await connection.execute("""
                    INSERT INTO billing_totals (tenant_id, period, period_start, agent, provider, model, requests,
                                                prompt_tokens, completion_tokens, cost_micros, unpriced_requests,
                                                estimated_requests)
                    SELECT l.tenant_id, 'day', a.start, l.agent, l.provider, l.model, count(*), sum(l.prompt_tokens),
                           sum(l.completion_tokens), sum(l.cost_micros), count(*) FILTER (WHERE l.unpriced),
                           count(*) FILTER (WHERE l.estimated)
                    FROM billing_ledger l JOIN (\(days)) a ON l.day = a.start
                    WHERE l.tenant_id = $1
                    GROUP BY 1, 2, 3, 4, 5, 6
                    """, range)
                _ = try await connection.execute("""
                    UPDATE billing_conversations c SET cost_micros = s.cost
                    FROM (SELECT conversation_id, sum(cost_micros) AS cost FROM billing_ledger
                          WHERE tenant_id = $1 AND conversation_id <> '' AND conversation_id IN (
                              SELECT conversation_id FROM billing_ledger WHERE \(inRange))
                          GROUP BY 1) s
                    WHERE c.tenant_id = $1 AND c.conversation_id = s.conversation_id
                    """, range)
                let dropped = try await connection.execute("""
                    DELETE FROM billing_invoices WHERE tenant_id = $1 AND month IN (
                        SELECT DISTINCT date_trunc('month', day)::date FROM billing_ledger
                        WHERE \(inRange))
                    """, range)
                let after = try await connection.query(
                    "SELECT COALESCE(sum(cost_micros), 0)::bigint FROM billing_ledger WHERE \(inRange)", range)
                let response = RecomputeResponse(
                    lines: try before.first?.decode(Int64.self, at: 0) ?? 0, changedLines: Int64(changed),
                    costBeforeMicros: try before.first?.decode(Int64.self, at: 1) ?? 0,
                    costAfterMicros: try after.first?.decode(Int64.self, at: 0) ?? 0)
                let detail = "from=\(request.fromUnixNanos) to=\(request.toUnixNanos) lines=\(response.lines) "
                    + "changed=\(response.changedLines) cost_before=\(response.costBeforeMicros) "
                    + "cost_after=\(response.costAfterMicros) invoices_dropped=\(dropped)"
                _ = try await connection.execute(
                    "INSERT INTO billing_audit (actor, action, tenant_id, detail) VALUES ($1, 'billing.recompute', $2, $3)",
                    [.text(actor), .text(tenant), .text(detail)])
                return response
            }
            logger.info("billing recomputed", metadata: ["tenant": "\(tenant)", "actor": "\(actor)",
                                                         "changed": "\(response.changedLines)"])
            await afterRecompute?()
            return response
        } catch let failure as AdminFailure {
            throw failure
        } catch {
            throw Self.storageFailure(error)
        }
    }
}
