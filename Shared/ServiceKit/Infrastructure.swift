import Logging
import Messaging
import Schemas
import Storage

// Glue between the configuration/health layer and the NATS and PostgreSQL layers, so every service wires
// them the same way.

extension ServiceConfiguration {
    /// NATS client settings for this service instance. `sendAsap` suits connections that carry requests,
    /// replies and latency-sensitive publishes (every service's main connection).
    public func natsConfiguration(sendAsap: Bool = true) -> NATSConfiguration {
        NATSConfiguration(servers: natsServers, user: natsUser, password: natsPassword,
                          name: "\(service)/\(instanceID)", sendAsap: sendAsap)
    }

    /// libpq pool settings for this service instance.
    public var postgresConfiguration: PostgresConfiguration {
        PostgresConfiguration(connectionString: databaseURL, poolSize: databasePoolSize,
                              applicationName: service)
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

/// Reports PostgreSQL: up when `SELECT 1` succeeds on a pooled connection.
public struct PostgresHealthCheck: HealthCheck {
    public let name = "postgres"
    private let pool: PostgresPool
    public init(pool: PostgresPool) { self.pool = pool }
    public func check() async -> ComponentHealth {
        await pool.healthCheck() ? .up : .down("query failed")
    }
}

// The consume loop naks retriable failures and dead-letters the rest: a payload that doesn't decode is
// poison at once; database errors say themselves whether a retry can help (deadlock, connection lost…).
extension SchemaError: ClassifiedError {}
extension PostgresError: ClassifiedError {}
