@testable import GatewayCore
import Tenancy
import Schemas
import Testing

@Suite("Rate limiter")
struct RateLimiterTests {
    static let second: Int64 = 1_000_000_000
    let t0: Int64 = 1_000 * second  // arbitrary monotonic origin

    func allowed(_ decision: RateLimitDecision, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        decision.isAllowed
    }

    // MARK: RPM

    @Test func rpmExhaustionAndRetryAfter() throws {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 60, tokensPerMinute: 0), nowNanos: t0)
        for _ in 0..<60 {
            #expect(limiter.acquire(estimatedTokens: 100, nowNanos: t0).isAllowed)
        }
        let decision = limiter.acquire(estimatedTokens: 100, nowNanos: t0)
        #expect(decision == .limited(kind: .requests, retryAfterSeconds: 1))
        let error = try #require(decision.error)
        #expect(error.status == 429)
        #expect(error.code == .rateLimitExceeded)
        #expect(error.retryAfterSeconds == 1)
    }

    @Test func refillWithInjectedTime() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 6, tokensPerMinute: 0), nowNanos: t0)
        for _ in 0..<6 { _ = limiter.acquire(estimatedTokens: 0, nowNanos: t0) }
        // 6 RPM = one request every 10 s.
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0) == .limited(kind: .requests, retryAfterSeconds: 10))
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0 + 4 * Self.second)
            == .limited(kind: .requests, retryAfterSeconds: 6))
        // Partial second rounds up.
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0 + 9 * Self.second + 1)
            == .limited(kind: .requests, retryAfterSeconds: 1))
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0 + 10 * Self.second).isAllowed)
        #expect(!limiter.acquire(estimatedTokens: 0, nowNanos: t0 + 10 * Self.second).isAllowed)
        // A long pause refills to capacity, no more.
        let later = t0 + 3_600 * Self.second
        for _ in 0..<6 { #expect(limiter.acquire(estimatedTokens: 0, nowNanos: later).isAllowed) }
        #expect(!limiter.acquire(estimatedTokens: 0, nowNanos: later).isAllowed)
    }

    @Test func timeGoingBackwardsIsIgnored() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 1, tokensPerMinute: 0), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(!limiter.acquire(estimatedTokens: 0, nowNanos: t0 - 120 * Self.second).isAllowed)
        #expect(limiter.acquire(estimatedTokens: 0, nowNanos: t0 + 60 * Self.second).isAllowed)
    }

    @Test func remainingCounts() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 10, tokensPerMinute: 1000), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 300, nowNanos: t0)
            == .allowed(tokensCharged: 300, remainingRequests: 9, remainingTokens: 700))
        var unlimitedTokens = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 10, tokensPerMinute: 0), nowNanos: t0)
        #expect(unlimitedTokens.acquire(estimatedTokens: 300, nowNanos: t0)
            == .allowed(tokensCharged: 0, remainingRequests: 9, remainingTokens: nil))
    }

    // MARK: TPM

    @Test func tpmExhaustion() throws {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 1000, tokensPerMinute: 1200), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 1000, nowNanos: t0).isAllowed)
        // 200 left; 500 needed → 300 missing at 20 tokens/s → 15 s.
        let decision = limiter.acquire(estimatedTokens: 500, nowNanos: t0)
        #expect(decision == .limited(kind: .tokens, retryAfterSeconds: 15))
        #expect(decision.error?.message.contains("tokens") == true)
        // A rejected request takes nothing: 200 tokens still fit.
        #expect(limiter.acquire(estimatedTokens: 200, nowNanos: t0).isAllowed)
        #expect(limiter.acquire(estimatedTokens: 500, nowNanos: t0 + 25 * Self.second).isAllowed)
    }

    @Test func rejectionTakesNothingFromEitherBucket() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 2, tokensPerMinute: 100), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 90, nowNanos: t0).isAllowed)
        #expect(!limiter.acquire(estimatedTokens: 50, nowNanos: t0).isAllowed)  // tokens short
        #expect(limiter.requests?.tokens == 1)  // request not consumed by the rejection
        #expect(limiter.acquire(estimatedTokens: 10, nowNanos: t0).isAllowed)
    }

    @Test func oversizedRequestIsCappedToCapacity() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 0, tokensPerMinute: 100), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 5000, nowNanos: t0)
            == .allowed(tokensCharged: 100, remainingRequests: nil, remainingTokens: 0))
        #expect(limiter.acquire(estimatedTokens: 5000, nowNanos: t0) == .limited(kind: .tokens, retryAfterSeconds: 60))
    }

    @Test func refundAndCharge() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 0, tokensPerMinute: 1000), nowNanos: t0)
        guard case .allowed(let charged, _, _) = limiter.acquire(estimatedTokens: 800, nowNanos: t0) else {
            Issue.record("expected allowed")
            return
        }
        #expect(charged == 800)
        #expect(!limiter.acquire(estimatedTokens: 500, nowNanos: t0).isAllowed)
        // Only 100 actually used: 700 come back.
        limiter.reconcile(charged: charged, actual: 100, nowNanos: t0)
        #expect(limiter.tokens?.tokens == 900)
        #expect(limiter.acquire(estimatedTokens: 500, nowNanos: t0).isAllowed)
        // Used more than charged: debt.
        limiter.reconcile(charged: 500, actual: 1500, nowNanos: t0)
        #expect(limiter.tokens?.tokens == -600)
        let decision = limiter.acquire(estimatedTokens: 100, nowNanos: t0)
        #expect(decision == .limited(kind: .tokens, retryAfterSeconds: 42))  // 700 missing at 1000/60 per s
        // Debt is bounded at -capacity.
        limiter.charge(tokens: 1_000_000, nowNanos: t0)
        #expect(limiter.tokens?.tokens == -1000)
        // Refund never exceeds capacity.
        limiter.refund(tokens: 1_000_000, nowNanos: t0)
        #expect(limiter.tokens?.tokens == 1000)
        limiter.reconcile(charged: 10, actual: 10, nowNanos: t0)
        #expect(limiter.tokens?.tokens == 1000)
    }

    @Test func retryAfterIsMaxOfBothLimits() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 1, tokensPerMinute: 60), nowNanos: t0)
        #expect(limiter.acquire(estimatedTokens: 60, nowNanos: t0).isAllowed)
        // Requests: 60 s; tokens: 30 tokens at 1/s → 30 s.
        #expect(limiter.acquire(estimatedTokens: 30, nowNanos: t0) == .limited(kind: .requests, retryAfterSeconds: 60))
    }

    @Test func ceilSeconds() {
        #expect(KeyRateLimiter.ceilSeconds(1) == 1)
        #expect(KeyRateLimiter.ceilSeconds(1e9) == 1)
        #expect(KeyRateLimiter.ceilSeconds(1e9 + 1) == 2)
        #expect(KeyRateLimiter.ceilSeconds(2.5e9) == 3)
        #expect(KeyRateLimiter.ceilSeconds(.infinity) == 60)
    }

    // MARK: Replica share

    @Test func replicaShareDividesLimits() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 60, tokensPerMinute: 6000), replicaShare: 3,
                                     nowNanos: t0)
        for _ in 0..<20 { #expect(limiter.acquire(estimatedTokens: 10, nowNanos: t0).isAllowed) }
        // 20 RPM per replica → one request every 3 s.
        #expect(limiter.acquire(estimatedTokens: 10, nowNanos: t0) == .limited(kind: .requests, retryAfterSeconds: 3))
        #expect(limiter.tokens?.capacity == 2000)
    }

    @Test func replicaShareClampedAndTinyLimitsStillAdmit() {
        var zero = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 5, tokensPerMinute: 0), replicaShare: 0,
                                  nowNanos: t0)
        #expect(zero.replicaShare == 1)
        for _ in 0..<5 { #expect(zero.acquire(estimatedTokens: 0, nowNanos: t0).isAllowed) }
        #expect(!zero.acquire(estimatedTokens: 0, nowNanos: t0).isAllowed)

        // 2 RPM over 5 replicas: capacity 1, refill 0.4/min → 150 s between requests.
        var tiny = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 2, tokensPerMinute: 0), replicaShare: 5,
                                  nowNanos: t0)
        #expect(tiny.acquire(estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(tiny.acquire(estimatedTokens: 0, nowNanos: t0) == .limited(kind: .requests, retryAfterSeconds: 150))
    }

    @Test func replicaChangeKeepsFillRatio() {
        var limiter = KeyRateLimiter(limit: RateLimit(requestsPerMinute: 60, tokensPerMinute: 0), replicaShare: 1,
                                     nowNanos: t0)
        for _ in 0..<30 { _ = limiter.acquire(estimatedTokens: 0, nowNanos: t0) }  // half full
        limiter.update(limit: limiter.limit, replicaShare: 2, nowNanos: t0)
        #expect(limiter.requests?.capacity == 30)
        #expect(limiter.requests?.tokens == 15)
        limiter.update(limit: RateLimit(requestsPerMinute: 120, tokensPerMinute: 600), replicaShare: 2, nowNanos: t0)
        #expect(limiter.requests?.capacity == 60)
        #expect(limiter.requests?.tokens == 30)
        #expect(limiter.tokens?.capacity == 300)
        #expect(limiter.tokens?.tokens == 300)  // new bucket starts full
        limiter.update(limit: RateLimit(requestsPerMinute: 0, tokensPerMinute: 600), replicaShare: 2, nowNanos: t0)
        #expect(limiter.requests == nil)
    }

    // MARK: Registry

    @Test func registryPerKeyIsolation() {
        let registry = RateLimiterRegistry()
        let limit = RateLimit(requestsPerMinute: 2, tokensPerMinute: 0)
        #expect(registry.acquire(key: "a", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(registry.acquire(key: "a", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(!registry.acquire(key: "a", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(registry.acquire(key: "b", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(registry.count == 2)
    }

    @Test func registryUnlimitedCreatesNoState() {
        let registry = RateLimiterRegistry()
        for _ in 0..<100 {
            #expect(registry.acquire(key: "free", limit: RateLimit(requestsPerMinute: 0, tokensPerMinute: 0),
                                     estimatedTokens: 10, nowNanos: t0).isAllowed)
        }
        #expect(registry.count == 0)
    }

    @Test func registryReplicaCount() {
        let registry = RateLimiterRegistry()
        registry.setReplicaCount(4)
        #expect(registry.replicaCount == 4)
        let limit = RateLimit(requestsPerMinute: 40, tokensPerMinute: 0)
        for _ in 0..<10 { #expect(registry.acquire(key: "k", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed) }
        #expect(registry.acquire(key: "k", limit: limit, estimatedTokens: 0, nowNanos: t0)
            == .limited(kind: .requests, retryAfterSeconds: 6))
        registry.setReplicaCount(0)
        #expect(registry.replicaCount == 1)
        // Applied on the next acquire: bucket rescaled to capacity 40 (still empty).
        #expect(!registry.acquire(key: "k", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        #expect(registry.snapshot(key: "k")?.requests?.capacity == 40)
        #expect(registry.acquire(key: "k", limit: limit, estimatedTokens: 0, nowNanos: t0 + 2 * Self.second).isAllowed)
    }

    @Test func registryReconcile() {
        let registry = RateLimiterRegistry()
        let limit = RateLimit(requestsPerMinute: 0, tokensPerMinute: 1000)
        #expect(registry.acquire(key: "k", limit: limit, estimatedTokens: 1000, nowNanos: t0).isAllowed)
        #expect(!registry.acquire(key: "k", limit: limit, estimatedTokens: 100, nowNanos: t0).isAllowed)
        registry.reconcile(key: "k", charged: 1000, actual: 200, nowNanos: t0)
        #expect(registry.acquire(key: "k", limit: limit, estimatedTokens: 800, nowNanos: t0).isAllowed)
        registry.refund(key: "k", tokens: 50, nowNanos: t0)
        #expect(registry.snapshot(key: "k")?.tokens?.tokens == 50)
        registry.charge(key: "k", tokens: 150, nowNanos: t0)
        #expect(registry.snapshot(key: "k")?.tokens?.tokens == -100)
        // Unknown keys are a no-op.
        registry.reconcile(key: "nope", charged: 1, actual: 2, nowNanos: t0)
        #expect(registry.count == 1)
    }

    @Test func registryEvictsOnlyIdleAndRefilledEntries() {
        let registry = RateLimiterRegistry(configuration: .init(idleNanos: 60 * Self.second,
                                                                sweepIntervalNanos: 10 * Self.second))
        let limit = RateLimit(requestsPerMinute: 60, tokensPerMinute: 600)
        #expect(registry.acquire(key: "busy", limit: limit, estimatedTokens: 600, nowNanos: t0).isAllowed)
        registry.charge(key: "busy", tokens: 600, nowNanos: t0)  // debt: -600, needs 120 s to refill
        #expect(registry.acquire(key: "light", limit: limit, estimatedTokens: 1, nowNanos: t0).isAllowed)

        #expect(registry.evictIdle(nowNanos: t0 + 30 * Self.second) == 0)  // not idle yet
        #expect(registry.evictIdle(nowNanos: t0 + 61 * Self.second) == 1)  // "light" is full again
        #expect(registry.snapshot(key: "light") == nil)
        #expect(registry.snapshot(key: "busy") != nil)  // still in debt: evicting would forgive it
        #expect(registry.evictIdle(nowNanos: t0 + 121 * Self.second) == 1)
        #expect(registry.count == 0)
    }

    @Test func registrySweepsOpportunistically() {
        let registry = RateLimiterRegistry(configuration: .init(idleNanos: 60 * Self.second,
                                                                sweepIntervalNanos: 10 * Self.second))
        let limit = RateLimit(requestsPerMinute: 60, tokensPerMinute: 0)
        for i in 0..<50 {
            #expect(registry.acquire(key: "k\(i)", limit: limit, estimatedTokens: 0, nowNanos: t0).isAllowed)
        }
        #expect(registry.count == 50)
        #expect(registry.acquire(key: "new", limit: limit, estimatedTokens: 0, nowNanos: t0 + 120 * Self.second)
            .isAllowed)
        #expect(registry.count == 1)
    }

    @Test func registryConcurrentAccessIsSafe() async {
        let registry = RateLimiterRegistry()
        let limit = RateLimit(requestsPerMinute: 1000, tokensPerMinute: 0)
        let t0 = self.t0
        let admitted = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var count = 0
                    for _ in 0..<500 where registry.acquire(key: "shared", limit: limit, estimatedTokens: 0,
                                                            nowNanos: t0).isAllowed {
                        count += 1
                    }
                    return count
                }
            }
            return await group.reduce(0, +)
        }
        #expect(admitted == 1000)
    }

    @Test func planLimit() {
        let limit = RateLimit(plan: Plan(id: "p", rpm: 30, tpm: 9000))
        #expect(limit == RateLimit(requestsPerMinute: 30, tokensPerMinute: 9000))
        #expect(!limit.isUnlimited)
    }
}
