import Schemas

/// Estimates token counts when a provider doesn't report usage (the `local` provider always, OpenAI-compatible
/// servers sometimes). Rule of thumb: one token per four Unicode scalars, rounded up, at least 1 for
/// non-empty text; every chat message adds `perMessageOverhead` tokens for role and framing.
public enum TokenEstimator {
    /// Tokens added per chat message (role, separators), as OpenAI's own counting guide does.
    public static let perMessageOverhead = 4

    /// `ceil(scalars / 4)`; 0 for the empty string, ≥ 1 otherwise.
    public static func estimate(_ text: String) -> Int {
        let scalars = text.unicodeScalars.count
        return (scalars + 3) / 4
    }

    /// Sum over messages of `perMessageOverhead + estimate(content) + estimate(name)`.
    public static func estimate(messages: [ChatMessage]) -> Int {
        messages.reduce(0) { $0 + perMessageOverhead + estimate($1.content) + estimate($1.name) }
    }

    /// Usage to record: the provider's numbers when it reported them, otherwise an estimate flagged
    /// `estimated`.
    public static func usage(reported: ProviderUsage?, prompt: [ChatMessage], completion: String) -> UsageReport {
        if let reported {
            return UsageReport(
                promptTokens: reported.promptTokens, completionTokens: reported.completionTokens,
                totalTokens: reported.totalTokens, estimated: false)
        }
        let p = estimate(messages: prompt)
        let c = estimate(completion)
        return UsageReport(promptTokens: p, completionTokens: c, totalTokens: p + c, estimated: true)
    }
}

/// Token usage of one completion, with a flag saying whether it was estimated.
public struct UsageReport: Sendable, Hashable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int
    /// True when the numbers come from `TokenEstimator`, not from the provider.
    public var estimated: Bool

    public init(promptTokens: Int, completionTokens: Int, totalTokens: Int, estimated: Bool) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.estimated = estimated
    }

    /// The schema value (counts clamped to `UInt32`; the `estimated` flag has no field there).
    public var schema: Usage {
        Usage(
            promptTokens: Self.clamp(promptTokens), completionTokens: Self.clamp(completionTokens),
            totalTokens: Self.clamp(totalTokens))
    }

    private static func clamp(_ value: Int) -> UInt32 {
        UInt32(clamping: max(0, value))
    }
}
