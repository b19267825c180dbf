import Schemas

/// The result of running an agent on one task.
struct AgentRun: Sendable {
    var content = ""
    var finishReason = "stop"
    var providerUsage: ProviderUsage?
    var provider = ""
    var model = ""
    var attempts: [ProviderAttempt] = []
    var confidence = 1.0
    var handoff: HandoffReason?
    var failure: ProviderError?
    var deliveredTokens = false
}
