import Logging
import Messaging
import Schemas
import ServiceKit
import Storage
import Telemetry
import Tenancy

extension ServiceConfiguration {
    /// libpq pool settings for this service instance.
    public var postgresConfiguration: PostgresConfiguration {
        PostgresConfiguration(connectionString: databaseURL, poolSize: databasePoolSize,
                              applicationName: service)
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

// Database errors say themselves whether a retry can help (deadlock, connection lost…): the consume loop naks
// those and dead-letters the rest.
extension PostgresError: ClassifiedError {}

extension ServiceBuilder {
    /// The service's PostgreSQL piece: a connection pool with a `postgres` health check, `migrate` applied
    /// before anything consumes or serves, and the pool closed on shutdown after every service added later has
    /// stopped.
    public func postgres(migrate: (PostgresPool, Logger) async throws -> Void) async throws -> PostgresPool {
        let pool = try PostgresPool(configuration: configuration.postgresConfiguration, logger: logger)
        health.register(PostgresHealthCheck(pool: pool))
        let metrics = self.metrics
        metrics.onScrape {
            let figures = pool.statistics
            metrics.gauge(.dbPoolConnections, [(.state, "in_use")]).record(Double(figures.inUse))
            metrics.gauge(.dbPoolConnections, [(.state, "idle")]).record(Double(figures.idle))
            metrics.gauge(.dbPoolConnections, [(.state, "max")]).record(Double(figures.size))
            metrics.gauge(.dbPoolWaitingRequests).record(Double(figures.waiting))
        }
        onShutdown { await pool.close() }
        try await migrate(pool, logger)
        return pool
    }

    /// Adds the doctor's migrations check: every one of `migrations` recorded for `service` (a database restored
    /// from an old backup, or one a newer version migrated further, fails).
    public func doctorMigrations(_ pool: PostgresPool, service: String, migrations: [Migration]) {
        let latest = migrations.map(\.version).max() ?? 0
        doctor.add {
            let name = "migrations \(service)"
            do {
                let applied = try await pool.query(
                    "SELECT coalesce(max(version), 0), count(*) FROM schema_migrations WHERE service = $1", [.text(service)])
                let highest = Int(try applied.first?.decode(Int64.self, at: 0) ?? 0)
                let count = Int(try applied.first?.decode(Int64.self, at: 1) ?? 0)
                if highest == latest && count == migrations.count {
                    return [Doctor.check(.pass, name, "all \(latest) applied")]
                }
                if highest > latest {
                    return [Doctor.check(.fail, name, "the database has version \(highest), this build knows \(latest): a newer version migrated it")]
                }
                return [Doctor.check(.fail, name, "\(count) of \(migrations.count) applied (up to \(highest) of \(latest))")]
            } catch {
                return [Doctor.check(.fail, name, "cannot read schema_migrations: \(error)")]
            }
        }
    }
}

/// Runs a batch write, retrying with backoff (100 ms doubling to 5 s) while PostgreSQL is unreachable or the
/// transaction hit a transient error (deadlock, serialization), up to `budget`; then the error goes to the
/// consume loop, which naks the batch. `onRetry` sees each failure first (metrics, a log line).
public func retryingTransientDatabaseErrors<T>(
    budget: Duration, onRetry: (PostgresError, Duration) -> Void, _ operation: () async throws -> T
) async throws -> T {
    let clock = ContinuousClock()
    let deadline = clock.now + budget
    var delay: Duration = .milliseconds(100)
    while true {
        do {
            return try await operation()
        } catch let error as PostgresError where error.isRetriable && clock.now < deadline {
            onRetry(error, delay)
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }
}

extension AdminFailure {
    /// What an admin command answers when its database failed: `unavailable` ("try again") when a retry can help
    /// (connection lost, PostgreSQL restarting, deadlock), else `internal`. Names only the service's database,
    /// never the error (it may quote data).
    public static func storage(_ error: any Error, service: String) -> AdminFailure {
        if let postgres = error as? PostgresError, postgres.isRetriable {
            return AdminFailure(.unavailable, "the \(service) database is unavailable; try again")
        }
        return AdminFailure(.internalError, "the \(service) database failed")
    }
}
