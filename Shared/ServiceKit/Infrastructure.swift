import Logging
import Messaging
import Schemas

// Glue between the configuration/health layer and the NATS layer, so every service wires them the same way.
// The PostgreSQL counterpart lives in ServiceKitPostgres (services without a database don't link libpq).

extension ServiceConfiguration {
    /// NATS client settings for this service instance. `sendAsap` suits connections that carry requests,
    /// replies and latency-sensitive publishes (every service's main connection).
    public func natsConfiguration(sendAsap: Bool = true) -> NATSConfiguration {
        NATSConfiguration(servers: natsServers, user: natsUser, password: natsPassword,
                          name: "\(service)/\(instanceID)", sendAsap: sendAsap)
    }
}

/// Reports the NATS connection: up when connected, down while reconnecting or closed.
public struct NATSHealthCheck: HealthCheck {
    public let name = "nats"
    private let connection: NATSConnection
    public init(connection: NATSConnection) { self.connection = connection }
    public func check() async -> ComponentHealth {
        connection.isConnected ? .up : .down("not connected")
    }
}

// The consume loop naks retriable failures and dead-letters the rest: a payload that doesn't decode is
// poison at once.
extension SchemaError: ClassifiedError {}
