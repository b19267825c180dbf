import Foundation

/// A throwaway `nats-server -js` on a free loopback port with its store in a temporary directory.
/// Use `withServer` so it is stopped (and its store removed) even when the test fails.
public final class NATSServer: Sendable {
    public let port: Int
    public let storeDirectory: String
    private let process: TestProcess

    /// `nats://127.0.0.1:<port>`
    public var url: String { "nats://127.0.0.1:\(port)" }

    private init(port: Int, storeDirectory: String, process: TestProcess) {
        self.port = port
        self.storeDirectory = storeDirectory
        self.process = process
    }

    /// Starts a server, retrying on another port if the chosen one was taken in the meantime.
    public static func start(extraArguments: [String] = []) async throws -> NATSServer {
        guard let binary = findExecutable("nats-server") else {
            throw TestProcessError("nats-server not found: run `make deps` (Debian package nats-server)")
        }
        let store = try makeTemporaryDirectory(prefix: "switchyard-nats")
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try freeTCPPort()
            let process = try TestProcess(
                executable: binary,
                arguments: ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store] + extraArguments)
            if await waitForReady(process: process, port: port) {
                return NATSServer(port: port, storeDirectory: store, process: process)
            }
            lastError = TestProcessError("nats-server did not become ready on port \(port): \(process.output)")
            _ = await process.terminateAndWait(grace: .seconds(2))
        }
        try? FileManager.default.removeItem(atPath: store)
        throw lastError ?? TestProcessError("nats-server did not start")
    }

    private static func waitForReady(process: TestProcess, port: Int) async -> Bool {
        for _ in 0..<200 {
            if !process.isRunning { return false }
            if process.output.contains("Server is ready") && canConnect(port: port) { return true }
            try? await Task.sleep(for: .milliseconds(25))
        }
        return false
    }

    /// Stops the server and removes its store.
    public func stop() async {
        _ = await process.terminateAndWait(grace: .seconds(5))
        try? FileManager.default.removeItem(atPath: storeDirectory)
    }

    /// Runs `body` with a fresh server and always stops it afterwards.
    public static func withServer<T>(_ body: (NATSServer) async throws -> T) async throws -> T {
        let server = try await start()
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    /// The server's log so far (for diagnosing a failed test).
    public var log: String { process.output }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return result == 0
}
