import Foundation
import Schemas

/// A provider and model to call, written `provider:model` in configuration (`openai:gpt-4o-mini`,
/// `anthropic:claude-3-haiku`, or just `local`).
public struct ProviderTarget: Sendable, Hashable, CustomStringConvertible {
    public var provider: String
    /// Empty when the provider picks its own (e.g. `local`).
    public var model: String

    public init(provider: String, model: String = "") {
        self.provider = provider
        self.model = model
    }

    /// Parses `provider[:model]`, splitting at the first colon (model names may contain colons).
    /// Surrounding whitespace is trimmed; an empty provider is rejected.
    public init?(parsing spec: String) {
        let trimmed = spec.trimmingCharacters(in: .whitespaces)
        let parts = trimmed.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let provider = parts.first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
        guard !provider.isEmpty else { return nil }
        self.provider = provider
        self.model = parts.count > 1 ? String(parts[1]).trimmingCharacters(in: .whitespaces) : ""
    }

    public var description: String { model.isEmpty ? provider : "\(provider):\(model)" }
}

/// The ordered provider attempts for one task: the agent's primary target, then the operator's fallback
/// chain, without duplicates, leaving out providers whose circuit breaker would reject a request now.
public struct FallbackPlan: Sendable, Hashable {
    /// Targets to try, in order.
    public var targets: [ProviderTarget]
    /// Targets left out because their breaker was open (record them as `circuit_open` attempts).
    public var skipped: [ProviderTarget]

    public init(targets: [ProviderTarget], skipped: [ProviderTarget]) {
        self.targets = targets
        self.skipped = skipped
    }

    /// - Parameter isAvailable: whether the named provider's breaker would let a request through now.
    public init(primary: ProviderTarget, fallbackChain: [ProviderTarget], isAvailable: (String) -> Bool) {
        var seen = Set<ProviderTarget>()
        var targets: [ProviderTarget] = []
        var skipped: [ProviderTarget] = []
        for target in [primary] + fallbackChain where seen.insert(target).inserted {
            if isAvailable(target.provider) {
                targets.append(target)
            } else {
                skipped.append(target)
            }
        }
        self.init(targets: targets, skipped: skipped)
    }

    public init(
        primary: ProviderTarget, fallbackChain: [ProviderTarget], breakers: CircuitBreakers,
        now: CircuitBreaker.Instant
    ) {
        self.init(primary: primary, fallbackChain: fallbackChain) {
            breakers.wouldAllowRequest(provider: $0, now: now)
        }
    }

    /// `circuit_open` attempt records for the skipped targets, stamped `at` (unix nanos).
    public func skippedAttempts(at unixNanos: Int64) -> [ProviderAttempt] {
        skipped.map {
            AttemptOutcome(
                target: $0, attempt: 1, kind: .circuitOpen, errorCode: ProviderError.Code.circuitOpen.name,
                startedAtUnixNanos: unixNanos, endedAtUnixNanos: unixNanos
            ).providerAttempt
        }
    }
}

/// The result of one provider attempt, as recorded in `ProviderAttempt` events.
public struct AttemptOutcome: Sendable, Hashable {
    /// Values of `ProviderAttempt.outcome` (snake_case, as `common.proto` documents).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case ok
        case error
        case timeout
        case circuitOpen = "circuit_open"
        case streamCut = "stream_cut"
    }

    public var target: ProviderTarget
    /// 1-based attempt number on this target.
    public var attempt: Int
    public var kind: Kind
    public var httpStatus: Int?
    /// `ProviderError.Code.name` for failures.
    public var errorCode: String?
    public var startedAtUnixNanos: Int64
    public var endedAtUnixNanos: Int64

    public init(
        target: ProviderTarget, attempt: Int, kind: Kind, httpStatus: Int? = nil, errorCode: String? = nil,
        startedAtUnixNanos: Int64, endedAtUnixNanos: Int64
    ) {
        self.target = target
        self.attempt = attempt
        self.kind = kind
        self.httpStatus = httpStatus
        self.errorCode = errorCode
        self.startedAtUnixNanos = startedAtUnixNanos
        self.endedAtUnixNanos = endedAtUnixNanos
    }

    /// An outcome from the call's result: `error == nil` is `ok`, otherwise the kind follows the error code
    /// (`timeout`, `circuit_open`, `stream_cut`, else `error`).
    public init(
        target: ProviderTarget, attempt: Int, error: ProviderError?, httpStatus: Int? = nil,
        startedAtUnixNanos: Int64, endedAtUnixNanos: Int64
    ) {
        let kind: Kind
        switch error?.code {
        case nil: kind = .ok
        case .timeout?: kind = .timeout
        case .circuitOpen?: kind = .circuitOpen
        case .streamCut?: kind = .streamCut
        default: kind = .error
        }
        self.init(
            target: target, attempt: attempt, kind: kind, httpStatus: httpStatus ?? error?.code.httpStatus,
            errorCode: error?.code.name, startedAtUnixNanos: startedAtUnixNanos, endedAtUnixNanos: endedAtUnixNanos)
    }

    public var succeeded: Bool { kind == .ok }

    /// The schema value for events.
    public var providerAttempt: ProviderAttempt {
        ProviderAttempt(
            provider: target.provider, model: target.model, attempt: UInt32(clamping: max(0, attempt)),
            outcome: kind.rawValue, errorCode: errorCode ?? "",
            httpStatus: UInt32(clamping: max(0, httpStatus ?? 0)),
            startedAtUnixNanos: startedAtUnixNanos, endedAtUnixNanos: endedAtUnixNanos)
    }
}

/// Drives a `FallbackPlan` with a `RetryPolicy`: retry the same target while the error is retriable and
/// attempts remain, then move to the next target; stop at the first success or when targets run out.
/// Pure: the caller performs each `.call`, waits its delay (on its own clock) and reports the outcome.
public struct FallbackSequencer: Sendable {
    public enum Step: Sendable, Hashable {
        /// Call `target` (attempt number `attempt` on it) after waiting `after`.
        case call(ProviderTarget, attempt: Int, after: Duration)
        /// Done: an attempt succeeded.
        case succeeded(ProviderTarget)
        /// Done: every target failed (or the plan was empty).
        case exhausted
    }

    public let plan: FallbackPlan
    public let retryPolicy: RetryPolicy
    private var targetIndex = 0
    private var attempt = 1
    public private(set) var step: Step
    /// Every recorded outcome, in order, as schema values.
    public private(set) var attempts: [ProviderAttempt] = []

    public init(plan: FallbackPlan, retryPolicy: RetryPolicy) {
        self.plan = plan
        self.retryPolicy = retryPolicy
        self.step = plan.targets.first.map { .call($0, attempt: 1, after: .zero) } ?? .exhausted
    }

    /// Records the outcome of the current `.call` and returns the next step. `error == nil` means success.
    /// Calling it when the sequence is already done changes nothing.
    @discardableResult
    public mutating func record(
        error: ProviderError?, httpStatus: Int? = nil, startedAtUnixNanos: Int64, endedAtUnixNanos: Int64,
        random: inout some RandomNumberGenerator
    ) -> Step {
        guard case .call(let target, let attempt, _) = step else { return step }
        attempts.append(
            AttemptOutcome(
                target: target, attempt: attempt, error: error, httpStatus: httpStatus,
                startedAtUnixNanos: startedAtUnixNanos, endedAtUnixNanos: endedAtUnixNanos
            ).providerAttempt)
        guard let error else {
            step = .succeeded(target)
            return step
        }
        if case .retry(let delay) = retryPolicy.decision(afterAttempt: attempt, error: error, random: &random) {
            self.attempt = attempt + 1
            step = .call(target, attempt: attempt + 1, after: delay)
            return step
        }
        targetIndex += 1
        self.attempt = 1
        if targetIndex < plan.targets.count {
            step = .call(plan.targets[targetIndex], attempt: 1, after: .zero)
        } else {
            step = .exhausted
        }
        return step
    }
}
