import Foundation
@testable import OrchestratorCore
import Schemas
import Testing

// MARK: - SSE parser

/// Feeds `bytes` in the given chunks and collects events (plus `finish()`).
private func parse(_ chunks: [ArraySlice<UInt8>], finish: Bool = true) throws -> (events: [SSEEvent], done: Bool) {
    var parser = SSEParser()
    var events: [SSEEvent] = []
    for chunk in chunks { events += try parser.feed(chunk) }
    if finish { events += try parser.finish() }
    return (events, parser.isDone)
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("SSEParser")
struct SSEParserTests {
    static let sample = bytes(
        ": keep-alive comment\r\n"
            + "event: greeting\r\n"
            + "id: 7\r\n"
            + "data: Grüße\r\n"
            + "data:  two spaces\r\n"
            + "\r\n"
            + "retry: 1000\n"
            + "data:{\"a\":1}\n"
            + "\n"
            + ":comment only\n\n"
            + "event: empty\n\n"
            + "data\n\n"
            + "data: cr only\r\r"
            + "data: [DONE]\n\n"
            + "data: after done\n\n")

    static let expected: [SSEEvent] = [
        SSEEvent(event: "greeting", data: "Grüße\n two spaces", id: "7"),
        SSEEvent(data: "{\"a\":1}", id: "7"),
        SSEEvent(data: "", id: "7"),
        SSEEvent(data: "cr only", id: "7"),
    ]

    @Test func parsesWholeInput() throws {
        let result = try parse([Self.sample[...]])
        #expect(result.events == Self.expected)
        #expect(result.done)
    }

    @Test func everySplitIntoTwoChunksGivesTheSameEvents() throws {
        let all = Self.sample
        for cut in 0...all.count {
            let result = try parse([all[..<cut], all[cut...]])
            #expect(result.events == Self.expected, "cut at \(cut)")
            #expect(result.done)
        }
    }

    @Test func everySplitIntoThreeChunksGivesTheSameEvents() throws {
        let all = Self.sample
        var failures = 0
        for i in 0...all.count {
            for j in i...all.count {
                let result = try parse([all[..<i], all[i..<j], all[j...]])
                if result.events != Self.expected || !result.done { failures += 1 }
            }
        }
        #expect(failures == 0)
    }

    @Test func byteByByte() throws {
        let result = try parse(Self.sample.indices.map { Self.sample[$0...$0] })
        #expect(result.events == Self.expected)
    }

    @Test func lineEndingsAreEquivalent() throws {
        for ending in ["\n", "\r\n", "\r"] {
            let text = ["event: e", "data: one", "data: two", "", "data: three", "", ""].joined(separator: ending)
            let result = try parse([bytes(text)[...]], finish: false)
            #expect(result.events == [SSEEvent(event: "e", data: "one\ntwo"), SSEEvent(data: "three")], "\(ending.debugDescription)")
        }
    }

    @Test func crlfSplitBetweenCRAndLFIsOneLineEnd() throws {
        var parser = SSEParser()
        #expect(try parser.feed(bytes("data: x\r")).isEmpty)
        #expect(try parser.feed(bytes("\n")).isEmpty)  // not a blank line
        #expect(try parser.feed(bytes("\r\n")) == [SSEEvent(data: "x")])
    }

    @Test func doneStopsEverything() throws {
        var parser = SSEParser()
        let events = try parser.feed(bytes("data: a\n\ndata: [DONE]\n\ndata: b\n\n"))
        #expect(events == [SSEEvent(data: "a")])
        #expect(parser.isDone)
        #expect(try parser.feed(bytes("data: c\n\n")).isEmpty)
        #expect(try parser.finish().isEmpty)
    }

    @Test func finishFlushesAnUnterminatedLastEvent() throws {
        var parser = SSEParser()
        #expect(try parser.feed(bytes("data: tail")).isEmpty)
        #expect(try parser.finish() == [SSEEvent(data: "tail")])
        var done = SSEParser()
        _ = try done.feed(bytes("data: [DONE]"))
        #expect(try done.finish().isEmpty)
        #expect(done.isDone)
    }

    @Test func leadingBOMIsIgnored() throws {
        let result = try parse([([0xEF, 0xBB, 0xBF] + bytes("data: x\n\n"))[...]])
        #expect(result.events == [SSEEvent(data: "x")])
    }

    @Test func garbageWithoutNewlinesHitsTheSizeLimit() {
        var parser = SSEParser(maxEventBytes: 64)
        expectProviderError(.badResponse) {
            _ = try parser.feed([UInt8](repeating: UInt8(ascii: "x"), count: 100))
        }
        var multiline = SSEParser(maxEventBytes: 64)
        expectProviderError(.badResponse) {
            for _ in 0..<20 { _ = try multiline.feed(bytes("data: 0123456789\n")) }
        }
    }

    @Test func binaryGarbageDoesNotCrash() throws {
        var rng = SeededRNG(seed: 9)
        var parser = SSEParser()
        for _ in 0..<200 {
            let chunk = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try parser.feed(chunk)
        }
        _ = try parser.finish()
    }
}

// MARK: - OpenAI

enum OpenAISamples {
    static let response = """
    {"id":"chatcmpl-9x","object":"chat.completion","created":1718000000,"model":"gpt-4o-mini-2024-07-18",
     "choices":[{"index":0,"message":{"role":"assistant","content":"We open at 12 on Sundays.","refusal":null},
     "logprobs":null,"finish_reason":"stop"}],
     "usage":{"prompt_tokens":31,"completion_tokens":8,"total_tokens":39,
     "prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_1"}
    """

    static func chunk(_ choices: String, usage: String = "null") -> String {
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":\(choices),\"usage\":\(usage)}\n\n"
    }

    static let stream =
        chunk(#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]"#)
        + ": OPENROUTER PROCESSING\n\n"
        + chunk(#"[{"index":0,"delta":{"content":"Grü"},"logprobs":null,"finish_reason":null}]"#)
        + chunk(#"[{"index":0,"delta":{"content":"ße!"},"logprobs":null,"finish_reason":null}]"#)
        + chunk(#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#)
        + chunk("[]", usage: #"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#)
        + "data: [DONE]\n\n"
}

private struct Collected: Equatable {
    var text = ""
    var finishReason: String?
    var usage: ProviderUsage?
    var finished = false
}

private func decodeStream(_ format: ProviderStreamDecoder.Format, _ chunks: [ArraySlice<UInt8>]) throws(ProviderError) -> Collected {
    var decoder = ProviderStreamDecoder(format: format)
    var deltas: [StreamDelta] = []
    for chunk in chunks { deltas += try decoder.feed(chunk) }
    deltas += try decoder.finish()
    var out = Collected()
    for delta in deltas {
        out.text += delta.content
        out.finishReason = delta.finishReason ?? out.finishReason
        out.usage = delta.usage ?? out.usage
    }
    out.finished = decoder.isFinished
    return out
}

@Suite("OpenAI wire format")
struct OpenAIWireTests {
    @Test func requestBodyStreaming() throws {
        let request = OpenAIWire.ChatRequest(
            model: "gpt-4o-mini",
            messages: [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi", name: "ann")],
            stream: true, maxTokens: 256, temperature: 0.2)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(request.jsonBody())) as? [String: Any])
        #expect(json["model"] as? String == "gpt-4o-mini")
        #expect(json["stream"] as? Bool == true)
        #expect(json["max_tokens"] as? Int == 256)
        #expect(json["temperature"] as? Double == 0.2)
        #expect((json["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
        let messages = try #require(json["messages"] as? [[String: Any]])
        #expect(messages.count == 2)
        #expect(messages[0]["name"] == nil)
        #expect(messages[1]["name"] as? String == "ann")
    }

    @Test func requestBodyNonStreamingOmitsOptionals() throws {
        let request = OpenAIWire.ChatRequest(model: "m", messages: [Fixtures.user("Hi")], stream: false)
        let text = String(decoding: try request.jsonBody(), as: UTF8.self)
        #expect(text == #"{"messages":[{"content":"Hi","role":"user"}],"model":"m","stream":false}"#)
    }

    @Test func decodesAResponse() throws {
        let response = try OpenAIWire.decodeResponse(bytes(OpenAISamples.response))
        #expect(response == ProviderResponse(
            content: "We open at 12 on Sundays.", finishReason: "stop",
            usage: ProviderUsage(promptTokens: 31, completionTokens: 8, totalTokens: 39)))
    }

    @Test func nullContentAndMissingUsageAreFine() throws {
        let response = try OpenAIWire.decodeResponse(bytes(
            #"{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"tool_calls"}]}"#))
        #expect(response == ProviderResponse(content: "", finishReason: "tool_calls", usage: nil))
    }

    @Test(arguments: [
        "", "<html>502 Bad Gateway</html>", "{}", #"{"choices":[]}"#, #"{"choices":[{}]}"#,
        #"{"error":{"message":"sk-secret-key leaked","type":"invalid_request_error"}}"#, "[1,2,3]", "null",
        #"{"choices":"nope"}"#, #"{"choices":[{"message":{"content":42}}]}"#,
    ])
    func garbageResponsesAreBadResponse(body: String) {
        expectProviderError(.badResponse) { try OpenAIWire.decodeResponse(bytes(body)) }
    }

    @Test func errorDescriptionsCarryNoPayload() {
        do {
            _ = try OpenAIWire.decodeResponse(bytes(#"{"secret":"sk-secret-key"#))
            Issue.record("expected an error")
        } catch {
            #expect(!error.description.contains("sk-secret"))
            #expect(error.description.hasPrefix("ProviderError(bad_response)"))
        }
    }

    @Test func decodesAStream() throws {
        let result = try decodeStream(.openAI, [bytes(OpenAISamples.stream)[...]])
        #expect(result == Collected(
            text: "Grüße!", finishReason: "stop",
            usage: ProviderUsage(promptTokens: 9, completionTokens: 2, totalTokens: 11), finished: true))
    }

    @Test func streamSplitAtEveryByteBoundaryDecodesTheSame() throws {
        let all = bytes(OpenAISamples.stream)
        let whole = try decodeStream(.openAI, [all[...]])
        for cut in 0...all.count {
            #expect(try decodeStream(.openAI, [all[..<cut], all[cut...]]) == whole, "cut at \(cut)")
        }
        #expect(try decodeStream(.openAI, all.indices.map { all[$0...$0] }) == whole)
    }

    @Test func streamWithoutDoneIsCut() {
        let all = bytes(OpenAISamples.stream.replacingOccurrences(of: "data: [DONE]\n\n", with: ""))
        expectProviderError(.streamCut) { try decodeStream(.openAI, [all[...]]) }
        expectProviderError(.streamCut) { try decodeStream(.openAI, []) }
    }

    @Test func garbageChunkIsBadResponse() {
        for garbage in ["data: {not json\n\n", "data: {\"id\":1}\n\n", "data: <html>\n\n"] {
            expectProviderError(.badResponse) { try decodeStream(.openAI, [bytes(garbage)[...]]) }
        }
    }

    @Test func decodesSingleChunks() throws {
        let delta = try OpenAIWire.decodeStreamChunk(#"{"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}"#)
        #expect(delta == StreamDelta(content: "x", finishReason: "length"))
    }
}

// MARK: - Anthropic

enum AnthropicSamples {
    static let response = """
    {"id":"msg_01","type":"message","role":"assistant","model":"claude-3-haiku-20240307",
     "content":[{"type":"text","text":"Wir haben sonntags "},{"type":"tool_use","id":"t","name":"x","input":{}},
     {"type":"text","text":"ab 12 Uhr geöffnet."}],
     "stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":12}}
    """

    static let stream = """
    event: message_start
    data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-3-haiku-20240307","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

    event: content_block_start
    data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

    event: ping
    data: {"type": "ping"}

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hallo"}}

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Welt 👋"}}

    event: content_block_stop
    data: {"type":"content_block_stop","index":0}

    event: message_delta
    data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

    event: message_stop
    data: {"type":"message_stop"}


    """
}

@Suite("Anthropic wire format")
struct AnthropicWireTests {
    @Test func requestSeparatesSystemAndMergesTurns() throws {
        let request = AnthropicWire.MessagesRequest(
            model: "claude-3-haiku",
            messages: [
                ChatMessage(role: "system", content: "You are the host."),
                ChatMessage(role: "user", content: "Hi"),
                ChatMessage(role: "system", content: "Be brief."),
                ChatMessage(role: "user", content: "Open today?"),
                ChatMessage(role: "assistant", content: "Yes."),
                ChatMessage(role: "tool", content: "42"),
            ],
            stream: true)
        #expect(request.system == "You are the host.\n\nBe brief.")
        #expect(request.messages == [
            AnthropicWire.Message(role: "user", content: "Hi\n\nOpen today?"),
            AnthropicWire.Message(role: "assistant", content: "Yes."),
            AnthropicWire.Message(role: "user", content: "42"),
        ])
        #expect(request.maxTokens == AnthropicWire.defaultMaxTokens)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(request.jsonBody())) as? [String: Any])
        #expect(json["max_tokens"] as? Int == 1024)
        #expect(json["stream"] as? Bool == true)
        #expect(json["system"] as? String == "You are the host.\n\nBe brief.")
        #expect(json["temperature"] == nil)
    }

    @Test func requestWithoutSystemOmitsIt() throws {
        let request = AnthropicWire.MessagesRequest(model: "m", messages: [Fixtures.user("Hi")], maxTokens: 50, stream: false)
        let text = String(decoding: try request.jsonBody(), as: UTF8.self)
        #expect(text == #"{"max_tokens":50,"messages":[{"content":"Hi","role":"user"}],"model":"m","stream":false}"#)
    }

    @Test func decodesAResponse() throws {
        let response = try AnthropicWire.decodeResponse(bytes(AnthropicSamples.response))
        #expect(response == ProviderResponse(
            content: "Wir haben sonntags ab 12 Uhr geöffnet.", finishReason: "end_turn",
            usage: ProviderUsage(promptTokens: 25, completionTokens: 12, totalTokens: 37)))
    }

    @Test(arguments: [
        "", "{}", "<html>", #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        #"{"type":"message","content":"text"}"#, #"{"content":[{"text":"no type"}]}"#,
    ])
    func garbageResponsesAreBadResponse(body: String) {
        expectProviderError(.badResponse) { try AnthropicWire.decodeResponse(bytes(body)) }
    }

    @Test func decodesAStream() throws {
        let result = try decodeStream(.anthropic, [bytes(AnthropicSamples.stream)[...]])
        #expect(result == Collected(
            text: "Hallo Welt 👋", finishReason: "end_turn",
            usage: ProviderUsage(promptTokens: 25, completionTokens: 15, totalTokens: 40), finished: true))
    }

    @Test func streamSplitAtEveryByteBoundaryDecodesTheSame() throws {
        let all = bytes(AnthropicSamples.stream)
        let whole = try decodeStream(.anthropic, [all[...]])
        for cut in 0...all.count {
            #expect(try decodeStream(.anthropic, [all[..<cut], all[cut...]]) == whole, "cut at \(cut)")
        }
    }

    @Test func crlfStreamDecodesTheSame() throws {
        let crlf = bytes(AnthropicSamples.stream.replacingOccurrences(of: "\n", with: "\r\n"))
        #expect(try decodeStream(.anthropic, [crlf[...]]) == decodeStream(.anthropic, [bytes(AnthropicSamples.stream)[...]]))
    }

    @Test func streamWithoutMessageStopIsCut() {
        let cut = bytes(AnthropicSamples.stream.components(separatedBy: "event: message_stop")[0])
        expectProviderError(.streamCut) { try decodeStream(.anthropic, [cut[...]]) }
    }

    @Test func errorEventsThrow() {
        let overloaded = bytes("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
        expectProviderError(.http(529)) { try decodeStream(.anthropic, [overloaded[...]]) }
        let other = bytes("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n")
        expectProviderError(.streamCut) { try decodeStream(.anthropic, [other[...]]) }
    }

    @Test func garbageEventsAreBadResponse() {
        for garbage in ["data: {oops\n\n", "data: {\"no\":\"type\"}\n\n", "data: {\"type\":\"content_block_delta\"}\n\n"] {
            expectProviderError(.badResponse) { try decodeStream(.anthropic, [bytes(garbage)[...]]) }
        }
    }

    @Test func unknownEventTypesAreIgnored() throws {
        #expect(try AnthropicWire.decodeStreamEvent(#"{"type":"brand_new_event","x":1}"#) == .ignored)
        #expect(try AnthropicWire.decodeStreamEvent(
            #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}"#) == .ignored)
    }
}

// MARK: - ProviderError

@Suite("ProviderError")
struct ProviderErrorTests {
    @Test func codesNamesAndRetriability() {
        let cases: [(ProviderError.Code, String, Bool)] = [
            (.badResponse, "bad_response", false), (.timeout, "timeout", true), (.http(429), "http_429", true),
            (.http(503), "http_503", true), (.http(400), "http_400", false), (.http(401), "http_401", false),
            (.http(404), "http_404", false), (.http(422), "http_422", false), (.streamCut, "stream_cut", true),
            (.circuitOpen, "circuit_open", false), (.transport, "transport", true),
        ]
        for (code, name, retriable) in cases {
            #expect(code.name == name)
            #expect(ProviderError(code).isRetriable == retriable, "\(name)")
        }
        #expect(ProviderError.Code.http(429) == .http(429))
        #expect(ProviderError.Code.http(429) != .http(500))
        #expect(ProviderError.Code.http(429).httpStatus == 429)
        #expect(ProviderError.Code.timeout.httpStatus == nil)
    }

    @Test func descriptions() {
        #expect(ProviderError(.timeout).description == "ProviderError(timeout)")
        #expect(ProviderError(.http(502), reason: "upstream").description == "ProviderError(http_502): upstream")
    }
}
