import AsyncHTTPClient
import Foundation
import Messaging
import NIOCore
import NIOHTTP1
import Schemas
import ServiceKit
import Tenancy

/// An upstream LLM endpoint, configured by the operator (never by tenants or requests: no SSRF).
public struct ProviderEndpoint: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case openAI = "openai", anthropic }
    /// The provider name agents refer to (`openai`, `anthropic`, or an operator-chosen alias).
    public var name: String
    public var kind: Kind
    /// e.g. `https://api.openai.com/v1` (OpenAI-compatible) or `https://api.anthropic.com`.
    public var baseURL: String
    public var apiKey: String?
    /// Per-attempt timeout.
    public var timeout: Duration

    public init(name: String, kind: Kind, baseURL: String, apiKey: String? = nil, timeout: Duration = .seconds(30)) {
        self.name = name
        self.kind = kind
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
        self.timeout = timeout
    }
}

/// One provider call.
public struct ProviderCall: Sendable {
    public var model: String
    public var messages: [ChatMessage]
    public var maxTokens: Int?
    public var temperature: Double?
    public var stream: Bool

    public init(model: String, messages: [ChatMessage], maxTokens: Int?, temperature: Double?, stream: Bool) {
        self.model = model
        self.messages = messages
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.stream = stream
    }
}

/// Calls OpenAI-compatible and Anthropic endpoints through async-http-client. Responses are size-capped;
/// anything unparseable is a typed `ProviderError`, never a crash.
public final class ProviderClients: Sendable {
    public let endpoints: [String: ProviderEndpoint]
    private let http: HTTPClient
    static let maxBodyBytes = 8 << 20

    public init(endpoints: [ProviderEndpoint]) {
        self.endpoints = Dictionary(endpoints.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        configuration.redirectConfiguration = .disallow
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// The doctor's provider checks: each configured upstream answers an HTTP request at all (any status: a
    /// 401 means the key is refused), within 3 s; the local agent needs nothing.
    public func doctorChecks() async -> [DoctorCheck] {
        guard !endpoints.isEmpty else {
            return [Doctor.check(.pass, "providers", "only the built-in local agent (no upstream configured)")]
        }
        var checks: [DoctorCheck] = []
        for endpoint in endpoints.values.sorted(by: { $0.name < $1.name }) {
            let name = "provider \(endpoint.name)"
            let host = URL(string: endpoint.baseURL)?.host ?? "?"
            var request = HTTPClientRequest(url: endpoint.kind == .openAI ? endpoint.baseURL + "/models"
                                                                          : endpoint.baseURL + "/v1/models")
            if let key = endpoint.apiKey {
                if endpoint.kind == .openAI {
                    request.headers.add(name: "authorization", value: "Bearer \(key)")
                } else {
                    request.headers.add(name: "x-api-key", value: key)
                    request.headers.add(name: "anthropic-version", value: "2023-06-01")
                }
            }
            do {
                let response = try await http.execute(request, timeout: .seconds(3))
                _ = try? await response.body.collect(upTo: 1 << 20)
                let status = Int(response.status.code)
                if status == 401 || status == 403 {
                    checks.append(Doctor.check(.fail, name, "\(host) reachable but refuses the API key (HTTP \(status))"))
                } else if endpoint.apiKey == nil {
                    checks.append(Doctor.check(.warn, name, "\(host) reachable (HTTP \(status)); no API key configured"))
                } else {
                    checks.append(Doctor.check(.pass, name, "\(host) reachable (HTTP \(status))"))
                }
            } catch {
                checks.append(Doctor.check(.fail, name, "\(host) not reachable: \(error)"))
            }
        }
        return checks
    }

    /// Runs one attempt. With `call.stream`, `onDelta` receives content as it arrives; the first delta marks
    /// the point after which a failure can no longer fall back silently.
    public func complete(provider: String, call: ProviderCall,
                         onDelta: @Sendable (String) async -> Void) async throws(ProviderError) -> ProviderResponse {
        guard let endpoint = endpoints[provider] else {
            // Not retriable: the operator hasn't configured this provider; go straight to the fallback.
            throw ProviderError(.circuitOpen, reason: "provider not configured")
        }
        var request = HTTPClientRequest(url: endpoint.kind == .openAI
                                        ? endpoint.baseURL + "/chat/completions" : endpoint.baseURL + "/v1/messages")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        let body: [UInt8]
        do {
            switch endpoint.kind {
            case .openAI:
                if let key = endpoint.apiKey { request.headers.add(name: "authorization", value: "Bearer \(key)") }
                body = try OpenAIWire.ChatRequest(model: call.model, messages: call.messages, stream: call.stream,
                                                  maxTokens: call.maxTokens, temperature: call.temperature).jsonBody()
            case .anthropic:
                if let key = endpoint.apiKey { request.headers.add(name: "x-api-key", value: key) }
                request.headers.add(name: "anthropic-version", value: "2023-06-01")
                body = try AnthropicWire.MessagesRequest(model: call.model, messages: call.messages,
                                                         maxTokens: call.maxTokens, stream: call.stream,
                                                         temperature: call.temperature).jsonBody()
            }
        } catch {
            throw ProviderError(.badResponse, reason: "request encoding failed")
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        let timeout = TimeAmount.nanoseconds(endpoint.timeout.nanosecondsValue)
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout
                    || error == .connectTimeout {
            throw ProviderError(.timeout, reason: "provider timed out")
        } catch {
            throw ProviderError(.transport, reason: "provider unreachable")
        }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            _ = try? await response.body.collect(upTo: 64 << 10)
            throw ProviderError(.http(status))
        }
        do {
            if call.stream {
                var decoder = ProviderStreamDecoder(format: endpoint.kind == .openAI ? .openAI : .anthropic)
                var content = ""
                var finish: String?
                var usage: ProviderUsage?
                var received = 0
                func apply(_ deltas: [StreamDelta]) async {
                    for delta in deltas {
                        if !delta.content.isEmpty {
                            content += delta.content
                            await onDelta(delta.content)
                        }
                        if let reason = delta.finishReason { finish = reason }
                        if let value = delta.usage { usage = value }
                    }
                }
                for try await chunk in response.body {
                    received += chunk.readableBytes
                    if received > Self.maxBodyBytes { throw ProviderError(.badResponse, reason: "stream too large") }
                    await apply(try decoder.feed(chunk.readableBytesView))
                }
                await apply(try decoder.finish())
                return ProviderResponse(content: content, finishReason: finish ?? "stop", usage: usage)
            } else {
                let collected = try await response.body.collect(upTo: Self.maxBodyBytes)
                let bytes = collected.readableBytesView
                let decoded = endpoint.kind == .openAI
                    ? try OpenAIWire.decodeResponse(bytes) : try AnthropicWire.decodeResponse(bytes)
                if !decoded.content.isEmpty { await onDelta(decoded.content) }
                return decoded
            }
        } catch let error as ProviderError {
            throw error
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw ProviderError(.timeout, reason: "provider timed out")
        } catch {
            throw ProviderError(.streamCut, reason: "provider body interrupted")
        }
    }
}

