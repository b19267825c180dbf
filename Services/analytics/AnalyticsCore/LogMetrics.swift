import Contracts
import Logging
import Storage
import Synchronization
import Telemetry

/// The seed metrics, derived from the event log as analytics folds it (each event counted once, like the
/// rollups): `agent_requests_total{tenant,agent,package}`, `agent_errors_total{tenant,agent,outcome=<code>}`,
/// `agent_handoffs_total{tenant,agent}`, `agent_consent_checks_total{tenant,outcome}` and the SLO histogram
/// `agent_request_duration_seconds{tenant,agent}` (the whole path, from the hop stamps).
///
/// The `tenant` label is bounded (docs/adr/0015): the first `limit` tenants a process sees get their own label;
/// after that, a tenant gets one only while it is among the top `limit` by requests over the last hour
/// (recomputed every minute from the rollups), and only until `2 × limit` tenants have been labeled. Everything
/// else is `other`. A tenant keeps its label once it had one (a counter must not jump between series). So one
/// analytics process exports at most 2 × limit + 1 tenant values.
public final class LogMetrics: Sendable {
    let metrics: TelemetryMetrics
    let limit: Int
    private struct Labels: Sendable {
        var top: Set<String> = []
        var labeled: Set<String> = []
    }
    private let labels = Mutex(Labels())

    public init(metrics: TelemetryMetrics, limit: Int) {
        self.metrics = metrics
        self.limit = max(0, limit)
    }

    /// The `tenant` label value for `tenant`.
    func label(for tenant: String) -> String {
        labels.withLock { labels in
            if labels.labeled.contains(tenant) { return tenant }
            guard labels.labeled.count < limit || (labels.top.contains(tenant) && labels.labeled.count < 2 * limit)
            else { return "other" }
            labels.labeled.insert(tenant)
            return tenant
        }
    }

    /// Recomputes the top tenants from the last hour's rollups.
    func refreshTop(pool: PostgresPool) async throws {
        let rows = try await pool.query("""
            SELECT s.tenant_id FROM analytics_minutes r JOIN analytics_series s ON s.id = r.series_id
            WHERE r.minute >= now() - interval '1 hour'
            GROUP BY 1 ORDER BY sum(r.requests) DESC, 1 LIMIT $1
            """, [.int64(Int64(limit))])
        let top = Set(try rows.map { try $0.decode(String.self, at: 0) })
        labels.withLock { $0.top = top }
    }

    /// Counts the facts a batch folded for the first time (summed per label set first: one update per series).
    func record(_ facts: [EventFact]) {
        var counts: [MetricSample: Int] = [:]
        var durations: [MetricSample: [Int64]] = [:]
        for fact in facts {
            let tenant = label(for: fact.dimensions.tenant)
            let agent = fact.dimensions.agent
            switch fact.kind {
            case .routed:
                counts[MetricSample(name: .agentRequestsTotal, labels: [tenant, agent, fact.dimensions.package]), default: 0] += 1
            case .completed:
                if let total = fact.latencies.first(where: { $0.hop == HopLatency.total }) {
                    durations[MetricSample(name: .agentRequestDurationSeconds, labels: [tenant, agent]), default: []]
                        .append(total.micros)
                }
            case let .failed(code, unrouted):
                if unrouted {
                    counts[MetricSample(name: .agentRequestsTotal, labels: [tenant, agent, fact.dimensions.package]), default: 0] += 1
                }
                counts[MetricSample(name: .agentErrorsTotal, labels: [tenant, agent, code]), default: 0] += 1
            case .handoff:
                counts[MetricSample(name: .agentHandoffsTotal, labels: [tenant, agent]), default: 0] += 1
            case let .consent(outcome):
                counts[MetricSample(name: .agentConsentChecksTotal, labels: [tenant, String(outcome.prefix(32))]), default: 0] += 1
            }
        }
        for (sample, count) in counts {
            metrics.counter(sample.name, sample.dimensions).increment(by: count)
        }
        for (sample, values) in durations {
            let timer = metrics.timer(sample.name, sample.dimensions)
            for micros in values { timer.recordNanoseconds(micros * 1000) }
        }
    }

    struct MetricSample: Hashable {
        var name: MetricName
        var labels: [String]

        var dimensions: [(MetricLabel, String)] {
            switch name {
            case .agentRequestsTotal: [(.tenant, labels[0]), (.agent, labels[1]), (.package, labels[2])]
            case .agentErrorsTotal: [(.tenant, labels[0]), (.agent, labels[1]), (.outcome, labels[2])]
            case .agentConsentChecksTotal: [(.tenant, labels[0]), (.outcome, labels[1])]
            default: [(.tenant, labels[0]), (.agent, labels[1])]
            }
        }
    }
}
