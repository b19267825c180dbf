import Foundation
import Logging
import Storage
import TestKit
import Testing

/// One PostgreSQL cluster shared by every test of a suite marked `.sharedPostgres`: started before
/// the suite's first test and stopped after its last one (even when tests fail).
enum SharedPostgres {
    @TaskLocal static var server: PostgresServer?

    static func current() throws -> PostgresServer {
        try #require(server, "suite must be marked .sharedPostgres")
    }
}

struct SharedPostgresTrait: SuiteTrait, TestScoping {
    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await PostgresServer.withServer { server in
            try await SharedPostgres.$server.withValue(server) {
                try await function()
            }
        }
    }
}

extension Trait where Self == SharedPostgresTrait {
    static var sharedPostgres: Self { Self() }
}

let testLogger = Logger(label: "storage-tests")

/// A pool on the shared server, closed after `body`.
func withPool<T>(
    poolSize: Int = 4,
    _ body: (PostgresPool) async throws -> T
) async throws -> T {
    let server = try SharedPostgres.current()
    let pool = try PostgresPool(
        configuration: PostgresConfiguration(connectionString: server.connectionString, poolSize: poolSize),
        logger: testLogger)
    do {
        let result = try await body(pool)
        await pool.close()
        return result
    } catch {
        await pool.close()
        throw error
    }
}

/// A unique table name (tests run in parallel on one database).
func uniqueName(_ prefix: String) -> String {
    prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
}

/// Creates a table with `columns`, runs `body` with its name, and drops it afterwards.
func withTable<T>(
    _ pool: PostgresPool, columns: String, _ body: (String) async throws -> T
) async throws -> T {
    let table = uniqueName("t")
    try await pool.withConnection { try await $0.executeScript("CREATE TABLE \(table) (\(columns))") }
    do {
        let result = try await body(table)
        try await pool.withConnection { try await $0.executeScript("DROP TABLE IF EXISTS \(table)") }
        return result
    } catch {
        _ = try? await pool.withConnection { try await $0.executeScript("DROP TABLE IF EXISTS \(table)") }
        throw error
    }
}

func count(_ pool: PostgresPool, _ table: String) async throws -> Int {
    let rows = try await pool.query("SELECT count(*) AS n FROM \(table)")
    return try rows[0].decode(Int.self, column: "n")
}

func tableExists(_ pool: PostgresPool, _ table: String) async throws -> Bool {
    let rows = try await pool.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(table)])
    return try rows[0].decode(Bool.self, column: "present")
}
