import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Telemetry
import Tenancy

/// Decodes an admin command (protobuf from NATS, JSON from HTTP), runs it and encodes the response. Every
/// response type carries `error` as field 1, so a failure can always be answered in the command's own type.
public struct AdminDispatcher: Sendable {
    public enum Wire: Sendable { case protobuf, json }

    let admin: TenantAdmin

    public init(admin: TenantAdmin) { self.admin = admin }

    /// - Parameter bearerToken: the HTTP `Authorization` token; replaces any `adminToken` in a JSON body.
    public func handle(_ command: AdminCommand, body: [UInt8], wire: Wire, bearerToken: String? = nil) async
        -> (error: AdminErrorCode?, body: [UInt8])
    {
        let a = admin
        switch command {
        case .create: return await run(body, wire, bearerToken, CreateTenantRequest.self) { r throws(AdminFailure) in try await a.create(r) }
        case .update: return await run(body, wire, bearerToken, UpdateTenantRequest.self) { r throws(AdminFailure) in try await a.update(r) }
        case .suspend: return await run(body, wire, bearerToken, SuspendTenantRequest.self) { r throws(AdminFailure) in try await a.suspend(r) }
        case .delete: return await run(body, wire, bearerToken, DeleteTenantRequest.self) { r throws(AdminFailure) in try await a.delete(r) }
        case .get: return await run(body, wire, bearerToken, GetTenantRequest.self) { r throws(AdminFailure) in try await a.get(r) }
        case .list: return await run(body, wire, bearerToken, ListTenantsRequest.self) { r throws(AdminFailure) in try await a.list(r) }
        case .issueKey: return await run(body, wire, bearerToken, IssueKeyRequest.self) { r throws(AdminFailure) in try await a.issueKey(r) }
        case .revokeKey: return await run(body, wire, bearerToken, RevokeKeyRequest.self) { r throws(AdminFailure) in try await a.revokeKey(r) }
        case .rotateKey: return await run(body, wire, bearerToken, RotateKeyRequest.self) { r throws(AdminFailure) in try await a.rotateKey(r) }
        case .listKeys: return await run(body, wire, bearerToken, ListKeysRequest.self) { r throws(AdminFailure) in try await a.listKeys(r) }
        case .setPlan: return await run(body, wire, bearerToken, SetPlanRequest.self) { r throws(AdminFailure) in try await a.setPlan(r) }
        case .setManifest: return await run(body, wire, bearerToken, SetManifestRequest.self) { r throws(AdminFailure) in try await a.setManifest(r) }
        case .setRollout: return await run(body, wire, bearerToken, SetRolloutRequest.self) { r throws(AdminFailure) in try await a.setRollout(r) }
        case .knowledgeUpsert: return await run(body, wire, bearerToken, KnowledgeUpsertRequest.self) { r throws(AdminFailure) in try await a.knowledgeUpsert(r) }
        case .knowledgeDelete: return await run(body, wire, bearerToken, KnowledgeDeleteRequest.self) { r throws(AdminFailure) in try await a.knowledgeDelete(r) }
        case .knowledgeList: return await run(body, wire, bearerToken, KnowledgeListRequest.self) { r throws(AdminFailure) in try await a.knowledgeList(r) }
        }
    }

    /// The answer to a subject that names no command (any response type decodes it: field 1 is the error).
    public static func unknownCommand(wire: Wire) -> [UInt8] {
        let response = DeleteTenantResponse(error: AdminError(
            code: AdminErrorCode.invalidArgument.rawValue,
            message: "unknown admin command; one of: " + AdminCommand.allCases.map(\.rawValue).joined(separator: ", ")))
        return wire == .protobuf ? response.protobufBytes() : Self.encodeJSON(response)
    }

    private func run<Request: AdminRequest & Codable, Response: AdminResponse & Codable>(
        _ body: [UInt8], _ wire: Wire, _ bearerToken: String?, _: Request.Type,
        _ operation: (Request) async throws(AdminFailure) -> Response
    ) async -> (error: AdminErrorCode?, body: [UInt8]) {
        func encode(_ response: Response) -> [UInt8] {
            wire == .protobuf ? response.protobufBytes() : Self.encodeJSON(response)
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
                                        message: "malformed request: \(Self.describe(decodingError: error))")
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

    static func encodeJSON(_ value: some Encodable) -> [UInt8] {
        Array((try? JSONEncoder.sorted.encode(value)) ?? Data("{}".utf8))
    }

    /// A short, input-free description of a decoding failure.
    static func describe(decodingError error: any Error) -> String {
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

/// Serves `admin.tenant.*` in the `tenant` queue group, so replicas share the commands.
public struct AdminNATSService: Service {
    public static let queueGroup = "tenant"
    let connection: NATSConnection
    let dispatcher: AdminDispatcher
    let metrics: TelemetryMetrics
    let logger: Logger
    let maxInFlight: Int

    public init(connection: NATSConnection, dispatcher: AdminDispatcher, metrics: TelemetryMetrics, logger: Logger,
                maxInFlight: Int = 32) {
        self.connection = connection
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.logger = logger
        self.maxInFlight = maxInFlight
    }

    public func run() async throws {
        let subscription = try connection.subscribe(
            Subjects.admin(service: AdminCommand.service, command: "*"), queue: Self.queueGroup)
        try await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                var inFlight = 0
                for await message in subscription.messages {
                    if inFlight >= maxInFlight {
                        await group.next()
                        inFlight -= 1
                    }
                    inFlight += 1
                    group.addTask { await self.serve(message) }
                }
            }
        }
        subscription.unsubscribe()
    }

    func serve(_ message: NATSMessage) async {
        // Replies only go to inboxes: a caller must not make this service (which may write KV and events)
        // publish an answer onto `$KV.…` or `evt.…`.
        guard let reply = message.reply, ReplySubjects.isInbox(reply) else {
            logger.warning("admin command without an inbox reply subject ignored")
            return
        }
        let name = String(message.subject.split(separator: ".").last ?? "")
        let response: [UInt8]
        let outcome: String
        if let command = AdminCommand(rawValue: name) {
            let result = await dispatcher.handle(command, body: message.payload, wire: .protobuf)
            response = result.body
            outcome = result.error?.rawValue ?? "ok"
            metrics.counter(.adminCommandsTotal, [(.command, command.rawValue), (.outcome, outcome)]).increment()
        } else {
            response = AdminDispatcher.unknownCommand(wire: .protobuf)
            outcome = AdminErrorCode.invalidArgument.rawValue
            metrics.counter(.adminCommandsTotal, [(.command, "unknown"), (.outcome, outcome)]).increment()
        }
        logger.info("admin command", metadata: ["command": "\(name.prefix(32))", "outcome": "\(outcome)", "via": "nats"])
        do {
            try connection.publish(reply, payload: response)
        } catch {
            logger.warning("admin reply failed", metadata: ["error": "\(error)"])
        }
    }
}

/// `POST /admin/v1/tenant/<command>`: the admin commands as JSON over HTTP, behind `Authorization: Bearer
/// <admin token>`. The status follows the error code (400, 401, 404, 409, 500, 503); the body is the
/// command's JSON response either way.
public struct AdminHTTPRoutes: Sendable {
    public static let maxBodyBytes = 4 << 20
    let dispatcher: AdminDispatcher
    let metrics: TelemetryMetrics
    let logger: Logger

    public init(dispatcher: AdminDispatcher, metrics: TelemetryMetrics, logger: Logger) {
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.logger = logger
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        router.post("/admin/v1/tenant/:command") { request, context in
            await self.handle(request, command: context.parameters.get("command") ?? "")
        }
    }

    func handle(_ request: Request, command name: String) async -> Response {
        guard let command = AdminCommand(rawValue: name) else {
            return Self.response(.badRequest, AdminDispatcher.unknownCommand(wire: .json))
        }
        let token = Self.bearerToken(request.headers[.authorization])
        guard let token else {
            return Self.failure(command, .unauthorized, "send the admin token as `Authorization: Bearer <token>`")
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBodyBytes)
        } catch {
            return Self.failure(command, .invalidArgument, "request body larger than \(Self.maxBodyBytes) bytes",
                                status: .contentTooLarge)
        }
        let result = await dispatcher.handle(command, body: Array(body.readableBytesView), wire: .json,
                                             bearerToken: token)
        let outcome = result.error?.rawValue ?? "ok"
        metrics.counter(.adminCommandsTotal, [(.command, command.rawValue), (.outcome, outcome)]).increment()
        logger.info("admin command", metadata: ["command": "\(command.rawValue)", "outcome": "\(outcome)", "via": "http"])
        return Self.response(HTTPResponse.Status(code: result.error?.httpStatus ?? 200), result.body)
    }

    static func bearerToken(_ header: String?) -> String? {
        guard let header, header.utf8.count <= 600 else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    static func failure(_ command: AdminCommand, _ code: AdminErrorCode, _ message: String,
                        status: HTTPResponse.Status? = nil) -> Response {
        let body = DeleteTenantResponse(error: AdminError(code: code.rawValue, message: message))
        return response(status ?? HTTPResponse.Status(code: code.httpStatus), AdminDispatcher.encodeJSON(body))
    }

    static func response(_ status: HTTPResponse.Status, _ body: [UInt8]) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
