import Foundation
import Schemas
import Tenancy

/// What a rollout is asked to do, validated: steps, hold, gates and the minimum traffic per step. Everything here
/// is pure, so `rollout-start` refuses bad input before anything is written.
public enum RolloutPlan {
    public static let defaultSteps: [UInt32] = [10, 25, 50, 100]
    public static let defaultHoldMillis: Int64 = 600_000
    public static let maxHoldMillis: Int64 = 7 * 86_400_000
    public static let defaultMinRequests: UInt32 = 100
    /// Gates checked once, before the first step (scores of the suite and of the replay, 0–1).
    public static let preStepMetrics = ["eval", "replay"]
    /// Gates checked at every step, on the canary's figures.
    public static let liveMetrics = ["error_rate", "handoff_rate", "p95_ms"]
    static let operators = [">=", "<=", ">", "<"]

    /// Steps: 1 to 20 canary shares, strictly ascending, each 1–100, the last 100.
    public static func steps(_ steps: [UInt32]) throws(AdminFailure) -> [UInt32] {
        if steps.isEmpty { return defaultSteps }
        guard steps.count <= 20 else { throw AdminFailure(.invalidArgument, "steps: at most 20") }
        guard steps.allSatisfy({ (1...100).contains($0) }) else {
            throw AdminFailure(.invalidArgument, "steps: each must be a canary share of 1 to 100 (percent)")
        }
        guard zip(steps, steps.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw AdminFailure(.invalidArgument, "steps must be strictly ascending (e.g. 10,25,50,100)")
        }
        guard steps.last == 100 else {
            throw AdminFailure(.invalidArgument, "the last step must be 100: a rollout ends with every request on the candidate")
        }
        return steps
    }

    /// Parses `metric op threshold` conditions separated by commas, e.g.
    /// `eval>=0.9,error_rate<1%,handoff_rate<5%,p95_ms<2000`. Rates and scores are fractions (`1%` = 0.01);
    /// `p95_ms` is milliseconds. Empty text: the defaults (see ``defaultGates(suite:replay:)``).
    public static func gates(_ text: String, suite: Bool, replay: Bool) throws(AdminFailure) -> [RolloutGate] {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { return defaultGates(suite: suite, replay: replay) }
        guard trimmed.utf8.count <= 1_000 else { throw AdminFailure(.invalidArgument, "gates: at most 1000 characters") }
        var gates: [RolloutGate] = []
        for (index, part) in trimmed.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let condition = part.trimmingCharacters(in: .whitespaces)
            let position = "gate \(index + 1) (\(condition.isEmpty ? "empty" : "\"\(condition)\""))"
            guard let op = operators.first(where: { condition.contains($0) }),
                  let range = condition.range(of: op) else {
                throw AdminFailure(.invalidArgument, "\(position): expected metric, one of >= <= > <, and a number")
            }
            let metric = condition[..<range.lowerBound].trimmingCharacters(in: .whitespaces)
            var value = condition[range.upperBound...].trimmingCharacters(in: .whitespaces)
            guard preStepMetrics.contains(metric) || liveMetrics.contains(metric) else {
                throw AdminFailure(.invalidArgument, "\(position): unknown metric \"\(metric)\" (metrics: "
                                   + (preStepMetrics + liveMetrics).joined(separator: ", ") + ")")
            }
            let percent = value.hasSuffix("%")
            if percent { value.removeLast() }
            guard var threshold = Double(value.trimmingCharacters(in: .whitespaces)), threshold.isFinite else {
                throw AdminFailure(.invalidArgument, "\(position): \"\(value)\" is not a number")
            }
            if metric == "p95_ms" {
                guard !percent, threshold > 0 else {
                    throw AdminFailure(.invalidArgument, "\(position): p95_ms takes milliseconds greater than 0")
                }
            } else {
                if percent { threshold /= 100 }
                guard (0...1).contains(threshold) else {
                    throw AdminFailure(.invalidArgument, "\(position): \(metric) is a fraction: 0 to 1 (or 0% to 100%)")
                }
            }
            if metric == "eval" && !suite {
                throw AdminFailure(.invalidArgument, "\(position): an eval gate needs a suite (--suite)")
            }
            if metric == "replay" && !replay {
                throw AdminFailure(.invalidArgument, "\(position): a replay gate needs a replay (--replay N)")
            }
            gates.append(RolloutGate(metric: metric, op: op, threshold: threshold))
        }
        return gates
    }

    /// Without `--gate`: the canary's error rate under 1 % and handoff rate under 5 % at every step, and a score
    /// of at least 0.9 for the suite and the replay when they are asked for.
    public static func defaultGates(suite: Bool, replay: Bool) -> [RolloutGate] {
        var gates: [RolloutGate] = []
        if suite { gates.append(RolloutGate(metric: "eval", op: ">=", threshold: 0.9)) }
        if replay { gates.append(RolloutGate(metric: "replay", op: ">=", threshold: 0.9)) }
        gates.append(RolloutGate(metric: "error_rate", op: "<", threshold: 0.01))
        gates.append(RolloutGate(metric: "handoff_rate", op: "<", threshold: 0.05))
        return gates
    }

    /// Whether `value` meets the gate.
    public static func holds(_ gate: RolloutGate, _ value: Double) -> Bool {
        switch gate.op {
        case ">=": value >= gate.threshold
        case "<=": value <= gate.threshold
        case ">": value > gate.threshold
        case "<": value < gate.threshold
        default: false
        }
    }

    /// `error_rate<1%` / `p95_ms<2000` / `eval>=0.9`, as an operator typed it.
    /// The canary's value of a live metric in `figures` (nil: nothing measured yet).
    public static func value(of metric: String, _ figures: RolloutFigures) -> Double? {
        switch metric {
        case "error_rate":
            figures.canarySettled > 0 ? Double(figures.canaryFailures) / Double(figures.canarySettled) : nil
        case "handoff_rate":
            figures.canarySettled > 0 ? Double(figures.canaryHandoffs) / Double(figures.canarySettled) : nil
        case "p95_ms":
            figures.canaryP95Micros > 0 ? Double(figures.canaryP95Micros) / 1_000 : nil
        default: nil
        }
    }

    /// The verdict on a step's figures: `.fail` as soon as enough of the canary's requests settled and a live gate
    /// is not met (even before the hold ends); `.pass` once the hold is over, the step had `minRequests` settled
    /// requests and every live gate holds; `.hold` otherwise.
    public enum Verdict: Equatable, Sendable {
        case pass
        case hold(String)
        case fail(String)

        public var text: String {
            switch self {
            case .pass: "pass"
            case .hold(let why): "hold: " + why
            case .fail(let why): "fail: " + why
            }
        }
    }

    public static func verdict(_ figures: RolloutFigures, gates: [RolloutGate], holdOver: Bool,
                               minRequests: UInt32) -> Verdict {
        // A failing gate needs a few settled canary requests before it counts (one early failure is no signal);
        // at the end of the hold any settled canary request counts.
        let earlyEnough = Int64(max(1, min(Int(minRequests), 20)))
        let failures = gates.filter { liveMetrics.contains($0.metric) }.compactMap { gate -> String? in
            guard let value = value(of: gate.metric, figures) else { return nil }
            return holds(gate, value) ? nil
                : "\(gate.text) not met: \(gate.metric) = \(describeValue(gate.metric, value))"
        }
        if !failures.isEmpty, figures.canarySettled >= earlyEnough || holdOver {
            return .fail(failures.joined(separator: "; "))
        }
        guard holdOver else { return .hold("the hold time has not passed") }
        let settled = figures.canarySettled + figures.stableSettled
        guard settled >= Int64(minRequests) else {
            return .hold("\(settled) of \(minRequests) requests settled in this step")
        }
        guard figures.canarySettled > 0 else { return .hold("no request of the candidate settled yet") }
        if gates.contains(where: { $0.metric == "p95_ms" }) && figures.canaryP95Micros == 0 {
            return .hold("no latency of the candidate measured yet")
        }
        return .pass
    }

    static func describeValue(_ metric: String, _ value: Double) -> String {
        metric == "p95_ms" ? String(format: "%.1f ms", value) : String(format: "%.2f%%", value * 100)
    }
}
