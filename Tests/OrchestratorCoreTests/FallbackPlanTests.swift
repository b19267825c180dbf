@testable import OrchestratorCore
import Schemas
import Testing

private let t0 = ContinuousClock.Instant.now

@Suite("ProviderTarget")
struct ProviderTargetTests {
    @Test func parsesProviderAndModel() {
        #expect(ProviderTarget(parsing: "openai:gpt-4o-mini") == ProviderTarget(provider: "openai", model: "gpt-4o-mini"))
        #expect(ProviderTarget(parsing: "local") == ProviderTarget(provider: "local"))
        #expect(ProviderTarget(parsing: " anthropic : claude-3-haiku ") == ProviderTarget(provider: "anthropic", model: "claude-3-haiku"))
        #expect(ProviderTarget(parsing: "openai:ft:gpt-4o:acme") == ProviderTarget(provider: "openai", model: "ft:gpt-4o:acme"))
        #expect(ProviderTarget(parsing: "") == nil)
        #expect(ProviderTarget(parsing: "  ") == nil)
        #expect(ProviderTarget(parsing: ":gpt-4o") == nil)
    }

    @Test func descriptionRoundTrips() {
        for spec in ["openai:gpt-4o-mini", "local", "openai:ft:x:y"] {
            #expect(ProviderTarget(parsing: spec)?.description == spec)
        }
    }
}

@Suite("FallbackPlan")
struct FallbackPlanTests {
    let primary = ProviderTarget(provider: "openai", model: "gpt-4o")
    let chain = ["openai:gpt-4o-mini", "anthropic:claude-3-haiku", "local"].compactMap(ProviderTarget.init(parsing:))

    @Test func primaryThenChainWhenAllClosed() {
        let plan = FallbackPlan(primary: primary, fallbackChain: chain) { _ in true }
        #expect(plan.targets.map(\.description) == ["openai:gpt-4o", "openai:gpt-4o-mini", "anthropic:claude-3-haiku", "local"])
        #expect(plan.skipped.isEmpty)
    }

    @Test func duplicatesAreDropped() {
        let plan = FallbackPlan(primary: chain[1], fallbackChain: chain + [chain[1]]) { _ in true }
        #expect(plan.targets.map(\.description) == ["anthropic:claude-3-haiku", "openai:gpt-4o-mini", "local"])
    }

    @Test func openBreakersAreSkipped() {
        let plan = FallbackPlan(primary: primary, fallbackChain: chain) { $0 != "openai" }
        #expect(plan.targets.map(\.description) == ["anthropic:claude-3-haiku", "local"])
        #expect(plan.skipped.map(\.description) == ["openai:gpt-4o", "openai:gpt-4o-mini"])
        let records = plan.skippedAttempts(at: 42)
        #expect(records == [
            ProviderAttempt(provider: "openai", model: "gpt-4o", attempt: 1, outcome: "circuit_open",
                            errorCode: "circuit_open", startedAtUnixNanos: 42, endedAtUnixNanos: 42),
            ProviderAttempt(provider: "openai", model: "gpt-4o-mini", attempt: 1, outcome: "circuit_open",
                            errorCode: "circuit_open", startedAtUnixNanos: 42, endedAtUnixNanos: 42),
        ])
    }

    @Test func allOpenGivesAnEmptyPlan() {
        let plan = FallbackPlan(primary: primary, fallbackChain: chain) { _ in false }
        #expect(plan.targets.isEmpty)
        #expect(plan.skipped.count == 4)
    }

    @Test func usesTheBreakerRegistryWithoutConsumingProbes() {
        let breakers = CircuitBreakers(configuration: .init(failureThreshold: 1, openDuration: .seconds(30)))
        breakers.record(provider: "anthropic", success: false, now: t0)
        let during = FallbackPlan(primary: primary, fallbackChain: chain, breakers: breakers, now: t0.advanced(by: .seconds(1)))
        #expect(during.targets.map(\.provider) == ["openai", "openai", "local"])
        #expect(during.skipped.map(\.provider) == ["anthropic"])

        let after = t0.advanced(by: .seconds(30))
        let later = FallbackPlan(primary: primary, fallbackChain: chain, breakers: breakers, now: after)
        #expect(later.targets.map(\.provider) == ["openai", "openai", "anthropic", "local"])
        #expect(breakers.allowRequest(provider: "anthropic", now: after))  // the probe is still there
    }
}

@Suite("AttemptOutcome")
struct AttemptOutcomeTests {
    let target = ProviderTarget(provider: "openai", model: "gpt-4o-mini")

    @Test(arguments: [
        (nil, "ok", 0, ""),
        (ProviderError(.timeout), "timeout", 0, "timeout"),
        (ProviderError(.http(503)), "error", 503, "http_503"),
        (ProviderError(.badResponse), "error", 0, "bad_response"),
        (ProviderError(.transport), "error", 0, "transport"),
        (ProviderError(.streamCut), "stream_cut", 0, "stream_cut"),
        (ProviderError(.circuitOpen), "circuit_open", 0, "circuit_open"),
    ] as [(ProviderError?, String, UInt32, String)])
    func mapsErrorsToOutcomes(error: ProviderError?, outcome: String, status: UInt32, code: String) {
        let record = AttemptOutcome(
            target: target, attempt: 2, error: error, startedAtUnixNanos: 100, endedAtUnixNanos: 250
        ).providerAttempt
        #expect(record == ProviderAttempt(
            provider: "openai", model: "gpt-4o-mini", attempt: 2, outcome: outcome, errorCode: code,
            httpStatus: status, startedAtUnixNanos: 100, endedAtUnixNanos: 250))
    }

    @Test func explicitStatusWinsAndKindsAreComplete() {
        let record = AttemptOutcome(
            target: target, attempt: 1, error: ProviderError(.streamCut), httpStatus: 200,
            startedAtUnixNanos: 1, endedAtUnixNanos: 2)
        #expect(record.httpStatus == 200)
        #expect(AttemptOutcome.Kind.allCases.map(\.rawValue) == ["ok", "error", "timeout", "circuit_open", "stream_cut"])
    }
}

@Suite("FallbackSequencer")
struct FallbackSequencerTests {
    let plan = FallbackPlan(
        primary: ProviderTarget(provider: "openai", model: "gpt-4o"),
        fallbackChain: [ProviderTarget(provider: "anthropic", model: "claude-3-haiku"), ProviderTarget(provider: "local")]
    ) { _ in true }
    let retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(100), maxDelay: .seconds(1), multiplier: 2, jitterFraction: 0)

    @Test func retriesThenSucceeds() {
        var rng = SeededRNG(seed: 1)
        var run = FallbackSequencer(plan: plan, retryPolicy: retry)
        #expect(run.step == .call(plan.targets[0], attempt: 1, after: .zero))
        #expect(run.record(error: ProviderError(.http(503)), startedAtUnixNanos: 0, endedAtUnixNanos: 1, random: &rng)
            == .call(plan.targets[0], attempt: 2, after: .milliseconds(100)))
        #expect(run.record(error: ProviderError(.timeout), startedAtUnixNanos: 2, endedAtUnixNanos: 3, random: &rng)
            == .call(plan.targets[0], attempt: 3, after: .milliseconds(200)))
        #expect(run.record(error: nil, startedAtUnixNanos: 4, endedAtUnixNanos: 5, random: &rng) == .succeeded(plan.targets[0]))
        #expect(run.attempts.map(\.outcome) == ["error", "timeout", "ok"])
        #expect(run.attempts.map(\.attempt) == [1, 2, 3])
    }

    @Test func fatalErrorMovesToTheNextTargetAtOnce() {
        var rng = SeededRNG(seed: 1)
        var run = FallbackSequencer(plan: plan, retryPolicy: retry)
        #expect(run.record(error: ProviderError(.http(401)), startedAtUnixNanos: 0, endedAtUnixNanos: 1, random: &rng)
            == .call(plan.targets[1], attempt: 1, after: .zero))
    }

    @Test func exhaustedRetriesMoveOnThenEverythingFails() {
        var rng = SeededRNG(seed: 1)
        var run = FallbackSequencer(plan: plan, retryPolicy: retry)
        var steps: [FallbackSequencer.Step] = []
        for i in 0..<9 {
            steps.append(run.record(
                error: ProviderError(.transport), startedAtUnixNanos: Int64(i), endedAtUnixNanos: Int64(i), random: &rng))
        }
        #expect(steps.last == .exhausted)
        #expect(steps[1] == .call(plan.targets[0], attempt: 3, after: .milliseconds(200)))
        #expect(steps[2] == .call(plan.targets[1], attempt: 1, after: .zero))
        #expect(steps[5] == .call(plan.targets[2], attempt: 1, after: .zero))
        #expect(run.attempts.count == 9)
        // Recording after the end changes nothing.
        #expect(run.record(error: nil, startedAtUnixNanos: 0, endedAtUnixNanos: 0, random: &rng) == .exhausted)
        #expect(run.attempts.count == 9)
    }

    @Test func circuitOpenAtCallTimeMovesOn() {
        var rng = SeededRNG(seed: 1)
        var run = FallbackSequencer(plan: plan, retryPolicy: retry)
        #expect(run.record(error: ProviderError(.circuitOpen), startedAtUnixNanos: 0, endedAtUnixNanos: 0, random: &rng)
            == .call(plan.targets[1], attempt: 1, after: .zero))
        #expect(run.attempts.first?.outcome == "circuit_open")
    }

    @Test func emptyPlanIsExhaustedImmediately() {
        let run = FallbackSequencer(plan: FallbackPlan(targets: [], skipped: []), retryPolicy: retry)
        #expect(run.step == .exhausted)
    }
}
