import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Messaging
import NIOCore
import Schemas
import ServiceLifecycle
import Synchronization
import Tenancy
import Testing
import TestKit

/// An OTLP/HTTP receiver speaking the real wire format (`POST /v1/traces`, OTLP JSON): keeps every span it is sent.
final class OTLPReceiver: Sendable {
    struct Span: Sendable, CustomStringConvertible {
        var service: String
        var name: String
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var kind: Int
        var startUnixNanos: UInt64 = 0
        var endUnixNanos: UInt64 = 0
        var description: String { "\(service) \(name) trace \(traceID) span \(spanID) parent \(parentSpanID.isEmpty ? "-" : parentSpanID)" }
    }

    private let received = Mutex<[Span]>([])
    private let requests = Mutex<[String]>([])
    private let portBox = Mutex(0)
    private let runner = Mutex<Task<Void, any Error>?>(nil)
    private let group = Mutex<ServiceGroup?>(nil)

    var port: Int { portBox.withLock { $0 } }
    var spans: [Span] { received.withLock { $0 } }
    var contentTypes: [String] { requests.withLock { $0 } }

    func start() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.post("/v1/traces") { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            self.requests.withLock { $0.append(request.headers[.contentType] ?? "") }
            let spans = Self.parse(Data(buffer: body))
            self.received.withLock { $0 += spans }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in self.portBox.withLock { $0 = channel.localAddress?.port ?? 0 } },
                              logger: Logger(label: "otlp") { _ in SwiftLogNoOpLogHandler() })
        let serviceGroup = ServiceGroup(services: [app], logger: Logger(label: "otlp") { _ in SwiftLogNoOpLogHandler() })
        group.withLock { $0 = serviceGroup }
        runner.withLock { $0 = Task { try await serviceGroup.run() } }
        for _ in 0..<300 where port == 0 { try await Task.sleep(for: .milliseconds(10)) }
    }

    func stop() async {
        await group.withLock { $0 }?.triggerGracefulShutdown()
        _ = try? await runner.withLock { $0 }?.value
    }

    /// The spans of an `ExportTraceServiceRequest` in OTLP JSON. Ids are hex per the OTLP spec; base64 (protobuf
    /// JSON's default for bytes) is accepted too.
    static func parse(_ data: Data) -> [Span] {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return [] }
        var spans: [Span] = []
        for resourceSpans in root["resourceSpans"] as? [[String: Any]] ?? [] {
            let attributes = (resourceSpans["resource"] as? [String: Any])?["attributes"] as? [[String: Any]] ?? []
            let service = attributes.first { $0["key"] as? String == "service.name" }
                .flatMap { ($0["value"] as? [String: Any])?["stringValue"] as? String } ?? ""
            for scope in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    spans.append(Span(service: service, name: span["name"] as? String ?? "",
                                      traceID: hex(span["traceId"]), spanID: hex(span["spanId"]),
                                      parentSpanID: hex(span["parentSpanId"]),
                                      kind: (span["kind"] as? Int) ?? kindNumber(span["kind"]),
                                      startUnixNanos: nanos(span["startTimeUnixNano"]),
                                      endUnixNanos: nanos(span["endTimeUnixNano"])))
                }
            }
        }
        return spans
    }

    static func hex(_ value: Any?) -> String {
        guard let text = value as? String, !text.isEmpty else { return "" }
        if text.count % 2 == 0, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let bytes = Data(base64Encoded: text) else { return text }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// A fixed64 in OTLP JSON: a decimal string (or a number).
    static func nanos(_ value: Any?) -> UInt64 {
        if let text = value as? String { return UInt64(text) ?? 0 }
        return (value as? NSNumber)?.uint64Value ?? 0
    }

    static func kindNumber(_ value: Any?) -> Int {
        switch value as? String {
        case "SPAN_KIND_INTERNAL": 1
        case "SPAN_KIND_SERVER": 2
        case "SPAN_KIND_CLIENT": 3
        case "SPAN_KIND_PRODUCER": 4
        case "SPAN_KIND_CONSUMER": 5
        default: 0
        }
    }
}

/// One chat through the real gateway, router and orchestrator binaries (and the fake OpenAI upstream) with an
/// OTLP endpoint configured: its spans arrive at the receiver as one trace — the caller's — in which the
/// gateway's server span is the parent of the router's, the router's of the orchestrator's, and the provider
/// call is the orchestrator's child.
@Suite("Traces exported over OTLP", .serialized)
struct TracesTests {
    @Test("a chat's spans arrive in one trace: gateway → router → orchestrator → provider call; a streamed chat's gateway span lasts until its stream has been written")
    func oneTracePerChat() async throws {
        let receiver = OTLPReceiver()
        try await receiver.start()
        let upstream = FakeOpenAI()
        try await upstream.start()
        upstream.set(.answer("Traced answer."))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await http.shutdown(); await upstream.stop(); await receiver.stop() } }
        try await NATSServer.withServer { nats in
            try await PostgresServer.withServer { postgres in
                let (connection, jetStream) = try await Stack.connect(nats)
                defer { connection.close() }
                let writer = try await TenancyWriter(jetStream: jetStream)
                try await Stack.seed(writer: writer, postgres: postgres, consentPolicy: "none")
                let (apiKey, record) = APIKeyGenerator.generate(env: .test, pepper: nil, tenantID: Stack.tenant,
                                                                scopes: ["chat"], nowUnixNanos: EventClock.nowUnixNanos())
                try await writer.put(record)
                let gatewayPort = try freeTCPPort()
                var processes: [TestProcess] = []
                defer { for process in processes { process.terminate(signal: SIGKILL) } }
                for service in ["router", "orchestrator", "api-gateway"] {
                    var environment = [
                        "SWITCHYARD_NATS_URL": nats.url, "SWITCHYARD_DATABASE_URL": postgres.connectionString,
                        "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_OPS_PORT": "\(try freeTCPPort())",
                        "SWITCHYARD_HTTP_PORT": service == "api-gateway" ? "\(gatewayPort)" : "0",
                        "SWITCHYARD_INSTANCE_ID": "\(service)-traces", "SWITCHYARD_DB_POOL_SIZE": "2",
                        "SWITCHYARD_LOG_LEVEL": "warning",
                        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(receiver.port)",
                        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_BSP_SCHEDULE_DELAY": "200",
                    ]
                    if service == "orchestrator" { environment["SWITCHYARD_OPENAI_BASE_URL"] = upstream.baseURL }
                    processes.append(try TestProcess(executable: try builtProduct(service), environment: environment))
                }
                // The caller's own trace context: the gateway's span continues it. Sent once the chat path answers
                // (readiness probes carry no trace context, so the trace holds this one chat).
                let callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736", callerSpan = "00f067aa0ba902b7"
                func chat(traced: Bool) async -> Int {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPort)/v1/chat/completions")
                    request.method = .POST
                    request.headers.add(name: "authorization", value: "Bearer \(apiKey)")
                    request.headers.add(name: "content-type", value: "application/json")
                    if traced { request.headers.add(name: "traceparent", value: "00-\(callerTrace)-\(callerSpan)-01") }
                    request.body = .bytes(ByteBuffer(string: #"{"model":"gpt-agent","messages":[{"role":"user","content":"Hi"}]}"#))
                    guard let response = try? await http.execute(request, timeout: .seconds(10)) else { return 0 }
                    _ = try? await response.body.collect(upTo: 1 << 20)
                    return Int(response.status.code)
                }
                var ready = false
                for _ in 0..<300 where !ready {
                    ready = await chat(traced: false) == 200
                    if !ready { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(ready)
                #expect(await chat(traced: true) == 200)

                let names = ["chat.completions", "router.route", "orchestrator.run", "provider openai"]
                let deadline = ContinuousClock.now + .seconds(30)
                var trace: [OTLPReceiver.Span] = []
                while ContinuousClock.now < deadline {
                    trace = receiver.spans.filter { $0.traceID == callerTrace }
                    if names.allSatisfy({ name in trace.contains { $0.name == name } }) { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(trace.count == names.count, "one span per hop: \(trace)")
                let byName = Dictionary(trace.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
                let gateway = try #require(byName["chat.completions"], "spans received: \(receiver.spans)")
                let router = try #require(byName["router.route"], "spans received: \(receiver.spans)")
                let orchestrator = try #require(byName["orchestrator.run"], "spans received: \(receiver.spans)")
                let provider = try #require(byName["provider openai"], "spans received: \(receiver.spans)")
                #expect(gateway.service == "api-gateway" && router.service == "router" && orchestrator.service == "orchestrator")
                #expect(gateway.parentSpanID == callerSpan, "the gateway continues the caller's trace")
                #expect(router.parentSpanID == gateway.spanID)
                #expect(orchestrator.parentSpanID == router.spanID)
                #expect(provider.parentSpanID == orchestrator.spanID && provider.service == "orchestrator")
                #expect(gateway.kind == 2 && provider.kind == 3, "server span at the gateway, client span for the provider")
                #expect(receiver.contentTypes.allSatisfy { $0.hasPrefix("application/json") })

                // A streamed chat: the gateway's span lasts until the stream has been written, so it ends after the
                // provider call the stream waited for. The upstream holds the call until the response head (sent
                // at once for SSE) has arrived, so the provider call ends after it.
                let streamTrace = "5bf92f3577b34da6a3ce929d0e0e4737"
                upstream.set(.hold)
                let sent = upstream.requests
                var streamed = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPort)/v1/chat/completions")
                streamed.method = .POST
                streamed.headers.add(name: "authorization", value: "Bearer \(apiKey)")
                streamed.headers.add(name: "content-type", value: "application/json")
                streamed.headers.add(name: "traceparent", value: "00-\(streamTrace)-\(callerSpan)-01")
                streamed.body = .bytes(ByteBuffer(string: #"{"model":"gpt-agent","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#))
                let response = try await http.execute(streamed, timeout: .seconds(30))
                #expect(response.status == .ok)
                let held = ContinuousClock.now + .seconds(30)
                while upstream.requests == sent && ContinuousClock.now < held { try await Task.sleep(for: .milliseconds(20)) }
                upstream.set(.answer("Streamed answer."))
                let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
                #expect(body.contains("Streamed") && body.contains("[DONE]"), "\(body)")
                let streamDeadline = ContinuousClock.now + .seconds(30)
                var streamSpans: [String: OTLPReceiver.Span] = [:]
                while ContinuousClock.now < streamDeadline {
                    streamSpans = Dictionary(receiver.spans.filter { $0.traceID == streamTrace }.map { ($0.name, $0) },
                                             uniquingKeysWith: { first, _ in first })
                    if streamSpans["chat.completions"] != nil && streamSpans["provider openai"] != nil { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let streamGateway = try #require(streamSpans["chat.completions"], "spans received: \(receiver.spans)")
                let streamProvider = try #require(streamSpans["provider openai"], "spans received: \(receiver.spans)")
                #expect(streamProvider.endUnixNanos > 0)
                #expect(streamGateway.endUnixNanos >= streamProvider.endUnixNanos,
                        "the gateway's span ended before the stream's provider call did")
            }
        }
    }
}
