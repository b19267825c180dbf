import EvalCore
import Schemas
import Tenancy
import Testing

/// The rollout controller's pure parts: steps, gate parsing, and the verdict on a step's figures.
@Suite("Rollout plans: steps, gates, verdicts")
struct RolloutPlanTests {
    @Test("gates parse with percentages and milliseconds; defaults depend on suite and replay")
    func gatesParse() throws {
        let gates = try RolloutPlan.gates("eval>=0.9, error_rate<1%,handoff_rate <= 5 %,p95_ms<2000,replay>0.5",
                                          suite: true, replay: true)
        #expect(gates == [
            RolloutGate(metric: "eval", op: ">=", threshold: 0.9),
            RolloutGate(metric: "error_rate", op: "<", threshold: 0.01),
            RolloutGate(metric: "handoff_rate", op: "<=", threshold: 0.05),
            RolloutGate(metric: "p95_ms", op: "<", threshold: 2000),
            RolloutGate(metric: "replay", op: ">", threshold: 0.5),
        ])
        #expect(gates.map(\.text) == ["eval>=0.9", "error_rate<1%", "handoff_rate<=5%", "p95_ms<2000", "replay>0.5"])
        #expect(try RolloutPlan.gates("", suite: false, replay: false).map(\.metric) == ["error_rate", "handoff_rate"])
        #expect(try RolloutPlan.gates(" ", suite: true, replay: true).map(\.metric)
                == ["eval", "replay", "error_rate", "handoff_rate"])
    }

    @Test("bad gates are refused with the gate's position and what is wrong",
          arguments: [("latency<3", "unknown metric \"latency\""), ("error_rate", "expected metric"),
                      ("error_rate<abc", "is not a number"), ("error_rate<150%", "0 to 1"),
                      ("p95_ms<5%", "milliseconds"), ("p95_ms<0", "milliseconds"), ("eval>=0.9", "needs a suite"),
                      ("replay>=0.9", "needs a replay"), ("error_rate<1%,,handoff_rate<5%", "gate 2 (empty)"),
                      ("error_rate<nan", "is not a number")])
    func badGates(text: String, message: String) {
        do {
            _ = try RolloutPlan.gates(text, suite: false, replay: false)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains(message), "\(error)")
        }
    }

    @Test("steps: default, ascending, 1-100, ending at 100")
    func steps() throws {
        #expect(try RolloutPlan.steps([]) == [10, 25, 50, 100])
        #expect(try RolloutPlan.steps([5, 100]) == [5, 100])
        #expect(try RolloutPlan.steps([100]) == [100])
        for bad: [UInt32] in [[10, 50], [50, 25, 100], [10, 10, 100], [0, 100], [10, 101], (1...21).map { UInt32($0) } + [100]] {
            #expect(throws: AdminFailure.self, "\(bad)") { try RolloutPlan.steps(bad) }
        }
    }

    static let gates = [RolloutGate(metric: "error_rate", op: "<", threshold: 0.01),
                        RolloutGate(metric: "handoff_rate", op: "<", threshold: 0.05)]

    @Test("a step passes only after its hold, with enough settled requests, some of them the candidate's, and every gate met")
    func verdictPass() {
        let healthy = RolloutFigures(canarySettled: 30, canaryFailures: 0, canaryHandoffs: 1, stableSettled: 270)
        #expect(RolloutPlan.verdict(healthy, gates: Self.gates, holdOver: true, minRequests: 300) == .pass)
        #expect(RolloutPlan.verdict(healthy, gates: Self.gates, holdOver: false, minRequests: 300)
                == .hold("the hold time has not passed"))
        #expect(RolloutPlan.verdict(healthy, gates: Self.gates, holdOver: true, minRequests: 301)
                == .hold("300 of 301 requests settled in this step"))
        let noCanary = RolloutFigures(stableSettled: 500)
        #expect(RolloutPlan.verdict(noCanary, gates: Self.gates, holdOver: true, minRequests: 100)
                == .hold("no request of the candidate settled yet"))
        let latency = Self.gates + [RolloutGate(metric: "p95_ms", op: "<", threshold: 500)]
        #expect(RolloutPlan.verdict(healthy, gates: latency, holdOver: true, minRequests: 100)
                == .hold("no latency of the candidate measured yet"))
        var measured = healthy
        measured.canaryP95Micros = 499_000
        #expect(RolloutPlan.verdict(measured, gates: latency, holdOver: true, minRequests: 100) == .pass)
    }

    @Test("a failing gate rolls back early once 20 of the candidate's requests settled (or the hold is over), never on fewer")
    func verdictFail() {
        let failing = RolloutFigures(canarySettled: 20, canaryFailures: 1, stableSettled: 80)
        guard case .fail(let why) = RolloutPlan.verdict(failing, gates: Self.gates, holdOver: false, minRequests: 100) else {
            Issue.record("5 % errors over 20 requests must fail error_rate<1%")
            return
        }
        #expect(why.contains("error_rate<1% not met: error_rate = 5.00%"))
        let early = RolloutFigures(canarySettled: 19, canaryFailures: 19, stableSettled: 80)
        #expect(RolloutPlan.verdict(early, gates: Self.gates, holdOver: false, minRequests: 100)
                == .hold("the hold time has not passed"))
        guard case .fail = RolloutPlan.verdict(early, gates: Self.gates, holdOver: true, minRequests: 100) else {
            Issue.record("at the end of the hold any settled request counts")
            return
        }
        let handoffs = RolloutFigures(canarySettled: 40, canaryHandoffs: 4, stableSettled: 400)
        guard case .fail(let reason) = RolloutPlan.verdict(handoffs, gates: Self.gates, holdOver: true, minRequests: 100) else {
            Issue.record("10 % handoffs must fail handoff_rate<5%")
            return
        }
        #expect(reason.contains("handoff_rate"))
        let slow = RolloutFigures(canarySettled: 40, canaryP95Micros: 2_500_000, stableSettled: 400)
        let latency = [RolloutGate(metric: "p95_ms", op: "<", threshold: 2000)]
        guard case .fail(let slowReason) = RolloutPlan.verdict(slow, gates: latency, holdOver: false, minRequests: 100) else {
            Issue.record("a p95 of 2500 ms must fail p95_ms<2000")
            return
        }
        #expect(slowReason.contains("2500.0 ms"))
    }
}
