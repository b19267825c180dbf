import Foundation
import Security
import Logging
import Telemetry

/// Everything a Switchyard service reads from its environment, validated before anything starts.
///
/// Read it once in `@main` with ``init(environment:service:defaultHTTPPort:defaultOpsPort:)``; tests pass an
/// in-memory dictionary instead of the process environment.
public struct ServiceConfiguration: Sendable, CustomStringConvertible {
    /// Service name (e.g. `api-gateway`), used in logs and metrics.
    public var service: String

    /// `SWITCHYARD_NATS_URL` — NATS server URLs (`nats://` or `tls://`), comma-separated for a cluster.
    /// Default `nats://127.0.0.1:4222`.
    public var natsServers: [String]
    /// `SWITCHYARD_NATS_USER` — NATS user name. Default: none.
    public var natsUser: String?
    /// `SWITCHYARD_NATS_PASSWORD` — NATS password. Default: none. Never logged.
    public var natsPassword: String?
    /// `SWITCHYARD_DATABASE_URL` — libpq connection URI (`postgres://` or `postgresql://`).
    /// Default `postgresql://switchyard@127.0.0.1:5432/switchyard`. May contain a password; never logged.
    public var databaseURL: String
    /// `SWITCHYARD_DB_POOL_SIZE` — PostgreSQL connections per process, at least 1. Default `4`.
    public var databasePoolSize: Int
    /// `SWITCHYARD_HTTP_HOST` — bind address of the HTTP servers (API and ops). Default `0.0.0.0`.
    public var httpHost: String
    /// `SWITCHYARD_HTTP_PORT` — API port, 0...65535 (0 picks a free port). Default: per service.
    public var httpPort: Int
    /// `SWITCHYARD_OPS_PORT` — port of /health, /ready, /live and /metrics, 0...65535. Default: per service.
    public var opsPort: Int
    /// `SWITCHYARD_LOG_LEVEL` — `trace`, `debug`, `info`, `notice`, `warning`, `error` or `critical`.
    /// Default `info`.
    public var logLevel: Logger.Level
    /// `SWITCHYARD_LOG_FORMAT` — `json` or `text`. Default `json`.
    public var logFormat: LogFormat
    /// `SWITCHYARD_INSTANCE_ID` — this replica's id (reply subjects, logs). Default `<hostname>-<pid>`.
    public var instanceID: String
    /// `SWITCHYARD_DRAIN_SECONDS` — graceful-shutdown budget in whole seconds, 0...3600. Default `20`.
    public var drainSeconds: Int
    /// `SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS` — an HTTP connection (API and ops ports) with no request in
    /// progress for this long is closed: an idle keep-alive, or one that never sends a byte. 1...3600, default `60`.
    public var httpIdleTimeoutSeconds: Int
    /// `SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS` — a request's headers must be complete this long after its first
    /// byte, or it gets 408 and the connection closes. 1...600, default `10`.
    public var httpHeaderTimeoutSeconds: Int
    /// `SWITCHYARD_HTTP_BODY_TIMEOUT_SECONDS` — a request's body must be complete this long after its headers
    /// (a body shorter than its Content-Length too), or it gets 408. 1...3600, default `30`.
    public var httpBodyTimeoutSeconds: Int
    /// `SWITCHYARD_HTTP_MAX_CONNECTIONS` — connections open at once per listener; one more gets 503 and is
    /// closed. 1...1000000, default `10000` (keep it under the process's open-file limit).
    public var httpMaxConnections: Int
    /// The tenant service's Ed25519 mirror public key (`SWITCHYARD_MIRROR_PUBLIC_KEY`, 32 bytes hex): when
    /// set, tenancy KV values without its valid signature are ignored (docs/adr/0009).
    public var mirrorPublicKey: [UInt8]?
    /// Replicas of the streams and KV buckets this service creates or updates (3 on a 3-node JetStream
    /// cluster); 1 on a single nats-server.
    public var streamReplicas: Int

    /// The graceful-shutdown budget as a `Duration`.
    public var drainTimeout: Duration { .seconds(drainSeconds) }

    /// Environment variable names.
    public enum Variable {
        public static let natsURL = "SWITCHYARD_NATS_URL"
        public static let natsUser = "SWITCHYARD_NATS_USER"
        public static let natsPassword = "SWITCHYARD_NATS_PASSWORD"
        public static let databaseURL = "SWITCHYARD_DATABASE_URL"
        public static let databasePoolSize = "SWITCHYARD_DB_POOL_SIZE"
        public static let httpHost = "SWITCHYARD_HTTP_HOST"
        public static let httpPort = "SWITCHYARD_HTTP_PORT"
        public static let opsPort = "SWITCHYARD_OPS_PORT"
        public static let logLevel = "SWITCHYARD_LOG_LEVEL"
        public static let logFormat = "SWITCHYARD_LOG_FORMAT"
        public static let instanceID = "SWITCHYARD_INSTANCE_ID"
        public static let drainSeconds = "SWITCHYARD_DRAIN_SECONDS"
        public static let httpIdleTimeoutSeconds = "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS"
        public static let httpHeaderTimeoutSeconds = "SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS"
        public static let httpBodyTimeoutSeconds = "SWITCHYARD_HTTP_BODY_TIMEOUT_SECONDS"
        public static let httpMaxConnections = "SWITCHYARD_HTTP_MAX_CONNECTIONS"
        public static let mirrorPublicKey = "SWITCHYARD_MIRROR_PUBLIC_KEY"
        public static let streamReplicas = "SWITCHYARD_STREAM_REPLICAS"
    }

    /// Defaults (the per-service ports are arguments of the initializer).
    public enum Default {
        public static let natsURL = "nats://127.0.0.1:4222"
        public static let databaseURL = "postgresql://switchyard@127.0.0.1:5432/switchyard"
        public static let databasePoolSize = 4
        public static let httpHost = "0.0.0.0"
        public static let logLevel = Logger.Level.info
        public static let logFormat = LogFormat.json
        public static let drainSeconds = 20
        public static let httpIdleTimeoutSeconds = 60
        public static let httpHeaderTimeoutSeconds = 10
        public static let httpBodyTimeoutSeconds = 30
        public static let httpMaxConnections = 10_000
        public static let streamReplicas = 1
    }

    /// Reads and validates the configuration.
    ///
    /// - Parameters:
    ///   - environment: variables to read; the process environment in `@main`, a literal in tests.
    ///   - service: the service name.
    ///   - defaultHTTPPort: this service's API port when `SWITCHYARD_HTTP_PORT` is unset.
    ///   - defaultOpsPort: this service's ops port when `SWITCHYARD_OPS_PORT` is unset.
    /// - Throws: ``ConfigurationError`` naming the first invalid variable.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        service: String,
        defaultHTTPPort: Int = 8080,
        defaultOpsPort: Int = 9090
    ) throws(ConfigurationError) {
        let reader = EnvironmentReader(environment)
        self.service = service
        self.natsServers = try reader.natsServers(Variable.natsURL, default: Default.natsURL)
        self.natsUser = reader.optional(Variable.natsUser)
        self.natsPassword = reader.optional(Variable.natsPassword)
        self.databaseURL = try reader.databaseURL(Variable.databaseURL, default: Default.databaseURL)
        self.databasePoolSize = try reader.integer(
            Variable.databasePoolSize, default: Default.databasePoolSize, range: 1...1024)
        self.httpHost = try reader.nonEmpty(Variable.httpHost, default: Default.httpHost)
        self.httpPort = try reader.port(Variable.httpPort, default: defaultHTTPPort)
        self.opsPort = try reader.port(Variable.opsPort, default: defaultOpsPort)
        self.logLevel = try reader.choice(Variable.logLevel, default: Default.logLevel)
        self.logFormat = try reader.choice(Variable.logFormat, default: Default.logFormat)
        self.instanceID = try reader.nonEmpty(Variable.instanceID, default: Self.defaultInstanceID())
        self.drainSeconds = try reader.integer(
            Variable.drainSeconds, default: Default.drainSeconds, range: 0...3600)
        self.httpIdleTimeoutSeconds = try reader.integer(
            Variable.httpIdleTimeoutSeconds, default: Default.httpIdleTimeoutSeconds, range: 1...3600)
        self.httpHeaderTimeoutSeconds = try reader.integer(
            Variable.httpHeaderTimeoutSeconds, default: Default.httpHeaderTimeoutSeconds, range: 1...600)
        self.httpBodyTimeoutSeconds = try reader.integer(
            Variable.httpBodyTimeoutSeconds, default: Default.httpBodyTimeoutSeconds, range: 1...3600)
        self.httpMaxConnections = try reader.integer(
            Variable.httpMaxConnections, default: Default.httpMaxConnections, range: 1...1_000_000)
        self.streamReplicas = try reader.integer(
            Variable.streamReplicas, default: Default.streamReplicas, range: 1...5)
        if let bytes = try reader.hexSecret(Variable.mirrorPublicKey, minimumBytes: 32,
                                            expectation: "a 32-byte Ed25519 public key, hex-encoded") {
            guard Ed25519.VerifyingKey(publicKey: bytes) != nil else {
                throw ConfigurationError(code: .invalidChoice, variable: Variable.mirrorPublicKey,
                                         expectation: "a 32-byte Ed25519 public key, hex-encoded")
            }
            self.mirrorPublicKey = bytes
        }
    }

    /// The verifier for the tenancy KV mirror, when `SWITCHYARD_MIRROR_PUBLIC_KEY` is set.
    public var mirrorVerifier: Ed25519.VerifyingKey? { mirrorPublicKey.flatMap { Ed25519.VerifyingKey(publicKey: $0) } }

    /// Every variable with its default and meaning, for README tables and their check.
    public static func documentation() -> [(name: String, defaultValue: String, description: String)] {
        [
            (Variable.natsURL, Default.natsURL, "NATS server URLs (nats:// or tls://), comma-separated"),
            (Variable.natsUser, "(none)", "NATS user name"),
            (Variable.natsPassword, "(none)", "NATS password (never logged)"),
            (Variable.databaseURL, Default.databaseURL, "PostgreSQL URI (postgres:// or postgresql://)"),
            (Variable.databasePoolSize, "\(Default.databasePoolSize)", "PostgreSQL connections per process (>= 1)"),
            (Variable.httpHost, Default.httpHost, "bind address of the HTTP and ops servers"),
            (Variable.httpPort, "(per service)", "API port (0 picks a free port)"),
            (Variable.opsPort, "(per service)", "port of /health, /ready, /live, /metrics"),
            (Variable.logLevel, Default.logLevel.rawValue, "trace|debug|info|notice|warning|error|critical"),
            (Variable.logFormat, Default.logFormat.rawValue, "json|text"),
            (Variable.instanceID, "<hostname>-<pid>", "replica id used in reply subjects and logs"),
            (Variable.drainSeconds, "\(Default.drainSeconds)", "graceful shutdown budget in seconds"),
            (Variable.httpIdleTimeoutSeconds, "\(Default.httpIdleTimeoutSeconds)",
             "close an HTTP connection with no request in progress after this many seconds"),
            (Variable.httpHeaderTimeoutSeconds, "\(Default.httpHeaderTimeoutSeconds)",
             "408 when a request's headers are not complete this many seconds after its first byte"),
            (Variable.httpBodyTimeoutSeconds, "\(Default.httpBodyTimeoutSeconds)",
             "408 when a request's body is not complete this many seconds after its headers"),
            (Variable.httpMaxConnections, "\(Default.httpMaxConnections)",
             "connections open at once per HTTP listener; one more gets 503"),
            (Variable.streamReplicas, "\(Default.streamReplicas)",
             "replicas of the streams and KV buckets a service creates (1 to 5; 3 on a 3-node JetStream cluster)"),
            (Variable.mirrorPublicKey, "(none)", "tenant service's mirror public key; unsigned tenancy KV values are then ignored"),
        ]
    }

    /// A summary safe to log: no passwords, database URL without credentials.
    public var description: String {
        "ServiceConfiguration(service: \(service), natsServers: \(natsServers.map(Self.redactingCredentials)), "
            + "natsUser: \(natsUser ?? "-"), natsPassword: \(natsPassword == nil ? "-" : "[redacted]"), "
            + "databaseURL: \(Self.redactingCredentials(databaseURL)), databasePoolSize: \(databasePoolSize), "
            + "http: \(httpHost):\(httpPort), opsPort: \(opsPort), logLevel: \(logLevel), "
            + "logFormat: \(logFormat.rawValue), instanceID: \(instanceID), drainSeconds: \(drainSeconds), "
            + "httpIdleTimeoutSeconds: \(httpIdleTimeoutSeconds), httpHeaderTimeoutSeconds: \(httpHeaderTimeoutSeconds), "
            + "httpBodyTimeoutSeconds: \(httpBodyTimeoutSeconds), httpMaxConnections: \(httpMaxConnections))"
    }

    /// `url` with any `user:password@` part replaced by `[redacted]@`.
    public static func redactingCredentials(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return url[..<schemeEnd.upperBound] + "[redacted]" + rest[at...]
    }

    static func defaultInstanceID() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host: String
        if gethostname(&buffer, buffer.count - 1) == 0 {
            host = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        } else {
            host = "localhost"
        }
        return "\(host.isEmpty ? "localhost" : host)-\(getpid())"
    }
}
