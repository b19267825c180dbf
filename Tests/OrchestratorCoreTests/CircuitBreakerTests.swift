@testable import OrchestratorCore
import Testing

/// Instants are built from one fixed origin plus explicit offsets: the breaker never reads a clock.
private let t0 = ContinuousClock.Instant.now
private func at(_ offset: Duration) -> ContinuousClock.Instant { t0.advanced(by: offset) }

@Suite("CircuitBreaker")
struct CircuitBreakerTests {
    let config = CircuitBreaker.Configuration(failureThreshold: 3, openDuration: .seconds(10))

    @Test func startsClosedAndAllows() {
        var breaker = CircuitBreaker(configuration: config)
        #expect(breaker.state == .closed)
        do { let allowed = breaker.allowRequest(now: at(.zero)); #expect(allowed) }
        #expect(breaker.consecutiveFailures == 0)
    }

    @Test func opensAtTheNthConsecutiveFailure() {
        var breaker = CircuitBreaker(configuration: config)
        breaker.record(success: false, now: at(.seconds(1)))
        breaker.record(success: false, now: at(.seconds(2)))
        #expect(breaker.state == .closed)
        #expect(breaker.consecutiveFailures == 2)
        do { let allowed = breaker.allowRequest(now: at(.seconds(2))); #expect(allowed) }
        breaker.record(success: false, now: at(.seconds(3)))
        #expect(breaker.state == .open)
        #expect(breaker.consecutiveFailures == 0)
    }

    @Test func successResetsTheFailureCount() {
        var breaker = CircuitBreaker(configuration: config)
        breaker.record(success: false, now: at(.seconds(1)))
        breaker.record(success: false, now: at(.seconds(2)))
        breaker.record(success: true, now: at(.seconds(3)))
        #expect(breaker.consecutiveFailures == 0)
        breaker.record(success: false, now: at(.seconds(4)))
        breaker.record(success: false, now: at(.seconds(5)))
        #expect(breaker.state == .closed)
    }

    private func opened(at instant: Duration = .seconds(3)) -> CircuitBreaker {
        var breaker = CircuitBreaker(configuration: config)
        for _ in 0..<3 { breaker.record(success: false, now: at(instant)) }
        return breaker
    }

    @Test func staysOpenBeforeTheDuration() {
        var breaker = opened()
        do { let allowed = breaker.allowRequest(now: at(.seconds(3))); #expect(!allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(13) - .nanoseconds(1))); #expect(!allowed) }
        #expect(breaker.state == .open)
    }

    @Test func halfOpenAllowsExactlyOneProbe() {
        var breaker = opened()
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(allowed) }
        #expect(breaker.state == .halfOpen)
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(!allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(20))); #expect(!allowed) }
    }

    @Test func probeSuccessCloses() {
        var breaker = opened()
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(allowed) }
        breaker.record(success: true, now: at(.seconds(14)))
        #expect(breaker.state == .closed)
        #expect(breaker.consecutiveFailures == 0)
        do { let allowed = breaker.allowRequest(now: at(.seconds(14))); #expect(allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(14))); #expect(allowed) }
    }

    @Test func probeFailureReopensForAnotherFullDuration() {
        var breaker = opened()
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(allowed) }
        breaker.record(success: false, now: at(.seconds(15)))
        #expect(breaker.state == .open)
        do { let allowed = breaker.allowRequest(now: at(.seconds(25) - .nanoseconds(1))); #expect(!allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(25))); #expect(allowed) }
        #expect(breaker.state == .halfOpen)
    }

    @Test func abandonedProbeIsReplacedAfterTheDuration() {
        var breaker = opened()
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(23) - .nanoseconds(1))); #expect(!allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(23))); #expect(allowed) }
        do { let allowed = breaker.allowRequest(now: at(.seconds(23))); #expect(!allowed) }
    }

    @Test func resultsRecordedWhileOpenAreIgnored() {
        var breaker = opened()
        breaker.record(success: true, now: at(.seconds(4)))
        #expect(breaker.state == .open)
        breaker.record(success: false, now: at(.seconds(12)))  // must not extend the open period
        do { let allowed = breaker.allowRequest(now: at(.seconds(13))); #expect(allowed) }
    }

    @Test func thresholdOneOpensOnFirstFailureAndThresholdIsAtLeastOne() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 1, openDuration: .seconds(1)))
        breaker.record(success: false, now: at(.zero))
        #expect(breaker.state == .open)
        #expect(CircuitBreaker.Configuration(failureThreshold: 0).failureThreshold == 1)
    }

    @Test func wouldAllowRequestDoesNotConsumeTheProbe() {
        let breaker = opened()
        #expect(!breaker.wouldAllowRequest(now: at(.seconds(5))))
        #expect(breaker.wouldAllowRequest(now: at(.seconds(13))))
        #expect(breaker.state == .open)
        var copy = breaker
        do { let allowed = copy.allowRequest(now: at(.seconds(13))); #expect(allowed) }
    }

    // MARK: exhaustive check against a reference model

    private enum Op: CaseIterable { case allow, success, failure, wait, waitLong }

    /// A deliberately different formulation: explicit state + timestamps.
    private struct Model {
        enum S { case closed, open, halfOpen }
        var s = S.closed
        var failures = 0
        var since = Duration.zero
        let threshold: Int
        let openFor: Duration

        mutating func allow(_ now: Duration) -> Bool {
            switch s {
            case .closed: return true
            case .open, .halfOpen:
                if now - since >= openFor { s = .halfOpen; since = now; return true }
                return false
            }
        }

        mutating func record(_ ok: Bool, _ now: Duration) {
            switch s {
            case .closed:
                failures = ok ? 0 : failures + 1
                if failures >= threshold { s = .open; since = now; failures = 0 }
            case .open: break
            case .halfOpen:
                if ok { s = .closed; failures = 0 } else { s = .open; since = now }
            }
        }

        var state: CircuitBreaker.State {
            switch s {
            case .closed: .closed
            case .open: .open
            case .halfOpen: .halfOpen
            }
        }
    }

    @Test func everySequenceOfSevenOperationsMatchesTheModel() {
        let ops = Op.allCases
        let length = 7
        var total = 1
        for _ in 0..<length { total *= ops.count }
        var mismatches = 0
        for n in 0..<total {
            var code = n
            var breaker = CircuitBreaker(configuration: .init(failureThreshold: 2, openDuration: .seconds(10)))
            var model = Model(threshold: 2, openFor: .seconds(10))
            var now = Duration.zero
            for _ in 0..<length {
                let op = ops[code % ops.count]
                code /= ops.count
                switch op {
                case .allow:
                    let allowed = breaker.allowRequest(now: at(now))
                    if allowed != model.allow(now) { mismatches += 1 }
                case .success:
                    breaker.record(success: true, now: at(now)); model.record(true, now)
                case .failure:
                    breaker.record(success: false, now: at(now)); model.record(false, now)
                case .wait: now += .seconds(4)
                case .waitLong: now += .seconds(10)
                }
                if breaker.state != model.state { mismatches += 1 }
                if breaker.state == .closed, breaker.consecutiveFailures != model.failures { mismatches += 1 }
            }
        }
        #expect(mismatches == 0)
    }
}

@Suite("CircuitBreakers registry")
struct CircuitBreakersTests {
    @Test func providersAreIndependent() {
        let breakers = CircuitBreakers(configuration: .init(failureThreshold: 2, openDuration: .seconds(5)))
        breakers.record(provider: "openai", success: false, now: at(.zero))
        breakers.record(provider: "openai", success: false, now: at(.zero))
        #expect(breakers.state(provider: "openai") == .open)
        #expect(breakers.state(provider: "anthropic") == .closed)
        do { let allowed = breakers.allowRequest(provider: "openai", now: at(.seconds(1))); #expect(!allowed) }
        do { let allowed = breakers.allowRequest(provider: "anthropic", now: at(.seconds(1))); #expect(allowed) }
        #expect(breakers.wouldAllowRequest(provider: "openai", now: at(.seconds(5))))
        #expect(breakers.state(provider: "openai") == .open)
        do { let allowed = breakers.allowRequest(provider: "openai", now: at(.seconds(5))); #expect(allowed) }
        #expect(breakers.snapshot() == ["openai": .halfOpen, "anthropic": .closed])
    }

    @Test func concurrentUseIsSafe() async {
        let breakers = CircuitBreakers(configuration: .init(failureThreshold: 1000, openDuration: .seconds(5)))
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<1000 {
                group.addTask {
                    _ = breakers.allowRequest(provider: "p\(i % 4)", now: at(.zero))
                    breakers.record(provider: "p0", success: false, now: at(.zero))
                }
            }
        }
        #expect(breakers.state(provider: "p0") == .open)
        #expect(breakers.state(provider: "p1") == .closed)
    }
}
