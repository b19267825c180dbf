import Schemas

extension RolloutGate {
    /// The gate as `switchyard rollout start --gate` takes it: `eval>=0.9`, `error_rate<1%` (rates in per cent),
    /// `p95_ms<2000`. Shared by the rollout controller's reasons and the CLI's output.
    public var text: String {
        switch metric {
        case "error_rate", "handoff_rate": "\(metric)\(op)\(Self.number(threshold * 100))%"
        default: "\(metric)\(op)\(Self.number(threshold))"
        }
    }

    /// Whole numbers without a fraction.
    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
