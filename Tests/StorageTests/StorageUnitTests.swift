import Foundation
import Storage
import TestKit
import Testing

@Suite("Storage without a server")
struct StorageUnitTests {
    @Test("retriable classification follows SQLSTATE and error code")
    func retriable() {
        #expect(PostgresError(code: .connection, message: "gone").isRetriable)
        for state in ["40001", "40P01", "57P01", "08006", "08001"] {
            #expect(PostgresError(code: .query, message: "m", sqlState: state).isRetriable, "\(state)")
        }
        for state in ["23505", "42601", "22P02", "42P01"] {
            #expect(!PostgresError(code: .query, message: "m", sqlState: state).isRetriable, "\(state)")
        }
        #expect(!PostgresError(code: .invalidParameter, message: "m").isRetriable)
        #expect(!PostgresError(code: .decode, message: "m").isRetriable)
    }

    @Test("an unreachable server gives a retriable connection error and a failing health check")
    func unreachableServer() async throws {
        let port = try freeTCPPort()  // nothing listens there
        let config = PostgresConfiguration(connectionString: "postgresql://postgres@127.0.0.1:\(port)/switchyard",
                                           poolSize: 1, connectTimeout: .seconds(2))
        let error = await #expect(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(configuration: config)
        }
        #expect(error?.code == .connection)
        #expect(error?.isRetriable == true)
        let pool = try PostgresPool(configuration: config)
        #expect(await pool.healthCheck() == false)
        await pool.close()
    }

    @Test("invalid configuration is rejected before anything starts")
    func invalidConfiguration() {
        #expect(throws: PostgresError.self) { try PostgresPool(configuration: PostgresConfiguration(poolSize: 0)) }
        #expect(throws: PostgresError.self) {
            try PostgresPool(configuration: PostgresConfiguration(connectionString: "host=a\u{0}b"))
        }
    }

    @Test("PostgresServer.withServer stops the cluster and removes its directory even when the body throws")
    func serverCleanup() async throws {
        struct Boom: Error {}
        var directory: String?
        var connectionString: String?
        await #expect(throws: Boom.self) {
            try await PostgresServer.withServer { server in
                directory = server.baseDirectory
                connectionString = server.connectionString
                #expect(FileManager.default.fileExists(atPath: server.dataDirectory))
                let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: server.connectionString))
                #expect(await pool.healthCheck())
                await pool.close()
                throw Boom()
            }
        }
        let dir = try #require(directory)
        #expect(!FileManager.default.fileExists(atPath: dir))
        let pool = try PostgresPool(configuration: PostgresConfiguration(
            connectionString: try #require(connectionString), connectTimeout: .seconds(2)))
        #expect(await pool.healthCheck() == false)
        await pool.close()
    }

    @Test("TestProcess captures output and exit status")
    func testProcess() async throws {
        let result = try await TestProcess.run("/bin/sh", ["-c", "echo hello; echo oops >&2; exit 3"], check: false)
        #expect(result.status == 3)
        #expect(result.output.contains("hello"))
        #expect(result.output.contains("oops"))
        await #expect(throws: TestProcessError.self) {
            try await TestProcess.run("/bin/sh", ["-c", "exit 1"])
        }
        let sleeper = try TestProcess(executable: "/bin/sleep", arguments: ["30"])
        #expect(sleeper.isRunning)
        let status = await sleeper.terminateAndWait()
        #expect(status != 0)
        #expect(!sleeper.isRunning)
    }
}
