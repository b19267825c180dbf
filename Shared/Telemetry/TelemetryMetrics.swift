import CoreMetrics
import Metrics
import Prometheus

/// A Prometheus registry plus a swift-metrics factory writing into it.
///
/// Create one per process in `@main` (and call ``bootstrap()`` there, once) or one per test: metrics made
/// through ``counter(_:_:)`` and friends go to *this* registry whether or not the global `MetricsSystem`
/// was bootstrapped.
public struct TelemetryMetrics: Sendable {
    /// The underlying swift-prometheus registry.
    public let registry: PrometheusCollectorRegistry
    /// A swift-metrics factory backed by ``registry``.
    public let factory: PrometheusMetricsFactory

    /// A fresh, independent registry.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        // Seconds-based histograms for the request/decision/query durations.
        let seconds: [Duration] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
            .seconds(5), .seconds(10), .seconds(30),
        ]
        factory.defaultDurationHistogramBuckets = seconds
        self.factory = factory
    }

    /// Installs ``factory`` as the process-wide `MetricsSystem` backend. Call once, from `@main` only — never
    /// from libraries or tests (the global system can only be bootstrapped once per process).
    public func bootstrap() {
        MetricsSystem.bootstrap(factory)
    }

    /// A counter for `name` with bounded `labels`.
    public func counter(_ name: MetricName, _ labels: [(MetricLabel, String)] = []) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name.rawValue, dimensions: Self.dimensions(labels), factory: factory)
    }

    /// A timer (rendered as a histogram in seconds) for `name` with bounded `labels`.
    public func timer(_ name: MetricName, _ labels: [(MetricLabel, String)] = []) -> CoreMetrics.Timer {
        CoreMetrics.Timer(
            label: name.rawValue, dimensions: Self.dimensions(labels), preferredDisplayUnit: .seconds,
            factory: factory)
    }

    /// A gauge for `name` with bounded `labels`.
    public func gauge(_ name: MetricName, _ labels: [(MetricLabel, String)] = []) -> CoreMetrics.Gauge {
        CoreMetrics.Gauge(label: name.rawValue, dimensions: Self.dimensions(labels), factory: factory)
    }

    /// The whole registry in the Prometheus text exposition format (version 0.0.4).
    public func renderPrometheusText() -> String {
        registry.emitToString()
    }

    /// The whole registry in the Prometheus text exposition format, as UTF-8 bytes.
    public func renderPrometheusBytes() -> [UInt8] {
        registry.emitToBuffer()
    }

    /// The content type of ``renderPrometheusText()``.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private static func dimensions(_ labels: [(MetricLabel, String)]) -> [(String, String)] {
        labels.map { ($0.0.rawValue, $0.1) }
    }
}
