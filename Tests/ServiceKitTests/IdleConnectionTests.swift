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

/// Every HTTP listener closes a connection with no request in progress after
/// `SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS` (issue 12, item 1): slow or idle clients can't pile up.
@Suite("Idle HTTP connections")
struct IdleConnectionTests {
    @Test("silent, stuck in its headers, or idle after a response: each connection is closed by the server")
    func idleConnectionsAreClosed() async throws {
        let configuration = try ServiceConfiguration(environment: [
            "SWITCHYARD_HTTP_HOST": "127.0.0.1", "SWITCHYARD_OPS_PORT": "0", "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS": "1",
        ], service: "test")
        let app = buildOpsApplication(configuration: configuration, health: HealthRegistry(), metrics: TelemetryMetrics(),
                                      logger: Logger(label: "idle-test") { _ in SwiftLogNoOpLogHandler() })
        try await app.test(.live) { client in
            let port = try #require(client.port)
            // The server is up. (On a loaded machine the test client's connection may sit idle for the whole 1 s
            // before its request goes out, and the server rightly closes it: ask again on a new one.)
            var live: HTTPResponse.Status?
            for _ in 0..<5 where live == nil {
                live = try? await client.execute(uri: "/live", method: .get).status
            }
            #expect(live == .ok)
            // Each waits (up to 20 s, a bound for a broken build, not a timing assumption) for the server's close.
            #expect(await RawClient.closedByServer(port: port, first: nil, trickle: nil))
            #expect(await RawClient.closedByServer(port: port, first: "GET /live HTTP/1.1\r\nHost: x\r\n",
                                                   trickle: "X-Slow: 1\r\n"))
            #expect(await RawClient.closedByServer(port: port, first: "GET /live HTTP/1.1\r\nHost: x\r\n\r\n",
                                                   trickle: nil))
            // (The test client's own pooled connection is closed the same way once idle, so it isn't reused here.)
        }
    }
}

/// A raw TCP client on a background thread.
enum RawClient {
    /// Connects, sends `first`, then `trickle` every 200 ms (if given), reading whatever comes back, until the
    /// server closes the connection (true) or 20 s pass (false).
    static func closedByServer(port: Int, first: String?, trickle: String?) async -> Bool {
        await exchange(port: port, first: first, trickle: trickle).closed
    }

    /// As ``closedByServer(port:first:trickle:)``, also returning what the server sent.
    static func exchange(port: Int, first: String?, trickle: String? = nil) async -> (closed: Bool, received: String) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: run(port: port, first: first, trickle: trickle))
            }
        }
    }

    private static func run(port: Int, first: String?, trickle: String?) -> (closed: Bool, received: String) {
        guard let fd = connectedSocket(port: port) else { return (false, "") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        func result(_ closed: Bool) -> (closed: Bool, received: String) {
            (closed, String(decoding: received, as: UTF8.self))
        }
        if let first, !send(fd, first) { return result(true) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return result(true) }  // orderly close by the server
            if count < 0 && errno != EAGAIN && errno != EWOULDBLOCK { return result(true) }  // reset
            if count > 0 { received += buffer[0..<count] }
            if let trickle, count < 0, !send(fd, trickle) { return result(true) }
        }
        return result(false)
    }

    /// Opens a connection, sends `request` and reads until the response's blank line and `Content-Length` bytes
    /// arrived; returns the open socket (kept alive) and the response, or nil. On a thread of its own.
    static func openWithRequest(port: Int, _ request: String) async -> (fd: Int32, response: String)? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: openWithRequestBlocking(port: port, request))
            }
        }
    }

    /// Sends `request` on the open connection `fd` and reads its response (nil when the connection closed first).
    static func requestOn(_ fd: Int32, _ request: String) async -> String? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: send(fd, request) ? readResponse(fd) : nil)
            }
        }
    }

    private static func openWithRequestBlocking(port: Int, _ request: String) -> (fd: Int32, response: String)? {
        guard let fd = connectedSocket(port: port) else { return nil }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard send(fd, request), let response = readResponse(fd) else {
            close(fd)
            return nil
        }
        return (fd, response)
    }

    /// Reads one response (head and `Content-Length` body) within 20 s, or nil.
    private static func readResponse(_ fd: Int32) -> String? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            if count > 0 { received += buffer[0..<count] }
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let length = text[..<end.lowerBound].split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length {
                    return text
                }
            }
        }
        return nil
    }

    static func send(_ fd: Int32, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count
    }
}
