import Logging

/// One schema migration of a service. `sql` may hold several statements; it runs in one transaction
/// (so it must not use statements that refuse transactions, such as `CREATE INDEX CONCURRENTLY`).
public struct Migration: Sendable, Hashable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Applies the pending `migrations` of `service`, in version order, each in its own transaction,
/// recording them in `schema_migrations (service, version, name, applied_at)`.
///
/// A session advisory lock on `hashtext('switchyard:' || service)` serializes migrators of the same
/// service (several replicas starting at once apply each migration exactly once); it is released on
/// every path. Running it again with the same list applies nothing. Returns the versions applied.
@discardableResult
public func migrate(
    pool: PostgresPool,
    service: String,
    migrations: [Migration],
    logger: Logger
) async throws -> [Int] {
    var seen = Set<Int>()
    for migration in migrations {
        guard seen.insert(migration.version).inserted else {
            throw PostgresError(code: .migration, message: "duplicate migration version \(migration.version) for \(service)")
        }
    }
    let ordered = migrations.sorted { $0.version < $1.version }

    return try await pool.withConnection { connection in
        // Creating the bookkeeping table is serialized across all services with a transaction lock,
        // since concurrent CREATE TABLE IF NOT EXISTS can still collide.
        try await connection.transaction { tx in
            try await tx.execute("SELECT pg_advisory_xact_lock(hashtext('switchyard:schema_migrations'))")
            try await tx.executeScript("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    service    text        NOT NULL,
                    version    integer     NOT NULL,
                    name       text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (service, version)
                )
                """)
        }

        try await connection.execute("SELECT pg_advisory_lock(hashtext('switchyard:' || $1))", [.text(service)])
        do {
            let applied = try await applyPending(ordered, service: service, connection: connection, logger: logger)
            try await unlock(service: service, connection: connection, logger: logger)
            return applied
        } catch {
            try? await unlock(service: service, connection: connection, logger: logger)
            throw error
        }
    }
}

private func unlock(service: String, connection: PostgresConnection, logger: Logger) async throws {
    do {
        try await connection.execute("SELECT pg_advisory_unlock(hashtext('switchyard:' || $1))", [.text(service)])
    } catch {
        // A broken connection releases its session locks on the server side anyway.
        logger.warning("could not release the migration lock", metadata: ["service": "\(service)", "error": "\(error)"])
        throw error
    }
}

private func applyPending(
    _ migrations: [Migration], service: String, connection: PostgresConnection, logger: Logger
) async throws -> [Int] {
    let rows = try await connection.query(
        "SELECT version, name FROM schema_migrations WHERE service = $1", [.text(service)])
    var appliedNames = [Int: String]()
    for row in rows {
        appliedNames[try row.decode(Int.self, column: "version")] = try row.decode(String.self, column: "name")
    }
    var applied = [Int]()
    for migration in migrations {
        if let name = appliedNames[migration.version] {
            if name != migration.name {
                logger.warning("applied migration has a different name", metadata: [
                    "service": "\(service)", "migration.version": "\(migration.version)",
                    "migration.name": "\(migration.name)", "migration.applied_name": "\(name)",
                ])
            }
            continue
        }
        logger.info("applying migration", metadata: [
            "service": "\(service)", "migration.version": "\(migration.version)", "migration.name": "\(migration.name)",
        ])
        try await connection.transaction { tx in
            try await tx.executeScript(migration.sql)
            try await tx.execute(
                "INSERT INTO schema_migrations (service, version, name) VALUES ($1, $2, $3)",
                [.text(service), .int(migration.version), .text(migration.name)])
        }
        applied.append(migration.version)
    }
    return applied
}
