import Contracts
import Hummingbird
import Logging
import Messaging
import ServiceLifecycle
import Telemetry
import Tenancy

/// The scaffold every service is built on (docs/adr/0010). A `build<Service>` function connects a builder,
/// adds the pieces it needs — streams, the tenancy mirror, PostgreSQL (ServiceKitPostgres), typed JetStream
/// consumers, an HTTP listener, its own services — and returns ``serviceGroup(signals:)``. Connections,
/// streams, durables and migrations are set up while building (in call order); the long-running services run
/// concurrently once the group runs (launched in the order they were added, after the ops server and the NATS
/// drain guard) and shut down in reverse order — which is why a typed consumer waits for the tenancy mirror.
///
/// Not `Sendable`: it lives only inside one `build<Service>` call.
public final class ServiceBuilder {
    public let platform: ServicePlatform
    private var services: [any Service] = []
    private var mirror: TenantDirectory?

    public var configuration: ServiceConfiguration { platform.configuration }
    public var logger: Logger { platform.logger }
    public var metrics: TelemetryMetrics { platform.metrics }
    public var health: HealthRegistry { platform.health }
    public var connection: NATSConnection { platform.connection }
    public var jetStream: JetStream { platform.jetStream }
    /// This process's answers to `switchyard doctor` (``Doctor``): add what only this service knows.
    public let doctor = DoctorChecks()

    /// The tenancy mirror, when ``tenancyMirror()`` was added.
    public var directory: TenantDirectory? { mirror }

    private init(platform: ServicePlatform) {
        self.platform = platform
        let configuration = platform.configuration
        doctor.add {
            var checks = [DoctorChecks.disk()]
            if configuration.natsUser == nil {
                checks.append(Doctor.check(.warn, "nats credentials",
                                           "no SWITCHYARD_NATS_USER: the server must require a user per service (docs/adr/0009)"))
            } else {
                checks.append(SecretHygiene.check("SWITCHYARD_NATS_PASSWORD", configuration.natsPassword))
            }
            return checks
        }
    }

    /// Connects to NATS (retrying with backoff) and registers its health check.
    public static func connect(configuration: ServiceConfiguration, logger: Logger,
                               metrics: TelemetryMetrics = TelemetryMetrics()) async throws -> ServiceBuilder {
        ServiceBuilder(platform: try await ServicePlatform.connect(configuration: configuration, logger: logger,
                                                                   metrics: metrics))
    }

    // MARK: streams

    /// The streams this service reads or writes. The stream's owner (``StreamContract/owner``) creates it and
    /// updates its configuration; any other service only makes sure it exists and never changes it.
    public func streams(_ contracts: StreamContract...) async throws {
        for contract in contracts {
            if contract.owner.rawValue == configuration.service {
                try await jetStream.ensureStream(contract.spec)
            } else if try await jetStream.ensureStreamExists(contract.spec) {
                logger.notice("stream created before its owner started", metadata: [
                    "stream": "\(contract.name)", "owner": "\(contract.owner.rawValue)",
                ])
            }
        }
    }

    // MARK: tenancy mirror

    /// The KV mirror of tenants and API keys, kept current by watches; `/health` reports it as `kv` (down until
    /// loaded). Typed consumers added after it wait for it to load before handling a message. Idempotent.
    @discardableResult
    public func tenancyMirror() -> TenantDirectory {
        if let mirror { return mirror }
        let directory = TenantDirectory(logger: logger, verifier: configuration.mirrorVerifier)
        let signed = configuration.mirrorPublicKey
        doctor.add {
            [SecretHygiene.check("SWITCHYARD_MIRROR_PUBLIC_KEY", bytes: signed, minimumBytes: 32,
                                 unset: "tenancy KV values are accepted without the tenant service's signature")]
        }
        health.register(name: "kv") { directory.isSynced ? .up : .down("tenant mirror not loaded") }
        add(TenantDirectoryService(directory: directory, jetStream: jetStream, logger: logger))
        mirror = directory
        return directory
    }

    // MARK: HTTP

    /// The service's own HTTP API on `SWITCHYARD_HTTP_HOST:SWITCHYARD_HTTP_PORT` (the ops routes stay on the
    /// ops port). `onServerRunning` gets the bound port (tests bind port 0).
    public func http(_ router: Router<BasicRequestContext>, serverName: String? = nil,
                     onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        add(Application(
            responder: HTTPMetricsResponder(inner: router.buildResponder(), metrics: metrics),
            server: configuration.httpServer,
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort),
                                 serverName: serverName ?? "switchyard-\(configuration.service)"),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger))
    }

    // MARK: anything else

    /// A long-running service of this process, launched after everything added before it and shut down before
    /// it.
    public func add(_ service: any Service) {
        services.append(service)
    }

    /// Runs `close` on shutdown after every service added from now on has stopped (shutdown runs in reverse).
    public func onShutdown(_ close: @escaping @Sendable () async -> Void) {
        add(ClosingService(close))
    }

    /// The process's service group (see ``ServicePlatform/serviceGroup(_:signals:readinessGracePeriod:)``).
    public func serviceGroup(signals: Bool = true) -> ServiceGroup {
        platform.serviceGroup(services + [DoctorResponderService(
            connection: connection, service: configuration.service, instance: configuration.instanceID,
            checks: doctor, logger: logger)], signals: signals)
    }
}
