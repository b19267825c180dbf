import Foundation
import Synchronization

/// A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, started with
/// `pg_ctl -w` on a free port (TCP on 127.0.0.1 plus a private Unix socket directory), durability
/// switched off for speed. When the tests run as root, the server runs as the `postgres` user.
///
/// Prefer `withServer { }`, which stops the cluster even when the body throws. `stop()` is idempotent,
/// and `deinit` stops a server that was never stopped, as a last resort.
///
/// `@unchecked Sendable`: all stored properties are immutable except `stopped`, which is a `Mutex`.
public final class PostgresServer: @unchecked Sendable {
    /// Root of the temporary directory (data, socket, log); removed by `stop()`.
    public let baseDirectory: String
    public let dataDirectory: String
    public let socketDirectory: String
    public let logFile: String
    public let host: String = "127.0.0.1"
    public let port: Int
    public let user: String = "postgres"
    /// Name of the database created at start.
    public let database: String
    /// Directory holding `initdb`, `pg_ctl`, `psql`, ….
    public let binDirectory: String

    private let runAs: String?
    private let stopped = Mutex(false)

    /// libpq URL for the created database, e.g. `postgresql://postgres@127.0.0.1:PORT/switchyard`.
    public var connectionString: String { connectionString(database: database) }

    /// libpq URL for another database on this cluster.
    public func connectionString(database: String) -> String {
        "postgresql://\(user)@\(host):\(port)/\(database)"
    }

    private init(base: String, port: Int, database: String, bin: String, runAs: String?) {
        self.baseDirectory = base
        self.dataDirectory = base + "/data"
        self.socketDirectory = base + "/sock"
        self.logFile = base + "/postgres.log"
        self.port = port
        self.database = database
        self.binDirectory = bin
        self.runAs = runAs
    }

    deinit {
        if !stopped.withLock({ $0 }) { stopSynchronously() }
    }

    /// Creates and starts a cluster and creates `database` in it.
    public static func start(database: String = "switchyard") async throws -> PostgresServer {
        let bin = try postgresBinDirectory()
        let base = try makeTemporaryDirectory(prefix: "switchyard-pg")
        let runAs: String? = isRunningAsRoot ? "postgres" : nil
        do {
            let fm = FileManager.default
            try fm.createDirectory(atPath: base + "/data", withIntermediateDirectories: false)
            try fm.createDirectory(atPath: base + "/sock", withIntermediateDirectories: false)
            if let runAs { try changeOwner(ofPath: base, toUser: runAs) }
            try await TestProcess.run(bin + "/initdb", [
                "-D", base + "/data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                "--no-sync", "--no-instructions",
            ], user: runAs)
        } catch {
            try? FileManager.default.removeItem(atPath: base)
            throw error
        }

        // The port was free a moment ago; another process may take it first, so retry a few times.
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port: Int
            do { port = try freeTCPPort() } catch { lastError = error; continue }
            let server = PostgresServer(base: base, port: port, database: database, bin: bin, runAs: runAs)
            do {
                try await server.startCluster()
            } catch {
                lastError = error
                // pg_ctl -w failed: make sure nothing is left running, keep the directory for the retry.
                _ = try? await TestProcess.run(bin + "/pg_ctl", ["-D", server.dataDirectory, "-m", "immediate", "stop"],
                                               user: runAs, check: false)
                server.stopped.withLock { $0 = true }
                continue
            }
            do {
                try await TestProcess.run(bin + "/createdb", [
                    "-h", server.socketDirectory, "-p", String(port), "-U", "postgres", database,
                ], user: runAs)
            } catch {
                await server.stop()
                throw error
            }
            return server
        }
        try? FileManager.default.removeItem(atPath: base)
        throw lastError ?? TestProcessError("could not start PostgreSQL")
    }

    /// Starts a server, runs `body`, and stops the server whether `body` returns or throws.
    public static func withServer<T>(
        database: String = "switchyard",
        _ body: (PostgresServer) async throws -> T
    ) async throws -> T {
        let server = try await start(database: database)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    /// Stops the cluster (`pg_ctl stop -m immediate`) and removes its directory. Idempotent.
    public func stop() async {
        guard markStopped() else { return }
        _ = try? await TestProcess.run(binDirectory + "/pg_ctl",
                                       ["-D", dataDirectory, "-m", "immediate", "-w", "stop"],
                                       user: runAs, check: false)
        try? FileManager.default.removeItem(atPath: baseDirectory)
    }

    /// Restarts the server the way an operator does (`pg_ctl stop -m fast`, then start) on the same port and
    /// data: every client connection is cut, committed data stays. Returns once it accepts connections again.
    /// Stops the server (fast shutdown) and keeps its data; ``resume()`` starts it again on the same port.
    public func pause() async throws {
        try await TestProcess.run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"],
                                  user: runAs)
    }

    /// Starts a ``pause()``d server again.
    public func resume() async throws { try await startCluster() }

    public func restart() async throws {
        try await TestProcess.run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"],
                                  user: runAs)
        try await startCluster()
    }

    /// Runs SQL through `psql` (as the superuser, over the Unix socket); returns its output.
    @discardableResult
    public func psql(_ sql: String, database: String? = nil) async throws -> String {
        try await TestProcess.run(binDirectory + "/psql", [
            "-h", socketDirectory, "-p", String(port), "-U", user, "-d", database ?? self.database,
            "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql,
        ], user: runAs).output
    }

    /// The server log so far (useful in failure messages).
    public var serverLog: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    // MARK: - private

    private func startCluster() async throws {
        let options = [
            "-p \(port)", "-k \(socketDirectory)", "-c listen_addresses=127.0.0.1",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        ].joined(separator: " ")
        try await TestProcess.run(binDirectory + "/pg_ctl", [
            "-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "-o", options, "start",
        ], user: runAs)
    }

    private func markStopped() -> Bool {
        stopped.withLock { s in
            if s { return false }
            s = true
            return true
        }
    }

    private func stopSynchronously() {
        guard markStopped() else { return }
        let args = ["-D", dataDirectory, "-m", "immediate", "-w", "stop"]
        if let process = try? TestProcess(executable: binDirectory + "/pg_ctl", arguments: args, user: runAs) {
            process.waitUntilExitBlocking()
        }
        try? FileManager.default.removeItem(atPath: baseDirectory)
    }

    /// The highest-versioned `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on PATH.
    static func postgresBinDirectory() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { name -> (Int, String)? in
                guard let v = Int(name.split(separator: ".").first ?? "") else { return nil }
                let bin = "\(root)/\(name)/bin"
                return FileManager.default.isExecutableFile(atPath: bin + "/initdb") ? (v, bin) : nil
            }
            .sorted { $0.0 > $1.0 }
        if let best = versions.first { return best.1 }
        if let initdb = findExecutable("initdb") { return (initdb as NSString).deletingLastPathComponent }
        throw TestProcessError("PostgreSQL binaries (initdb, pg_ctl) not found")
    }
}
