import Contracts
import Logging
import Schemas
import ServiceKit
import ServiceLifecycle
import Telemetry

/// Builds the router process: NATS, its streams and durable consumer, the KV mirror, the consume loop.
public func buildRouter(configuration: ServiceConfiguration, logger: Logger,
                        metrics: TelemetryMetrics = TelemetryMetrics(), signals: Bool = true) async throws -> ServiceGroup {
    let builder = try await ServiceBuilder.connect(configuration: configuration, logger: logger, metrics: metrics)
    try await builder.streams(Streams.events, Streams.deadLetter)
    let handler = RouterHandler(jetStream: builder.jetStream, directory: builder.tenancyMirror(), metrics: metrics,
                                logger: logger)
    // Kept alive: AckWait is short (docs/adr/0016), and a burst may hold a request here longer than that.
    try await builder.consume(Consumers.routerRequested, ChatRequested.self, batchSize: 128, handler: handler.handle)
    try await builder.consume(Consumers.routerEvalRequested, EvalRequested.self, batchSize: 16,
                              handler: handler.handleEval)
    return builder.serviceGroup(signals: signals)
}
