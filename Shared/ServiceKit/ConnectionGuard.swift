import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization

/// The limits every HTTP listener (API and ops ports) puts on its connections, so slow or idle clients can't pile
/// up (docs/adr/0017). Defaults: headers within 10 s of a request's first byte, the body within 30 s of its head, 60 s
/// idle between requests, 10,000 connections at once.
public struct HTTPConnectionLimits: Sendable, Equatable {
    /// From a request's first byte to its complete head; then 408.
    public var headerTimeout: Duration
    /// From a request's head to the end of its body; then 408 (a body shorter than its Content-Length too).
    public var bodyTimeout: Duration
    /// No request in progress for this long: the connection is closed (an idle keep-alive, a silent client).
    public var idleTimeout: Duration
    /// Connections open at once per listener; one more is answered 503 and closed.
    public var maxConnections: Int

    public init(headerTimeout: Duration = .seconds(10), bodyTimeout: Duration = .seconds(30),
                idleTimeout: Duration = .seconds(60), maxConnections: Int = 10_000) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }
}

/// The number of open connections of one listener.
final class ConnectionCount: Sendable {
    let open = Atomic<Int>(0)
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with ``HTTPConnectionLimits``: Hummingbird's channel (and its idle timeout) with two handlers
    /// around its HTTP codec — ``ConnectionGate`` on the raw bytes, ``RequestTiming`` on the decoded parts.
    public static func guardedHTTP1(limits: HTTPConnectionLimits) -> HTTPServerBuilder {
        let count = ConnectionCount()
        return HTTPServerBuilder { responder in
            GuardedHTTP1Channel(
                inner: HTTP1Channel(responder: responder, configuration: HTTP1Channel.Configuration(
                    idleTimeout: TimeAmount.nanoseconds(limits.idleTimeout.nanosecondsValue))),
                limits: limits, count: count)
        }
    }
}

/// Hummingbird's HTTP/1 child channel with the connection guard added to each connection's pipeline.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let limits: HTTPConnectionLimits
    let count: ConnectionCount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let gate = ConnectionGate(limits: limits, count: count)
        do {
            try channel.pipeline.syncOperations.addHandler(gate, position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        // On the channel's event loop (where `setup` is called): the gate never leaves it.
        return inner.setup(channel: channel, logger: logger).assumeIsolated().flatMapThrowing { value in
            let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self)
            try channel.pipeline.syncOperations.addHandler(RequestTiming(gate: gate), position: .after(codec))
            return value
        }.nonisolated()
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// First in a connection's pipeline, on the raw bytes: counts the connection against the listener's limit,
/// notices the first byte of each request (the header timer starts there), runs the header and body timers, and
/// writes its own error responses straight to the socket (OpenAI's error shape, `connection: close`).
/// Confined to the channel's event loop.
final class ConnectionGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Rejection {
        case headerTimeout(Duration)
        case bodyTimeout(Duration)
        case headersTooLarge
        case malformed
        case tooManyConnections
    }

    private let limits: HTTPConnectionLimits
    private let count: ConnectionCount
    private var context: ChannelHandlerContext?
    private var overLimit = false
    private var closed = false
    // Requests: heads seen, responses ended, whether a body is being read, whether this request's response began.
    private var heads = 0
    private var responses = 0
    private var bodyOpen = false
    private var responseStarted = false
    /// The running timer (header or body) and its generation: a timer that fires after being replaced does nothing.
    private var timer: Scheduled<Void>?
    private var generation = 0
    private var headerTimerArmed = false

    init(limits: HTTPConnectionLimits, count: ConnectionCount) {
        self.limits = limits
        self.count = count
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        overLimit = count.open.wrappingAdd(1, ordering: .relaxed).newValue > limits.maxConnections
        if context.channel.isActive && overLimit { reject(.tooManyConnections) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        count.open.wrappingSubtract(1, ordering: .relaxed)
        cancelTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if overLimit { reject(.tooManyConnections) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        cancelTimer()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        // The first byte of a request: its head must be complete within the header timeout.
        if heads == responses && !bodyOpen && !headerTimerArmed {
            headerTimerArmed = true
            arm(after: limits.headerTimeout) { $0.reject(.headerTimeout($0.limits.headerTimeout)) }
        }
        context.fireChannelRead(data)
    }

    // MARK: from RequestTiming (same event loop)

    func requestHead() {
        heads += 1
        bodyOpen = true
        responseStarted = false
        headerTimerArmed = false
        arm(after: limits.bodyTimeout) { gate in
            if gate.responseStarted { gate.close() } else { gate.reject(.bodyTimeout(gate.limits.bodyTimeout)) }
        }
    }

    func requestEnd() {
        bodyOpen = false
        cancelTimer()
    }

    func responseHead() { responseStarted = true }

    func responseEnd() { responses += 1 }

    // MARK: timers and answers

    private func arm(after delay: Duration, _ fire: @escaping (ConnectionGate) -> Void) {
        guard let context else { return }
        timer?.cancel()
        generation += 1
        let armed = generation
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay.nanosecondsValue)) { [self] in
            guard armed == generation, !closed else { return }
            fire(self)
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        generation += 1
        headerTimerArmed = false
    }

    /// Writes the rejection's response (unless a response already began) and closes the connection.
    func reject(_ rejection: Rejection) {
        guard let context, !closed else { return }
        closed = true
        cancelTimer()
        let (status, reason, code, message, retryAfter): (Int, String, String, String, Bool) = switch rejection {
        case .headerTimeout(let limit):
            (408, "Request Timeout", "request_timeout",
             "The request headers were not received within \(Self.seconds(limit)); send the whole request promptly.", false)
        case .bodyTimeout(let limit):
            (408, "Request Timeout", "request_timeout",
             "The request body was not received within \(Self.seconds(limit)) (or was shorter than its Content-Length).",
             false)
        case .headersTooLarge:
            (431, "Request Header Fields Too Large", "request_header_fields_too_large",
             "The request headers are too large.", false)
        case .malformed:
            (400, "Bad Request", "invalid_request_error", "The request is not valid HTTP/1.1.", false)
        case .tooManyConnections:
            (503, "Service Unavailable", "service_unavailable",
             "The server has too many open connections; retry shortly.", true)
        }
        let type = status == 503 ? "server_error" : "invalid_request_error"
        let body = #"{"error":{"message":"\#(message)","type":"\#(type)","param":null,"code":"\#(code)"}}"#
        var head = "HTTP/1.1 \(status) \(reason)\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
        if retryAfter { head += "retry-after: 1\r\n" }
        head += "connection: close\r\n\r\n"
        if responseStarted && status == 408 {
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: head + body)))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func close() {
        guard let context, !closed else { return }
        closed = true
        cancelTimer()
        context.close(promise: nil)
    }

    private static func seconds(_ duration: Duration) -> String {
        let seconds = Double(duration.nanosecondsValue) / 1e9
        return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
    }
}

/// After the HTTP codec, on the decoded parts: tells ``ConnectionGate`` where each request and response is, and
/// turns the decoder's errors into answers — 431 for oversized headers, 400 for anything else that isn't HTTP.
final class RequestTiming: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let gate: ConnectionGate

    init(gate: ConnectionGate) { self.gate = gate }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: gate.requestHead()
        case .body: break
        case .end: gate.requestEnd()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: gate.responseHead()
        case .body: break
        case .end: gate.responseEnd()
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        gate.reject(parserError == .headerOverflow ? .headersTooLarge : .malformed)
    }
}
