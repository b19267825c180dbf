import Contracts
import Foundation
import Hummingbird
import HTTPTypes
import Logging
import Messaging
import NIOCore
import Schemas
import Security
import ServiceKit
import Telemetry
import Tenancy
import Tracing

/// Turning the orchestrator's replies (on this instance's reply subject) into OpenAI-shaped responses.
extension ChatGateway {
    struct Exchange: Sendable {
        let requestID: String
        let tenant: String
        let keyID: String
        let model: String
        let charged: UInt32
        let started: ContinuousClock.Instant
        let includeUsage: Bool
        let timeout: Duration
        /// The request holds budget (docs/adr/0014).
        var budgeted = false
    }

    /// The first completed/failed reply, or nil when the inbox ends the stream at the deadline.
    static func firstFinal(_ replies: AsyncStream<NATSMessage>) async -> NATSMessage? {
        for await message in replies where !ReplyType.isChunk(message.headers[Headers.eventType]) {
            return message
        }
        return nil
    }

    /// A failed request's budget hold is dropped right away (its failed attempts cost nothing) rather than
    /// counting until its lease ends; in the background, as the answer doesn't depend on it.
    func releaseBudgetHold(_ context: Exchange) {
        guard context.budgeted else { return }
        let budgets = self.budgets
        Task { await budgets.release(tenant: context.tenant, requestID: context.requestID) }
    }

    func finalResponse(_ message: NATSMessage, context: Exchange) -> Response {
        if ReplyType.isFailure(message.headers[Headers.eventType]) {
            guard let failed = try? ChatFailed(protobuf: message.payload) else {
                return Self.errorResponse(.upstreamError(), requestID: context.requestID)
            }
            limiter.refund(key: context.keyID, tokens: context.charged, nowNanos: EventClock.nowUnixNanos())
            releaseBudgetHold(context)
            return Self.errorResponse(GatewayError(failed: failed), requestID: context.requestID)
        }
        guard let completed = try? ChatCompleted(protobuf: message.payload) else {
            return Self.errorResponse(.upstreamError(), requestID: context.requestID)
        }
        reconcile(completed, context: context)
        let body = OpenAIResponse.chatCompletion(completed, requestID: context.requestID,
                                                 model: completed.agent.isEmpty ? context.model : completed.agent,
                                                 createdUnixSeconds: EventClock.nowUnixNanos() / 1_000_000_000)
        var response = Self.json(.ok, body, requestID: context.requestID)
        response.headers[HTTPField.Name("x-switchyard-overhead-ms")!] = Self.overheadMilliseconds(completed, context: context)
        return response
    }

    private func reconcile(_ completed: ChatCompleted, context: Exchange) {
        let actual = completed.usage?.totalTokens ?? 0
        limiter.reconcile(key: context.keyID, charged: context.charged, actual: actual, nowNanos: EventClock.nowUnixNanos())
        metrics.counter(.chatCompletionsTotal, [(.tenant, context.tenant), (.agent, completed.agent),
                                                (.outcome, completed.handedOff ? "handoff" : "answered")]).increment()
    }

    /// Platform overhead: the whole request minus the time spent inside upstream providers.
    static func overheadMilliseconds(_ completed: ChatCompleted, context: Exchange) -> String {
        let total = ContinuousClock.now - context.started
        let providerNanos = completed.attempts.reduce(Int64(0)) {
            $0 + max(0, $1.endedAtUnixNanos - $1.startedAtUnixNanos)
        }
        let local = completed.provider == "local" || completed.provider == "consent"
        let overhead = Double(total.nanosecondsValue - (local ? 0 : providerNanos)) / 1_000_000
        return String(format: "%.3f", max(0, overhead))
    }

    /// The SSE answer; `span` (the request's server span) ends when the body has been written.
    func streamResponse(_ replies: AsyncStream<NATSMessage>, context: Exchange, span: any Span) -> Response {
        let encoder = ChatCompletionStreamEncoder(requestID: context.requestID, model: context.model,
                                                  createdUnixSeconds: EventClock.nowUnixNanos() / 1_000_000_000,
                                                  includeUsage: context.includeUsage)
        let inbox = self.inbox
        let body = ResponseBody { writer in
            defer {
                inbox.unregister(context.requestID)
                span.end()
            }
            try await writer.write(ByteBuffer(bytes: encoder.roleChunk()))
            // The inbox ends the reply stream at the deadline, which ends this loop with no outcome.
            var outcome: NATSMessage?
            // Chunks are written in order; after a gap (chunks lost while the NATS connection was away) the rest
            // of the text comes from the final answer, which carries all of it.
            var written = StreamedText()
            for await message in replies {
                if ReplyType.isChunk(message.headers[Headers.eventType]) {
                    guard let chunk = try? StreamChunk(protobuf: message.payload), written.accept(chunk) else { continue }
                    // A client that went away stops the writes, not the recording of usage.
                    try? await writer.write(ByteBuffer(bytes: encoder.contentChunk(chunk.delta)))
                } else {
                    outcome = message
                    break
                }
            }
            guard let outcome else {
                try await writer.write(ByteBuffer(bytes: GatewayError.deadlineExceeded().sseEvent))
                try await writer.write(ByteBuffer(bytes: ChatCompletionStreamEncoder.done))
                try await writer.finish(nil)
                return
            }
            if ReplyType.isFailure(outcome.headers[Headers.eventType]) {
                let error = (try? ChatFailed(protobuf: outcome.payload)).map(GatewayError.init(failed:)) ?? .upstreamError()
                self.limiter.refund(key: context.keyID, tokens: context.charged, nowNanos: EventClock.nowUnixNanos())
                self.releaseBudgetHold(context)
                try await writer.write(ByteBuffer(bytes: error.sseEvent))
            } else if let completed = try? ChatCompleted(protobuf: outcome.payload) {
                self.reconcile(completed, context: context)
                if let rest = written.remainder(of: completed.content) {
                    try? await writer.write(ByteBuffer(bytes: encoder.contentChunk(rest)))
                }
                try await writer.write(ByteBuffer(bytes: encoder.finishChunk(
                    finishReason: completed.finishReason.isEmpty ? "stop" : completed.finishReason)))
                if context.includeUsage, let usage = completed.usage {
                    try await writer.write(ByteBuffer(bytes: encoder.usageChunk(usage)))
                }
            }
            try await writer.write(ByteBuffer(bytes: ChatCompletionStreamEncoder.done))
            try await writer.finish(nil)
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("x-switchyard-request-id")!] = context.requestID
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: responses

    static func json(_ status: HTTPResponse.Status, _ body: [UInt8], requestID: String?) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let requestID { headers[HTTPField.Name("x-switchyard-request-id")!] = requestID }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func errorResponse(_ error: GatewayError, requestID: String?) -> Response {
        var response = json(HTTPResponse.Status(code: error.status), error.body, requestID: requestID)
        if let retry = error.retryAfterSeconds { response.headers[.retryAfter] = String(retry) }
        return response
    }
}

/// What a streamed answer has written so far: chunks are taken in index order (a duplicate is skipped, and after a
/// gap nothing more is taken), and the final answer's text supplies whatever is missing at the end.
struct StreamedText {
    private(set) var nextIndex: UInt32 = 0
    private(set) var gap = false
    private(set) var text = ""

    /// Whether `chunk` is the next one in order (then it counts as written).
    mutating func accept(_ chunk: StreamChunk) -> Bool {
        guard !gap, chunk.index >= nextIndex else { return false }
        guard chunk.index == nextIndex else {
            gap = true
            return false
        }
        nextIndex += 1
        text += chunk.delta
        return true
    }

    /// The part of `content` (the whole answer) not written yet, when what was written is its beginning.
    func remainder(of content: String) -> String? {
        guard content.utf8.count > text.utf8.count, content.utf8.starts(with: text.utf8) else { return nil }
        return String(decoding: content.utf8.dropFirst(text.utf8.count), as: UTF8.self)
    }
}
