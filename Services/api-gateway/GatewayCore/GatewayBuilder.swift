import Contracts
import Hummingbird
import Logging
import ServiceKit
import ServiceLifecycle
import Telemetry
import Tenancy

/// Builds the gateway process: NATS, the event log, the KV mirror, the reply inbox, the HTTP server.
public func buildGateway(configuration: ServiceConfiguration, gateway: GatewayConfiguration, logger: Logger,
                         metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true,
                         onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.events)
    let directory = builder.tenancyMirror()
    let pepper = gateway.keyPepper
    builder.doctor.add {
        [SecretHygiene.check("SWITCHYARD_KEY_PEPPER", bytes: pepper,
                             unset: "API key hashes are plain SHA-256; set the same pepper on tenant and gateways")]
    }
    let inbox = try ReplyInbox(connection: builder.connection, instanceID: configuration.instanceID)
    let limiter = RateLimiterRegistry()
    let budgets = BudgetBook(bucket: try await builder.jetStream.keyValue(Budgets.bucket))
    let chat = ChatGateway(jetStream: builder.jetStream, directory: directory, inbox: inbox, limiter: limiter,
                           budgets: budgets, configuration: gateway, metrics: metrics,
                           tracer: builder.platform.tracer, logger: logger)
    let router = Router(context: BasicRequestContext.self)
    chat.addRoutes(to: router)  // ops routes (/health, /metrics) stay on the ops port, off the public API
    builder.add(ReplyInboxService(inbox: inbox))
    builder.add(ReplicaHeartbeatService(connection: builder.connection, instanceID: configuration.instanceID,
                                        limiter: limiter, logger: logger))
    builder.http(router, serverName: "switchyard-gateway", onServerRunning: onServerRunning)
    return builder.serviceGroup(signals: signals)
}
