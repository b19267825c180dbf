#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Schemas

/// Request limits of the gateway. Defaults are the documented production values; tests and operators may
/// lower or raise them.
public struct GatewayLimits: Sendable, Hashable {
    /// Largest accepted body in bytes (413 above). Default 1 MiB.
    public var maxBodyBytes: Int = 1 << 20
    /// Most messages per request. Default 256.
    public var maxMessages: Int = 256
    /// Most characters (Unicode scalars) over all message contents. Default 200 000.
    public var maxTotalChars: Int = 200_000
    /// Largest `max_tokens` / `max_completion_tokens`. Default 8192.
    public var maxTokens: Int = 8192
    /// Longest `model`. Default 128.
    public var maxModelLength: Int = 128
    /// Most `metadata` entries. Default 16.
    public var maxMetadataKeys: Int = 16
    /// Longest `metadata` key. Default 64.
    public var maxMetadataKeyLength: Int = 64
    /// Longest `metadata` value. Default 512.
    public var maxMetadataValueLength: Int = 512
    /// Longest `user` (end-user id). Default 256.
    public var maxUserLength: Int = 256
    /// Longest message `name`. Default 64.
    public var maxNameLength: Int = 64
    /// Completion tokens assumed for rate limiting when the client sets no `max_tokens`. Default 1024.
    public var defaultCompletionTokenEstimate: Int = 1024

    public init() {}

    public init(
        maxBodyBytes: Int = 1 << 20, maxMessages: Int = 256, maxTotalChars: Int = 200_000, maxTokens: Int = 8192,
        maxModelLength: Int = 128, maxMetadataKeys: Int = 16, maxMetadataKeyLength: Int = 64,
        maxMetadataValueLength: Int = 512, maxUserLength: Int = 256, maxNameLength: Int = 64,
        defaultCompletionTokenEstimate: Int = 1024
    ) {
        self.maxBodyBytes = maxBodyBytes
        self.maxMessages = maxMessages
        self.maxTotalChars = maxTotalChars
        self.maxTokens = maxTokens
        self.maxModelLength = maxModelLength
        self.maxMetadataKeys = maxMetadataKeys
        self.maxMetadataKeyLength = maxMetadataKeyLength
        self.maxMetadataValueLength = maxMetadataValueLength
        self.maxUserLength = maxUserLength
        self.maxNameLength = maxNameLength
        self.defaultCompletionTokenEstimate = defaultCompletionTokenEstimate
    }
}

/// A chat request that passed every rule of `RequestValidator`.
public struct ValidatedChatRequest: Sendable, Hashable {
    /// The model the client asked for (an agent name; the router resolves it).
    public var model: String
    /// Messages with content parts flattened to text. Roles are as sent (`developer` included).
    public var messages: [ChatMessage]
    public var stream: Bool
    /// `stream_options.include_usage` (only meaningful when `stream`).
    public var includeUsage: Bool
    /// `max_completion_tokens` if set, else `max_tokens`; `nil` = provider default.
    public var maxTokens: Int?
    public var temperature: Double?
    /// From the `x-switchyard-conversation-id` header, else `metadata["conversation_id"]`; `nil` = new.
    public var conversationID: String?
    /// `metadata["channel"]`, default `api`.
    public var channel: String
    /// The OpenAI `user` field; empty when absent.
    public var endUserID: String
    public var metadata: [String: String]
    /// Characters (Unicode scalars) over all message contents.
    public var totalContentChars: Int
    /// Rough prompt token estimate (≈ 4 characters per token, rounded up, + 4 per message).
    public var estimatedPromptTokens: Int
    /// Tokens to charge the TPM bucket up front: prompt estimate + (`maxTokens` or the default estimate).
    /// Reconcile with the real usage when the answer arrives.
    public var upfrontTokenEstimate: Int
}

/// Validates an OpenAI chat completion body. Pure: bytes (+ header value + plan) in, a decision out.
///
/// Every rejection is a 400 `invalid_request_error` (413 for oversized bodies) whose message names the
/// field and the limit, never the offending value.
public struct RequestValidator: Sendable {
    /// Header carrying the client's conversation id.
    public static let conversationIDHeader = "x-switchyard-conversation-id"
    /// Accepted roles.
    public static let roles: Set<String> = ["system", "user", "assistant", "tool", "developer"]

    public var limits: GatewayLimits

    public init(limits: GatewayLimits = GatewayLimits()) {
        self.limits = limits
    }

    /// Decodes and validates a raw body.
    ///
    /// - Parameters:
    ///   - body: the request body bytes.
    ///   - conversationIDHeader: the `x-switchyard-conversation-id` header value, if present.
    ///   - plan: the tenant's plan; its `maxTokensPerRequest` (when > 0) caps `max_tokens`.
    public func validate(
        body: some Collection<UInt8>, conversationIDHeader: String? = nil, plan: Plan? = nil
    ) -> Result<ValidatedChatRequest, GatewayError> {
        switch decode(body: body) {
        case .success(let request):
            return validate(request, conversationIDHeader: conversationIDHeader, plan: plan)
        case .failure(let error):
            return .failure(error)
        }
    }

    /// Decodes a body into `ChatCompletionRequest`, mapping every failure to a 400/413 that names the field.
    public func decode(body: some Collection<UInt8>) -> Result<ChatCompletionRequest, GatewayError> {
        if body.count > limits.maxBodyBytes {
            return .failure(.requestTooLarge(limitBytes: limits.maxBodyBytes))
        }
        if body.isEmpty {
            return .failure(.invalidRequest("Request body is empty; expected a JSON object."))
        }
        let data = Data(body)
        do {
            return .success(try JSONDecoder().decode(ChatCompletionRequest.self, from: data))
        } catch {
            // The parser rejects invalid UTF-8 too; say so precisely (checked only on this error path).
            if !Self.isValidUTF8(data) {
                return .failure(.invalidRequest("Request body is not valid UTF-8."))
            }
            if let error = error as? DecodingError {
                return .failure(Self.map(error))
            }
            return .failure(.invalidRequest("Request body is not valid JSON."))
        }
    }

    /// Validates an already decoded request.
    public func validate(
        _ request: ChatCompletionRequest, conversationIDHeader: String? = nil, plan: Plan? = nil
    ) -> Result<ValidatedChatRequest, GatewayError> {
        do {
            return .success(try check(request, conversationIDHeader: conversationIDHeader, plan: plan))
        } catch {
            return .failure(error)
        }
    }

    // MARK: Rules

    private func check(
        _ request: ChatCompletionRequest, conversationIDHeader: String?, plan: Plan?
    ) throws(GatewayError) -> ValidatedChatRequest {
        // model
        let model = request.model
        if model.isEmpty {
            throw .invalidRequest("'model' must not be empty.", param: "model")
        }
        if Self.exceeds(model, limits.maxModelLength) {
            throw .invalidRequest("'model' must be at most \(limits.maxModelLength) characters.", param: "model")
        }
        if Self.containsControlOrWhitespace(model) {
            throw .invalidRequest("'model' must not contain whitespace or control characters.", param: "model")
        }

        // messages
        if request.messages.isEmpty {
            throw .invalidRequest("'messages' must contain at least one message.", param: "messages")
        }
        if request.messages.count > limits.maxMessages {
            throw .invalidRequest("'messages' must contain at most \(limits.maxMessages) messages.", param: "messages")
        }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(request.messages.count)
        var totalChars = 0
        for (index, message) in request.messages.enumerated() {
            guard Self.roles.contains(message.role) else {
                throw .invalidRequest(
                    "'messages[\(index)].role' must be one of system, user, assistant, tool, developer.",
                    param: "messages[\(index)].role")
            }
            let content: String
            switch message.content {
            case nil:
                guard message.role == "assistant" else {
                    throw .invalidRequest("'messages[\(index)].content' is required.",
                                          param: "messages[\(index)].content")
                }
                content = ""
            case .text(let text):
                content = text
            case .parts(let parts):
                var joined = ""
                for (partIndex, part) in parts.enumerated() {
                    guard part.type == "text" else {
                        throw .invalidRequest(
                            "'messages[\(index)].content[\(partIndex)].type' is not supported; only 'text' parts are accepted.",
                            param: "messages[\(index)].content[\(partIndex)].type")
                    }
                    guard let text = part.text else {
                        throw .invalidRequest("'messages[\(index)].content[\(partIndex)].text' is required.",
                                              param: "messages[\(index)].content[\(partIndex)].text")
                    }
                    joined += text
                }
                content = joined
            }
            totalChars += Self.characterCount(content, cap: limits.maxTotalChars - totalChars)
            if totalChars > limits.maxTotalChars {
                throw .invalidRequest(
                    "Total content of 'messages' must be at most \(limits.maxTotalChars) characters.", param: "messages")
            }
            if message.role == "tool" {
                let callID = message.toolCallID ?? ""
                guard !callID.isEmpty else {
                    throw .invalidRequest("'messages[\(index)].tool_call_id' is required for a 'tool' message.",
                                          param: "messages[\(index)].tool_call_id")
                }
                guard !Self.exceeds(callID, limits.maxNameLength), !Self.containsControl(callID) else {
                    throw .invalidRequest(
                        "'messages[\(index)].tool_call_id' must be at most \(limits.maxNameLength) characters without control characters.",
                        param: "messages[\(index)].tool_call_id")
                }
            }
            let name = message.name ?? ""
            if Self.exceeds(name, limits.maxNameLength) {
                throw .invalidRequest("'messages[\(index)].name' must be at most \(limits.maxNameLength) characters.",
                                      param: "messages[\(index)].name")
            }
            messages.append(ChatMessage(role: message.role, content: content, name: name))
        }

        // n: one choice per request; several are refused rather than silently answered with one.
        if let n = request.n, n != 1 {
            throw .invalidRequest("'n' must be 1: this API returns one choice per request.", param: "n")
        }

        // max_tokens / max_completion_tokens
        if let value = request.maxTokens { try checkMaxTokens(value, param: "max_tokens", plan: plan) }
        if let value = request.maxCompletionTokens {
            try checkMaxTokens(value, param: "max_completion_tokens", plan: plan)
        }
        let maxTokens = request.maxCompletionTokens ?? request.maxTokens

        // temperature
        if let temperature = request.temperature, !(0...2).contains(temperature) {
            throw .invalidRequest("'temperature' must be between 0 and 2.", param: "temperature")
        }

        // user
        let user = request.user ?? ""
        if Self.exceeds(user, limits.maxUserLength) {
            throw .invalidRequest("'user' must be at most \(limits.maxUserLength) characters.", param: "user")
        }
        if Self.containsControl(user) {
            throw .invalidRequest("'user' must not contain control characters.", param: "user")
        }

        // metadata
        let metadata = request.metadata ?? [:]
        if metadata.count > limits.maxMetadataKeys {
            throw .invalidRequest("'metadata' must have at most \(limits.maxMetadataKeys) keys.", param: "metadata")
        }
        for (key, value) in metadata {
            if key.isEmpty || Self.exceeds(key, limits.maxMetadataKeyLength) {
                throw .invalidRequest(
                    "'metadata' keys must be 1 to \(limits.maxMetadataKeyLength) characters.", param: "metadata")
            }
            if Self.exceeds(value, limits.maxMetadataValueLength) {
                throw .invalidRequest(
                    "'metadata' values must be at most \(limits.maxMetadataValueLength) characters.", param: "metadata")
            }
        }

        // conversation id: header first, then metadata
        let conversationID: String?
        if let header = conversationIDHeader {
            guard Self.isValidConversationID(header) else {
                throw .invalidRequest(
                    "The \(Self.conversationIDHeader) header must match [A-Za-z0-9._:-]{1,128}.",
                    param: Self.conversationIDHeader)
            }
            conversationID = header
        } else if let fromMetadata = metadata["conversation_id"] {
            guard Self.isValidConversationID(fromMetadata) else {
                throw .invalidRequest("'metadata.conversation_id' must match [A-Za-z0-9._:-]{1,128}.",
                                      param: "metadata.conversation_id")
            }
            conversationID = fromMetadata
        } else {
            conversationID = nil
        }

        // channel
        let channel = metadata["channel"] ?? "api"
        guard Self.isValidChannel(channel) else {
            throw .invalidRequest("'metadata.channel' must match [a-z0-9_-]{1,32}.", param: "metadata.channel")
        }

        let stream = request.stream ?? false
        let promptTokens = (totalChars + 3) / 4 + 4 * messages.count
        let completionEstimate = maxTokens ?? limits.defaultCompletionTokenEstimate
        return ValidatedChatRequest(
            model: model, messages: messages, stream: stream,
            includeUsage: stream && (request.streamOptions?.includeUsage ?? false),
            maxTokens: maxTokens, temperature: request.temperature, conversationID: conversationID,
            channel: channel, endUserID: user, metadata: metadata, totalContentChars: totalChars,
            estimatedPromptTokens: promptTokens, upfrontTokenEstimate: promptTokens + completionEstimate)
    }

    private func checkMaxTokens(_ value: Int, param: String, plan: Plan?) throws(GatewayError) {
        guard (1...limits.maxTokens).contains(value) else {
            throw .invalidRequest("'\(param)' must be between 1 and \(limits.maxTokens).", param: param)
        }
        if let plan, plan.maxTokensPerRequest > 0, value > Int(plan.maxTokensPerRequest) {
            throw .invalidRequest(
                "'\(param)' exceeds the plan's limit of \(plan.maxTokensPerRequest) tokens per request.", param: param)
        }
    }

    // MARK: Character rules

    /// `[A-Za-z0-9._:-]{1,128}`.
    public static func isValidConversationID(_ id: String) -> Bool {
        var count = 0
        for byte in id.utf8 {
            count += 1
            guard count <= 128 else { return false }
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return count > 0
    }

    /// `[a-z0-9_-]{1,32}` — the channel becomes a bounded metric label downstream.
    public static func isValidChannel(_ channel: String) -> Bool {
        var count = 0
        for byte in channel.utf8 {
            count += 1
            guard count <= 32 else { return false }
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "_"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return count > 0
    }

    /// Whether `string` has more than `limit` characters (Unicode scalars). O(1) when the UTF-8 length is
    /// already within the limit.
    static func exceeds(_ string: String, _ limit: Int) -> Bool {
        let utf8 = string.utf8.count
        if utf8 <= limit { return false }
        return characterCount(string, cap: limit) > limit
    }

    /// Unicode scalar count, stopping early once it passes `cap` (the result is then `> cap`).
    static func characterCount(_ string: String, cap: Int) -> Int {
        let utf8 = string.utf8.count
        if utf8 <= cap { return string.unicodeScalars.count }
        var count = 0
        for _ in string.unicodeScalars {
            count += 1
            if count > cap { return count }
        }
        return count
    }

    private static func containsControlOrWhitespace(_ string: String) -> Bool {
        string.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F || $0.properties.isWhitespace }
    }

    private static func containsControl(_ string: String) -> Bool {
        string.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    static func isValidUTF8(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var iterator = raw.makeIterator()
            var decoder = UTF8()
            while true {
                switch decoder.decode(&iterator) {
                case .scalarValue: continue
                case .emptyInput: return true
                case .error: return false
                }
            }
        }
    }

    // MARK: Decoding errors

    /// Field names the gateway knows; coding-path components outside this set (e.g. client-chosen metadata
    /// keys) are never rendered.
    private static let knownFields: Set<String> = {
        var names = Set(ChatCompletionRequest.CodingKeys.allCases.map(\.stringValue))
        names.formUnion(ChatCompletionRequest.Message.CodingKeys.allCases.map(\.stringValue))
        names.formUnion(ChatCompletionRequest.ContentPart.CodingKeys.allCases.map(\.stringValue))
        names.formUnion(ChatCompletionRequest.StreamOptions.CodingKeys.allCases.map(\.stringValue))
        return names
    }()

    /// Renders a coding path as `messages[0].content`, stopping at the first component that is not a known
    /// field name or an array index. Returns the path and whether it was truncated.
    static func renderPath(_ path: [any CodingKey]) -> (path: String, truncated: Bool) {
        var out = ""
        for key in path {
            // Array positions are "Index N"; dictionary keys that look like numbers also carry an intValue,
            // but they are client data and must not be rendered.
            if let index = key.intValue, key.stringValue == "Index \(index)" {
                out += "[\(index)]"
            } else if knownFields.contains(key.stringValue) {
                if !out.isEmpty { out += "." }
                out += key.stringValue
            } else {
                return (out, true)
            }
        }
        return (out, false)
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type, is UInt32.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        case is [Any].Type, is [ChatCompletionRequest.Message].Type, is [ChatCompletionRequest.ContentPart].Type:
            "an array"
        case is ChatCompletionRequest.Content.Type: "a string or an array of content parts"
        default: "an object"
        }
    }

    static func map(_ error: DecodingError) -> GatewayError {
        switch error {
        case .keyNotFound(let key, let context):
            let (path, truncated) = renderPath(context.codingPath + [key])
            if truncated || path.isEmpty { return .invalidRequest("A required field is missing.", param: nil) }
            return .invalidRequest("Missing required field '\(path)'.", param: path)
        case .valueNotFound(_, let context):
            if context.codingPath.isEmpty { return .invalidRequest("Request body must be a JSON object.") }
            let (path, truncated) = renderPath(context.codingPath)
            if truncated { return .invalidRequest("'\(path)' must not contain null values.", param: path) }
            return .invalidRequest("'\(path)' must not be null.", param: path)
        case .typeMismatch(let type, let context):
            if context.codingPath.isEmpty { return .invalidRequest("Request body must be a JSON object.") }
            let (path, truncated) = renderPath(context.codingPath)
            if truncated {
                return .invalidRequest("'\(path)' contains a value of the wrong type; expected \(typeName(type)).",
                                       param: path)
            }
            let expected = (path == "max_tokens" || path == "max_completion_tokens") ? "an integer" : typeName(type)
            return .invalidRequest("'\(path)' must be \(expected).", param: path)
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return .invalidRequest("Request body is not valid JSON.") }
            if let underlying = context.underlyingError, "\(underlying)".lowercased().contains("control character") {
                let (path, _) = renderPath(context.codingPath)
                return .invalidRequest("'\(path)' contains a raw control character; JSON strings must escape them "
                                       + "(e.g. \\u0000).", param: path)
            }
            let (path, _) = renderPath(context.codingPath)
            return .invalidRequest("'\(path)' has an invalid or out-of-range value.", param: path)
        @unknown default:
            return .invalidRequest("Request body is not valid JSON.")
        }
    }
}

// MARK: - Event construction

/// Builds the `ChatRequested` event the gateway publishes on `evt.chat.requested.<tenant>`.
///
/// `developer` messages are sent as `system` (the event contract lists system/user/assistant/tool). A
/// `gateway.in` hop stamp is added at `now`.
///
/// - Parameters:
///   - validated: the validated request.
///   - tenantID: the authenticated tenant (already a valid subject token).
///   - apiKeyID: the key id from `AuthContext`.
///   - requestID: the gateway's request id.
///   - traceID: W3C trace id (hex).
///   - replySubject: this gateway instance's reply subject.
///   - deadlineUnixNanos: wall-clock deadline for the answer.
///   - now: wall-clock time (unix nanos) of the event.
public func makeChatRequested(
    _ validated: ValidatedChatRequest, tenantID: String, apiKeyID: String, requestID: String, traceID: String,
    replySubject: String, deadlineUnixNanos: Int64, now: Int64
) -> ChatRequested {
    var messages = validated.messages
    for index in messages.indices where messages[index].role == "developer" {
        messages[index].role = "system"
    }
    return ChatRequested(
        meta: EventMeta.make(tenantID: tenantID, producer: "api-gateway", requestID: requestID, traceID: traceID,
                             occurredAtUnixNanos: now),
        messages: messages,
        model: validated.model,
        stream: validated.stream,
        maxTokens: validated.maxTokens.map { UInt32(clamping: $0) } ?? 0,
        temperature: validated.temperature,
        conversationID: validated.conversationID ?? "",
        channel: validated.channel,
        endUserID: validated.endUserID,
        metadata: validated.metadata,
        replySubject: replySubject,
        deadlineUnixNanos: deadlineUnixNanos,
        includeUsage: validated.includeUsage,
        apiKeyID: apiKeyID,
        hops: [HopStamp(hop: "gateway.in", unixNanos: now)]
    )
}
