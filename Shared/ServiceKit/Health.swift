import Foundation
import Synchronization

/// Health of one component or of the whole service.
public enum HealthStatus: String, Sendable, Codable, Comparable {
    /// Working normally.
    case up
    /// Working with reduced quality (e.g. stale KV cache); still serves traffic.
    case degraded
    /// Not working; the service must not get traffic.
    case down

    private var severity: Int {
        switch self {
        case .up: 0
        case .degraded: 1
        case .down: 2
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.severity < rhs.severity }
}

/// The result of one health check. `detail` is for operators: no secrets, no tenant data.
public struct ComponentHealth: Sendable, Equatable, Codable {
    public var status: HealthStatus
    public var detail: String?

    public init(status: HealthStatus, detail: String? = nil) {
        self.status = status
        self.detail = detail
    }

    public static let up = ComponentHealth(status: .up)
    public static func degraded(_ detail: String? = nil) -> Self { .init(status: .degraded, detail: detail) }
    public static func down(_ detail: String? = nil) -> Self { .init(status: .down, detail: detail) }
}

/// A component whose health `/health` and `/ready` report (NATS, Postgres, KV freshness, ...).
///
/// `check()` must be quick and must honour task cancellation: the registry cancels it after its timeout.
public protocol HealthCheck: Sendable {
    /// The component name in the health report, e.g. `nats`.
    var name: String { get }
    func check() async -> ComponentHealth
}

/// A ``HealthCheck`` from a closure.
public struct ClosureHealthCheck: HealthCheck {
    public let name: String
    private let body: @Sendable () async -> ComponentHealth

    public init(name: String, _ body: @escaping @Sendable () async -> ComponentHealth) {
        self.name = name
        self.body = body
    }

    public func check() async -> ComponentHealth {
        await body()
    }
}

/// All components' health at one moment.
public struct HealthReport: Sendable, Equatable, Codable {
    /// The worst component status (`up` when there are no components).
    public var status: HealthStatus
    public var components: [String: ComponentHealth]

    public init(components: [String: ComponentHealth]) {
        self.components = components
        self.status = components.values.map(\.status).max() ?? .up
    }

    /// Whether traffic may be served: every component is up or degraded.
    public var isHealthy: Bool { status != .down }

    /// `{"components":{"nats":{"status":"up"}},"status":"up"}` with sorted keys.
    public func jsonData() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding plain strings and dictionaries cannot fail.
        return (try? encoder.encode(self)) ?? Data(#"{"status":"down"}"#.utf8)
    }
}

/// Thread-safe set of health checks plus the readiness flag.
///
/// The service sets `setReady(true)` once it can take work; ``DrainCoordinator`` flips it back to `false` as soon
/// as graceful shutdown starts, so `/ready` answers 503 while in-flight work drains.
public final class HealthRegistry: Sendable {
    private struct State {
        var checks: [any HealthCheck] = []
        var ready = false
    }

    private let state = Mutex(State())
    /// How long one check may take before it counts as `down`.
    public let checkTimeout: Duration

    public init(checkTimeout: Duration = .seconds(2)) {
        self.checkTimeout = checkTimeout
    }

    /// Adds a check; a check with the same name replaces the earlier one.
    public func register(_ check: any HealthCheck) {
        state.withLock { state in
            state.checks.removeAll { $0.name == check.name }
            state.checks.append(check)
        }
    }

    /// Adds a closure-based check.
    public func register(name: String, _ body: @escaping @Sendable () async -> ComponentHealth) {
        register(ClosureHealthCheck(name: name, body))
    }

    /// Names of the registered checks, in registration order.
    public var checkNames: [String] {
        state.withLock { $0.checks.map(\.name) }
    }

    /// Sets the readiness flag.
    public func setReady(_ ready: Bool) {
        state.withLock { $0.ready = ready }
    }

    /// The readiness flag (health is not consulted; see ``readiness()``).
    public var isReady: Bool {
        state.withLock { $0.ready }
    }

    /// Runs every check concurrently, each bounded by ``checkTimeout`` (a check that times out is `down`).
    public func report() async -> HealthReport {
        let checks = state.withLock { $0.checks }
        let timeout = checkTimeout
        let results = await withTaskGroup(of: (String, ComponentHealth).self) { group in
            for check in checks {
                group.addTask {
                    (check.name, await Self.run(check, timeout: timeout))
                }
            }
            var results: [String: ComponentHealth] = [:]
            for await (name, health) in group {
                results[name] = health
            }
            return results
        }
        return HealthReport(components: results)
    }

    /// Whether `/ready` answers 200: the flag is set and no component is down; plus the report used.
    public func readiness() async -> (ready: Bool, report: HealthReport) {
        guard isReady else {
            return (false, HealthReport(components: [:]))
        }
        let report = await report()
        // Re-read the flag: shutdown may have started while the checks ran.
        return (isReady && report.isHealthy, report)
    }

    private static func run(_ check: any HealthCheck, timeout: Duration) async -> ComponentHealth {
        await withTaskGroup(of: ComponentHealth?.self) { group in
            group.addTask { await check.check() }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .down("check timed out")
                } catch {
                    return nil  // cancelled because the check finished first
                }
            }
            var result = ComponentHealth.down("check timed out")
            if let first = await group.next(), let health = first {
                result = health
            }
            group.cancelAll()
            return result
        }
    }
}
