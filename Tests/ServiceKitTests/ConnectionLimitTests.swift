#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceKit
import Telemetry
import TestKit
import Testing

/// The connection limits of every HTTP listener (issue 12, item 1; docs/adr/0017): header and body timeouts
/// answered 408, oversized headers 431, garbage 400 — each in OpenAI's error shape — and a cap on open connections.
@Suite("HTTP connection limits")
struct ConnectionLimitTests {
    static func withOpsServer(_ environment: [String: String],
                              _ body: @Sendable (Int) async throws -> Void) async throws {
        var variables = ["SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_OPS_PORT": "0"]
        variables.merge(environment) { $1 }
        let configuration = try ServiceConfiguration(environment: variables, service: "test")
        let app = buildOpsApplication(configuration: configuration, health: HealthRegistry(), metrics: TelemetryMetrics(),
                                      logger: Logger(label: "limits-test") { _ in SwiftLogNoOpLogHandler() })
        try await app.test(.live) { client in
            try await body(try #require(client.port))
        }
    }

    /// The status line and the JSON error code of a raw response.
    static func statusAndCode(_ response: String) -> (status: String, code: String?) {
        let status = response.split(separator: "\r\n").first.map(String.init) ?? ""
        guard let start = response.range(of: "\r\n\r\n"),
              let json = try? JSONSerialization.jsonObject(with: Data(response[start.upperBound...].utf8)) as? [String: Any],
              let error = json["error"] as? [String: Any]
        else { return (status, nil) }
        return (status, error["code"] as? String)
    }

    @Test("headers trickled past the header timeout: 408 request_timeout, then closed (the idle timeout is far away)")
    func slowHeadersGet408() async throws {
        try await Self.withOpsServer(["SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS": "1",
                                      "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS": "600"]) { port in
            let (closed, received) = await RawClient.exchange(port: port, first: "GET /live HTTP/1.1\r\nHost: x\r\n",
                                                              trickle: "X-Slow: 1\r\n")
            #expect(closed)
            let (status, code) = Self.statusAndCode(received)
            #expect(status == "HTTP/1.1 408 Request Timeout")
            #expect(code == "request_timeout")
        }
    }

    @Test("a body shorter than its Content-Length: 408 after the body timeout, then closed")
    func shortBodyGets408() async throws {
        // A route that reads its body, as the gateway's do.
        let router = Router()
        router.post("/echo") { request, _ -> String in
            String(buffer: try await request.body.collect(upTo: 1 << 20))
        }
        let app = Application(router: router, server: .guardedHTTP1(limits: HTTPConnectionLimits(
            bodyTimeout: .seconds(1), idleTimeout: .seconds(600))), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "limits-test") { _ in SwiftLogNoOpLogHandler() })
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let (closed, received) = await RawClient.exchange(
                port: port, first: "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"short\":")
            #expect(closed)
            let (status, code) = Self.statusAndCode(received)
            #expect(status == "HTTP/1.1 408 Request Timeout")
            #expect(code == "request_timeout")
        }
    }

    @Test("oversized headers get 431 and garbage gets 400, both in OpenAI's error shape")
    func oversizedAndMalformed() async throws {
        try await Self.withOpsServer([:]) { port in
            let huge = "GET /live HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n"
            let (closedHuge, hugeResponse) = await RawClient.exchange(port: port, first: huge)
            #expect(closedHuge)
            let (hugeStatus, hugeCode) = Self.statusAndCode(hugeResponse)
            #expect(hugeStatus == "HTTP/1.1 431 Request Header Fields Too Large")
            #expect(hugeCode == "request_header_fields_too_large")

            let (closedGarbage, garbage) = await RawClient.exchange(port: port, first: "\u{01}\u{02} NOT HTTP\r\n\r\n")
            #expect(closedGarbage)
            let (garbageStatus, garbageCode) = Self.statusAndCode(garbage)
            #expect(garbageStatus == "HTTP/1.1 400 Bad Request")
            #expect(garbageCode == "invalid_request_error")
            // And the listener still serves.
            let ok = try #require(await RawClient.openWithRequest(port: port, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"))
            close(ok.fd)
            #expect(ok.response.hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test("one connection over the cap gets 503 service_unavailable; once one closes, a new one is served")
    func connectionCap() async throws {
        try await Self.withOpsServer(["SWITCHYARD_HTTP_MAX_CONNECTIONS": "3"]) { port in
            // Kept-alive connections, each counted once it is served, until one is refused. The test client may hold
            // one of the three itself.
            var open: [Int32] = []
            defer { open.forEach { close($0) } }
            var refused: String?
            for _ in 0..<4 where refused == nil {
                let kept = try #require(await RawClient.openWithRequest(port: port, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"))
                if kept.response.hasPrefix("HTTP/1.1 200") {
                    open.append(kept.fd)
                } else {
                    close(kept.fd)
                    refused = kept.response
                }
            }
            #expect((2...3).contains(open.count), "served \(open.count) before the refusal")
            let received = try #require(refused)
            let (status, code) = Self.statusAndCode(received)
            #expect(status == "HTTP/1.1 503 Service Unavailable")
            #expect(code == "service_unavailable")
            #expect(received.lowercased().contains("retry-after: 1"))
            // The refused connection was closed by the server.
            let (closed, _) = await RawClient.exchange(port: port, first: nil)
            #expect(closed)
            // One closes: the server notices at once, and the next connection is served (waits for that fact).
            close(open.removeFirst())
            var served = false
            for _ in 0..<100 where !served {
                if let next = await RawClient.openWithRequest(port: port, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n") {
                    close(next.fd)
                    served = next.response.hasPrefix("HTTP/1.1 200")
                }
                if !served { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(served)
        }
    }

    @Test("a request that keeps within the limits is unaffected, also on a kept-alive connection")
    func normalRequestsPass() async throws {
        try await Self.withOpsServer(["SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS": "1",
                                      "SWITCHYARD_HTTP_BODY_TIMEOUT_SECONDS": "1"]) { port in
            let first = try #require(await RawClient.openWithRequest(port: port, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"))
            defer { close(first.fd) }
            #expect(first.response.hasPrefix("HTTP/1.1 200"))
            // The same connection, idle for longer than the header and body timeouts, still serves the next request:
            // those timers only run while a request is being received.
            try await Task.sleep(for: .milliseconds(1_500))
            let again = await RawClient.requestOn(first.fd, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(again?.hasPrefix("HTTP/1.1 200") == true)
        }
    }
}
