import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Telemetry
import Tenancy

/// How an admin command arrived: protobuf over NATS (`admin.<service>.<command>`), JSON over HTTP
/// (`POST /admin/v1/<service>/<command>`).
public enum AdminWire: Sendable { case protobuf, json }

/// A service's admin commands. Every response type carries `error` as field 1, so a failure can always be
/// answered in the command's own type, and an unknown command in any of them.
public protocol AdminCommandDispatcher: Sendable {
    /// The `<service>` of `admin.<service>.<command>` (also the NATS queue group replicas share).
    var service: String { get }
    /// The command names, for the answer to an unknown one.
    var commandNames: [String] { get }
    /// Runs `command`; nil when this service has no such command.
    func handle(command: String, body: [UInt8], wire: AdminWire, bearerToken: String?) async
        -> (error: AdminErrorCode?, body: [UInt8])?
}

extension AdminCommandDispatcher {
    /// The answer to a subject or path that names no command.
    public func unknownCommand(wire: AdminWire) -> [UInt8] {
        let response = DeleteTenantResponse(error: AdminError(
            code: AdminErrorCode.invalidArgument.rawValue,
            message: "unknown admin command; one of: " + commandNames.joined(separator: ", ")))
        return wire == .protobuf ? response.protobufBytes() : AdminCall.encodeJSON(response)
    }
}

/// Decoding, running and encoding one admin command, shared by every service's dispatcher.
public enum AdminCall {
    /// Decodes `body` as `Request` (protobuf or JSON), puts the HTTP bearer token in place of any token in the
    /// body, runs `operation`, and encodes its response — or the failure, in the same response type.
    public static func run<Request: AdminRequest & Codable, Response: AdminResponse & Codable>(
        _ body: [UInt8], _ wire: AdminWire, _ bearerToken: String?, _: Request.Type,
        _ operation: (Request) async throws(AdminFailure) -> Response
    ) async -> (error: AdminErrorCode?, body: [UInt8]) {
        func encode(_ response: Response) -> [UInt8] {
            wire == .protobuf ? response.protobufBytes() : encodeJSON(response)
        }
        var request: Request
        do {
            switch wire {
            case .protobuf: request = try Request(protobuf: body)
            case .json: request = try JSONDecoder().decode(Request.self, from: Data(body.isEmpty ? Array("{}".utf8) : body))
            }
        } catch {
            var response = Response()
            response.error = AdminError(code: AdminErrorCode.invalidArgument.rawValue,
                                        message: "malformed request: \(describe(decodingError: error))")
            return (.invalidArgument, encode(response))
        }
        if let bearerToken { request.adminToken = bearerToken }
        do {
            return (nil, encode(try await operation(request)))
        } catch {
            var response = Response()
            response.error = error.adminError
            return (error.code, encode(response))
        }
    }

    /// JSON with sorted keys (stable output for scripts and tests).
    public static func encodeJSON(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    /// A short, input-free description of a decoding failure.
    public static func describe(decodingError error: any Error) -> String {
        switch error {
        case let schema as SchemaError: return "not a valid protobuf message (\(schema))"
        case DecodingError.dataCorrupted(let context):
            return context.codingPath.isEmpty ? context.debugDescription
                : "\(context.debugDescription) at \(path(context.codingPath))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type at \(path(context.codingPath))"
        case DecodingError.keyNotFound(let key, _): return "missing field \(key.stringValue)"
        default: return "not valid JSON"
        }
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}

/// Answers core NATS requests on `subject` in a queue group (replicas share them), at most `maxInFlight` at
/// once. Replies only go to inboxes: a caller must not make a service (which may write KV and events) publish
/// an answer onto `$KV.…` or `evt.…`.
public struct NATSResponderService: Service {
    public typealias Respond = @Sendable (NATSMessage) async -> [UInt8]

    let connection: NATSConnection
    let subject: String
    let queueGroup: String
    let maxInFlight: Int
    let logger: Logger
    let respond: Respond

    public init(connection: NATSConnection, subject: String, queueGroup: String, maxInFlight: Int = 32,
                logger: Logger, respond: @escaping Respond) {
        self.connection = connection
        self.subject = subject
        self.queueGroup = queueGroup
        self.maxInFlight = max(1, maxInFlight)
        self.logger = logger
        self.respond = respond
    }

    public func run() async throws {
        let subscription = try connection.subscribe(subject, queue: queueGroup)
        try await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                var inFlight = 0
                for await message in subscription.messages {
                    if inFlight >= maxInFlight {
                        await group.next()
                        inFlight -= 1
                    }
                    inFlight += 1
                    group.addTask { await self.answer(message) }
                }
            }
        }
        subscription.unsubscribe()
    }

    func answer(_ message: NATSMessage) async {
        guard let reply = message.reply, ReplySubjects.isInbox(reply) else {
            logger.warning("request without an inbox reply subject ignored", metadata: ["subject": "\(subject)"])
            return
        }
        let body = await respond(message)
        do {
            try connection.publish(reply, payload: body)
        } catch {
            logger.warning("reply failed", metadata: ["subject": "\(subject)", "error": "\(error)"])
        }
    }
}

/// Serves `admin.<service>.*` in the `<service>` queue group, so replicas share the commands.
public struct AdminNATSService: Service {
    let responder: NATSResponderService

    public init(connection: NATSConnection, dispatcher: any AdminCommandDispatcher, metrics: TelemetryMetrics,
                logger: Logger, maxInFlight: Int = 32) {
        responder = NATSResponderService(
            connection: connection, subject: Subjects.admin(service: dispatcher.service, command: "*"),
            queueGroup: dispatcher.service, maxInFlight: maxInFlight, logger: logger
        ) { message in
            await Self.serve(message, dispatcher: dispatcher, metrics: metrics, logger: logger)
        }
    }

    public func run() async throws { try await responder.run() }

    static func serve(_ message: NATSMessage, dispatcher: any AdminCommandDispatcher, metrics: TelemetryMetrics,
                      logger: Logger) async -> [UInt8] {
        let name = String(message.subject.split(separator: ".").last ?? "")
        let response: [UInt8]
        let outcome: String
        if let result = await dispatcher.handle(command: name, body: message.payload, wire: .protobuf,
                                                bearerToken: nil) {
            response = result.body
            outcome = result.error?.rawValue ?? "ok"
            metrics.counter(.adminCommandsTotal, [(.command, name), (.outcome, outcome)]).increment()
        } else {
            response = dispatcher.unknownCommand(wire: .protobuf)
            outcome = AdminErrorCode.invalidArgument.rawValue
            metrics.counter(.adminCommandsTotal, [(.command, "unknown"), (.outcome, outcome)]).increment()
        }
        logger.info("admin command", metadata: ["command": "\(name.prefix(32))", "outcome": "\(outcome)", "via": "nats"])
        return response
    }
}

/// `POST /admin/v1/<service>/<command>`: the admin commands as JSON over HTTP, behind `Authorization: Bearer
/// <admin token>`. The status follows the error code (400, 401, 404, 409, 500, 503); the body is the
/// command's JSON response either way.
public struct AdminHTTPRoutes: Sendable {
    public static let maxBodyBytes = 4 << 20
    let dispatcher: any AdminCommandDispatcher
    let metrics: TelemetryMetrics
    let logger: Logger

    public init(dispatcher: any AdminCommandDispatcher, metrics: TelemetryMetrics, logger: Logger) {
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.logger = logger
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        router.post("/admin/v1/\(dispatcher.service)/:command") { request, context in
            await self.handle(request, command: context.parameters.get("command") ?? "")
        }
    }

    func handle(_ request: Request, command name: String) async -> Response {
        guard dispatcher.commandNames.contains(name) else {
            return Self.response(.badRequest, dispatcher.unknownCommand(wire: .json))
        }
        let token = Self.bearerToken(request.headers[.authorization])
        guard let token else {
            return Self.failure(.unauthorized, "send the admin token as `Authorization: Bearer <token>`")
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBodyBytes)
        } catch {
            return Self.failure(.invalidArgument, "request body larger than \(Self.maxBodyBytes) bytes",
                                status: .contentTooLarge)
        }
        guard let result = await dispatcher.handle(command: name, body: Array(body.readableBytesView), wire: .json,
                                                   bearerToken: token) else {
            return Self.response(.badRequest, dispatcher.unknownCommand(wire: .json))
        }
        let outcome = result.error?.rawValue ?? "ok"
        metrics.counter(.adminCommandsTotal, [(.command, name), (.outcome, outcome)]).increment()
        logger.info("admin command", metadata: ["command": "\(name)", "outcome": "\(outcome)", "via": "http"])
        return Self.response(HTTPResponse.Status(code: result.error?.httpStatus ?? 200), result.body)
    }

    static func bearerToken(_ header: String?) -> String? {
        guard let header, header.utf8.count <= 600 else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    static func failure(_ code: AdminErrorCode, _ message: String, status: HTTPResponse.Status? = nil) -> Response {
        let body = DeleteTenantResponse(error: AdminError(code: code.rawValue, message: message))
        return response(status ?? HTTPResponse.Status(code: code.httpStatus), AdminCall.encodeJSON(body))
    }

    static func response(_ status: HTTPResponse.Status, _ body: [UInt8]) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
