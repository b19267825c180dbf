import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Schemas
import ServiceKit
import Storage
import Tenancy

/// `GET /dashboard[?tenant=T]` on the analytics admin port: the platform's (or one tenant's) last hour — requests
/// per minute, error and handoff rates, p95 per hop, consent outcomes, cost per conversation, canary vs stable —
/// drawn as SVG by the service (no script, no third-party code), refreshed every 10 s by the browser.
/// Authenticated with the admin token: as HTTP Basic credentials (any user name, the token as password, so a
/// browser asks for it) or `Authorization: Bearer <token>`.
public struct Dashboard: Sendable {
    let pool: PostgresPool
    let authenticator: AdminAuthenticator
    let logger: Logger
    /// The window shown.
    static let minutes: Int64 = 60

    public init(pool: PostgresPool, authenticator: AdminAuthenticator, logger: Logger) {
        self.pool = pool
        self.authenticator = authenticator
        self.logger = logger
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        router.get("/dashboard") { request, _ in await self.page(request) }
    }

    func page(_ request: Request) async -> Response {
        guard let token = Self.token(request.headers[.authorization]), authenticator.authenticate(token) != nil else {
            var headers = HTTPFields()
            headers[.wwwAuthenticate] = "Basic realm=\"Switchyard analytics\", charset=\"UTF-8\""
            headers[.contentType] = "text/plain; charset=utf-8"
            return Response(status: .unauthorized, headers: headers,
                            body: .init(byteBuffer: ByteBuffer(string: "the admin token is required (as the password)\n")))
        }
        let tenant = request.uri.queryParameters.get("tenant") ?? ""
        guard tenant.isEmpty || TenantID.isValid(tenant) else {
            return Self.html(.badRequest, "<p>tenant must match [a-z0-9][a-z0-9-]{0,62}</p>")
        }
        do {
            let body = try await render(tenant: tenant)
            return Self.html(.ok, body)
        } catch {
            logger.error("dashboard query failed", metadata: ["error": "\(error)"])
            return Self.html(.serviceUnavailable, "<p>the analytics database is unavailable; this page retries in 10 s</p>")
        }
    }

    /// The token of `Basic base64(user:token)` or `Bearer token`.
    static func token(_ header: String?) -> String? {
        guard let header else { return nil }
        if header.hasPrefix("Bearer ") { return String(header.dropFirst(7)) }
        guard header.hasPrefix("Basic "), let data = Data(base64Encoded: String(header.dropFirst(6))),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") else { return nil }
        return String(text[text.index(after: colon)...])
    }

    // MARK: data

    struct MinuteFigures {
        var minute: Int64
        var requests: Int64
        var failures: Int64
        var handoffs: Int64
        var completions: Int64
        var p95Micros: Int64
    }

    func render(tenant: String) async throws -> String {
        let end = EventFact.minute(of: EventClock.nowUnixNanos()) + 60
        let first = end - Self.minutes * 60
        func query(_ columns: [String], conversations: Bool = false) -> StatsQuery {
            StatsQuery(pool: pool, tenant: tenant, first: first, end: end, agent: "", columns: columns, byHop: false,
                       withConversations: conversations)
        }
        let total = try await query([], conversations: true).run().first ?? StatsRow()
        let cohorts = try await query(["s.agent", "s.rollout_cohort"]).run()
        let perMinute = try await minuteSeries(tenant: tenant, first: first, end: end)
        return Self.document(tenant: tenant, first: first, end: end, total: total, cohorts: cohorts, minutes: perMinute)
    }

    /// Requests, failures, handoffs and the p95 of the whole path per minute.
    func minuteSeries(tenant: String, first: Int64, end: Int64) async throws -> [MinuteFigures] {
        var byMinute: [Int64: MinuteFigures] = [:]
        for row in try await pool.query("""
            SELECT extract(epoch FROM r.minute)::bigint, sum(r.requests)::bigint, sum(r.failures)::bigint,
                   sum(r.handoffs)::bigint, sum(r.completions)::bigint
            FROM analytics_minutes r JOIN analytics_series s ON s.id = r.series_id
            WHERE ($1 = '' OR s.tenant_id = $1) AND r.minute >= to_timestamp($2) AND r.minute < to_timestamp($3)
            GROUP BY 1
            """, [.text(tenant), .int64(first), .int64(end)]) {
            let minute = try row.decode(Int64.self, at: 0)
            byMinute[minute] = MinuteFigures(minute: minute, requests: try row.decode(Int64.self, at: 1),
                                             failures: try row.decode(Int64.self, at: 2),
                                             handoffs: try row.decode(Int64.self, at: 3),
                                             completions: try row.decode(Int64.self, at: 4), p95Micros: 0)
        }
        var histograms: [Int64: [(bucket: Int, count: Int64)]] = [:]
        for row in try await pool.query("""
            SELECT extract(epoch FROM r.minute)::bigint, r.bucket, sum(r.samples)::bigint
            FROM analytics_latency r JOIN analytics_series s ON s.id = r.series_id
            WHERE ($1 = '' OR s.tenant_id = $1) AND r.minute >= to_timestamp($2) AND r.minute < to_timestamp($3)
              AND r.hop = 'total'
            GROUP BY 1, 2
            """, [.text(tenant), .int64(first), .int64(end)]) {
            histograms[try row.decode(Int64.self, at: 0), default: []].append(
                (Int(try row.decode(Int32.self, at: 1)), try row.decode(Int64.self, at: 2)))
        }
        for (minute, buckets) in histograms {
            byMinute[minute, default: MinuteFigures(minute: minute, requests: 0, failures: 0, handoffs: 0,
                                                    completions: 0, p95Micros: 0)].p95Micros =
                LatencyBuckets.quantile(0.95, of: buckets)
        }
        // Every minute of the window, zero where nothing happened (a gap is traffic that stopped, not missing data).
        return stride(from: first, to: end, by: 60).map {
            byMinute[$0] ?? MinuteFigures(minute: $0, requests: 0, failures: 0, handoffs: 0, completions: 0, p95Micros: 0)
        }
    }

    // MARK: HTML and SVG

    static func html(_ status: HTTPResponse.Status, _ body: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        // Nothing but this page's own markup and styles: no scripts, no third-party code.
        headers[HTTPField.Name("Content-Security-Policy")!] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }

    static func percent(_ part: Int64, _ whole: Int64) -> String {
        whole == 0 ? "–" : String(format: "%.1f %%", Double(part) * 100 / Double(whole))
    }

    static func millis(_ micros: Int64) -> String { String(format: "%.1f ms", Double(micros) / 1000) }

    static func money(_ micros: Int64) -> String { String(format: "%.6f", Double(micros) / 1e6) }

    static func document(tenant: String, first: Int64, end: Int64, total: StatsRow, cohorts: [StatsRow],
                         minutes: [MinuteFigures]) -> String {
        let scope = tenant.isEmpty ? "the platform" : "tenant \(escape(tenant))"
        let totalHop = total.latency.first { $0.hop == HopLatency.total }
        let costPerConversation = total.conversations > 0 ? money(total.costMicros / total.conversations) : "–"
        let cards = [
            ("requests/s (last minute with traffic)", String(format: "%.2f", Double(minutes.last { $0.requests > 0 }?.requests ?? 0) / 60)),
            ("requests (hour)", String(total.requests)),
            ("error rate", percent(total.failures, total.requests)),
            ("handoff rate", percent(total.handoffs, total.completions)),
            ("p95 whole path", totalHop.map { millis($0.p95Micros) } ?? "–"),
            ("cost per conversation", costPerConversation + (total.unpricedCompletions > 0 ? " (+\(total.unpricedCompletions) unpriced)" : "")),
        ].map { "<div class=\"card\"><div class=\"label\">\($0.0)</div><div class=\"value\">\($0.1)</div></div>" }
        let charts = [
            lineChart(id: "requests", title: "Requests per second", values: minutes.map { Double($0.requests) / 60 },
                      format: { String(format: "%.1f/s", $0) }),
            lineChart(id: "errors", title: "Error rate", values: minutes.map {
                $0.requests == 0 ? 0 : Double($0.failures) * 100 / Double($0.requests) }, format: { String(format: "%.1f %%", $0) }),
            lineChart(id: "handoffs", title: "Handoff rate", values: minutes.map {
                $0.completions == 0 ? 0 : Double($0.handoffs) * 100 / Double($0.completions) }, format: { String(format: "%.1f %%", $0) }),
            lineChart(id: "p95", title: "p95 of the whole path per minute", values: minutes.map { Double($0.p95Micros) / 1000 },
                      format: { String(format: "%.1f ms", $0) }),
            barChart(id: "hops", title: "p95 per hop (hour)", bars: total.latency.map { ($0.hop, Double($0.p95Micros) / 1000) },
                     format: { String(format: "%.1f ms", $0) }),
            barChart(id: "consent", title: "Consent checks (hour)", bars: [
                ("asked", Double(total.consentAsked)), ("granted", Double(total.consentGranted)),
                ("denied", Double(total.consentDenied))], format: { String(format: "%.0f", $0) }),
        ]
        var rows = ""
        for agent in Set(cohorts.map(\.agent)).sorted() {
            for row in cohorts where row.agent == agent {
                let p95 = row.latency.first { $0.hop == HopLatency.total }.map { millis($0.p95Micros) } ?? "–"
                rows += "<tr><td>\(escape(agent))</td><td>\(escape(row.rolloutCohort.isEmpty ? "–" : row.rolloutCohort))</td>"
                    + "<td>\(row.requests)</td><td>\(percent(row.failures, row.requests))</td>"
                    + "<td>\(percent(row.handoffs, row.completions))</td><td>\(p95)</td></tr>"
            }
        }
        let from = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(first)))
        let to = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(end)))
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
            <title>Switchyard analytics — \(scope)</title>
            <style>
            body { font: 14px system-ui, sans-serif; margin: 24px; color: #1d2433; background: #f6f7f9; }
            h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #5b6478; margin-bottom: 16px; }
            .cards { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 16px; }
            .card, .panel { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px; }
            .label { color: #5b6478; font-size: 12px; } .value { font-size: 20px; font-weight: 600; margin-top: 4px; }
            .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin-bottom: 16px; }
            .panel h2 { font-size: 14px; margin: 0 0 8px; } svg { width: 100%; height: auto; }
            table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; }
            </style></head><body>
            <h1>Switchyard analytics — \(scope)</h1>
            <div class="sub">\(from) to \(to), by minute; refreshed every 10 s</div>
            <div class="cards">\(cards.joined())</div>
            <div class="charts">\(charts.joined())</div>
            <div class="panel"><h2>Canary vs stable (hour)</h2>
            <table><tr><th>agent</th><th>cohort</th><th>requests</th><th>error rate</th><th>handoff rate</th><th>p95</th></tr>
            \(rows.isEmpty ? "<tr><td colspan=\"6\">no traffic</td></tr>" : rows)</table></div>
            </body></html>
            """
    }

    /// A line over the window's minutes; `data-points` counts the minutes with a non-zero value (0 = empty chart).
    static func lineChart(id: String, title: String, values: [Double], format: (Double) -> String) -> String {
        let width = 560.0, height = 180.0, left = 56.0, bottom = 24.0
        let top = max(values.max() ?? 0, 0.000_001)
        let step = values.count > 1 ? (width - left - 8) / Double(values.count - 1) : 0
        let points = values.enumerated().map { index, value in
            String(format: "%.1f,%.1f", left + Double(index) * step, height - bottom - value / top * (height - bottom - 12))
        }.joined(separator: " ")
        let nonZero = values.filter { $0 > 0 }.count
        return """
            <div class="panel"><h2>\(escape(title))</h2>
            <svg class="chart" id="chart-\(id)" data-points="\(nonZero)" viewBox="0 0 \(Int(width)) \(Int(height))" role="img">
            <line x1="\(left)" y1="\(height - bottom)" x2="\(width - 8)" y2="\(height - bottom)" stroke="#c5cad3"/>
            <line x1="\(left)" y1="12" x2="\(left)" y2="\(height - bottom)" stroke="#c5cad3"/>
            <text x="\(left - 4)" y="16" font-size="10" text-anchor="end" fill="#5b6478">\(escape(format(top)))</text>
            <text x="\(left - 4)" y="\(height - bottom)" font-size="10" text-anchor="end" fill="#5b6478">0</text>
            <text x="\(left)" y="\(height - 6)" font-size="10" fill="#5b6478">−60 min</text>
            <text x="\(width - 8)" y="\(height - 6)" font-size="10" text-anchor="end" fill="#5b6478">now</text>
            <polyline fill="none" stroke="#2f6fde" stroke-width="2" points="\(points)"/>
            </svg></div>
            """
    }

    /// Horizontal bars; `data-points` counts the bars with a non-zero value.
    static func barChart(id: String, title: String, bars: [(String, Double)], format: (Double) -> String) -> String {
        let width = 560.0, rowHeight = 26.0, labelWidth = 200.0
        let top = max(bars.map(\.1).max() ?? 0, 0.000_001)
        let height = max(rowHeight * Double(bars.count) + 8, 40)
        var body = ""
        for (index, (label, value)) in bars.enumerated() {
            let y = 4 + Double(index) * rowHeight
            let length = value / top * (width - labelWidth - 90)
            body += "<text x=\"\(labelWidth - 6)\" y=\"\(y + 16)\" font-size=\"11\" text-anchor=\"end\" fill=\"#1d2433\">\(escape(label))</text>"
                + String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.1f\" height=\"18\" fill=\"#2f6fde\"/>", labelWidth, y + 3, length)
                + String(format: "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" fill=\"#5b6478\">", labelWidth + length + 6, y + 16)
                + "\(escape(format(value)))</text>"
        }
        if bars.isEmpty { body = "<text x=\"10\" y=\"24\" font-size=\"12\" fill=\"#5b6478\">no data</text>" }
        return """
            <div class="panel"><h2>\(escape(title))</h2>
            <svg class="chart" id="chart-\(id)" data-points="\(bars.filter { $0.1 > 0 }.count)" viewBox="0 0 \(Int(width)) \(Int(height))" role="img">\(body)</svg></div>
            """
    }
}
