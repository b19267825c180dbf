import Foundation
import Synchronization

/// A throwaway `nats-server -js` on a free loopback port with its store in a temporary directory.
/// Use `withServer` so it is stopped (and its store removed) even when the test fails.
public final class NATSServer: Sendable {
    public let port: Int
    public let storeDirectory: String
    private let binary: String
    private let arguments: [String]
    private let current: Mutex<TestProcess>
    private var process: TestProcess { current.withLock { $0 } }

    /// `nats://127.0.0.1:<port>`
    public var url: String { "nats://127.0.0.1:\(port)" }

    private init(port: Int, storeDirectory: String, binary: String, arguments: [String], process: TestProcess) {
        self.port = port
        self.storeDirectory = storeDirectory
        self.binary = binary
        self.arguments = arguments
        self.current = Mutex(process)
    }

    /// Stops the server (SIGTERM, like an operator's restart) and starts it again on the same port with the same
    /// store, so clients reconnect to it and find their streams. Returns once it accepts connections again.
    public func restart() async throws {
        _ = await process.terminateAndWait(grace: .seconds(5))
        let next = try TestProcess(executable: binary, arguments: arguments)
        current.withLock { $0 = next }
        guard await Self.waitForReady(process: next, port: port) else {
            throw TestProcessError("nats-server did not come back on port \(port): \(next.output)")
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered — a publish's ack never comes,
    /// as in a stalled leader election. ``thaw()`` lets it go on where it stopped.
    public func freeze() { process.terminate(signal: SIGSTOP) }

    /// Resumes a ``freeze()``d server (SIGCONT).
    public func thaw() { process.terminate(signal: SIGCONT) }

    /// Starts a server, retrying on another port if the chosen one was taken in the meantime.
    public static func start(extraArguments: [String] = []) async throws -> NATSServer {
        try await launch(configuration: nil, extraArguments: extraArguments)
    }

    /// Starts a server with `configuration` (nats-server config syntax, e.g. an `authorization { … }` block
    /// from `NATSAuthTemplate.render(passwords:)`) written to `nats.conf` in the store directory and passed
    /// with `-c`. The port, listen address, store and `-js` still come from the command line, which wins
    /// over the file.
    public static func start(configuration: String, extraArguments: [String] = []) async throws -> NATSServer {
        try await launch(configuration: configuration, extraArguments: extraArguments)
    }

    private static func launch(configuration: String?, extraArguments: [String]) async throws -> NATSServer {
        guard let binary = findExecutable("nats-server") else {
            throw TestProcessError("nats-server not found: run `make deps` (Debian package nats-server)")
        }
        let store = try makeTemporaryDirectory(prefix: "switchyard-nats")
        var configArguments: [String] = []
        if let configuration {
            let file = (store as NSString).appendingPathComponent("nats.conf")
            do {
                try configuration.write(toFile: file, atomically: true, encoding: .utf8)
                chmod(file, 0o600)
            } catch {
                try? FileManager.default.removeItem(atPath: store)
                throw TestProcessError("cannot write \(file): \(error)")
            }
            configArguments = ["-c", file]
        }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try freeTCPPort()
            let arguments = configArguments + ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store]
                + extraArguments
            let process = try TestProcess(executable: binary, arguments: arguments)
            if await waitForReady(process: process, port: port) {
                return NATSServer(port: port, storeDirectory: store, binary: binary, arguments: arguments,
                                  process: process)
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

    /// Runs `body` with a fresh server started with `configuration` (see `start(configuration:)`) and always
    /// stops it afterwards.
    public static func withServer<T>(configuration: String, extraArguments: [String] = [],
                                     _ body: (NATSServer) async throws -> T) async throws -> T {
        let server = try await start(configuration: configuration, extraArguments: extraArguments)
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

/// The committed nats-server authorization template (`scripts/nats-auth.conf.tmpl`: one user per service with
/// subject permissions), rendered for tests the way `scripts/infra.sh` renders it for `make run`.
public enum NATSAuthTemplate {
    /// The users the template defines.
    public static let users = ["admin", "tenant", "gateway", "router", "orchestrator", "billing", "analytics", "eval",
                               "reader", "backup"]

    /// `<repo>/scripts/nats-auth.conf.tmpl`, found relative to this source file (`<repo>/Shared/TestKit/`).
    public static var templatePath: String {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/nats-auth.conf.tmpl").path
    }

    /// Characters a password may contain (safe inside the template's quoted strings and in sed).
    static func isAllowedPassword(_ password: String) -> Bool {
        !password.isEmpty && password.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._~+/=-".unicodeScalars.contains(scalar))
        }
    }

    /// The template with every `@@PASSWORD_<USER>@@` replaced by `passwords[<user>]` (user names in lower
    /// case, as in `users`). Throws if a placeholder has no password, a password is not made of
    /// `[A-Za-z0-9._~+/=-]`, or a password names a user the template doesn't have.
    public static func render(passwords: [String: String]) throws -> String {
        let template: String
        do {
            template = try String(contentsOfFile: templatePath, encoding: .utf8)
        } catch {
            throw TestProcessError("cannot read \(templatePath): \(error)")
        }
        let placeholder = try Regex("@@PASSWORD_([A-Z0-9_]+)@@")
        var rendered = ""
        var rest = template[...]
        var seen: Set<String> = []
        while let match = rest.firstMatch(of: placeholder) {
            let user = String(match.output[1].substring ?? "").lowercased()
            guard let password = passwords[user] else {
                throw TestProcessError("no password for NATS user \(user) (the template has a placeholder for it)")
            }
            guard isAllowedPassword(password) else {
                throw TestProcessError("the password for NATS user \(user) has characters outside [A-Za-z0-9._~+/=-]")
            }
            seen.insert(user)
            rendered += rest[..<match.range.lowerBound]
            rendered += password
            rest = rest[match.range.upperBound...]
        }
        rendered += rest
        if let unknown = Set(passwords.keys).subtracting(seen).sorted().first {
            throw TestProcessError("the NATS auth template has no user \(unknown)")
        }
        return rendered
    }

    /// A fresh random password for every user in `users`.
    public static func randomPasswords() -> [String: String] {
        Dictionary(uniqueKeysWithValues: users.map { user in
            (user, UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
                + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased())
        })
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func canConnect(port: Int) -> Bool {
    guard let fd = connectedSocket(port: port) else { return false }
    close(fd)
    return true
}

/// A TCP socket connected to 127.0.0.1:`port` (the caller closes it), or nil when nothing accepts there.
public func connectedSocket(port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard result == 0 else {
        close(fd)
        return nil
    }
    return fd
}
