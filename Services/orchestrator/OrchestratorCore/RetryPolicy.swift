/// Exponential backoff with jitter for provider calls. A pure value: attempt number and random source in,
/// a delay (or "give up") out.
///
/// For the attempt `n` that just failed (1-based), the ceiling is
/// `d(n) = min(maxDelay, baseDelay · multiplier^(n−1))` and the delay before attempt `n+1` is
///
///     delay = d(n) − jitterFraction · d(n) · U,   U uniform in [0, 1)
///
/// so it lies in `[(1 − jitterFraction) · d(n), d(n)]`. `jitterFraction = 1` is AWS-style *full jitter*
/// (uniform in `[0, d]`), `0.5` is *equal jitter* (uniform in `[d/2, d]`, the default: never retries at
/// once, still spreads a thundering herd), `0` is no jitter.
public struct RetryPolicy: Sendable, Hashable {
    /// Total attempts per provider, including the first. `1` means no retries.
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration
    public var multiplier: Double
    /// Share of the delay that is randomised, clamped to 0...1 (see the type's documentation).
    public var jitterFraction: Double

    /// Defaults: 3 attempts, 200 ms base, 5 s cap, ×2, equal jitter.
    public init(
        maxAttempts: Int = 3, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5),
        multiplier: Double = 2, jitterFraction: Double = 0.5
    ) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.multiplier = multiplier
        self.jitterFraction = jitterFraction
    }

    /// The un-jittered ceiling `d(n)` for failed attempt `n` (values below 1 count as 1).
    public func ceiling(forAttempt n: Int) -> Duration {
        let exponent = Double(max(1, n) - 1)
        let base = Self.nanoseconds(baseDelay)
        let cap = Self.nanoseconds(maxDelay)
        let raw = base * Self.power(max(1, multiplier), exponent)
        let clamped = raw.isFinite ? min(raw, cap) : cap
        return .nanoseconds(Int64(max(0, clamped).rounded()))
    }

    /// The delay to wait after failed attempt `n` before attempt `n + 1`, or nil when `n` was the last
    /// allowed attempt.
    public func delay(forAttempt n: Int, random: inout some RandomNumberGenerator) -> Duration? {
        guard max(1, n) < maxAttempts else { return nil }
        let ceiling = Self.nanoseconds(ceiling(forAttempt: n))
        let fraction = max(0, min(1, jitterFraction.isFinite ? jitterFraction : 1))
        let u = fraction > 0 ? Double.random(in: 0..<1, using: &random) : 0
        return .nanoseconds(Int64((ceiling - fraction * ceiling * u).rounded()))
    }

    /// What to do after attempt `n` failed with `error`.
    public func decision(
        afterAttempt n: Int, error: ProviderError, random: inout some RandomNumberGenerator
    ) -> RetryDecision {
        guard error.isRetriable else { return .giveUp(.notRetriable) }
        guard let delay = delay(forAttempt: n, random: &random) else { return .giveUp(.attemptsExhausted) }
        return .retry(after: delay)
    }

    /// Whether a failed call is worth retrying on the same provider: `nil` (no HTTP status: transport error
    /// or timeout), 408, 429, 500, 502, 503, 504 and 529 (Anthropic "overloaded") are; everything else
    /// (400, 401, 403, 404, 422, …, and any success status) is not.
    public static func isRetriable(status: Int?) -> Bool {
        guard let status else { return true }
        return retriableStatuses.contains(status)
    }

    public static let retriableStatuses: Set<Int> = [408, 429, 500, 502, 503, 504, 529]

    static func nanoseconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) * 1e9 + Double(c.attoseconds) / 1e9
    }

    /// `pow` without Foundation: exponents are small non-negative integers.
    private static func power(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(min(exponent, 2048))
        while remaining > 0, result.isFinite {
            result *= base
            remaining -= 1
        }
        return result
    }
}

/// Outcome of `RetryPolicy.decision`.
public enum RetryDecision: Sendable, Hashable {
    case retry(after: Duration)
    case giveUp(GiveUpReason)

    public enum GiveUpReason: Sendable, Hashable {
        case notRetriable
        case attemptsExhausted
    }
}
