import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Synchronization
import Telemetry
import Tracing

/// Running the agent: the provider fallback chain with retries and circuit breakers, the built-in local agent,
/// and the consent check.
extension OrchestratorHandler {
    // MARK: running the agent

    func runAgent(_ context: TaskContext, manifest: AgentManifest?, messages: [ChatMessage]) async -> AgentRun {
        let routed = context.routed
        let primary = ProviderTarget(provider: routed.provider.isEmpty ? "local" : routed.provider, model: routed.model)
        let plan = FallbackPlan(primary: primary, fallbackChain: configuration.fallbackChain, breakers: breakers,
                                now: .now)
        var sequencer = FallbackSequencer(plan: plan, retryPolicy: configuration.retryPolicy)
        var run = AgentRun()
        var random = SystemRandomNumberGenerator()
        let delivered = Atomic<Bool>(false)
        let skipped = plan.skippedAttempts(at: EventClock.nowUnixNanos())
        while true {
            switch sequencer.step {
            case .succeeded:
                run.attempts = skipped + sequencer.attempts
                return run
            case .exhausted:
                run.attempts = skipped + sequencer.attempts
                if run.failure == nil {
                    run.failure = ProviderError(plan.targets.isEmpty ? .circuitOpen : .transport, reason: "no provider available")
                }
                return run
            case .call(let target, _, let after):
                if after > .zero { try? await Task.sleep(for: after) }
                // One span per attempt, child of the orchestrator's: the provider call in the chat's trace.
                let attempt = context.tracer.startSpan("provider \(target.provider)", context: context.trace,
                                                       ofKind: .client)
                attempt.attributes["switchyard.provider"] = target.provider
                defer { attempt.end() }
                let startedAt = EventClock.nowUnixNanos()
                if context.request.deadlineUnixNanos > 0 && startedAt >= context.request.deadlineUnixNanos {
                    run.failure = ProviderError(.timeout, reason: "deadline passed")
                    run.attempts = skipped + sequencer.attempts
                    return run
                }
                if target.provider == "local" {
                    guard let outcome = await runLocal(context, manifest: manifest, messages: messages) else {
                        let error = ProviderError(.unavailable, reason: "knowledge base unavailable")
                        run.failure = error
                        sequencer.record(error: error, startedAtUnixNanos: startedAt,
                                         endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                        recordAttempt("local", outcome: error.code.name, startedAt: startedAt)
                        continue
                    }
                    run.content = outcome.content
                    run.confidence = outcome.confidence
                    run.handoff = outcome.handoff
                    run.provider = "local"
                    run.model = manifest?.model ?? "kb-retrieval"
                    run.failure = nil
                    sequencer.record(error: nil, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt("local", outcome: "ok", startedAt: startedAt)
                    streamLocal(outcome.content, reply: context.reply)
                    continue
                }
                guard breakers.allowRequest(provider: target.provider, now: .now) else {
                    let error = ProviderError(.circuitOpen)
                    run.failure = error
                    sequencer.record(error: error, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt(target.provider, outcome: "circuit-open", startedAt: startedAt)
                    continue
                }
                let call = ProviderCall(
                    model: target.model.isEmpty ? (manifest?.model ?? context.routed.model) : target.model,
                    messages: messages,
                    maxTokens: context.request.maxTokens > 0 ? Int(context.request.maxTokens) : nil,
                    temperature: context.request.temperature, stream: context.request.stream)
                let reply = context.reply
                do {
                    let response = try await providers.complete(provider: target.provider, call: call) { delta in
                        delivered.store(true, ordering: .relaxed)
                        reply.chunk(delta)
                    }
                    breakers.record(provider: target.provider, success: true, now: .now)
                    run.content = response.content
                    run.finishReason = response.finishReason ?? "stop"
                    run.providerUsage = response.usage
                    run.provider = target.provider
                    run.model = call.model
                    run.failure = nil
                    sequencer.record(error: nil, httpStatus: 200, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                    recordAttempt(target.provider, outcome: "ok", startedAt: startedAt)
                } catch {
                    attempt.recordError(error)
                    attempt.setStatus(SpanStatus(code: .error, message: error.code.name))
                    breakers.record(provider: target.provider, success: false, now: .now)
                    recordAttempt(target.provider, outcome: error.code.name, startedAt: startedAt)
                    logger.warning("provider attempt failed", metadata: [
                        LogKey.tenantID: "\(context.tenant)", LogKey.requestID: "\(context.meta.requestID)",
                        "provider": "\(target.provider)", "error": "\(error)",
                    ])
                    run.failure = error
                    if delivered.load(ordering: .relaxed) {
                        // Tokens already reached the client: a fallback would garble the answer.
                        sequencer.record(error: error, httpStatus: error.code.httpStatus, startedAtUnixNanos: startedAt,
                                         endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                        run.deliveredTokens = true
                        run.attempts = skipped + sequencer.attempts
                        return run
                    }
                    sequencer.record(error: error, httpStatus: error.code.httpStatus, startedAtUnixNanos: startedAt,
                                     endedAtUnixNanos: EventClock.nowUnixNanos(), random: &random)
                }
            }
        }
    }

    func recordAttempt(_ provider: String, outcome: String, startedAt: Int64) {
        metrics.counter(.providerAttemptsTotal, [(.provider, provider), (.outcome, outcome)]).increment()
        metrics.timer(.providerLatencySeconds, [(.provider, provider)])
            .recordNanoseconds(EventClock.nowUnixNanos() - startedAt)
    }

    /// The local agent's answer, or nil when its knowledge base can't be loaded: it is retried with backoff
    /// for up to 5 s (and never past the request's deadline), but never replaced by an empty one — an answer
    /// composed from nothing would be a wrong answer with status 200.
    func runLocal(_ context: TaskContext, manifest: AgentManifest?, messages: [ChatMessage]) async -> LocalAnswer? {
        var index: KnowledgeIndex?
        let clock = ContinuousClock()
        var budget = Duration.seconds(5)
        if context.request.deadlineUnixNanos > 0 {
            let left = Duration.nanoseconds(context.request.deadlineUnixNanos - EventClock.nowUnixNanos()) - .seconds(1)
            budget = min(budget, max(.zero, left))
        }
        let giveUp = clock.now + budget
        var delay = Duration.milliseconds(100)
        while index == nil {
            do {
                index = try await knowledge.index(tenant: context.tenant)
            } catch {
                guard clock.now + delay < giveUp, !Task.isCancelled else {
                    logger.error("knowledge base unavailable; the request fails", metadata: [
                        LogKey.tenantID: "\(context.tenant)", LogKey.requestID: "\(context.meta.requestID)",
                        "error": "\(error)",
                    ])
                    return nil
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
        guard let index else { return nil }
        let threshold = (manifest?.handoffThreshold ?? 0) > 0 ? manifest!.handoffThreshold : LocalAgent.defaultHandoffThreshold
        return LocalAgent().answer(messages: messages, index: index, handoffThreshold: threshold)
    }

    /// The local agent answers at once; for `stream: true` it still arrives as a few chunks.
    func streamLocal(_ content: String, reply: ReplyChannel) {
        guard reply.stream else { return }
        var piece = ""
        var words = 0
        for character in content {
            piece.append(character)
            if character == " " {
                words += 1
                if words == 8 {
                    reply.chunk(piece)
                    piece = ""
                    words = 0
                }
            }
        }
        reply.chunk(piece)
    }

    // MARK: consent

    enum ConsentOutcome: Sendable { case granted, denied, asked(String) }

    func checkConsent(_ context: TaskContext) async throws -> ConsentOutcome {
        let tenant = context.tenant
        let conversation = context.request.conversationID
        let last = context.request.messages.last(where: { $0.role == "user" })?.content ?? ""
        var outcome: ConsentOutcome
        var outcomeName: String
        if let granted = try await store.consent(tenant: tenant, conversation: conversation) {
            outcome = granted ? .granted : .denied
            outcomeName = granted ? "granted" : "denied"
        } else if let answer = ConsentPhrases.answer(last) {
            try await store.recordConsent(tenant: tenant, conversation: conversation, granted: answer)
            outcome = answer ? .granted : .denied
            outcomeName = answer ? "granted-now" : "denied-now"
        } else {
            outcome = .asked(ConsentPhrases.question(for: last))
            outcomeName = "asked"
        }
        let granted: Bool
        if case .granted = outcome { granted = true } else { granted = false }
        metrics.counter(.agentConsentChecksTotal, [(.tenant, tenant), (.outcome, outcomeName)]).increment()
        let event = ConsentChecked(meta: context.eventMeta("consent"), conversationID: conversation, required: true,
                                   granted: granted, policy: "required", outcome: outcomeName,
                                   agent: context.routed.agent, agentVersion: context.routed.agentVersion,
                                   rolloutCohort: context.routed.rolloutCohort, channel: context.request.channel,
                                   packageName: context.routed.packageName)
        try await jetStream.publishEvent(.consentChecked, tenant: tenant, eventID: event.meta!.eventID,
                                         payload: event.protobufBytes(), headers: context.headers)
        if case .granted = outcome, outcomeName == "granted-now" {
            // The user's "yes" is not itself a question: acknowledge it.
            return .asked(ConsentPhrases.thanks(for: last))
        }
        return outcome
    }
}
