import Synchronization

/// A circuit breaker for one provider, as a state machine driven by explicit instants (no clock inside).
///
/// - **closed**: requests pass; `failureThreshold` *consecutive* failures open it (a success resets the
///   count). Consecutive failures rather than a failure ratio: no window bookkeeping, and with our traffic
///   (few providers, bursts per tenant) a ratio over a short window is noisy.
/// - **open**: requests are rejected until `openDuration` has passed since it opened; the first
///   `allowRequest` after that moves to half-open and is the probe.
/// - **half-open**: exactly one probe is in flight; other requests are rejected. Probe success → closed,
///   probe failure → open again (for another `openDuration`). A probe whose result is never recorded
///   (cancelled task) stops blocking after `openDuration`: the next `allowRequest` becomes a new probe.
///
/// Results recorded while open (calls that started before it opened) are ignored.
public struct CircuitBreaker: Sendable, Hashable {
    public typealias Instant = ContinuousClock.Instant

    public struct Configuration: Sendable, Hashable {
        /// Consecutive failures that open a closed breaker (≥ 1).
        public var failureThreshold: Int
        /// How long an open breaker rejects before letting a probe through.
        public var openDuration: Duration

        /// Defaults: 5 consecutive failures, 30 s open.
        public init(failureThreshold: Int = 5, openDuration: Duration = .seconds(30)) {
            self.failureThreshold = max(1, failureThreshold)
            self.openDuration = openDuration
        }
    }

    public enum State: String, Sendable, Hashable, CaseIterable {
        case closed
        case open
        case halfOpen = "half_open"
    }

    private enum Phase: Sendable, Hashable {
        case closed(consecutiveFailures: Int)
        case open(since: Instant)
        case halfOpen(probeStartedAt: Instant)
    }

    public let configuration: Configuration
    private var phase: Phase = .closed(consecutiveFailures: 0)

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    public var state: State {
        switch phase {
        case .closed: .closed
        case .open: .open
        case .halfOpen: .halfOpen
        }
    }

    /// Consecutive failures counted while closed (0 in the other states).
    public var consecutiveFailures: Int {
        if case .closed(let n) = phase { return n }
        return 0
    }

    /// Whether a request may go to the provider now. In half-open this hands out the single probe.
    public mutating func allowRequest(now: Instant) -> Bool {
        switch phase {
        case .closed:
            return true
        case .open(let since):
            guard since.duration(to: now) >= configuration.openDuration else { return false }
            phase = .halfOpen(probeStartedAt: now)
            return true
        case .halfOpen(let probeStartedAt):
            guard probeStartedAt.duration(to: now) >= configuration.openDuration else { return false }
            phase = .halfOpen(probeStartedAt: now)
            return true
        }
    }

    /// Whether `allowRequest(now:)` would return true, without changing anything (for planning).
    public func wouldAllowRequest(now: Instant) -> Bool {
        var copy = self
        return copy.allowRequest(now: now)
    }

    /// Records the result of a request that `allowRequest` let through.
    public mutating func record(success: Bool, now: Instant) {
        switch phase {
        case .closed(let failures):
            if success {
                phase = .closed(consecutiveFailures: 0)
            } else if failures + 1 >= configuration.failureThreshold {
                phase = .open(since: now)
            } else {
                phase = .closed(consecutiveFailures: failures + 1)
            }
        case .open:
            break
        case .halfOpen:
            phase = success ? .closed(consecutiveFailures: 0) : .open(since: now)
        }
    }
}

/// Thread-safe circuit breakers keyed by provider name, created closed on first use.
public final class CircuitBreakers: Sendable {
    public let configuration: CircuitBreaker.Configuration
    private let breakers: Mutex<[String: CircuitBreaker]>

    public init(configuration: CircuitBreaker.Configuration = .init()) {
        self.configuration = configuration
        self.breakers = Mutex([:])
    }

    public func allowRequest(provider: String, now: CircuitBreaker.Instant) -> Bool {
        breakers.withLock { all in
            var breaker = all[provider] ?? CircuitBreaker(configuration: configuration)
            let allowed = breaker.allowRequest(now: now)
            all[provider] = breaker
            return allowed
        }
    }

    public func wouldAllowRequest(provider: String, now: CircuitBreaker.Instant) -> Bool {
        breakers.withLock { all in
            all[provider]?.wouldAllowRequest(now: now) ?? true
        }
    }

    public func record(provider: String, success: Bool, now: CircuitBreaker.Instant) {
        breakers.withLock { all in
            var breaker = all[provider] ?? CircuitBreaker(configuration: configuration)
            breaker.record(success: success, now: now)
            all[provider] = breaker
        }
    }

    public func state(provider: String) -> CircuitBreaker.State {
        breakers.withLock { $0[provider]?.state ?? .closed }
    }

    /// Every known provider's state (for health/metrics).
    public func snapshot() -> [String: CircuitBreaker.State] {
        breakers.withLock { $0.mapValues(\.state) }
    }
}
