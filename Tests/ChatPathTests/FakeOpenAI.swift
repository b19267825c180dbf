import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A fake OpenAI-compatible upstream speaking the real wire format (JSON and SSE) over HTTP, scripted per
/// test: answer, fail with a status, hang past the client's timeout, or cut a stream before its first token.
final class FakeOpenAI: Sendable {
    /// `hold`: every request waits until the mode changes, then is answered as the new mode says.
    enum Mode: Sendable { case answer(String), status(Int), hang, cutStream, garbage, hold }

    private let mode = Mutex<Mode>(.answer("Hello from upstream."))
    private let counter = Atomic<Int>(0)
    private let portBox = Mutex<Int>(0)
    private let runner = Mutex<Task<Void, any Error>?>(nil)
    private let group = Mutex<ServiceGroup?>(nil)
    private let captured = Mutex<[String]>([])

    /// Request bodies received since the last reset.
    var capturedBodies: [String] { captured.withLock { $0 } }
    func resetCaptured() { captured.withLock { $0.removeAll() } }

    var port: Int { portBox.withLock { $0 } }
    var baseURL: String { "http://127.0.0.1:\(port)/v1" }
    var requests: Int { counter.load(ordering: .relaxed) }
    func set(_ newMode: Mode) { mode.withLock { $0 = newMode } }

    func start() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.post("/v1/chat/completions") { request, _ in
            self.counter.add(1, ordering: .relaxed)
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            self.captured.withLock { $0.append(String(buffer: body)) }
            let json = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
            let stream = json["stream"] as? Bool ?? false
            var current = self.mode.withLock { $0 }
            while case .hold = current {
                try await Task.sleep(for: .milliseconds(20))
                current = self.mode.withLock { $0 }
            }
            switch current {
            case .hold:
                return Response(status: .internalServerError)
            case .status(let code):
                return Response(status: .init(code: code), body: .init(byteBuffer: ByteBuffer(string: "{\"error\":{\"message\":\"boom\"}}")))
            case .hang:
                try? await Task.sleep(for: .seconds(5))
                return Response(status: .gatewayTimeout)
            case .garbage:
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "<html>not json</html>")))
            case .cutStream:
                var headers = HTTPFields()
                headers[.contentType] = "text/event-stream"
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    try await writer.finish(nil)
                })
            case .answer(let text):
                if stream {
                    var headers = HTTPFields()
                    headers[.contentType] = "text/event-stream"
                    let words = text.split(separator: " ").map { String($0) + " " }
                    return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                        for word in words {
                            let chunk = ["id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
                                         "choices": [["index": 0, "delta": ["content": word], "finish_reason": NSNull()]]] as [String: Any]
                            try await writer.write(ByteBuffer(string: "data: \(Self.string(chunk))\n\n"))
                        }
                        let last = ["id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
                                    "choices": [["index": 0, "delta": [:], "finish_reason": "stop"]],
                                    "usage": ["prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18]] as [String: Any]
                        try await writer.write(ByteBuffer(string: "data: \(Self.string(last))\n\ndata: [DONE]\n\n"))
                        try await writer.finish(nil)
                    })
                }
                let reply = ["id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
                             "choices": [["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop"]],
                             "usage": ["prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18]] as [String: Any]
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: Self.string(reply))))
            }
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in self.portBox.withLock { $0 = channel.localAddress?.port ?? 0 } },
                              logger: Logger(label: "fake-openai") { _ in SwiftLogNoOpLogHandler() })
        let serviceGroup = ServiceGroup(services: [app], logger: Logger(label: "fake") { _ in SwiftLogNoOpLogHandler() })
        group.withLock { $0 = serviceGroup }
        runner.withLock { $0 = Task { try await serviceGroup.run() } }
        for _ in 0..<300 where port == 0 { try await Task.sleep(for: .milliseconds(10)) }
    }

    func stop() async {
        await group.withLock { $0 }?.triggerGracefulShutdown()
        _ = try? await runner.withLock { $0 }?.value
    }

    static func string(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }
}
