import Foundation
import Logging
import Storage
import TestKit
import Testing

@Suite("Storage against a real PostgreSQL", .sharedPostgres)
struct StorageIntegrationTests {

    // MARK: parameters and hostile input

    @Test("hostile strings are stored and read back verbatim, and the table survives")
    func hostileStringsRoundTrip() async throws {
        let hostile: [String] = [
            "'",
            "''",
            "'; DROP TABLE x; --",
            "Robert'); DROP TABLE students;--",
            "\\",
            "\\x00\\\\'\"",
            "$1 $2 %s %d {}",
            "ünïcödé — 日本語 — עברית",
            "😀👩‍👩‍👧‍👦🏳️‍🌈",
            "line1\nline2\r\n\ttab",
            "",
            String(repeating: "0123456789abcdef", count: 65_536),  // 1 MiB
        ]
        try await withPool { pool in
            try await withTable(pool, columns: "id bigint PRIMARY KEY, body text NOT NULL") { table in
                for (i, value) in hostile.enumerated() {
                    let n = try await pool.execute("INSERT INTO \(table) (id, body) VALUES ($1, $2)", [.int(i), .text(value)])
                    #expect(n == 1)
                }
                for (i, value) in hostile.enumerated() {
                    let rows = try await pool.query("SELECT body FROM \(table) WHERE id = $1", [.int(i)])
                    #expect(rows.count == 1)
                    let back = try rows[0].decode(String.self, column: "body")
                    #expect(back == value, "value \(i) changed")
                }
                // Values used in WHERE clauses are data too.
                let matched = try await pool.query("SELECT id FROM \(table) WHERE body = $1", [.text("'; DROP TABLE x; --")])
                #expect(try matched.map { try $0.decode(Int.self, at: 0) } == [2])
                #expect(try await tableExists(pool, table))
                #expect(try await count(pool, table) == hostile.count)
            }
        }
    }

    @Test("a string containing NUL is rejected with a typed error and nothing is written")
    func nulCharacterRejected() async throws {
        try await withPool { pool in
            try await withTable(pool, columns: "id bigint, body text") { table in
                let error = await #expect(throws: PostgresError.self) {
                    try await pool.execute("INSERT INTO \(table) VALUES ($1, $2)", [1, .text("before\u{0}after")])
                }
                #expect(error?.code == .invalidParameter)
                #expect(error?.isRetriable == false)
                let described = String(describing: try #require(error))
                #expect(!described.contains("before"))
                #expect(try await count(pool, table) == 0)

                // Also in a batch: validated before anything is sent.
                let batchError = await #expect(throws: PostgresError.self) {
                    _ = try await pool.batchExecute("INSERT INTO \(table) VALUES ($1, $2)",
                                                    rows: [[1, "fine"], [2, .text("bad\u{0}")]])
                }
                #expect(batchError?.code == .invalidParameter)
                #expect(try await count(pool, table) == 0)
            }
        }
    }

    @Test("bytes sent as text must be valid UTF-8")
    func invalidUTF8Rejected() async throws {
        try await withPool { pool in
            try await withTable(pool, columns: "id bigint, body text") { table in
                let error = await #expect(throws: PostgresError.self) {
                    try await pool.execute("INSERT INTO \(table) VALUES ($1, $2)", [1, .utf8Bytes([0x61, 0xFF, 0xFE, 0x62])])
                }
                #expect(error?.code == .invalidParameter)
                // Overlong encoding of "/" and a lone surrogate are invalid too.
                for bad: [UInt8] in [[0xC0, 0xAF], [0xED, 0xA0, 0x80]] {
                    await #expect(throws: PostgresError.self) {
                        try await pool.execute("INSERT INTO \(table) VALUES ($1, $2)", [2, .utf8Bytes(bad)])
                    }
                }
                #expect(try await count(pool, table) == 0)
                // Valid UTF-8 bytes go through.
                try await pool.execute("INSERT INTO \(table) VALUES ($1, $2)", [3, .utf8Bytes(Array("café ☕".utf8))])
                let rows = try await pool.query("SELECT body FROM \(table) WHERE id = 3")
                #expect(try rows[0].decode(String.self, at: 0) == "café ☕")
            }
        }
    }

    @Test("bytea values round-trip exactly, including NUL bytes")
    func byteaRoundTrip() async throws {
        let all = (0...255).map { UInt8($0) }
        let values: [[UInt8]] = [[], [0], all, Array(repeating: 0, count: 100_000), Array("\\x41'".utf8)]
        try await withPool { pool in
            try await withTable(pool, columns: "id bigint, data bytea") { table in
                for (i, value) in values.enumerated() {
                    try await pool.execute("INSERT INTO \(table) VALUES ($1, $2)", [.int(i), .bytea(value)])
                }
                let rows = try await pool.query("SELECT id, data, length(data) AS len FROM \(table) ORDER BY id")
                #expect(rows.count == values.count)
                for row in rows {
                    let i = try row.decode(Int.self, column: "id")
                    #expect(try row.decode([UInt8].self, column: "data") == values[i])
                    #expect(try row.decode(Int.self, column: "len") == values[i].count)
                }
            }
        }
    }

    // MARK: decoding

    @Test("typed decoding of common column types, NULLs and mismatches")
    func typedDecoding() async throws {
        try await withPool { pool in
            let rows = try await pool.query("""
                SELECT 42::int4 AS i4, 9007199254740993::int8 AS i8, 7::int2 AS i2, 2.5::float8 AS f,
                       'NaN'::float8 AS nan, true AS yes, false AS no, 'text'::text AS s, NULL::text AS missing,
                       $1::int8 AS p, $2::bool AS pb, $3::float8 AS pd
                """, [.int64(-5), .bool(true), .double(-0.125)])
            let row = try #require(rows.first)
            #expect(try row.decode(Int32.self, column: "i4") == 42)
            #expect(try row.decode(Int.self, column: "i4") == 42)
            #expect(try row.decode(Int64.self, column: "i8") == 9_007_199_254_740_993)
            #expect(try row.decode(Int16.self, column: "i2") == 7)
            #expect(try row.decode(Double.self, column: "f") == 2.5)
            #expect(try row.decode(Double.self, column: "nan").isNaN)
            #expect(try row.decode(Bool.self, column: "yes") == true)
            #expect(try row.decode(Bool.self, column: "no") == false)
            #expect(try row.decode(String.self, column: "s") == "text")
            #expect(try row.decode(String?.self, column: "missing") == nil)
            #expect(try row.decode(String?.self, column: "s") == "text")
            #expect(try row.decode(Int.self, column: "p") == -5)
            #expect(try row.decode(Bool.self, column: "pb") == true)
            #expect(try row.decode(Double.self, column: "pd") == -0.125)
            #expect(row.isNull(8))

            // NULL into a non-optional.
            let nullError = #expect(throws: PostgresError.self) { try row.decode(String.self, column: "missing") }
            #expect(nullError?.code == .decode)
            #expect(nullError?.columnName == "missing")
            // Wrong type, overflow, unknown column, index out of range.
            #expect(throws: PostgresError.self) { try row.decode(Int.self, column: "s") }
            #expect(throws: PostgresError.self) { try row.decode(Bool.self, column: "i4") }
            #expect(throws: PostgresError.self) { try row.decode(Int16.self, column: "i8") }
            #expect(throws: PostgresError.self) { try row.decode(Int.self, column: "nope") }
            #expect(throws: PostgresError.self) { try row.decode(Int.self, at: 99) }
        }
    }

    // MARK: errors

    @Test("a unique violation carries SQLSTATE 23505 and never the duplicate value")
    func uniqueViolation() async throws {
        let secret = "secret-duplicate-value-8f2c"
        try await withPool { pool in
            try await withTable(pool, columns: "key text PRIMARY KEY") { table in
                try await pool.execute("INSERT INTO \(table) VALUES ($1)", [.text(secret)])
                let error = await #expect(throws: PostgresError.self) {
                    try await pool.execute("INSERT INTO \(table) VALUES ($1)", [.text(secret)])
                }
                let e = try #require(error)
                #expect(e.sqlState == "23505")
                #expect(e.isUniqueViolation)
                #expect(e.code == .query)
                #expect(!e.isRetriable)
                #expect(e.constraintName == "\(table)_pkey")
                #expect(!e.description.contains(secret))
                #expect(!e.message.contains(secret))
                #expect(!"\(e)".contains(secret))
                #expect(e.description.contains("23505"))
                // The connection is still usable afterwards.
                #expect(try await count(pool, table) == 1)
            }
        }
    }

    @Test("data-exception messages do not echo the rejected input")
    func dataExceptionRedacted() async throws {
        let secret = "secret-not-a-number-51ab"
        try await withPool { pool in
            let error = await #expect(throws: PostgresError.self) {
                _ = try await pool.query("SELECT $1::int4", [.text(secret)])
            }
            #expect(error?.sqlState == "22P02")
            let described = String(describing: try #require(error))
            #expect(!described.contains(secret))
        }
    }

    @Test("syntax errors are typed query errors and not retriable")
    func syntaxError() async throws {
        try await withPool { pool in
            let error = await #expect(throws: PostgresError.self) { _ = try await pool.query("SELEC 1") }
            #expect(error?.code == .query)
            #expect(error?.sqlState == "42601")
            #expect(error?.isRetriable == false)
        }
    }

    // MARK: transactions

    @Test("a transaction rolls back when its body throws, and commits otherwise")
    func transactionRollback() async throws {
        struct Boom: Error {}
        try await withPool(poolSize: 1) { pool in
            try await withTable(pool, columns: "id bigint") { table in
                await #expect(throws: Boom.self) {
                    try await pool.transaction { tx in
                        try await tx.execute("INSERT INTO \(table) VALUES ($1)", [1])
                        #expect(try await tx.query("SELECT id FROM \(table)").count == 1)
                        throw Boom()
                    }
                }
                #expect(try await count(pool, table) == 0)

                let value = try await pool.transaction { tx in
                    try await tx.execute("INSERT INTO \(table) VALUES ($1)", [2])
                }
                #expect(value == 1)
                #expect(try await count(pool, table) == 1)

                // An error swallowed inside the body still aborts the transaction: COMMIT must not pretend.
                let aborted = await #expect(throws: PostgresError.self) {
                    try await pool.transaction { tx in
                        try await tx.execute("INSERT INTO \(table) VALUES ($1)", [3])
                        _ = try? await tx.query("SELECT * FROM no_such_table_here")
                    }
                }
                #expect(aborted?.sqlState == "25P02")
                #expect(try await count(pool, table) == 1)
            }
        }
    }

    // MARK: batch / pipeline

    @Test("batch insert of 10,000 rows through pipeline mode")
    func batchInsert() async throws {
        let rows: [[PostgresValue]] = (0..<10_000).map { i in [.int(i), .text("row \(i) 'quoted'"), i % 7 == 0 ? .null : .double(Double(i) / 2)] }
        try await withPool { pool in
            try await withTable(pool, columns: "id bigint PRIMARY KEY, label text NOT NULL, score float8") { table in
                let affected = try await pool.batchExecute("INSERT INTO \(table) (id, label, score) VALUES ($1, $2, $3)", rows: rows)
                #expect(affected == 10_000)
                #expect(try await count(pool, table) == 10_000)
                let check = try await pool.query("SELECT label, score FROM \(table) WHERE id = $1", [.int(4_243)])
                #expect(try check[0].decode(String.self, column: "label") == "row 4243 'quoted'")
                #expect(try check[0].decode(Double?.self, column: "score") == 2_121.5)
                let nullRow = try await pool.query("SELECT score FROM \(table) WHERE id = $1", [.int(4_242)])
                #expect(try nullRow[0].decode(Double?.self, column: "score") == nil)
                let nulls = try await pool.query("SELECT count(*) FROM \(table) WHERE score IS NULL")
                #expect(try nulls[0].decode(Int.self, at: 0) == (0..<10_000).filter { $0 % 7 == 0 }.count)
            }
        }
    }

    @Test("a failing row in a batch rolls the whole batch back")
    func batchIsAtomic() async throws {
        try await withPool(poolSize: 1) { pool in
            try await withTable(pool, columns: "id bigint PRIMARY KEY") { table in
                var rows: [[PostgresValue]] = (0..<2_500).map { [.int($0)] }
                rows.append([.int(1_234)])  // duplicate, in the third pipeline chunk
                let error = await #expect(throws: PostgresError.self) {
                    _ = try await pool.batchExecute("INSERT INTO \(table) VALUES ($1)", rows: rows)
                }
                #expect(error?.sqlState == "23505")
                let described = String(describing: try #require(error))
                #expect(!described.contains("1234"))
                #expect(try await count(pool, table) == 0)
                // The connection (pool size 1) left pipeline mode and works normally.
                #expect(try await pool.batchExecute("INSERT INTO \(table) VALUES ($1)", rows: [[1], [2]]) == 2)
                #expect(try await count(pool, table) == 2)
            }
        }
    }

    // MARK: migrations

    static func sampleMigrations(table: String, counter: String) -> [Migration] {
        [
            Migration(version: 1, name: "create \(table)", sql: """
                CREATE TABLE \(table) (id bigint PRIMARY KEY, body text);
                INSERT INTO \(counter) VALUES (1);
                """),
            Migration(version: 2, name: "add column", sql: """
                ALTER TABLE \(table) ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
                INSERT INTO \(counter) VALUES (2);
                """),
            Migration(version: 3, name: "index", sql: """
                CREATE INDEX \(table)_body_idx ON \(table) (body);
                INSERT INTO \(counter) VALUES (3);
                """),
        ]
    }

    @Test("migrations apply once; a second run applies nothing")
    func migrationsAreIdempotent() async throws {
        let service = uniqueName("svc")
        let table = uniqueName("m")
        try await withPool { pool in
            try await withTable(pool, columns: "version int") { counter in
                let migrations = Self.sampleMigrations(table: table, counter: counter)
                let first = try await migrate(pool: pool, service: service, migrations: migrations, logger: testLogger)
                #expect(first == [1, 2, 3])
                let second = try await migrate(pool: pool, service: service, migrations: migrations, logger: testLogger)
                #expect(second == [])
                let recorded = try await pool.query(
                    "SELECT version, name FROM schema_migrations WHERE service = $1 ORDER BY version", [.text(service)])
                #expect(try recorded.map { try $0.decode(Int.self, column: "version") } == [1, 2, 3])
                #expect(try recorded[0].decode(String.self, column: "name") == "create \(table)")
                #expect(try await count(pool, counter) == 3)
                #expect(try await tableExists(pool, table))

                // A later migration is applied on its own.
                let more = migrations + [Migration(version: 4, name: "four", sql: "INSERT INTO \(counter) VALUES (4)")]
                #expect(try await migrate(pool: pool, service: service, migrations: more, logger: testLogger) == [4])
                #expect(try await count(pool, counter) == 4)
                try await pool.withConnection { try await $0.executeScript("DROP TABLE \(table)") }
            }
        }
    }

    @Test("a failing migration is rolled back, recorded nowhere, and releases the lock")
    func failingMigration() async throws {
        let service = uniqueName("svc")
        try await withPool { pool in
            try await withTable(pool, columns: "version int") { counter in
                let migrations = [
                    Migration(version: 1, name: "ok", sql: "INSERT INTO \(counter) VALUES (1)"),
                    Migration(version: 2, name: "broken", sql: "INSERT INTO \(counter) VALUES (2); SELECT * FROM missing_table_xyz"),
                ]
                await #expect(throws: PostgresError.self) {
                    try await migrate(pool: pool, service: service, migrations: migrations, logger: testLogger)
                }
                #expect(try await count(pool, counter) == 1)
                // The advisory lock was released: another connection can take it right away.
                let rows = try await pool.query(
                    "SELECT pg_try_advisory_lock(hashtext('switchyard:' || $1)) AS got", [.text(service)])
                #expect(try rows[0].decode(Bool.self, column: "got"))
                _ = try await pool.query("SELECT pg_advisory_unlock_all()")
                // Duplicate versions are rejected up front.
                let dup = await #expect(throws: PostgresError.self) {
                    try await migrate(pool: pool, service: service, migrations: [migrations[0], migrations[0]], logger: testLogger)
                }
                #expect(dup?.code == .migration)
            }
        }
    }

    @Test("two concurrent migrators apply each migration exactly once")
    func concurrentMigrators() async throws {
        let service = uniqueName("svc")
        let table = uniqueName("m")
        try await withPool { setup in
            try await withTable(setup, columns: "version int") { counter in
                var migrations = Self.sampleMigrations(table: table, counter: counter)
                // Hold the lock a little longer so the two runs really overlap.
                migrations[0].sql += "\nSELECT pg_sleep(0.2);"
                let list = migrations
                let results = try await withThrowingTaskGroup(of: [Int].self) { group in
                    for _ in 0..<2 {
                        group.addTask {
                            try await withPool(poolSize: 1) { pool in
                                try await migrate(pool: pool, service: service, migrations: list, logger: testLogger)
                            }
                        }
                    }
                    return try await group.reduce(into: [[Int]]()) { $0.append($1) }
                }
                #expect(results.flatMap { $0 }.sorted() == [1, 2, 3])
                #expect(try await count(setup, counter) == 3)
                let recorded = try await setup.query(
                    "SELECT count(*) FROM schema_migrations WHERE service = $1", [.text(service)])
                #expect(try recorded[0].decode(Int.self, at: 0) == 3)
                try await setup.withConnection { try await $0.executeScript("DROP TABLE \(table)") }
            }
        }
    }

    // MARK: pool

    @Test("the pool recovers after its connection's backend is terminated")
    func poolRecoversFromKilledConnection() async throws {
        let server = try SharedPostgres.current()
        try await withPool(poolSize: 1) { pool in
            let before = try await pool.query("SELECT pg_backend_pid() AS pid")
            let pid = try before[0].decode(Int32.self, column: "pid")

            let killer = try await PostgresConnection.connect(
                configuration: PostgresConfiguration(connectionString: server.connectionString))
            let killed = try await killer.query("SELECT pg_terminate_backend($1::int4, 5000) AS ok", [.int32(pid)])
            #expect(try killed[0].decode(Bool.self, column: "ok"))
            await killer.close()

            var retriableFailures = 0
            var after: Int32?
            for _ in 0..<3 {
                do {
                    after = try await pool.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, column: "pid")
                    break
                } catch let error as PostgresError {
                    #expect(error.isRetriable, "\(error)")
                    retriableFailures += 1
                }
            }
            let newPID = try #require(after)
            #expect(newPID != pid)
            #expect(retriableFailures <= 1)
            #expect(await pool.healthCheck())
        }
    }

    @Test("many concurrent callers share a small pool")
    func poolConcurrency() async throws {
        try await withPool(poolSize: 2) { pool in
            let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        try await pool.withConnection { conn in
                            let rows = try await conn.query("SELECT pg_backend_pid(), $1::int8 + 1", [.int(i)])
                            #expect(try rows[0].decode(Int.self, at: 1) == i + 1)
                            return try rows[0].decode(Int32.self, at: 0)
                        }
                    }
                }
                return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
            }
            #expect(pids.count >= 1 && pids.count <= 2)
        }
    }

    @Test("a closed pool refuses work with a typed error")
    func closedPool() async throws {
        let server = try SharedPostgres.current()
        let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: server.connectionString))
        #expect(await pool.healthCheck())
        await pool.close()
        let error = await #expect(throws: PostgresError.self) { _ = try await pool.query("SELECT 1") }
        #expect(error?.code == .poolClosed)
        #expect(await pool.healthCheck() == false)
    }

    @Test("a caller waiting for a connection can be cancelled, and the pool keeps working")
    func cancelWaitingCaller() async throws {
        try await withPool(poolSize: 1) { pool in
            try await pool.withConnection { held in
                let waiter = Task {
                    try await pool.query("SELECT 1")
                }
                waiter.cancel()
                await #expect(throws: CancellationError.self) { _ = try await waiter.value }
                _ = try await held.query("SELECT 2")
            }
            #expect(await pool.healthCheck())
        }
    }

    @Test("withConnection and transaction run the body in the caller's actor")
    func actorIsolatedCallers() async throws {
        actor Counter {
            var seen: [Int] = []
            func run(_ pool: PostgresPool) async throws {
                try await pool.withConnection { conn in
                    let rows = try await conn.query("SELECT 7")
                    seen.append(try rows[0].decode(Int.self, at: 0))  // actor state, no hop needed
                }
                try await pool.transaction { tx in
                    seen.append(try await tx.execute("SELECT 1"))
                }
            }
        }
        try await withPool { pool in
            let counter = Counter()
            try await counter.run(pool)
            #expect(await counter.seen == [7, 1])
        }
    }

    @Test("transactions do not nest")
    func nestedTransactionRejected() async throws {
        try await withPool(poolSize: 1) { pool in
            let error = await #expect(throws: PostgresError.self) {
                try await pool.transaction { tx in
                    try await tx.transaction { _ in }
                }
            }
            #expect(error?.code == .query)
            #expect(await pool.healthCheck())
        }
    }

    @Test("prepared statements are reused and survive changing parameter types")
    func preparedStatementCache() async throws {
        try await withPool(poolSize: 1) { pool in
            for i in 0..<5 {
                let rows = try await pool.query("SELECT $1::text AS v", [.int(i)])
                #expect(try rows[0].decode(String.self, column: "v") == String(i))
            }
            let rows = try await pool.query("SELECT $1::text AS v", [.text("x")])
            #expect(try rows[0].decode(String.self, column: "v") == "x")
            let nulls = try await pool.query("SELECT $1::text AS v", [.null])
            #expect(try nulls[0].decode(String?.self, column: "v") == nil)
            let prepared = try await pool.query("SELECT count(*) FROM pg_prepared_statements")
            #expect(try prepared[0].decode(Int.self, at: 0) >= 1)
        }
    }
}

@Suite("Storage timestamps", .sharedPostgres)
struct StorageTimestampTests {
    @Test("Date round-trips through timestamptz with microsecond precision", arguments: [
        0.0, 1_700_000_000.123456, -86_400.5, 951_782_400.000001, 4_102_444_799.999999,
    ])
    func dateRoundTrip(seconds: Double) async throws {
        let date = Date(timeIntervalSince1970: seconds)
        try await withPool(poolSize: 1) { pool in
            let rows = try await pool.query(
                "SELECT $1::timestamptz AS t, extract(epoch FROM $1::timestamptz)::float8 AS epoch, now() AS n",
                [.timestamp(date)])
            let back = try rows[0].decode(Date.self, column: "t")
            #expect(abs(back.timeIntervalSince1970 - seconds) < 0.000_001)
            #expect(abs(try rows[0].decode(Double.self, column: "epoch") - seconds) < 0.000_001)
            _ = try rows[0].decode(Date.self, column: "n")
            #expect(throws: PostgresError.self) { try rows[0].decode(Date.self, column: "epoch") }
        }
    }

    @Test("timestamps in other offsets and infinity")
    func otherFormats() async throws {
        try await withPool(poolSize: 1) { pool in
            let rows = try await pool.query("""
                SELECT '2024-02-29 12:00:00'::timestamp AS plain, 'infinity'::timestamptz AS inf
                """)
            let plain = try rows[0].decode(Date.self, column: "plain")
            #expect(plain.timeIntervalSince1970 == 1_709_208_000)
            #expect(throws: PostgresError.self) { try rows[0].decode(Date.self, column: "inf") }
        }
    }
}
