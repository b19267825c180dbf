import Foundation
import Schemas

// Provider wire formats: request bodies, response decoding and Server-Sent-Events stream parsing for
// OpenAI-compatible chat completions and Anthropic's Messages API. No I/O: bytes in, values out.

// MARK: - Errors

/// A failed provider call. Its `description` names the code and a fixed reason, never payload bytes,
/// prompts or keys.
public struct ProviderError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Opaque error code (new codes can be added without breaking `switch`es over it).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: Sendable, Hashable {
            case badResponse, timeout, http(Int), streamCut, circuitOpen, transport, unavailable
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The provider answered, but not in the expected shape (invalid JSON, missing fields).
        public static let badResponse = Code(.badResponse)
        /// No (complete) answer in time.
        public static let timeout = Code(.timeout)
        /// A stream ended (or reported an error) before its end marker.
        public static let streamCut = Code(.streamCut)
        /// Not attempted: the provider's circuit breaker is open.
        public static let circuitOpen = Code(.circuitOpen)
        /// Connection-level failure (DNS, refused, reset, TLS).
        public static let transport = Code(.transport)
        /// A dependency of the agent itself is unreachable (the local agent's knowledge base): the answer can't
        /// be composed, and retrying the same attempt at once won't help.
        public static let unavailable = Code(.unavailable)
        /// A non-success HTTP status.
        public static func http(_ status: Int) -> Code { Code(.http(status)) }

        /// The status of an `.http` code.
        public var httpStatus: Int? {
            if case .http(let status) = base { return status }
            return nil
        }

        /// Stable snake_case name, used as `ProviderAttempt.error_code`: `bad_response`, `timeout`,
        /// `http_429`, `stream_cut`, `circuit_open`, `transport`, `unavailable`.
        public var name: String {
            switch base {
            case .badResponse: "bad_response"
            case .timeout: "timeout"
            case .http(let status): "http_\(status)"
            case .streamCut: "stream_cut"
            case .circuitOpen: "circuit_open"
            case .transport: "transport"
            case .unavailable: "unavailable"
            }
        }

        public var description: String { name }
    }

    public let code: Code
    /// A fixed explanation written in this module (a `StaticString`, so it can't carry payloads).
    public let reason: String

    public init(_ code: Code, reason: StaticString = "") {
        self.code = code
        self.reason = "\(reason)"
    }

    /// Whether retrying the same provider may help: timeouts, transport errors, cut streams and the
    /// retriable HTTP statuses (`RetryPolicy.isRetriable(status:)`) are; bad responses and open circuits
    /// are not.
    public var isRetriable: Bool {
        switch code {
        case .timeout, .transport, .streamCut: true
        case .badResponse, .circuitOpen, .unavailable: false
        default: code.httpStatus.map { RetryPolicy.isRetriable(status: $0) } ?? false
        }
    }

    public var description: String {
        reason.isEmpty ? "ProviderError(\(code.name))" : "ProviderError(\(code.name)): \(reason)"
    }
}

// MARK: - Provider-neutral results

/// Token counts reported by a provider.
public struct ProviderUsage: Sendable, Hashable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int

    /// `totalTokens` defaults to the sum.
    public init(promptTokens: Int, completionTokens: Int, totalTokens: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens ?? promptTokens + completionTokens
    }
}

/// A complete (non-streamed) answer.
public struct ProviderResponse: Sendable, Hashable {
    public var content: String
    /// `stop`, `length`, `end_turn`, `max_tokens`, … as the provider said it; nil when absent.
    public var finishReason: String?
    public var usage: ProviderUsage?

    public init(content: String, finishReason: String?, usage: ProviderUsage?) {
        self.content = content
        self.finishReason = finishReason
        self.usage = usage
    }
}

/// One increment of a streamed answer.
public struct StreamDelta: Sendable, Hashable {
    /// Text to append (may be empty).
    public var content: String
    public var finishReason: String?
    /// Present on the chunk/event that carries usage (OpenAI: last chunk with `include_usage`;
    /// Anthropic: `message_delta`, with the input tokens from `message_start`).
    public var usage: ProviderUsage?

    public init(content: String = "", finishReason: String? = nil, usage: ProviderUsage? = nil) {
        self.content = content
        self.finishReason = finishReason
        self.usage = usage
    }
}

// MARK: - OpenAI chat completions

public enum OpenAIWire {
    public struct Message: Codable, Sendable, Hashable {
        public var role: String
        public var content: String
        public var name: String?

        public init(role: String, content: String, name: String? = nil) {
            self.role = role
            self.content = content
            self.name = name
        }
    }

    public struct StreamOptions: Codable, Sendable, Hashable {
        public var includeUsage: Bool

        public init(includeUsage: Bool) { self.includeUsage = includeUsage }

        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    /// Body of `POST {base}/chat/completions`.
    public struct ChatRequest: Codable, Sendable, Hashable {
        public var model: String
        public var messages: [Message]
        public var stream: Bool
        public var maxTokens: Int?
        public var temperature: Double?
        /// Set (with `include_usage: true`) when streaming, so the last chunk carries usage.
        public var streamOptions: StreamOptions?

        enum CodingKeys: String, CodingKey {
            case model, messages, stream, temperature
            case maxTokens = "max_tokens"
            case streamOptions = "stream_options"
        }

        public init(
            model: String, messages: [ChatMessage], stream: Bool, maxTokens: Int? = nil,
            temperature: Double? = nil
        ) {
            self.model = model
            self.messages = messages.map {
                Message(role: $0.role, content: $0.content, name: $0.name.isEmpty ? nil : $0.name)
            }
            self.stream = stream
            self.maxTokens = maxTokens
            self.temperature = temperature
            self.streamOptions = stream ? StreamOptions(includeUsage: true) : nil
        }

        /// JSON body (keys sorted, so equal requests give equal bytes).
        public func jsonBody() throws -> [UInt8] { try WireJSON.encode(self) }
    }

    struct Usage: Decodable {
        var promptTokens: Int?
        var completionTokens: Int?
        var totalTokens: Int?

        enum CodingKeys: String, CodingKey {
            case promptTokens = "prompt_tokens"
            case completionTokens = "completion_tokens"
            case totalTokens = "total_tokens"
        }

        var providerUsage: ProviderUsage {
            ProviderUsage(
                promptTokens: promptTokens ?? 0, completionTokens: completionTokens ?? 0, totalTokens: totalTokens)
        }
    }

    struct Completion: Decodable {
        struct Choice: Decodable {
            struct Content: Decodable { var content: String? }
            var message: Content?
            var delta: Content?
            var finishReason: String?

            enum CodingKeys: String, CodingKey {
                case message, delta
                case finishReason = "finish_reason"
            }
        }

        var choices: [Choice]?
        var usage: Usage?
    }

    /// Decodes a chat completion response body (`choices[0].message.content`, `finish_reason`, `usage`).
    public static func decodeResponse(_ body: some Collection<UInt8>) throws(ProviderError) -> ProviderResponse {
        let completion: Completion = try WireJSON.decode(body)
        guard let choice = completion.choices?.first, let message = choice.message else {
            throw ProviderError(.badResponse, reason: "chat completion without choices[0].message")
        }
        return ProviderResponse(
            content: message.content ?? "", finishReason: choice.finishReason, usage: completion.usage?.providerUsage)
    }

    /// Decodes one streamed chunk (the `data:` payload of an SSE event, not `[DONE]`).
    public static func decodeStreamChunk(_ data: String) throws(ProviderError) -> StreamDelta {
        let chunk: Completion = try WireJSON.decode(Array(data.utf8))
        guard let choices = chunk.choices else {
            throw ProviderError(.badResponse, reason: "stream chunk without choices")
        }
        let choice = choices.first
        return StreamDelta(
            content: choice?.delta?.content ?? "", finishReason: choice?.finishReason,
            usage: chunk.usage?.providerUsage)
    }
}

// MARK: - Anthropic Messages API

public enum AnthropicWire {
    /// `max_tokens` is required by the API; this is used when the request doesn't say.
    public static let defaultMaxTokens = 1024

    public struct Message: Codable, Sendable, Hashable {
        public var role: String
        public var content: String

        public init(role: String, content: String) {
            self.role = role
            self.content = content
        }
    }

    /// Body of `POST {base}/v1/messages`.
    public struct MessagesRequest: Codable, Sendable, Hashable {
        public var model: String
        public var system: String?
        public var messages: [Message]
        public var maxTokens: Int
        public var stream: Bool
        public var temperature: Double?

        enum CodingKeys: String, CodingKey {
            case model, system, messages, stream, temperature
            case maxTokens = "max_tokens"
        }

        /// Builds a request from chat messages: `system` messages are joined (blank line between) into
        /// the separate `system` field; `assistant` stays `assistant`, every other role becomes `user`;
        /// consecutive messages of the same role are merged, since the API expects alternating turns.
        public init(
            model: String, messages: [ChatMessage], maxTokens: Int? = nil, stream: Bool,
            temperature: Double? = nil
        ) {
            self.model = model
            let system = messages.filter { $0.role == "system" }.map(\.content)
            self.system = system.isEmpty ? nil : system.joined(separator: "\n\n")
            var turns: [Message] = []
            for message in messages where message.role != "system" {
                let role = message.role == "assistant" ? "assistant" : "user"
                if let last = turns.last, last.role == role {
                    turns[turns.count - 1].content += "\n\n" + message.content
                } else {
                    turns.append(Message(role: role, content: message.content))
                }
            }
            self.messages = turns
            self.maxTokens = maxTokens ?? AnthropicWire.defaultMaxTokens
            self.stream = stream
            self.temperature = temperature
        }

        /// JSON body (keys sorted).
        public func jsonBody() throws -> [UInt8] { try WireJSON.encode(self) }
    }

    struct Usage: Decodable {
        var inputTokens: Int?
        var outputTokens: Int?

        enum CodingKeys: String, CodingKey {
            case inputTokens = "input_tokens"
            case outputTokens = "output_tokens"
        }
    }

    struct Response: Decodable {
        struct Block: Decodable {
            var type: String
            var text: String?
        }

        var type: String?
        var content: [Block]?
        var stopReason: String?
        var usage: Usage?

        enum CodingKeys: String, CodingKey {
            case type, content, usage
            case stopReason = "stop_reason"
        }
    }

    /// Decodes a Messages response: the `text` blocks of `content` concatenated, `stop_reason`, `usage`.
    public static func decodeResponse(_ body: some Collection<UInt8>) throws(ProviderError) -> ProviderResponse {
        let response: Response = try WireJSON.decode(body)
        guard response.type == nil || response.type == "message", let blocks = response.content else {
            throw ProviderError(.badResponse, reason: "messages response without content")
        }
        let text = blocks.filter { $0.type == "text" }.compactMap(\.text).joined()
        let usage = response.usage.map {
            ProviderUsage(promptTokens: $0.inputTokens ?? 0, completionTokens: $0.outputTokens ?? 0)
        }
        return ProviderResponse(content: text, finishReason: response.stopReason, usage: usage)
    }

    /// One decoded stream event.
    public enum StreamEvent: Sendable, Hashable {
        case messageStart(inputTokens: Int, outputTokens: Int)
        case textDelta(String)
        case messageDelta(stopReason: String?, outputTokens: Int?)
        case messageStop
        /// `ping`, `content_block_start/stop`, non-text deltas and unknown event types (forward compatible).
        case ignored
    }

    struct RawEvent: Decodable {
        struct Message: Decodable { var usage: Usage? }
        struct Delta: Decodable {
            var type: String?
            var text: String?
            var stopReason: String?

            enum CodingKeys: String, CodingKey {
                case type, text
                case stopReason = "stop_reason"
            }
        }

        struct ErrorBody: Decodable { var type: String? }

        var type: String
        var message: Message?
        var delta: Delta?
        var usage: Usage?
        var error: ErrorBody?
    }

    /// Decodes one `data:` payload of the Messages stream. An `error` event throws: `overloaded_error` as
    /// `.http(529)` (retriable), anything else as `.streamCut`.
    public static func decodeStreamEvent(_ data: String) throws(ProviderError) -> StreamEvent {
        let event: RawEvent = try WireJSON.decode(Array(data.utf8))
        switch event.type {
        case "message_start":
            let usage = event.message?.usage
            return .messageStart(inputTokens: usage?.inputTokens ?? 0, outputTokens: usage?.outputTokens ?? 0)
        case "content_block_delta":
            guard let delta = event.delta else {
                throw ProviderError(.badResponse, reason: "content_block_delta without delta")
            }
            if delta.type == "text_delta" { return .textDelta(delta.text ?? "") }
            return .ignored
        case "message_delta":
            return .messageDelta(stopReason: event.delta?.stopReason, outputTokens: event.usage?.outputTokens)
        case "message_stop":
            return .messageStop
        case "error":
            if event.error?.type == "overloaded_error" {
                throw ProviderError(.http(529), reason: "provider overloaded (stream error event)")
            }
            throw ProviderError(.streamCut, reason: "stream error event")
        default:
            return .ignored
        }
    }
}

// MARK: - Server-Sent Events

/// One dispatched SSE event.
public struct SSEEvent: Sendable, Hashable {
    /// The `event:` field, nil when absent.
    public var event: String?
    /// The `data:` lines joined with `\n`.
    public var data: String
    public var id: String?

    public init(event: String? = nil, data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }
}

/// An incremental Server-Sent-Events parser (WHATWG rules) that accepts arbitrary byte chunks: events and
/// even UTF-8 sequences may be split anywhere. Lines end in `\n`, `\r\n` or `\r`; lines starting with `:`
/// are comments; several `data:` lines join with `\n`; a blank line dispatches; events without data are
/// not dispatched. A `data: [DONE]` event (OpenAI's end marker) is not returned: it sets `isDone`, and all
/// later input is ignored.
public struct SSEParser: Sendable {
    /// Largest allowed pending line/event, so garbage without newlines can't grow memory without bound.
    public let maxEventBytes: Int
    /// True once `[DONE]` was seen.
    public private(set) var isDone = false

    private var line: [UInt8] = []
    private var lastWasCR = false
    private var atStart = true
    private var data: [String] = []
    private var dataBytes = 0
    private var eventType: String?
    private var lastEventID: String?

    public init(maxEventBytes: Int = 1 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Feeds the next chunk; returns the events it completed.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(ProviderError) -> [SSEEvent] {
        var events: [SSEEvent] = []
        for byte in bytes {
            if isDone { break }
            switch byte {
            case UInt8(ascii: "\n"):
                if lastWasCR {
                    lastWasCR = false  // second half of a CRLF
                } else {
                    try endLine(into: &events)
                }
            case UInt8(ascii: "\r"):
                lastWasCR = true
                try endLine(into: &events)
            default:
                lastWasCR = false
                line.append(byte)
                if line.count + dataBytes > maxEventBytes {
                    throw ProviderError(.badResponse, reason: "SSE event exceeds size limit")
                }
            }
        }
        return events
    }

    /// End of input: a last line without a newline and a last event without a blank line are still
    /// processed (lenient, unlike the spec, since several servers end that way).
    public mutating func finish() throws(ProviderError) -> [SSEEvent] {
        var events: [SSEEvent] = []
        if isDone { return events }
        if !line.isEmpty { try endLine(into: &events) }
        if !isDone { dispatch(into: &events) }
        return events
    }

    private mutating func endLine(into events: inout [SSEEvent]) throws(ProviderError) {
        var bytes = line
        line.removeAll(keepingCapacity: true)
        if atStart {
            atStart = false
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        }
        if bytes.isEmpty {
            dispatch(into: &events)
            return
        }
        if bytes.first == UInt8(ascii: ":") { return }  // comment
        let field: String
        let value: String
        if let colon = bytes.firstIndex(of: UInt8(ascii: ":")) {
            field = String(decoding: bytes[..<colon], as: UTF8.self)
            var start = colon + 1
            if start < bytes.endIndex, bytes[start] == UInt8(ascii: " ") { start += 1 }
            value = String(decoding: bytes[start...], as: UTF8.self)
        } else {
            field = String(decoding: bytes, as: UTF8.self)
            value = ""
        }
        switch field {
        case "data":
            data.append(value)
            dataBytes += bytes.count
        case "event":
            eventType = value
        case "id":
            if !value.contains("\0") { lastEventID = value }
        default:
            break  // `retry` and unknown fields are ignored
        }
    }

    private mutating func dispatch(into events: inout [SSEEvent]) {
        defer {
            data.removeAll()
            dataBytes = 0
            eventType = nil
        }
        guard !data.isEmpty else { return }
        let payload = data.joined(separator: "\n")
        if payload == "[DONE]" {
            isDone = true
            return
        }
        events.append(SSEEvent(event: eventType, data: payload, id: lastEventID))
    }
}

// MARK: - Stream decoding

/// Turns a provider's streamed body (arbitrary byte chunks) into `StreamDelta`s and tells when the stream
/// ended properly: OpenAI with `data: [DONE]`, Anthropic with `message_stop`. Input after the end is
/// ignored; `finish()` at end of body throws `.streamCut` when the end marker never came.
public struct ProviderStreamDecoder: Sendable {
    public enum Format: Sendable, Hashable {
        case openAI
        case anthropic
    }

    public let format: Format
    public private(set) var isFinished = false
    private var parser: SSEParser
    private var inputTokens = 0

    public init(format: Format, maxEventBytes: Int = 1 << 20) {
        self.format = format
        self.parser = SSEParser(maxEventBytes: maxEventBytes)
    }

    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(ProviderError) -> [StreamDelta] {
        if isFinished { return [] }
        return try handle(parser.feed(bytes))
    }

    /// End of body.
    public mutating func finish() throws(ProviderError) -> [StreamDelta] {
        if isFinished { return [] }
        let deltas = try handle(parser.finish())
        guard isFinished else { throw ProviderError(.streamCut, reason: "stream ended without end marker") }
        return deltas
    }

    private mutating func handle(_ events: [SSEEvent]) throws(ProviderError) -> [StreamDelta] {
        var deltas: [StreamDelta] = []
        for event in events where !isFinished {
            switch format {
            case .openAI:
                deltas.append(try OpenAIWire.decodeStreamChunk(event.data))
            case .anthropic:
                switch try AnthropicWire.decodeStreamEvent(event.data) {
                case .messageStart(let input, _):
                    inputTokens = input
                case .textDelta(let text):
                    deltas.append(StreamDelta(content: text))
                case .messageDelta(let stopReason, let outputTokens):
                    let usage = outputTokens.map { ProviderUsage(promptTokens: inputTokens, completionTokens: $0) }
                    deltas.append(StreamDelta(finishReason: stopReason, usage: usage))
                case .messageStop:
                    isFinished = true
                case .ignored:
                    break
                }
            }
        }
        if format == .openAI, parser.isDone { isFinished = true }
        return deltas
    }
}

// MARK: - JSON helpers

enum WireJSON {
    static func encode(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static func decode<T: Decodable>(_ bytes: some Collection<UInt8>) throws(ProviderError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw ProviderError(.badResponse, reason: "invalid JSON from provider")
        }
    }
}
