import AsyncHTTPClient
import Foundation
import Messaging
import NIOCore
import NIOHTTP1
import ServiceKit

/// The optional LLM-as-judge: an OpenAI-compatible chat-completions endpoint the operator configures (never a
/// tenant or a suite: base URLs come from operator config only). Off unless `SWITCHYARD_EVAL_JUDGE_BASE_URL` is set;
/// a suite with `judge` expectations is then refused by run-start and rollout-start, so nothing needs the network
/// unless the operator asked for it.
public struct JudgeConfiguration: Sendable {
    /// `SWITCHYARD_EVAL_JUDGE_BASE_URL`, e.g. `https://api.openai.com/v1`.
    public var baseURL: String
    /// `SWITCHYARD_EVAL_JUDGE_API_KEY` (sent as a bearer token; never logged).
    public var apiKey: String?
    /// `SWITCHYARD_EVAL_JUDGE_MODEL` (default `gpt-4o-mini`).
    public var model: String
    /// `SWITCHYARD_EVAL_JUDGE_TIMEOUT_MS` (default 20000): per verdict.
    public var timeout: Duration

    public init(baseURL: String, apiKey: String? = nil, model: String = "gpt-4o-mini", timeout: Duration = .seconds(20)) {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.model = model
        self.timeout = timeout
    }

    /// nil when no base URL is configured.
    public init?(environment: EnvironmentReader) throws(ConfigurationError) {
        guard let url = try environment.httpURL("SWITCHYARD_EVAL_JUDGE_BASE_URL") else { return nil }
        self.init(baseURL: url, apiKey: environment.optional("SWITCHYARD_EVAL_JUDGE_API_KEY"),
                  model: try environment.nonEmpty("SWITCHYARD_EVAL_JUDGE_MODEL", default: "gpt-4o-mini"),
                  timeout: try environment.milliseconds("SWITCHYARD_EVAL_JUDGE_TIMEOUT_MS", default: .seconds(20),
                                                        range: 100...300_000))
    }
}

/// Asks the judge model whether an answer meets a rubric. The verdict is a JSON object `{"pass": bool, "reason":
/// "…"}` in the reply's content (a code fence around it is tolerated); anything else fails the expectation with
/// the reason, never passes it.
public struct Judge: Sendable {
    let configuration: JudgeConfiguration
    let http: HTTPClient

    public init(configuration: JudgeConfiguration, http: HTTPClient = .shared) {
        self.configuration = configuration
        self.http = http
    }

    static let instructions = """
        You grade one answer of a business's AI agent against a rubric. Reply with only a JSON object: \
        {"pass": true or false, "reason": "one short sentence"}. Pass only if the answer meets the rubric.
        """

    /// nil when the answer meets the rubric; otherwise why not (including a judge that could not be asked); the
    /// scorer reports it as `judge: <reason>`.
    public func verdict(question: String, answer: String, rubric: String) async -> String? {
        let body: [String: Any] = [
            "model": configuration.model,
            "temperature": 0,
            "messages": [
                ["role": "system", "content": Self.instructions],
                ["role": "user", "content": "Rubric: \(rubric)\n\nQuestion: \(question.prefix(8_000))\n\nAnswer: \(answer.prefix(8_000))"],
            ],
        ]
        var request = HTTPClientRequest(url: configuration.baseURL.trimmingSuffix("/") + "/chat/completions")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        if let key = configuration.apiKey, !key.isEmpty { request.headers.add(name: "authorization", value: "Bearer \(key)") }
        guard let encoded = try? JSONSerialization.data(withJSONObject: body) else { return "request not encodable" }
        request.body = .bytes(ByteBuffer(bytes: encoded))
        let timeout = TimeAmount.nanoseconds(configuration.timeout.nanosecondsValue)
        let collected: ByteBuffer
        do {
            let response = try await http.execute(request, timeout: timeout)
            collected = try await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok else { return "unavailable: HTTP \(response.status.code)" }
        } catch {
            return "unavailable: \(String(describing: error).prefix(120))"
        }
        return Self.read(Array(collected.readableBytesView))
    }

    /// The verdict in a chat-completions response body (nil = pass).
    static func read(_ body: [UInt8]) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let choices = object["choices"] as? [[String: Any]],
              let content = (choices.first?["message"] as? [String: Any])?["content"] as? String else {
            return "its answer is not a chat completion"
        }
        var text = content.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("```"), let start = text.firstIndex(of: "{"), let end = text.lastIndex(of: "}") {
            text = String(text[start...end])
        }
        guard let verdict = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let pass = verdict["pass"] as? Bool else {
            return "verdict unreadable: \(text.prefix(80))"
        }
        let reason = (verdict["reason"] as? String).map { String($0.prefix(200)) } ?? ""
        return pass ? nil : (reason.isEmpty ? "rubric not met" : reason)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        var text = self
        while text.hasSuffix(suffix) { text.removeLast(suffix.count) }
        return text
    }
}
