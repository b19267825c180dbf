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

    public init(
        servers: [String] = ["nats://127.0.0.1:4222"],
        user: String? = nil,
        password: String? = nil,
        name: String = "switchyard",
        sendAsap: Bool = true,
        connectAttempts: Int? = 10,
        reconnectWait: Duration = .milliseconds(250),
        requestTimeout: Duration = .seconds(5)
    ) {
        self.servers = servers
        self.user = user
        self.password = password
        self.name = name
        self.sendAsap = sendAsap
        self.connectAttempts = connectAttempts
        self.reconnectWait = reconnectWait
        self.requestTimeout = requestTimeout
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
