import CoreMetrics
import Metrics
import Prometheus
import Synchronization

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
    /// Help texts and scrape-time collectors, shared by every copy of this value.
    private let scrape = ScrapeState()

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

    /// A counter of fractional amounts (e.g. CPU seconds) for `name` with bounded `labels`.
    public func floatingCounter(_ name: MetricName, _ labels: [(MetricLabel, String)] = [])
        -> CoreMetrics.FloatingPointCounter
    {
        CoreMetrics.FloatingPointCounter(label: name.rawValue, dimensions: Self.dimensions(labels), factory: factory)
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

    /// Declares help texts (`# HELP` lines) for metric names; the names of ``MetricName`` are declared by the
    /// service scaffold, so every metric a service exports has one.
    public func declareHelp(_ names: [MetricName]) {
        scrape.state.withLock { state in
            for name in names { state.help[name.rawValue] = name.help }
        }
    }

    /// Adds a collector that refreshes gauges and counters right before each scrape (process figures, pool and
    /// consumer state). Collectors must be quick; each runs once per scrape.
    public func onScrape(_ collector: @escaping @Sendable () async -> Void) {
        scrape.state.withLock { $0.collectors.append(collector) }
    }

    /// Runs the scrape-time collectors.
    public func collect() async {
        let collectors = scrape.state.withLock { $0.collectors }
        for collector in collectors { await collector() }
    }

    /// The whole registry in the Prometheus text exposition format (version 0.0.4), with a `# HELP` line before
    /// each family's `# TYPE` line whose name was declared (``declareHelp(_:)``).
    public func renderPrometheusText() -> String {
        let text = registry.emitToString()
        let help = scrape.state.withLock { $0.help }
        guard !help.isEmpty else { return text }
        var output = ""
        output.reserveCapacity(text.utf8.count + help.count * 64)
        var previous: Substring = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                if !previous.hasPrefix("# HELP \(name) "), let description = help[String(name)] {
                    output += "# HELP \(name) \(Self.escapeHelp(description))\n"
                }
            }
            output += line
            output += "\n"
            previous = line
        }
        if output.hasSuffix("\n\n") { output.removeLast() }
        return output
    }

    /// The whole registry in the Prometheus text exposition format, as UTF-8 bytes.
    public func renderPrometheusBytes() -> [UInt8] {
        Array(renderPrometheusText().utf8)
    }

    /// Help text escaping of the text format: backslash and newline.
    static func escapeHelp(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// The content type of ``renderPrometheusText()``.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private static func dimensions(_ labels: [(MetricLabel, String)]) -> [(String, String)] {
        labels.map { ($0.0.rawValue, $0.1) }
    }
}

/// The mutable part of ``TelemetryMetrics`` (help texts, scrape collectors), behind a lock.
final class ScrapeState: Sendable {
    struct State {
        var help: [String: String] = [:]
        var collectors: [@Sendable () async -> Void] = []
    }
    let state = Mutex(State())
}
