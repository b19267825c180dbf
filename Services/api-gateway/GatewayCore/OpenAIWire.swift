import Schemas

// MARK: - Request

/// The body of `POST /v1/chat/completions`, as OpenAI clients send it. Unknown fields are ignored.
/// Decoding only checks shapes and types; `RequestValidator` checks every rule and limit.
public struct ChatCompletionRequest: Codable, Sendable, Hashable {
    public var model: String
    public var messages: [Message]
    public var stream: Bool?
    public var streamOptions: StreamOptions?
    public var maxTokens: Int?
    public var maxCompletionTokens: Int?
    public var temperature: Double?
    public var user: String?
    public var metadata: [String: String]?
    /// How many choices to generate; only 1 is supported (the validator says so rather than ignoring it).
    public var n: Int?

    public init(
        model: String, messages: [Message], stream: Bool? = nil, streamOptions: StreamOptions? = nil,
        maxTokens: Int? = nil, maxCompletionTokens: Int? = nil, temperature: Double? = nil, user: String? = nil,
        metadata: [String: String]? = nil, n: Int? = nil
    ) {
        self.model = model
        self.messages = messages
        self.stream = stream
        self.streamOptions = streamOptions
        self.maxTokens = maxTokens
        self.maxCompletionTokens = maxCompletionTokens
        self.temperature = temperature
        self.user = user
        self.metadata = metadata
        self.n = n
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, messages, stream, temperature, user, metadata, n
        case streamOptions = "stream_options"
        case maxTokens = "max_tokens"
        case maxCompletionTokens = "max_completion_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        messages = try c.decode([Message].self, forKey: .messages)
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream)
        streamOptions = try c.decodeIfPresent(StreamOptions.self, forKey: .streamOptions)
        maxTokens = try Self.decodeInteger(c, .maxTokens)
        maxCompletionTokens = try Self.decodeInteger(c, .maxCompletionTokens)
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        user = try c.decodeIfPresent(String.self, forKey: .user)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata)
        n = try Self.decodeInteger(c, .n)
    }

    /// Integers are read as JSON numbers and checked here, so `1.5` or `1e30` become an error that names the
    /// field (the JSON decoder reports a non-representable `Int` without any coding path).
    private static func decodeInteger(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int? {
        guard let number = try c.decodeIfPresent(Double.self, forKey: key) else { return nil }
        guard number.rounded(.towardZero) == number, let value = Int(exactly: number),
              value > -(1 << 53), value < (1 << 53)
        else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "not an integer in range")
        }
        return value
    }

    /// One chat message. `content` is a string, an array of `{type:"text", text}` parts, or null.
    public struct Message: Codable, Sendable, Hashable {
        public var role: String
        public var content: Content?
        public var name: String?
        /// A `tool` message's answer to this call of the assistant (required for `role: tool`).
        public var toolCallID: String?

        public init(role: String, content: Content?, name: String? = nil, toolCallID: String? = nil) {
            self.role = role
            self.content = content
            self.name = name
            self.toolCallID = toolCallID
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case role, content, name
            case toolCallID = "tool_call_id"
        }
    }

    /// Message content: plain text or content parts.
    public enum Content: Codable, Sendable, Hashable {
        case text(String)
        case parts([ContentPart])

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            do {
                self = .text(try container.decode(String.self))
            } catch DecodingError.typeMismatch {
                // Throws a typeMismatch naming `content` when it is neither a string nor an array.
                self = .parts(try container.decode([ContentPart].self))
            }
            // Any other failure (a raw control character in the string) is reported as what it is.
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let text): try container.encode(text)
            case .parts(let parts): try container.encode(parts)
            }
        }
    }

    /// A content part. Only `type == "text"` is accepted by the validator.
    public struct ContentPart: Codable, Sendable, Hashable {
        public var type: String
        public var text: String?

        public init(type: String, text: String?) {
            self.type = type
            self.text = text
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case type, text
        }
    }

    public struct StreamOptions: Codable, Sendable, Hashable {
        public var includeUsage: Bool?

        public init(includeUsage: Bool?) { self.includeUsage = includeUsage }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case includeUsage = "include_usage"
        }
    }
}

// MARK: - Responses

/// Encoders for the OpenAI response shapes. All output is hand-written JSON (no key sorting needed: the
/// field order is fixed), appended into a single buffer.
public enum OpenAIResponse {
    /// The `id` OpenAI clients see: `chatcmpl-<request id>`.
    public static func completionID(requestID: String) -> String { "chatcmpl-" + requestID }

    /// A `chat.completion` object for a finished (non-streaming) request.
    ///
    /// - Parameters:
    ///   - completed: the orchestrator's answer.
    ///   - requestID: the gateway's request id (→ `chatcmpl-<request id>`).
    ///   - model: the model name the client asked for (the routed agent).
    ///   - createdUnixSeconds: `created`, seconds since the epoch.
    public static func chatCompletion(
        _ completed: ChatCompleted, requestID: String, model: String, createdUnixSeconds: Int64
    ) -> [UInt8] {
        var w = JSONWriter(capacity: 320 + completed.content.utf8.count + model.utf8.count)
        w.raw("{\"id\":")
        w.string(completionID(requestID: requestID))
        w.raw(",\"object\":\"chat.completion\",\"created\":")
        w.int(createdUnixSeconds)
        w.raw(",\"model\":")
        w.string(model)
        w.raw(",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":")
        w.string(completed.content)
        w.raw("},\"logprobs\":null,\"finish_reason\":")
        w.string(completed.finishReason.isEmpty ? "stop" : completed.finishReason)
        w.raw("}],\"usage\":")
        writeUsage(completed.usage ?? Usage(), into: &w)
        w.raw(",\"switchyard\":{\"agent\":")
        w.string(completed.agent)
        w.raw(",\"agent_version\":")
        w.string(completed.agentVersion)
        w.raw(",\"handed_off\":")
        w.bool(completed.handedOff)
        w.raw(",\"conversation_id\":")
        w.string(completed.conversationID)
        w.raw("}}")
        return w.bytes
    }

    /// `GET /v1/models`: `{"object":"list","data":[{"id","object":"model","created","owned_by":"switchyard"}]}`.
    public static func modelList(agentNames: [String], createdUnixSeconds: Int64) -> [UInt8] {
        var w = JSONWriter(capacity: 32 + agentNames.count * 80)
        w.raw("{\"object\":\"list\",\"data\":[")
        for (index, name) in agentNames.enumerated() {
            if index > 0 { w.raw(",") }
            writeModel(name, created: createdUnixSeconds, into: &w)
        }
        w.raw("]}")
        return w.bytes
    }

    /// `GET /v1/models/{id}`: one model object.
    public static func model(_ agentName: String, createdUnixSeconds: Int64) -> [UInt8] {
        var w = JSONWriter(capacity: 80)
        writeModel(agentName, created: createdUnixSeconds, into: &w)
        return w.bytes
    }

    private static func writeModel(_ name: String, created: Int64, into w: inout JSONWriter) {
        w.raw("{\"id\":")
        w.string(name)
        w.raw(",\"object\":\"model\",\"created\":")
        w.int(created)
        w.raw(",\"owned_by\":\"switchyard\"}")
    }

    static func writeUsage(_ usage: Usage, into w: inout JSONWriter) {
        let total = usage.totalTokens != 0
            ? UInt64(usage.totalTokens) : UInt64(usage.promptTokens) + UInt64(usage.completionTokens)
        w.raw("{\"prompt_tokens\":")
        w.int(usage.promptTokens)
        w.raw(",\"completion_tokens\":")
        w.int(usage.completionTokens)
        w.raw(",\"total_tokens\":")
        w.int(total)
        w.raw("}")
    }
}

/// Frames one streamed completion as OpenAI server-sent events (`data: {...}\n\n` per chunk).
///
/// Order for a request: `roleChunk()` once, `contentChunk(_:)` per delta, `finishChunk(finishReason:)`,
/// then `usageChunk(_:)` when the client asked for `stream_options.include_usage`, then `done`. `events(for:)`
/// does the middle part for an orchestrator `StreamChunk`. When `includeUsage` is set every chunk carries
/// `"usage":null` and the usage chunk has `"choices":[]`, as OpenAI does.
public struct ChatCompletionStreamEncoder: Sendable {
    public let id: String
    public let model: String
    public let createdUnixSeconds: Int64
    public let includeUsage: Bool

    public init(requestID: String, model: String, createdUnixSeconds: Int64, includeUsage: Bool) {
        self.id = OpenAIResponse.completionID(requestID: requestID)
        self.model = model
        self.createdUnixSeconds = createdUnixSeconds
        self.includeUsage = includeUsage
    }

    /// The SSE terminator `data: [DONE]\n\n`.
    public static let done: [UInt8] = Array("data: [DONE]\n\n".utf8)

    /// First chunk: `delta: {"role":"assistant","content":""}`.
    public func roleChunk() -> [UInt8] {
        var w = begin(extra: 0)
        w.raw("[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]")
        return end(&w)
    }

    /// A content delta.
    public func contentChunk(_ delta: String) -> [UInt8] {
        var w = begin(extra: delta.utf8.count)
        w.raw("[{\"index\":0,\"delta\":{\"content\":")
        w.string(delta)
        w.raw("},\"logprobs\":null,\"finish_reason\":null}]")
        return end(&w)
    }

    /// Final choice chunk: empty delta and the finish reason (`stop` when empty).
    public func finishChunk(finishReason: String) -> [UInt8] {
        var w = begin(extra: 0)
        w.raw("[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":")
        w.string(finishReason.isEmpty ? "stop" : finishReason)
        w.raw("}]")
        return end(&w)
    }

    /// The usage chunk (`choices: []` + `usage`), sent only when `include_usage` was requested.
    public func usageChunk(_ usage: Usage) -> [UInt8] {
        var w = JSONWriter(capacity: 200 + model.utf8.count)
        writeHeader(&w)
        w.raw("[],\"usage\":")
        OpenAIResponse.writeUsage(usage, into: &w)
        w.raw("}\n\n")
        return w.bytes
    }

    /// The SSE bytes for one orchestrator chunk: a content chunk for a non-empty delta; for the last chunk
    /// (`done`) also the finish chunk, the usage chunk (when requested; zeros if the orchestrator sent none)
    /// and `[DONE]`. The role chunk is not included — send `roleChunk()` when the stream opens.
    public func events(for chunk: StreamChunk) -> [UInt8] {
        var out: [UInt8] = []
        if !chunk.delta.isEmpty { out += contentChunk(chunk.delta) }
        if chunk.done {
            out += finishChunk(finishReason: chunk.finishReason)
            if includeUsage { out += usageChunk(chunk.usage ?? Usage()) }
            out += Self.done
        }
        return out
    }

    private func writeHeader(_ w: inout JSONWriter) {
        w.raw("data: {\"id\":")
        w.string(id)
        w.raw(",\"object\":\"chat.completion.chunk\",\"created\":")
        w.int(createdUnixSeconds)
        w.raw(",\"model\":")
        w.string(model)
        w.raw(",\"choices\":")
    }

    private func begin(extra: Int) -> JSONWriter {
        var w = JSONWriter(capacity: 220 + model.utf8.count + extra + extra / 8)
        writeHeader(&w)
        return w
    }

    private func end(_ w: inout JSONWriter) -> [UInt8] {
        if includeUsage { w.raw(",\"usage\":null") }
        w.raw("}\n\n")
        return w.bytes
    }
}
