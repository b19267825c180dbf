import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Synchronization
import Telemetry

/// Results: the answer to the gateway first, then the durable record on the event log and the usage stream.
extension OrchestratorHandler {
    // MARK: results

    func complete(_ context: TaskContext, run: AgentRun, keepHistory: Bool, prompt: [ChatMessage],
                  decision: String, duration: Duration) async throws {
        let tenant = context.tenant
        let usage = TokenEstimator.usage(reported: run.providerUsage, prompt: prompt, completion: run.content)
        let schemaUsage = Usage(promptTokens: UInt32(clamping: usage.promptTokens),
                                completionTokens: UInt32(clamping: usage.completionTokens),
                                totalTokens: UInt32(clamping: usage.totalTokens))
        let completed = ChatCompleted(
            meta: context.eventMeta("completed"), conversationID: context.request.conversationID,
            agent: context.routed.agent, agentVersion: context.routed.agentVersion, model: run.model,
            provider: run.provider, content: run.content, finishReason: run.finishReason, usage: schemaUsage,
            hops: context.hops + [HopStamp(hop: "orchestrator.done", unixNanos: EventClock.nowUnixNanos())],
            attempts: run.attempts, handedOff: run.handoff != nil, rolloutCohort: context.routed.rolloutCohort,
            channel: context.request.channel, packageName: context.routed.packageName)
        let bytes = completed.protobufBytes()
        // The client first: then the durable record.
        context.reply.sendFinal(completed)
        let usageEvent = UsageRecorded(
            meta: context.eventMeta("usage"), conversationID: context.request.conversationID,
            agent: context.routed.agent, provider: run.provider, model: run.model,
            promptTokens: UInt32(clamping: usage.promptTokens), completionTokens: UInt32(clamping: usage.completionTokens),
            estimated: usage.estimated)
        let decisionEvent = AgentDecision(
            meta: context.eventMeta("decision"), agent: context.routed.agent, agentVersion: context.routed.agentVersion,
            decision: decision, confidence: run.confidence, reason: run.handoff?.rawValue ?? decision,
            durationNanos: duration.nanosecondsValue, conversationID: context.request.conversationID)
        async let completedAck = jetStream.publishEvent(.chatCompleted, tenant: tenant, eventID: completed.meta!.eventID,
                                                        payload: bytes, headers: context.headers)
        async let usageAck = jetStream.publish(OutboundMessage(
            subject: Subjects.usage(tenant: tenant), payload: usageEvent.protobufBytes(), headers: context.headers,
            messageID: "\(tenant):\(usageEvent.meta!.eventID)"))
        async let decisionAck = jetStream.publishEvent(.agentDecision, tenant: tenant, eventID: decisionEvent.meta!.eventID,
                                                       payload: decisionEvent.protobufBytes(), headers: context.headers)
        if let handoff = run.handoff {
            let event = HandoffRequested(meta: context.eventMeta("handoff"), conversationID: context.request.conversationID,
                                         agent: context.routed.agent, reason: handoff.rawValue, confidence: run.confidence,
                                         agentVersion: context.routed.agentVersion,
                                         rolloutCohort: context.routed.rolloutCohort, channel: context.request.channel,
                                         packageName: context.routed.packageName)
            try await jetStream.publishEvent(.handoffRequested, tenant: tenant, eventID: event.meta!.eventID,
                                             payload: event.protobufBytes(), headers: context.headers)
            metrics.counter(.agentHandoffsTotal, [(.tenant, tenant), (.agent, context.routed.agent), (.outcome, handoff.rawValue)])
                .increment()
        }
        _ = try await (completedAck, usageAck, decisionAck)
        if keepHistory, let user = context.request.messages.last(where: { $0.role == "user" }) {
            try await store.recordTurn(tenant: tenant, conversation: context.request.conversationID,
                                       requestID: context.meta.requestID, user: user.content, assistant: run.content,
                                       agent: context.routed.agent)
        }
        metrics.counter(.chatCompletionsTotal, [(.tenant, tenant), (.agent, context.routed.agent),
                                                (.outcome, run.handoff == nil ? "answered" : "handoff")]).increment()
    }

    func fail(_ context: TaskContext, code: String, message: String, status: Int, attempts: [ProviderAttempt],
              partial: AgentRun? = nil, prompt: [ChatMessage] = []) async throws {
        let failed = ChatFailed(
            meta: context.eventMeta("failed"), conversationID: context.request.conversationID,
            agent: context.routed.agent, errorCode: code, message: message, httpStatus: UInt32(status),
            retriable: true, hops: context.hops, attempts: attempts, agentVersion: context.routed.agentVersion,
            rolloutCohort: context.routed.rolloutCohort, channel: context.request.channel,
            packageName: context.routed.packageName)
        let bytes = failed.protobufBytes()
        context.reply.sendFinal(failed)
        try await jetStream.publishEvent(.chatFailed, tenant: context.tenant, eventID: failed.meta!.eventID,
                                         payload: bytes, headers: context.headers)
        if let partial {
            // What was generated before the failure reached the client: it is still metered.
            let usage = TokenEstimator.usage(reported: nil, prompt: prompt, completion: partial.content)
            let event = UsageRecorded(
                meta: context.eventMeta("usage"), conversationID: context.request.conversationID,
                agent: context.routed.agent, provider: partial.provider, model: partial.model,
                promptTokens: UInt32(clamping: usage.promptTokens), completionTokens: UInt32(clamping: usage.completionTokens),
                estimated: true)
            try await jetStream.publish(OutboundMessage(
                subject: Subjects.usage(tenant: context.tenant), payload: event.protobufBytes(), headers: context.headers,
                messageID: "\(context.tenant):\(event.meta!.eventID)"))
        }
        metrics.counter(.chatCompletionsTotal, [(.tenant, context.tenant), (.agent, context.routed.agent),
                                                (.outcome, "failed")]).increment()
    }
}
