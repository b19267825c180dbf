/// A Prometheus metric name declared once in ``MetricName``.
public struct MetricName: Sendable, Hashable, CustomStringConvertible {
    /// The exposition name, e.g. `agent_requests_total`.
    public let rawValue: String
    /// What the metric measures (kept for dashboards and documentation).
    public let help: String

    public init(_ rawValue: String, help: String) {
        self.rawValue = rawValue
        self.help = help
    }

    public var description: String { rawValue }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.rawValue == rhs.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
}

/// A label name from the bounded set in ``MetricLabel``. Request ids, trace ids and other unbounded values
/// never become labels.
public struct MetricLabel: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String

    public init(_ rawValue: String) {
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}
