import Schemas
import Synchronization

/// Per-key rate limits: requests per minute and tokens per minute; 0 = unlimited.
public struct RateLimit: Sendable, Hashable {
    public var requestsPerMinute: UInt32
    public var tokensPerMinute: UInt32

    public init(requestsPerMinute: UInt32, tokensPerMinute: UInt32) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
    }

    /// The plan's `rpm` / `tpm`.
    public init(plan: Plan) {
        self.init(requestsPerMinute: plan.rpm, tokensPerMinute: plan.tpm)
    }

    public var isUnlimited: Bool { requestsPerMinute == 0 && tokensPerMinute == 0 }
}

/// A token bucket: `capacity` tokens, refilled continuously at `capacity / window`. Time is injected as
/// monotonic nanoseconds; time going backwards is ignored. Tokens may go negative (debt) through `charge`,
/// bounded at `-capacity`, so usage reported after the fact is paid back before new requests pass.
public struct TokenBucket: Sendable, Hashable {
    public private(set) var capacity: Double
    /// Tokens added per nanosecond.
    public private(set) var refillPerNano: Double
    public private(set) var tokens: Double
    public private(set) var lastRefillNanos: Int64

    /// A full bucket of `capacity` tokens refilled at `ratePerMinute`.
    public init(capacity: Double, ratePerMinute: Double, nowNanos: Int64) {
        self.capacity = capacity
        self.refillPerNano = ratePerMinute / 60e9
        self.tokens = capacity
        self.lastRefillNanos = nowNanos
    }

    public mutating func refill(nowNanos: Int64) {
        guard nowNanos > lastRefillNanos else { return }
        let elapsed = Double(nowNanos - lastRefillNanos)
        tokens = min(capacity, tokens + elapsed * refillPerNano)
        lastRefillNanos = nowNanos
    }

    /// Nanoseconds until `amount` tokens are available (0 if they are now). Call after `refill`.
    public func nanosUntil(_ amount: Double) -> Double {
        let missing = amount - tokens
        // Tolerate float noise from many small refills (0.9999999999 tokens counts as 1).
        guard missing > 1e-6 else { return 0 }
        guard refillPerNano > 0 else { return .infinity }
        return missing / refillPerNano
    }

    /// Removes `amount` tokens, allowing debt down to `-capacity`.
    public mutating func take(_ amount: Double) {
        tokens = max(-capacity, tokens - amount)
    }

    /// Returns `amount` tokens, up to `capacity`.
    public mutating func give(_ amount: Double) {
        tokens = min(capacity, tokens + amount)
    }

    /// Changes capacity and rate, keeping the bucket's fill ratio (so a replica-count change neither
    /// grants a fresh burst nor confiscates one).
    public mutating func reconfigure(capacity newCapacity: Double, ratePerMinute: Double, nowNanos: Int64) {
        refill(nowNanos: nowNanos)
        if capacity > 0 {
            tokens = tokens / capacity * newCapacity
        } else {
            tokens = newCapacity
        }
        capacity = newCapacity
        refillPerNano = ratePerMinute / 60e9
    }

    public var isFull: Bool { tokens >= capacity }
}

/// Which limit rejected a request.
public enum RateLimitKind: String, Sendable, Hashable {
    case requests
    case tokens
}

/// Outcome of `KeyRateLimiter.acquire`.
public enum RateLimitDecision: Sendable, Hashable {
    /// Admitted. `tokensCharged` is what the TPM bucket was charged up front; pass it to `reconcile` later.
    /// `remaining*` are this replica's remaining whole requests/tokens (`nil` when that limit is unlimited),
    /// for `x-ratelimit-remaining-*` headers.
    case allowed(tokensCharged: UInt32, remainingRequests: Int?, remainingTokens: Int?)
    /// Rejected with `Retry-After` seconds (ceil, ≥ 1).
    case limited(kind: RateLimitKind, retryAfterSeconds: Int)

    public var isAllowed: Bool {
        if case .allowed = self { return true }
        return false
    }

    /// The 429 to answer with, or `nil` when allowed.
    public var error: GatewayError? {
        switch self {
        case .allowed: nil
        case .limited(let kind, let retryAfterSeconds):
            .rateLimitExceeded(
                retryAfterSeconds: retryAfterSeconds,
                message: kind == .requests
                    ? "Rate limit exceeded: too many requests per minute."
                    : "Rate limit exceeded: too many tokens per minute.")
        }
    }
}

/// The rate-limit state of one API key: an RPM bucket and a TPM bucket. A pure state machine — values and
/// an injected monotonic `nowNanos` in, decisions out.
///
/// ## Design (cross-replica)
///
/// Each gateway replica enforces `limit / replicaShare`, where `replicaShare` is the number of live gateway
/// replicas (≥ 1). The lead feeds that count from a NATS heartbeat subject every replica publishes on and
/// watches. With the load balancer spreading a key's requests evenly, the sum over replicas approximates
/// the plan's limit without any per-request coordination (no NATS round trip or KV CAS on the hot path).
/// Trade-offs, chosen knowingly:
/// - Uneven balancing (sticky connections, a single HTTP/2 client) lets a key hit its per-replica share
///   early: it sees 429s below its plan limit — never more than the limit (fail-safe direction).
/// - While the replica count is stale (a replica just died or started) the aggregate limit drifts by one
///   replica's share for a heartbeat interval.
/// - Each bucket's capacity is at least 1 request / 1 token-charge, so tiny limits spread over many
///   replicas still admit requests (the refill rate stays `limit / replicas`).
/// - A replica-count change rescales each bucket keeping its fill ratio.
///
/// ## Tokens
///
/// TPM is charged up front with the request's `max_tokens` plus a prompt estimate (capped at the bucket's
/// capacity so one large request is not rejected forever), and reconciled when the real usage arrives:
/// `refund` when fewer were used, `charge` when more (the bucket may go into debt, bounded at -capacity).
/// A request is admitted only if **both** buckets can pay; on rejection nothing is taken.
public struct KeyRateLimiter: Sendable, Hashable {
    public private(set) var limit: RateLimit
    public private(set) var replicaShare: Int
    public private(set) var requests: TokenBucket?
    public private(set) var tokens: TokenBucket?
    public private(set) var lastActivityNanos: Int64

    public init(limit: RateLimit, replicaShare: Int = 1, nowNanos: Int64) {
        self.limit = limit
        self.replicaShare = max(1, replicaShare)
        self.lastActivityNanos = nowNanos
        self.requests = Self.bucket(limit.requestsPerMinute, share: self.replicaShare, nowNanos: nowNanos)
        self.tokens = Self.bucket(limit.tokensPerMinute, share: self.replicaShare, nowNanos: nowNanos)
    }

    private static func bucket(_ perMinute: UInt32, share: Int, nowNanos: Int64) -> TokenBucket? {
        guard perMinute > 0 else { return nil }
        let rate = Double(perMinute) / Double(share)
        return TokenBucket(capacity: max(1, rate), ratePerMinute: rate, nowNanos: nowNanos)
    }

    /// Applies a new plan limit and/or replica share. Unchanged values are a no-op.
    public mutating func update(limit newLimit: RateLimit, replicaShare newShare: Int, nowNanos: Int64) {
        let share = max(1, newShare)
        guard newLimit != limit || share != replicaShare else { return }
        requests = Self.reconfigured(requests, perMinute: newLimit.requestsPerMinute, share: share, nowNanos: nowNanos)
        tokens = Self.reconfigured(tokens, perMinute: newLimit.tokensPerMinute, share: share, nowNanos: nowNanos)
        limit = newLimit
        replicaShare = share
    }

    private static func reconfigured(_ bucket: TokenBucket?, perMinute: UInt32, share: Int, nowNanos: Int64)
        -> TokenBucket?
    {
        guard perMinute > 0 else { return nil }
        guard var bucket else { return Self.bucket(perMinute, share: share, nowNanos: nowNanos) }
        let rate = Double(perMinute) / Double(share)
        bucket.reconfigure(capacity: max(1, rate), ratePerMinute: rate, nowNanos: nowNanos)
        return bucket
    }

    /// Admits one request that may use up to `estimatedTokens` tokens, or says how long to wait.
    public mutating func acquire(estimatedTokens: UInt32, nowNanos: Int64) -> RateLimitDecision {
        lastActivityNanos = max(lastActivityNanos, nowNanos)
        requests?.refill(nowNanos: nowNanos)
        tokens?.refill(nowNanos: nowNanos)

        let charge: Double = tokens.map { min(Double(estimatedTokens), $0.capacity) } ?? 0
        let requestWait = requests?.nanosUntil(1) ?? 0
        let tokenWait = tokens?.nanosUntil(charge) ?? 0
        if requestWait > 0 || tokenWait > 0 {
            let kind: RateLimitKind = requestWait >= tokenWait ? .requests : .tokens
            return .limited(kind: kind, retryAfterSeconds: Self.ceilSeconds(max(requestWait, tokenWait)))
        }
        requests?.take(1)
        tokens?.take(charge)
        return .allowed(
            tokensCharged: UInt32(charge.rounded(.up)),
            remainingRequests: requests.map { Int($0.tokens.rounded(.down)) },
            remainingTokens: tokens.map { max(0, Int($0.tokens.rounded(.down))) })
    }

    /// Gives back tokens charged up front but not used.
    public mutating func refund(tokens amount: UInt32, nowNanos: Int64) {
        tokens?.refill(nowNanos: nowNanos)
        tokens?.give(Double(amount))
    }

    /// Charges tokens used beyond the up-front charge (may put the bucket into debt).
    public mutating func charge(tokens amount: UInt32, nowNanos: Int64) {
        lastActivityNanos = max(lastActivityNanos, nowNanos)
        tokens?.refill(nowNanos: nowNanos)
        tokens?.take(Double(amount))
    }

    /// Settles an up-front `charged` against the `actual` usage: refunds or charges the difference.
    public mutating func reconcile(charged: UInt32, actual: UInt32, nowNanos: Int64) {
        if actual < charged {
            refund(tokens: charged - actual, nowNanos: nowNanos)
        } else if actual > charged {
            charge(tokens: actual - charged, nowNanos: nowNanos)
        }
    }

    /// Whether dropping this state loses nothing: idle for `idleNanos` and both buckets are full again
    /// (a fresh limiter would start identical).
    public func isEvictable(nowNanos: Int64, idleNanos: Int64) -> Bool {
        guard nowNanos - lastActivityNanos >= idleNanos else { return false }
        var requests = self.requests
        var tokens = self.tokens
        requests?.refill(nowNanos: nowNanos)
        tokens?.refill(nowNanos: nowNanos)
        return (requests?.isFull ?? true) && (tokens?.isFull ?? true)
    }

    /// Whole seconds, rounded up, at least 1. A tiny epsilon keeps float noise (42.00000000000001 s) from
    /// turning into 43 s.
    static func ceilSeconds(_ nanos: Double) -> Int {
        guard nanos.isFinite else { return 60 }
        let seconds = (nanos / 1e9 - 1e-10).rounded(.up)
        return max(1, Int(min(seconds, 86_400)))
    }
}

/// All keys' rate-limit state on this replica, behind one `Mutex`. Entries are created on first use and
/// evicted once idle and refilled (see `KeyRateLimiter.isEvictable`), so eviction never changes a decision.
/// Sweeps run opportunistically inside `acquire` at most every `sweepIntervalNanos`, or explicitly via
/// `evictIdle(nowNanos:)`.
///
/// `limit` is passed on every call (from the tenant's plan in the KV cache), so plan changes apply on the
/// next request. `setReplicaCount(_:)` sets the divisor used by every entry (see `KeyRateLimiter`).
public final class RateLimiterRegistry: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Idle time before an entry may be evicted. Default 5 minutes.
        public var idleNanos: Int64 = 300 * 1_000_000_000
        /// Minimum time between opportunistic sweeps. Default 30 seconds.
        public var sweepIntervalNanos: Int64 = 30 * 1_000_000_000

        public init(idleNanos: Int64 = 300 * 1_000_000_000, sweepIntervalNanos: Int64 = 30 * 1_000_000_000) {
            self.idleNanos = idleNanos
            self.sweepIntervalNanos = sweepIntervalNanos
        }
    }

    private struct State {
        var entries: [String: KeyRateLimiter] = [:]
        var replicaCount = 1
        var lastSweepNanos: Int64?
    }

    private let state = Mutex(State())
    public let configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Number of live gateway replicas (clamped to ≥ 1); limits per replica are divided by it.
    public func setReplicaCount(_ count: Int) {
        state.withLock { $0.replicaCount = max(1, count) }
    }

    public var replicaCount: Int { state.withLock { $0.replicaCount } }

    /// Number of keys with state.
    public var count: Int { state.withLock { $0.entries.count } }

    /// Admits or rejects one request of `key` under `limit`, charging `estimatedTokens` up front.
    public func acquire(key: String, limit: RateLimit, estimatedTokens: UInt32, nowNanos: Int64) -> RateLimitDecision {
        if limit.isUnlimited {
            return .allowed(tokensCharged: 0, remainingRequests: nil, remainingTokens: nil)
        }
        let idle = configuration.idleNanos
        let interval = configuration.sweepIntervalNanos
        return state.withLock { state in
            if let last = state.lastSweepNanos {
                if nowNanos - last >= interval {
                    Self.sweep(&state, nowNanos: nowNanos, idleNanos: idle)
                }
            } else {
                state.lastSweepNanos = nowNanos
            }
            let share = state.replicaCount
            if var entry = state.entries.removeValue(forKey: key) {
                entry.update(limit: limit, replicaShare: share, nowNanos: nowNanos)
                let decision = entry.acquire(estimatedTokens: estimatedTokens, nowNanos: nowNanos)
                state.entries[key] = entry
                return decision
            }
            var entry = KeyRateLimiter(limit: limit, replicaShare: share, nowNanos: nowNanos)
            let decision = entry.acquire(estimatedTokens: estimatedTokens, nowNanos: nowNanos)
            state.entries[key] = entry
            return decision
        }
    }

    /// Settles an up-front charge against actual usage (no-op if the key's state was evicted).
    public func reconcile(key: String, charged: UInt32, actual: UInt32, nowNanos: Int64) {
        state.withLock { state in
            state.entries[key]?.reconcile(charged: charged, actual: actual, nowNanos: nowNanos)
        }
    }

    /// Returns unused up-front tokens (no-op if the key's state was evicted).
    public func refund(key: String, tokens: UInt32, nowNanos: Int64) {
        state.withLock { state in
            state.entries[key]?.refund(tokens: tokens, nowNanos: nowNanos)
        }
    }

    /// Charges extra tokens (no-op if the key's state was evicted).
    public func charge(key: String, tokens: UInt32, nowNanos: Int64) {
        state.withLock { state in
            state.entries[key]?.charge(tokens: tokens, nowNanos: nowNanos)
        }
    }

    /// A copy of one key's state (for tests and debugging).
    public func snapshot(key: String) -> KeyRateLimiter? {
        state.withLock { $0.entries[key] }
    }

    /// Evicts idle, fully refilled entries now. Returns how many were removed.
    @discardableResult
    public func evictIdle(nowNanos: Int64) -> Int {
        let idle = configuration.idleNanos
        return state.withLock { Self.sweep(&$0, nowNanos: nowNanos, idleNanos: idle) }
    }

    @discardableResult
    private static func sweep(_ state: inout State, nowNanos: Int64, idleNanos: Int64) -> Int {
        state.lastSweepNanos = nowNanos
        var evicted: [String] = []
        for (key, entry) in state.entries where entry.isEvictable(nowNanos: nowNanos, idleNanos: idleNanos) {
            evicted.append(key)
        }
        for key in evicted { state.entries.removeValue(forKey: key) }
        return evicted.count
    }
}
