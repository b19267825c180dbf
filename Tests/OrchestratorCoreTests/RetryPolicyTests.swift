@testable import OrchestratorCore
import Testing

@Suite("RetryPolicy")
struct RetryPolicyTests {
    let noJitter = RetryPolicy(
        maxAttempts: 6, baseDelay: .milliseconds(100), maxDelay: .milliseconds(1000), multiplier: 2, jitterFraction: 0)

    @Test func delaysGrowExponentiallyAndAreCapped() {
        var rng = SeededRNG(seed: 1)
        let delays = (1...5).map { noJitter.delay(forAttempt: $0, random: &rng) }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1000)])
    }

    @Test func exhaustionReturnsNil() {
        var rng = SeededRNG(seed: 1)
        #expect(noJitter.delay(forAttempt: 5, random: &rng) != nil)
        #expect(noJitter.delay(forAttempt: 6, random: &rng) == nil)
        #expect(noJitter.delay(forAttempt: 7, random: &rng) == nil)
        var single = noJitter
        single.maxAttempts = 1
        #expect(single.delay(forAttempt: 1, random: &rng) == nil)
        single.maxAttempts = 0
        #expect(single.delay(forAttempt: 1, random: &rng) == nil)
    }

    @Test func attemptBelowOneCountsAsOne() {
        var rng = SeededRNG(seed: 1)
        #expect(noJitter.delay(forAttempt: 0, random: &rng) == .milliseconds(100))
        #expect(noJitter.delay(forAttempt: -5, random: &rng) == .milliseconds(100))
    }

    @Test func hugeAttemptNumbersStayAtTheCap() {
        var policy = noJitter
        policy.maxAttempts = .max
        var rng = SeededRNG(seed: 1)
        #expect(policy.delay(forAttempt: 10_000, random: &rng) == .milliseconds(1000))
        #expect(policy.ceiling(forAttempt: .max - 1) == .milliseconds(1000))
    }

    @Test(arguments: [0.0, 0.25, 0.5, 1.0])
    func jitterStaysWithinBounds(fraction: Double) throws {
        var policy = noJitter
        policy.jitterFraction = fraction
        policy.maxAttempts = 20
        var rng = SeededRNG(seed: 42)
        for attempt in 1..<20 {
            let ceiling = policy.ceiling(forAttempt: attempt)
            let lower = ceiling * (1 - fraction)
            for _ in 0..<200 {
                let delay = try #require(policy.delay(forAttempt: attempt, random: &rng))
                #expect(delay <= ceiling)
                #expect(delay >= lower - .nanoseconds(1))
            }
        }
    }

    @Test func jitterSpreadsAndIsReproducible() {
        let full = RetryPolicy(maxAttempts: 3, baseDelay: .seconds(1), maxDelay: .seconds(10), multiplier: 2, jitterFraction: 1)
        var a = SeededRNG(seed: 7)
        var b = SeededRNG(seed: 7)
        let first = (0..<50).map { _ in full.delay(forAttempt: 1, random: &a)! }
        let second = (0..<50).map { _ in full.delay(forAttempt: 1, random: &b)! }
        #expect(first == second)
        #expect(Set(first).count > 40)
        #expect(first.contains { $0 < .milliseconds(500) } && first.contains { $0 > .milliseconds(500) })
    }

    @Test func jitterFormulaEndpoints() {
        let equal = RetryPolicy(maxAttempts: 3, baseDelay: .seconds(1), maxDelay: .seconds(10), multiplier: 2, jitterFraction: 0.5)
        var zero = ConstantRNG(value: 0)  // U = 0 → the full ceiling
        #expect(equal.delay(forAttempt: 2, random: &zero) == .seconds(2))
        var max = ConstantRNG(value: .max)  // U → 1 → half the ceiling
        let low = equal.delay(forAttempt: 2, random: &max)!
        #expect(low >= .seconds(1) && low < .milliseconds(1001))
    }

    @Test func defaultsAreSane() {
        let policy = RetryPolicy()
        #expect(policy.maxAttempts == 3)
        #expect(policy.jitterFraction == 0.5)
        #expect(policy.ceiling(forAttempt: 1) == policy.baseDelay)
    }

    @Test(arguments: [nil, 408, 429, 500, 502, 503, 504, 529] as [Int?])
    func retriableStatuses(status: Int?) {
        #expect(RetryPolicy.isRetriable(status: status))
    }

    @Test(arguments: [200, 201, 301, 400, 401, 403, 404, 409, 413, 422, 501, 505])
    func fatalStatuses(status: Int) {
        #expect(!RetryPolicy.isRetriable(status: status))
    }

    @Test func decisions() {
        var rng = SeededRNG(seed: 3)
        #expect(noJitter.decision(afterAttempt: 1, error: ProviderError(.http(503)), random: &rng) == .retry(after: .milliseconds(100)))
        #expect(noJitter.decision(afterAttempt: 2, error: ProviderError(.timeout), random: &rng) == .retry(after: .milliseconds(200)))
        #expect(noJitter.decision(afterAttempt: 1, error: ProviderError(.http(401)), random: &rng) == .giveUp(.notRetriable))
        #expect(noJitter.decision(afterAttempt: 1, error: ProviderError(.badResponse), random: &rng) == .giveUp(.notRetriable))
        #expect(noJitter.decision(afterAttempt: 6, error: ProviderError(.transport), random: &rng) == .giveUp(.attemptsExhausted))
    }
}
