import Foundation
import Logging
import OTel
import ServiceLifecycle
import Telemetry
import Tracing

/// The process's tracer. With an OTLP endpoint configured (the OpenTelemetry variables
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, plus any other `OTEL_*` setting the
/// exporter reads: protocol `http/protobuf` (default) or `http/json`, headers, sampler, batch delay), spans go to
/// it through swift-otel's OTLP/HTTP exporter, batched by its span processor, which a service of the group runs
/// and flushes at shutdown. Without one, the W3C tracer still propagates `traceparent` from hop to hop (the trace
/// id in every log line and event) and exports nothing.
public struct PlatformTracing: Sendable {
    public let tracer: any Tracer
    /// The exporter's service (batching, export, flush at shutdown); nil without an endpoint.
    public let service: (any Service)?

    public static let endpointVariables = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]

    public static func make(service name: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger) throws -> PlatformTracing {
        guard let endpoint = endpointVariables.lazy.compactMap({ environment[$0] }).first(where: { !$0.isEmpty }) else {
            return PlatformTracing(tracer: W3CTracer(), service: nil)
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = name
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        logger.info("traces exported over OTLP/HTTP", metadata: ["otlp.endpoint": "\(endpoint)"])
        return PlatformTracing(tracer: backend.factory, service: backend.service)
    }
}

extension ServiceContext {
    /// The trace id of the active span, whichever tracer made it (swift-otel's or the W3C one).
    public var currentTraceID: String? { otelTraceID ?? traceID }
}
