/// How to connect to NATS. Defaults suit a local `nats-server -js`.
public struct NATSConfiguration: Sendable {
    /// Server URLs (`nats://host:port`); the client fails over between them. Default `nats://127.0.0.1:4222`.
    public var servers: [String]
    /// Optional user and password (never logged).
    public var user: String?
    public var password: String?
    /// Connection name shown by the server (`service/instance`).
    public var name: String
    /// Flush every write at once (`natsOptions_SetSendAsap`). Lowers request/reply latency from ~1 ms to
    /// ~0.2 ms; leave off for bulk publishing connections. Default `true`.
    public var sendAsap: Bool
    /// Initial connect attempts before giving up (`nil` = forever). Reconnects after a successful connect are
    /// always unlimited. Default 10.
    public var connectAttempts: Int?
    /// Wait between reconnect attempts. Default 250 ms, with up to 100 ms jitter.
    public var reconnectWait: Duration
    /// Default timeout of JetStream API calls and requests. Default 5 s.
    public var requestTimeout: Duration
    /// Prefix of this connection's reply subjects (`<prefix>.<random>.<n>`). Default `_INBOX`. A connection
    /// whose replies are sensitive (the admin CLI: `_INBOX_admin`) uses its own prefix so that the server's
    /// permissions can keep every other user from subscribing to them.
    public var inboxPrefix: String

    public init(
        servers: [String] = ["nats://127.0.0.1:4222"],
        user: String? = nil,
        password: String? = nil,
        name: String = "switchyard",
        sendAsap: Bool = true,
        connectAttempts: Int? = 10,
        reconnectWait: Duration = .milliseconds(250),
        requestTimeout: Duration = .seconds(5),
        inboxPrefix: String = "_INBOX"
    ) {
        self.servers = servers
        self.user = user
        self.password = password
        self.name = name
        self.sendAsap = sendAsap
        self.connectAttempts = connectAttempts
        self.reconnectWait = reconnectWait
        self.requestTimeout = requestTimeout
        self.inboxPrefix = inboxPrefix
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The duration in whole nanoseconds (shared by every module that hands durations to C or to protobuf).
    public var nanosecondsValue: Int64 { nanoseconds }

    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
