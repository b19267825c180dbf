import ArgumentParser
import Foundation
import Logging
import Messaging
import Schemas
import Tenancy

/// The process environment, read in this one place. Empty variables count as unset.
enum CLIEnvironment {
    static func value(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    static let natsURL = "SWITCHYARD_NATS_URL"
    static let natsUser = "SWITCHYARD_NATS_USER"
    static let natsPassword = "SWITCHYARD_NATS_PASSWORD"
    static let adminToken = "SWITCHYARD_ADMIN_TOKEN"
    static let actor = "SWITCHYARD_ACTOR"

    static let defaultNATSURL = "nats://127.0.0.1:4222"
}

/// How to reach NATS (every command that talks to NATS). Defaults come from the environment, so the help text
/// never shows a configured secret.
struct NATSOptions: ParsableArguments {
    @Option(name: .customLong("nats"),
            help: ArgumentHelp("NATS server URL; several comma-separated (env \(CLIEnvironment.natsURL); "
                               + "default \(CLIEnvironment.defaultNATSURL)).", valueName: "url"))
    var natsURLOption: String?

    @Option(name: .customLong("nats-user"),
            help: ArgumentHelp("NATS user (env \(CLIEnvironment.natsUser)).", valueName: "user"))
    var natsUserOption: String?

    @Option(name: .customLong("nats-password"),
            help: ArgumentHelp("NATS password (env \(CLIEnvironment.natsPassword)); never printed.",
                               valueName: "password"))
    var natsPasswordOption: String?

    var url: String { natsURLOption ?? CLIEnvironment.value(CLIEnvironment.natsURL) ?? CLIEnvironment.defaultNATSURL }
    var user: String? { natsUserOption ?? CLIEnvironment.value(CLIEnvironment.natsUser) }
    var password: String? { natsPasswordOption ?? CLIEnvironment.value(CLIEnvironment.natsPassword) }

    /// The server URLs. When a user is given (`--nats-user`, `SWITCHYARD_NATS_USER`), credentials inside a URL
    /// are dropped: nats.c would prefer them, and a shell that sourced `.run/demo.env` (the read-only `reader`'s
    /// URL) after `.run/admin.env` would otherwise send admin commands as `reader` — refused by nats-server
    /// without a word, so every command timed out.
    var servers: [String] {
        let listed = url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return user == nil ? listed : listed.map(Self.withoutCredentials)
    }

    static func withoutCredentials(_ server: String) -> String {
        guard var components = URLComponents(string: server), components.user != nil || components.password != nil
        else { return server }
        components.user = nil
        components.password = nil
        return components.string ?? server
    }

    func validate() throws {
        if servers.isEmpty { throw ValidationError("--nats names no server") }
    }

    /// The server URLs without any `user:password@` part, for messages.
    var displayURL: String {
        servers.map(Self.withoutCredentials).joined(separator: ",")
    }

    /// - Parameter inboxPrefix: where replies arrive: admin replies (which carry new API keys once) on
    ///   `_INBOX_admin.…`, a prefix only the `admin` NATS user may subscribe to (scripts/nats-auth.conf.tmpl);
    ///   backup and restore, which use the JetStream API as the `backup` user, on the default `_INBOX.…`.
    func connect(inboxPrefix: String = "_INBOX_admin") async throws(CLIFailure) -> NATSConnection {
        let logger = Logger(label: "switchyard-cli") { _ in SwiftLogNoOpLogHandler() }
        let configuration = NATSConfiguration(servers: servers, user: user, password: password,
                                              name: "switchyard-cli", connectAttempts: 3, inboxPrefix: inboxPrefix)
        do {
            return try await NATSConnection.connect(configuration, logger: logger)
        } catch let error as NATSError {
            let reason = error.status ?? error.code.description
            var hint = "is nats-server running there? check --nats / \(CLIEnvironment.natsURL)"
            if reason.localizedCaseInsensitiveContains("authoriz") || reason.localizedCaseInsensitiveContains("authentic") {
                hint = "check --nats-user and --nats-password, or \(CLIEnvironment.natsUser) and \(CLIEnvironment.natsPassword)"
            }
            throw CLIFailure("unavailable: cannot connect to NATS at \(displayURL): \(reason) (\(hint))")
        } catch {
            throw CLIFailure("unavailable: cannot connect to NATS at \(displayURL): \(error)")
        }
    }
}

/// Options of every admin command: NATS, the admin token, the audited actor, output format and timeout.
struct AdminOptions: ParsableArguments {
    @OptionGroup var nats: NATSOptions

    @Option(name: .customLong("admin-token"),
            help: ArgumentHelp("Admin token (env \(CLIEnvironment.adminToken)); never printed.",
                               valueName: "token"))
    var adminTokenOption: String?

    @Option(name: .customLong("actor"),
            help: ArgumentHelp("Your name as recorded in the audit log (env \(CLIEnvironment.actor); "
                               + "default $USER, else \"cli\").", valueName: "name"))
    var actorOption: String?

    @Flag(help: "Print the response as JSON (pretty-printed, sorted keys) instead of text.")
    var json = false

    @Option(help: ArgumentHelp("Seconds to wait for the service to answer each command.",
                               valueName: "seconds"))
    var timeout: Double = 10

    func validate() throws {
        guard timeout.isFinite, timeout > 0, timeout <= 3600 else {
            throw ValidationError("--timeout must be more than 0 and at most 3600 seconds")
        }
    }

    var actor: String { actorOption ?? CLIEnvironment.value(CLIEnvironment.actor) ?? CLIEnvironment.value("USER") ?? "cli" }

    /// The admin token, or exit code 2 with a clear message. Checked before connecting.
    func adminToken() throws(CLIFailure) -> String {
        guard let token = adminTokenOption ?? CLIEnvironment.value(CLIEnvironment.adminToken), !token.isEmpty else {
            throw CLIFailure("no admin token: pass --admin-token or set \(CLIEnvironment.adminToken)",
                             exitCode: CLIFailure.missingCredentials)
        }
        return token
    }

    /// Connects, runs `body` with an admin session, closes.
    func withSession<T>(_ body: (AdminSession) async throws -> T) async throws -> T {
        let token = try adminToken()
        let connection = try await nats.connect()
        defer { connection.close() }
        let client = AdminClient(connection: connection, token: token, actor: actor,
                                 timeout: .milliseconds(Int64((timeout * 1000).rounded())))
        return try await body(AdminSession(client: client, json: json))
    }
}

/// A connected admin client plus the output format.
struct AdminSession {
    let client: AdminClient
    let json: Bool

    func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: AdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await client.call(command, request, as: Response.self)
    }

    func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: BillingAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await client.call(command, request, as: Response.self)
    }

    func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: AnalyticsAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await client.call(command, request, as: Response.self)
    }

    func call<Request: AdminRequest, Response: AdminResponse>(
        _ command: EvalAdminCommand, _ request: Request, as _: Response.Type = Response.self
    ) async throws(AdminFailure) -> Response {
        try await client.call(command, request, as: Response.self)
    }

    /// Prints `value` as JSON with `--json`, else runs `text`.
    func output(json value: some Encodable, text: () -> Void) throws {
        if json { try Output.printJSON(value) } else { text() }
    }
}

/// `--tenant T` of the commands below `tenant`.
struct TenantOption: ParsableArguments {
    @Option(help: ArgumentHelp("The tenant id.", valueName: "tenant-id"))
    var tenant: String

    func validate() throws {
        try validateTenantID(tenant)
    }
}

func validateTenantID(_ id: String) throws {
    guard TenantID.isValid(id) else {
        throw ValidationError("invalid tenant id: it must match [a-z0-9][a-z0-9-]{0,62}")
    }
}
