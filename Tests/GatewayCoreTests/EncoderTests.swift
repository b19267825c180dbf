import Tenancy
import Foundation
@testable import GatewayCore
import Schemas
import Testing

@Suite("OpenAI response encoders")
struct EncoderTests {
    let completed = ChatCompleted(
        conversationID: "conv-9", agent: "host", agentVersion: "1.2.0", model: "gpt-x", provider: "local",
        content: "Table for \"two\" at 7\n\tok? ü 🍝 \u{01}", finishReason: "stop",
        usage: Usage(promptTokens: 11, completionTokens: 7, totalTokens: 18), handedOff: true)

    @Test func chatCompletionShape() throws {
        let body = OpenAIResponse.chatCompletion(completed, requestID: "req-42", model: "host",
                                                 createdUnixSeconds: 1_700_000_000)
        let json = jsonObject(body)
        #expect(json["id"] as? String == "chatcmpl-req-42")
        #expect(json["object"] as? String == "chat.completion")
        #expect(json["created"] as? Int == 1_700_000_000)
        #expect(json["model"] as? String == "host")
        let choices = try #require(json["choices"] as? [[String: Any]])
        #expect(choices.count == 1)
        #expect(choices[0]["index"] as? Int == 0)
        #expect(choices[0]["finish_reason"] as? String == "stop")
        let message = try #require(choices[0]["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        #expect(message["content"] as? String == completed.content)
        let usage = try #require(json["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == 11)
        #expect(usage["completion_tokens"] as? Int == 7)
        #expect(usage["total_tokens"] as? Int == 18)
        let ext = try #require(json["switchyard"] as? [String: Any])
        #expect(ext["agent"] as? String == "host")
        #expect(ext["agent_version"] as? String == "1.2.0")
        #expect(ext["handed_off"] as? Bool == true)
        #expect(ext["conversation_id"] as? String == "conv-9")
    }

    @Test func chatCompletionDefaults() throws {
        var c = ChatCompleted(agent: "a", content: "")
        c.usage = Usage(promptTokens: 3, completionTokens: 4)  // total missing → computed
        let json = jsonObject(OpenAIResponse.chatCompletion(c, requestID: "r", model: "a", createdUnixSeconds: 0))
        let choices = try #require(json["choices"] as? [[String: Any]])
        #expect(choices[0]["finish_reason"] as? String == "stop")
        let usage = try #require(json["usage"] as? [String: Any])
        #expect(usage["total_tokens"] as? Int == 7)
        let noUsage = jsonObject(OpenAIResponse.chatCompletion(ChatCompleted(), requestID: "r", model: "a",
                                                               createdUnixSeconds: 0))
        #expect((noUsage["usage"] as? [String: Any])?["total_tokens"] as? Int == 0)
    }

    @Test func stringEscapingRoundTrips() {
        let nasty = "quote\" backslash\\ slash/ nl\n cr\r tab\t bs\u{08} ff\u{0C} nul\u{00} esc\u{1B} del\u{7F} é 中 🎉 \u{2028}"
        var w = JSONWriter()
        w.raw("{\"s\":")
        w.string(nasty)
        w.raw(",\"n\":")
        w.int(Int64.min)
        w.raw(",\"p\":")
        w.int(1234567890 as Int64)
        w.raw(",\"z\":")
        w.int(0 as Int64)
        w.raw("}")
        let json = jsonObject(w.bytes)
        #expect(json["s"] as? String == nasty)
        #expect((json["n"] as? NSNumber)?.int64Value == Int64.min)
        #expect(json["p"] as? Int == 1234567890)
        #expect(json["z"] as? Int == 0)
    }

    // MARK: SSE

    func payload(_ event: [UInt8]) -> [String: Any] {
        let text = String(decoding: event, as: UTF8.self)
        #expect(text.hasPrefix("data: "))
        #expect(text.hasSuffix("\n\n"))
        #expect(text.dropFirst(6).dropLast(2).contains("\n") == false)
        return jsonObject(Array(event.dropFirst(6).dropLast(2)))
    }

    @Test func sseFramingExact() {
        let encoder = ChatCompletionStreamEncoder(requestID: "r1", model: "host", createdUnixSeconds: 100,
                                                  includeUsage: false)
        #expect(String(decoding: encoder.roleChunk(), as: UTF8.self) ==
            #"data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":100,"model":"host","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"# + "\n\n")
        #expect(String(decoding: encoder.contentChunk("Hi\n"), as: UTF8.self) ==
            #"data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":100,"model":"host","choices":[{"index":0,"delta":{"content":"Hi\n"},"logprobs":null,"finish_reason":null}]}"# + "\n\n")
        #expect(String(decoding: encoder.finishChunk(finishReason: "length"), as: UTF8.self) ==
            #"data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":100,"model":"host","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}"# + "\n\n")
        #expect(String(decoding: ChatCompletionStreamEncoder.done, as: UTF8.self) == "data: [DONE]\n\n")
    }

    @Test func sseChunksParse() throws {
        let encoder = ChatCompletionStreamEncoder(requestID: "r1", model: "host", createdUnixSeconds: 100,
                                                  includeUsage: true)
        let role = payload(encoder.roleChunk())
        #expect(role["object"] as? String == "chat.completion.chunk")
        #expect(role["id"] as? String == "chatcmpl-r1")
        #expect(role.keys.contains("usage"))  // null when include_usage
        let roleDelta = try #require(((role["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any])
        #expect(roleDelta["role"] as? String == "assistant")

        let content = payload(encoder.contentChunk("multi\nline \"quoted\""))
        let delta = try #require(((content["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any])
        #expect(delta["content"] as? String == "multi\nline \"quoted\"")

        let usage = payload(encoder.usageChunk(Usage(promptTokens: 5, completionTokens: 6, totalTokens: 11)))
        #expect((usage["choices"] as? [Any])?.isEmpty == true)
        #expect((usage["usage"] as? [String: Any])?["total_tokens"] as? Int == 11)
    }

    @Test func eventsForStreamChunks() {
        let encoder = ChatCompletionStreamEncoder(requestID: "r", model: "m", createdUnixSeconds: 1, includeUsage: true)
        let middle = encoder.events(for: StreamChunk(index: 0, delta: "abc"))
        #expect(middle == encoder.contentChunk("abc"))
        #expect(encoder.events(for: StreamChunk(index: 1, delta: "")).isEmpty)

        let usage = Usage(promptTokens: 1, completionTokens: 2, totalTokens: 3)
        let last = encoder.events(for: StreamChunk(index: 2, delta: "z", finishReason: "stop", usage: usage, done: true))
        #expect(last == encoder.contentChunk("z") + encoder.finishChunk(finishReason: "stop") + encoder.usageChunk(usage)
            + ChatCompletionStreamEncoder.done)

        let noUsage = ChatCompletionStreamEncoder(requestID: "r", model: "m", createdUnixSeconds: 1, includeUsage: false)
        let end = noUsage.events(for: StreamChunk(index: 2, finishReason: "", usage: usage, done: true))
        #expect(end == noUsage.finishChunk(finishReason: "stop") + ChatCompletionStreamEncoder.done)
        let text = String(decoding: end, as: UTF8.self)
        #expect(text.hasSuffix("data: [DONE]\n\n"))
        #expect(!text.contains("usage"))
    }

    // MARK: Models

    @Test func modelList() throws {
        let json = jsonObject(OpenAIResponse.modelList(agentNames: ["host", "support"], createdUnixSeconds: 42))
        #expect(json["object"] as? String == "list")
        let data = try #require(json["data"] as? [[String: Any]])
        #expect(data.map { $0["id"] as? String } == ["host", "support"])
        for model in data {
            #expect(model["object"] as? String == "model")
            #expect(model["created"] as? Int == 42)
            #expect(model["owned_by"] as? String == "switchyard")
        }
        let empty = jsonObject(OpenAIResponse.modelList(agentNames: [], createdUnixSeconds: 0))
        #expect((empty["data"] as? [Any])?.isEmpty == true)
        let one = jsonObject(OpenAIResponse.model("host", createdUnixSeconds: 1))
        #expect(one["id"] as? String == "host")
    }
}

@Suite("GatewayError")
struct GatewayErrorTests {
    static let cases: [(GatewayError, Int, String, String)] = [
        (.invalidRequest("bad", param: "model"), 400, "invalid_request_error", "invalid_request_error"),
        (.invalidAPIKey(), 401, "authentication_error", "invalid_api_key"),
        (.tenantSuspended(), 403, "permission_error", "tenant_suspended"),
        (.notFound(), 404, "invalid_request_error", "not_found"),
        (.modelNotFound(), 404, "invalid_request_error", "model_not_found"),
        (.methodNotAllowed("GET", path: "/v1/chat/completions", allowed: "POST"), 405, "invalid_request_error",
         "method_not_allowed"),
        (.requestTooLarge(limitBytes: 10), 413, "invalid_request_error", "request_too_large"),
        (.rateLimitExceeded(retryAfterSeconds: 3), 429, "rate_limit_error", "rate_limit_exceeded"),
        (.budgetExceeded(), 429, "insufficient_quota", "insufficient_quota"),
        (.internalError(), 500, "api_error", "internal_error"),
        (.upstreamError(), 502, "api_error", "upstream_error"),
        (.serviceUnavailable(), 503, "api_error", "service_unavailable"),
        (.deadlineExceeded(), 504, "api_error", "deadline_exceeded"),
    ]

    @Test(arguments: 0..<cases.count)
    func bodyShape(_ index: Int) throws {
        let (error, status, type, code) = Self.cases[index]
        #expect(error.status == status)
        let json = jsonObject(error.body)
        #expect(json.count == 1)
        let inner = try #require(json["error"] as? [String: Any])
        #expect(Set(inner.keys) == ["message", "type", "param", "code"])
        #expect(inner["message"] as? String == error.message)
        #expect(inner["type"] as? String == type)
        #expect(inner["code"] as? String == code)
        if let param = error.param {
            #expect(inner["param"] as? String == param)
        } else {
            #expect(inner["param"] is NSNull)
        }
        let sse = String(decoding: error.sseEvent, as: UTF8.self)
        #expect(sse == "data: " + String(decoding: error.body, as: UTF8.self) + "\n\n")
    }

    @Test func retryAfter() {
        #expect(GatewayError.rateLimitExceeded(retryAfterSeconds: 7).retryAfterSeconds == 7)
        #expect(GatewayError.rateLimitExceeded(retryAfterSeconds: 0).retryAfterSeconds == 1)
        #expect(GatewayError.invalidAPIKey().retryAfterSeconds == nil)
        #expect(GatewayError.rateLimitExceeded(retryAfterSeconds: 1).isRetriable)
        #expect(!GatewayError.invalidRequest("x").isRetriable)
    }

    @Test func mapsChatFailed() {
        func mapped(_ code: String, _ status: UInt32) -> GatewayError {
            GatewayError(failed: ChatFailed(errorCode: code, message: "provider said SECRET-PAYLOAD", httpStatus: status))
        }
        #expect(mapped("model_not_found", 0).code == .modelNotFound)
        #expect(mapped("deadline_exceeded", 0).status == 504)
        #expect(mapped("timeout", 500).status == 504)  // code wins over status
        #expect(mapped("upstream_error", 0).status == 502)
        #expect(mapped("service_unavailable", 0).status == 503)
        #expect(mapped("rate_limit_exceeded", 0).status == 429)
        #expect(mapped("rate_limit_exceeded", 0).retryAfterSeconds == 1)
        #expect(mapped("tenant_suspended", 0).status == 403)
        #expect(mapped("budget_exceeded", 0).code == .budgetExceeded)
        #expect(mapped("insufficient_quota", 0).status == 429)
        #expect(mapped("invalid_request_error", 0).status == 400)
        #expect(mapped("internal_error", 0).status == 500)
        #expect(mapped("weird", 404).code == .modelNotFound)
        #expect(mapped("weird", 400).status == 400)
        #expect(mapped("weird", 429).status == 429)
        #expect(mapped("weird", 503).status == 503)
        #expect(mapped("weird", 504).status == 504)
        #expect(mapped("weird", 500).status == 500)
        #expect(mapped("", 0).status == 502)
        #expect(mapped("weird", 418).status == 502)
        for status: UInt32 in [0, 400, 404, 429, 500, 502, 503, 504] {
            expectNoEcho(mapped("x", status), ["SECRET-PAYLOAD"])
        }
    }
}
