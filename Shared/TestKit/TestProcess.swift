import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from launching or running a helper process in tests.
public struct TestProcessError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "TestProcessError: \(message)" }
}

/// A child process launched by a test (nats-server, initdb, pg_ctl, …).
///
/// Spawned with `posix_spawn` (not Foundation's `Process`, whose exit detection on Linux relies on an
/// inherited socket and so never sees the exit of a command that leaves a daemon behind, like
/// `pg_ctl start`). The child gets `/dev/null` as stdin, stdout and stderr both go to a log file (so a
/// long-running daemon can never block on a full pipe, and the output stays readable after the exit),
/// and no other file descriptor is inherited. A dedicated thread reaps it with `waitpid`.
/// When `user` is given and the test runs as root, the command runs through `runuser -u <user> --`.
///
/// `@unchecked Sendable`: all stored properties are immutable; the mutable state (exit status, waiters)
/// lives in a `Mutex` inside `StateBox`.
public final class TestProcess: @unchecked Sendable {
    public let executable: String
    public let arguments: [String]
    /// File receiving the process's stdout and stderr.
    public let logFile: String
    /// The child's process id (of `runuser` when run as another user).
    public let pid: pid_t

    private let ownsLogFile: Bool
    private let state: StateBox

    private struct State {
        var exitStatus: Int32?
        var waiters: [CheckedContinuation<Int32, Never>] = []
    }

    /// Shared between the process object and the reaper thread.
    private final class StateBox: Sendable {
        let mutex = Mutex(State())
        let exited = DispatchGroup()
        func withLock<R>(_ body: (inout State) -> R) -> R { mutex.withLock { body(&$0) } }
    }

    /// Launches `executable` with `arguments`.
    /// - Parameters:
    ///   - user: run as this user via `runuser` when the current process is root (ignored otherwise).
    ///   - environment: extra environment variables (merged over the current environment).
    ///   - workingDirectory: working directory of the child.
    ///   - logFile: where to write output; a temporary file (removed on deinit) when nil.
    public init(
        executable: String,
        arguments: [String] = [],
        user: String? = nil,
        environment: [String: String] = [:],
        workingDirectory: String? = nil,
        logFile: String? = nil
    ) throws {
        self.executable = executable
        self.arguments = arguments
        let logPath = logFile ?? (NSTemporaryDirectory() + "switchyard-proc-\(UUID().uuidString).log")
        self.logFile = logPath
        self.ownsLogFile = logFile == nil

        var argv: [String]
        var path: String
        if let user, isRunningAsRoot {
            path = findExecutable("runuser") ?? "/usr/sbin/runuser"
            argv = [path, "-u", user, "--", executable] + arguments
        } else {
            path = executable
            argv = [executable] + arguments
        }
        let env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            .map { "\($0.key)=\($0.value)" }

        let logFD = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw TestProcessError("cannot create log file \(logPath): errno \(errno)") }
        defer { close(logFD) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        if let closeFrom = SpawnExtensions.addCloseFrom { _ = closeFrom(&actions, 3) }
        if let workingDirectory {
            guard let addChdir = SpawnExtensions.addChdir else {
                throw TestProcessError("posix_spawn_file_actions_addchdir_np is unavailable")
            }
            _ = addChdir(&actions, workingDirectory)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, path, &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else {
            if ownsLogFile { unlink(logPath) }
            throw TestProcessError("cannot launch \(path): error \(rc)")
        }
        self.pid = child
        let spawned = child

        let state = StateBox()
        self.state = state
        state.exited.enter()
        Thread.detachNewThread {
            var status: Int32 = 0
            var result: pid_t
            repeat { result = waitpid(spawned, &status, 0) } while result < 0 && errno == EINTR
            // Exit code, or 128 + signal number when killed by a signal (like a shell).
            let code: Int32 = result < 0 ? -1 : ((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f))
            let waiters = state.withLock { s -> [CheckedContinuation<Int32, Never>] in
                s.exitStatus = code
                defer { s.waiters = [] }
                return s.waiters
            }
            state.exited.leave()
            for waiter in waiters { waiter.resume(returning: code) }
        }
    }

    deinit {
        if isRunning { kill(pid, SIGKILL) }
        if ownsLogFile { unlink(logFile) }
    }

    /// Whether the process is still running.
    public var isRunning: Bool { state.withLock { $0.exitStatus == nil } }

    /// The exit status once the process has exited (128 + signal when killed by a signal).
    public var exitStatus: Int32? { state.withLock { $0.exitStatus } }

    /// Everything the process has written so far.
    public var output: String {
        (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
    }

    /// Waits (without blocking a thread) until the process exits; returns its exit status.
    @discardableResult
    public func waitUntilExit() async -> Int32 {
        await withCheckedContinuation { (cont: CheckedContinuation<Int32, Never>) in
            let status = state.withLock { s -> Int32? in
                if let status = s.exitStatus { return status }
                s.waiters.append(cont)
                return nil
            }
            if let status { cont.resume(returning: status) }
        }
    }

    /// Blocks the calling thread until the process exits (for `deinit` paths; prefer `waitUntilExit()`).
    @discardableResult
    public func waitUntilExitBlocking() -> Int32 {
        state.exited.wait()
        return exitStatus ?? -1
    }

    /// Sends SIGTERM (or `signal`) to the process if it is still running.
    public func terminate(signal: Int32 = SIGTERM) {
        guard isRunning else { return }
        kill(pid, signal)
    }

    /// Sends SIGTERM and waits for the exit; escalates to SIGKILL if the process ignores SIGTERM
    /// for `grace`.
    @discardableResult
    public func terminateAndWait(grace: Duration = .seconds(5)) async -> Int32 {
        terminate()
        let killer = Task { [weak self] in
            try await Task.sleep(for: grace)
            self?.terminate(signal: SIGKILL)
        }
        let status = await waitUntilExit()
        killer.cancel()
        return status
    }

    /// Runs a command to completion and returns its exit status and output.
    /// Throws if `check` is true and the exit status is not 0 (the error includes the output).
    @discardableResult
    public static func run(
        _ executable: String,
        _ arguments: [String] = [],
        user: String? = nil,
        environment: [String: String] = [:],
        workingDirectory: String? = nil,
        check: Bool = true
    ) async throws -> (status: Int32, output: String) {
        let process = try TestProcess(
            executable: executable, arguments: arguments, user: user,
            environment: environment, workingDirectory: workingDirectory)
        let status = await process.waitUntilExit()
        let output = process.output
        if check && status != 0 {
            let name = (executable as NSString).lastPathComponent
            throw TestProcessError("\(name) \(arguments.joined(separator: " ")) exited with \(status): \(output)")
        }
        return (status, output)
    }
}

/// glibc's `posix_spawn` extensions, which the Swift Glibc module does not import (looked up at run time).
private enum SpawnExtensions {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    static let addCloseFrom: AddCloseFrom? = lookup("posix_spawn_file_actions_addclosefrom_np")
    static let addChdir: AddChdir? = lookup("posix_spawn_file_actions_addchdir_np")

    private static func lookup<F>(_ name: String) -> F? {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(symbol, to: F.self)
    }
}

/// Whether the test process runs as root (servers such as PostgreSQL then need `runuser`).
public var isRunningAsRoot: Bool { geteuid() == 0 }

/// Finds `name` in `extraDirectories` first, then in `PATH` (and the usual sbin directories).
public func findExecutable(_ name: String, extraDirectories: [String] = []) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    let dirs = extraDirectories + path.split(separator: ":").map(String.init)
        + ["/usr/local/sbin", "/usr/sbin", "/sbin"]
    for dir in dirs {
        let candidate = (dir as NSString).appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.
///
/// Ports come from below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), so that no
/// outgoing connection and no server bound to port 0 — dozens of each while test suites start services in parallel
/// — can take one between this check and its use (seen: "Address already in use" for a service's ops port). Another
/// process may still pick the same port; servers started on it should retry on failure.
public func freeTCPPort() throws -> Int {
    let range = PortLedger.range
    for _ in 0..<500 {
        let port = Int.random(in: range)
        guard PortLedger.claim(port) else { continue }
        if try isBindable(port) { return port }
    }
    return try kernelChosenPort()
}

/// Ports handed out by ``freeTCPPort()`` in this process.
private enum PortLedger {
    static let used = Mutex<Set<Int>>([])
    /// From 20,000 to below the ephemeral range (read once).
    static let range: Range<Int> = {
        let ephemeralLow = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } } ?? 32768
        return 20_000..<max(20_001, min(ephemeralLow, 32_768))
    }()
    static func claim(_ port: Int) -> Bool { used.withLock { $0.insert(port).inserted } }
}

private func withBoundSocket<T>(port: Int, _ body: (Int32, inout sockaddr_in) throws -> T) throws -> T? {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw TestProcessError("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0 else { return nil }
    return try body(fd, &addr)
}

private func isBindable(_ port: Int) throws -> Bool {
    try withBoundSocket(port: port) { _, _ in true } ?? false
}

/// A port the kernel picks (bound to port 0, then released).
private func kernelChosenPort() throws -> Int {
    let port = try withBoundSocket(port: 0) { fd, addr -> Int in
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw TestProcessError("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
    guard let port else { throw TestProcessError("bind() failed: errno \(errno)") }
    return port
}

/// Creates a fresh temporary directory (mode 0700) and returns its path.
public func makeTemporaryDirectory(prefix: String = "switchyard") throws -> String {
    var template = Array("\(NSTemporaryDirectory())/\(prefix)-XXXXXX".utf8CString)
    let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard result != nil else { throw TestProcessError("mkdtemp failed: errno \(errno)") }
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Recursively changes the owner of `path` to `user` (used to hand directories to `postgres`).
public func changeOwner(ofPath path: String, toUser user: String) throws {
    guard let pw = getpwnam(user) else { throw TestProcessError("unknown user \(user)") }
    let uid = pw.pointee.pw_uid
    let gid = pw.pointee.pw_gid
    func chownOne(_ p: String) throws {
        guard chown(p, uid, gid) == 0 else { throw TestProcessError("chown \(p) failed: errno \(errno)") }
    }
    try chownOne(path)
    if let enumerator = FileManager.default.enumerator(atPath: path) {
        while let rel = enumerator.nextObject() as? String {
            try chownOne((path as NSString).appendingPathComponent(rel))
        }
    }
}

/// The path of an executable product (a service binary) built next to the running test bundle: `swift build`
/// builds them all into the same directory.
public func builtProduct(_ name: String) throws -> String {
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent(name).path
    if FileManager.default.isExecutableFile(atPath: beside) { return beside }
    let bundled = URL(fileURLWithPath: Bundle.main.bundlePath).deletingLastPathComponent().path + "/" + name
    guard FileManager.default.isExecutableFile(atPath: bundled) else {
        throw TestProcessError("\(name) binary not found: build it first (swift build)")
    }
    return bundled
}
