import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Messaging
import Schemas

extension ChatGateway {
    /// `GET /v1/usage?from=2026-11-01&to=2026-12-01&group_by=day|agent|model|conversation`: the caller's own
    /// tenant's usage and cost from the billing ledger (the tenant comes from the API key, never from the
    /// request). `from` and `to` are dates (UTC) or RFC 3339 times; both optional.
    func usage(_ request: Request) async -> Response {
        let tenant: String
        switch authenticate(request) {
        case .failure(let error): return Self.errorResponse(error, requestID: nil)
        case .success(let (auth, _)): tenant = auth.tenantID
        }
        let query = request.uri.queryParameters
        var report = UsageReportRequest(tenantID: tenant)
        for (name, target) in [("from", \UsageReportRequest.fromUnixNanos), ("to", \UsageReportRequest.toUnixNanos)] {
            guard let text = query[name[...]].map(String.init) else { continue }
            guard let nanos = Self.parseTime(text) else {
                return Self.errorResponse(.invalidRequest("'\(name)' must be a date (2026-11-01) or an RFC 3339 time.",
                                                          param: name), requestID: nil)
            }
            report[keyPath: target] = nanos
        }
        let groupBy = query["group_by"].map(String.init) ?? "day"
        guard ["day", "agent", "model", "conversation"].contains(groupBy) else {
            return Self.errorResponse(.invalidRequest("'group_by' must be one of day, agent, model, conversation.",
                                                      param: "group_by"), requestID: nil)
        }
        report.by = groupBy
        let answer: UsageReportResponse
        do {
            let reply = try await jetStream.connection.request(Subjects.billingUsageQuery,
                                                               payload: report.protobufBytes(), timeout: .seconds(10))
            answer = try UsageReportResponse(protobuf: reply.payload)
        } catch {
            return Self.errorResponse(.serviceUnavailable("Usage is unavailable right now; retry shortly.",
                                                          retryAfterSeconds: 2), requestID: nil)
        }
        if let failure = answer.error, !failure.code.isEmpty {
            return Self.errorResponse(failure.code == "invalid_argument"
                ? .invalidRequest(failure.message)
                : .serviceUnavailable("Usage is unavailable right now; retry shortly.", retryAfterSeconds: 2),
                requestID: nil)
        }
        var json = JSONWriter(capacity: 256 + 160 * answer.rows.count)
        json.raw(#"{"object":"usage","tenant":"#)
        json.string(tenant)
        json.raw(#","group_by":"#)
        json.string(groupBy)
        json.raw(#","data":["#)
        for (index, row) in answer.rows.enumerated() {
            if index > 0 { json.raw(",") }
            Self.write(row, to: &json)
        }
        json.raw(#"],"total":"#)
        Self.write(answer.total ?? UsageRow(key: "total"), to: &json)
        json.raw("}")
        return Self.json(.ok, json.bytes, requestID: nil)
    }

    static func write(_ row: UsageRow, to json: inout JSONWriter) {
        json.raw(#"{"key":"#)
        json.string(row.key)
        json.raw(#","requests":"#)
        json.int(row.requests)
        json.raw(#","prompt_tokens":"#)
        json.int(row.promptTokens)
        json.raw(#","completion_tokens":"#)
        json.int(row.completionTokens)
        json.raw(#","cost_micros":"#)
        json.int(row.costMicros)
        json.raw(#","unpriced_requests":"#)
        json.int(row.unpricedRequests)
        json.raw(#","estimated_requests":"#)
        json.int(row.estimatedRequests)
        json.raw("}")
    }

    /// `2026-11-01` (UTC midnight) or an RFC 3339 time → unix nanoseconds.
    static func parseTime(_ text: String) -> Int64? {
        guard text.utf8.count <= 40 else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1e9) }
        formatter.formatOptions = [.withFullDate]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1e9) }
        return nil
    }
}
