import Contracts
import Telemetry
import Testing

@Suite("TelemetryMetrics")
struct MetricsTests {
    @Test func countersWithBoundedLabelsAppearInPrometheusText() {
        let metrics = TelemetryMetrics()
        metrics.counter(.agentRequestsTotal, [(.tenant, "acme"), (.agent, "host"), (.package, "gastronomy")])
            .increment(by: 3)
        metrics.counter(.agentRequestsTotal, [(.tenant, "acme"), (.agent, "host"), (.package, "gastronomy")])
            .increment()
        metrics.counter(.natsMessagesPublishedTotal).increment()

        let text = metrics.renderPrometheusText()
        #expect(text.contains("# TYPE agent_requests_total counter"))
        #expect(text.contains(#"agent_requests_total{tenant="acme",agent="host",package="gastronomy"} 4"#))
        #expect(text.contains("nats_messages_published_total 1"))
    }

    @Test func timersRenderAsSecondsHistograms() {
        let metrics = TelemetryMetrics()
        metrics.timer(.httpRequestDurationSeconds, [(.service, "api-gateway"), (.outcome, "ok")])
            .recordMilliseconds(20)
        let text = metrics.renderPrometheusText()
        #expect(text.contains("# TYPE http_request_duration_seconds histogram"))
        #expect(text.contains(#"http_request_duration_seconds_bucket{service="api-gateway",outcome="ok",le="0.025"} 1"#))
        #expect(text.contains(#"http_request_duration_seconds_bucket{service="api-gateway",outcome="ok",le="0.01"} 0"#))
        #expect(text.contains(#"http_request_duration_seconds_count{service="api-gateway",outcome="ok"} 1"#))
    }

    @Test func registriesAreIndependent() {
        let first = TelemetryMetrics()
        let second = TelemetryMetrics()
        first.counter(.chatRequestsTotal, [(.tenant, "acme")]).increment()
        #expect(first.renderPrometheusText().contains("chat_requests_total"))
        #expect(!second.renderPrometheusText().contains("chat_requests_total"))
    }

    @Test("declared names get a # HELP line before their # TYPE line, escaped; undeclared ones none")
    func helpLines() {
        let metrics = TelemetryMetrics()
        metrics.declareHelp([MetricName("demo_total", help: "Demo counter\\with a backslash\nand a newline.")])
        metrics.counter(MetricName("demo_total", help: "")).increment()
        metrics.counter(MetricName("undeclared_total", help: "")).increment()
        let text = metrics.renderPrometheusText()
        #expect(text.contains("# HELP demo_total Demo counter\\\\with a backslash\\nand a newline.\n# TYPE demo_total counter\n"))
        #expect(!text.contains("# HELP undeclared_total"))
        #expect(text.hasSuffix("\n") && !text.hasSuffix("\n\n"))
    }

    @Test func metricNamesAreDeclaredOnceAndValid() {
        let names = MetricName.all.map(\.rawValue)
        #expect(Set(names).count == names.count)
        for seed in [
            "agent_requests_total", "agent_errors_total", "agent_handoffs_total", "agent_consent_checks_total",
            "http_request_duration_seconds", "chat_requests_total", "chat_completions_total",
            "agent_decision_duration_seconds", "nats_messages_published_total", "nats_messages_consumed_total",
            "nats_messages_dead_lettered_total", "db_query_duration_seconds",
        ] {
            #expect(names.contains(seed), "missing \(seed)")
        }
        for name in names {
            #expect(name.wholeMatch(of: /[a-z_][a-z0-9_]*/) != nil)
        }
        #expect(MetricLabel.all.map(\.rawValue) == ["tenant", "agent", "package", "service", "outcome", "provider", "command",
                                                    "stream", "consumer", "state", "method", "route", "status"])
    }
}
