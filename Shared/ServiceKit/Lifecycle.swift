import Logging
import ServiceLifecycle

/// Flips readiness when the process starts and stops taking work.
///
/// Put it LAST in the service list: services start in list order (so it marks the process ready after the
/// others were started) and shut down in reverse order (so it is the first to hear about graceful shutdown
/// and turns `/ready` to 503 before the HTTP server, consumers and NATS connection begin draining).
public struct DrainCoordinator: Service {
    public let health: HealthRegistry
    public let logger: Logger
    /// Whether `run()` sets the readiness flag when it starts.
    public let markReadyOnStart: Bool
    /// Pause after flipping readiness, so load balancers notice before the servers stop (0 in tests).
    public let readinessGracePeriod: Duration

    public init(
        health: HealthRegistry,
        logger: Logger,
        markReadyOnStart: Bool = true,
        readinessGracePeriod: Duration = .zero
    ) {
        self.health = health
        self.logger = logger
        self.markReadyOnStart = markReadyOnStart
        self.readinessGracePeriod = readinessGracePeriod
    }

    public func run() async throws {
        if markReadyOnStart {
            health.setReady(true)
            logger.info("service ready")
        }
        defer { health.setReady(false) }
        do {
            try await gracefulShutdown()
        } catch {
            // Cancelled rather than shut down gracefully: readiness is cleared by the defer.
            return
        }
        health.setReady(false)
        logger.info("draining: readiness withdrawn")
        if readinessGracePeriod > .zero {
            try? await Task.sleep(for: readinessGracePeriod)
        }
    }
}

/// Builds the process's `ServiceGroup`.
public enum ServiceRunner {
    /// A service group running `services` in dependency order (telemetry → NATS → provisioning → consumers →
    /// HTTP), with a ``DrainCoordinator`` appended, graceful shutdown on SIGTERM/SIGINT, reverse-order
    /// shutdown, and `configuration.drainSeconds` as the graceful-shutdown budget (then cancellation).
    ///
    /// - Parameters:
    ///   - services: long-running services, dependencies first.
    ///   - health: the registry whose readiness flag the drain coordinator flips.
    ///   - signals: `true` in `@main`; tests pass `false` and call `triggerGracefulShutdown()`.
    public static func makeServiceGroup(
        services: [any Service],
        configuration: ServiceConfiguration,
        health: HealthRegistry,
        logger: Logger,
        readinessGracePeriod: Duration = .zero,
        signals: Bool = true
    ) -> ServiceGroup {
        var entries = services.map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0)
        }
        entries.append(
            .init(
                service: DrainCoordinator(
                    health: health, logger: logger, readinessGracePeriod: readinessGracePeriod),
                successTerminationBehavior: .gracefullyShutdownGroup,
                serviceName: "DrainCoordinator"
            ))
        var groupConfiguration = ServiceGroupConfiguration(
            services: entries,
            gracefulShutdownSignals: signals ? [.sigterm, .sigint] : [],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = configuration.drainTimeout
        return ServiceGroup(configuration: groupConfiguration)
    }
}
