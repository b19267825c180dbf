import Hummingbird
import Logging
import Messaging
import ServiceLifecycle
import Telemetry
import Tracing

/// What every service process shares: configuration, logger, metrics, health, and one NATS connection with
/// its JetStream context. Built once in `build<Service>(configuration:)`; tests build it from in-memory
/// configuration.
public struct ServicePlatform: Sendable {
    public let configuration: ServiceConfiguration
    public let logger: Logger
    public let metrics: TelemetryMetrics
    public let health: HealthRegistry
    public let connection: NATSConnection
    public let jetStream: JetStream
    /// Spans of this process (``PlatformTracing``): exported over OTLP when an endpoint is configured.
    public let tracing: PlatformTracing
    public var tracer: any Tracer { tracing.tracer }

    /// Connects to NATS (retrying with backoff) and registers its health check.
    public static func connect(configuration: ServiceConfiguration, logger: Logger,
                               metrics: TelemetryMetrics = TelemetryMetrics()) async throws -> ServicePlatform {
        let connection = try await NATSConnection.connect(configuration.natsConfiguration(), logger: logger)
        let health = HealthRegistry()
        health.register(NATSHealthCheck(connection: connection))
        ServiceMetrics.install(metrics, connection: connection)
        return ServicePlatform(configuration: configuration, logger: logger, metrics: metrics, health: health,
                               connection: connection, jetStream: try JetStream(connection: connection,
                                                                         replicas: configuration.streamReplicas),
                               tracing: try PlatformTracing.make(service: configuration.service, logger: logger))
    }

    /// The process's service group, in start order: ops HTTP server, NATS drain guard, then `services`
    /// (dependencies first), then the drain coordinator. Shutdown runs in reverse: readiness drops first,
    /// consumers and HTTP stop taking work and finish in-flight, then NATS drains, the ops server goes last.
    public func serviceGroup(_ services: [any Service], signals: Bool = true,
                             readinessGracePeriod: Duration = .zero) -> ServiceGroup {
        let ops = buildOpsApplication(configuration: configuration, health: health, metrics: metrics, logger: logger)
        return ServiceRunner.makeServiceGroup(
            // The span exporter starts first and stops last: it flushes the spans of everything shut down before it.
            services: (tracing.service.map { [$0] } ?? []) + [ops, NATSDrainService(connection: connection)] + services,
            configuration: configuration, health: health, logger: logger,
            readinessGracePeriod: readinessGracePeriod, signals: signals)
    }
}

/// Keeps the NATS connection open until graceful shutdown reaches it, then drains it (flushing pending
/// publishes and acks) before the process exits.
public struct NATSDrainService: Service {
    let connection: NATSConnection
    public init(connection: NATSConnection) { self.connection = connection }
    public func run() async throws {
        try? await gracefulShutdown()
        await connection.drainAndClose(timeout: .seconds(5))
    }
}
