import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Telemetry

/// Paths served by the ops server.
public enum OpsPath {
    public static let health = "/health"
    public static let ready = "/ready"
    public static let live = "/live"
    public static let metrics = "/metrics"
}

/// The ops HTTP server of every service, on `configuration.httpHost:configuration.opsPort`:
///
/// - `GET /health` — JSON health report; 200 when every component is up or degraded, else 503.
/// - `GET /ready` — 200 only when the readiness flag is set and health is not down, else 503.
/// - `GET /live` — always 200; never touches NATS or Postgres.
/// - `GET /metrics` — Prometheus text exposition of `metrics`.
///
/// The application is a swift-service-lifecycle `Service`: put it in the service group (first, so it stops
/// last and `/ready` keeps answering 503 while the service drains).
public func buildOpsApplication(
    configuration: ServiceConfiguration,
    health: HealthRegistry,
    metrics: TelemetryMetrics,
    logger: Logger
) -> some ApplicationProtocol {
    let router = Router(context: BasicRequestContext.self)
    addOpsRoutes(to: router, health: health, metrics: metrics)
    return Application(
        responder: HTTPMetricsResponder(inner: router.buildResponder(), metrics: metrics),
        server: configuration.httpServer,
        configuration: .init(
            address: .hostname(configuration.httpHost, port: configuration.opsPort),
            serverName: "\(configuration.service)-ops"
        ),
        logger: logger
    )
}

/// Adds the ops routes to an existing router (for services that serve them on their main port too).
public func addOpsRoutes<Context: RequestContext>(
    to router: Router<Context>, health: HealthRegistry, metrics: TelemetryMetrics
) {
    router.get(RouterPath(OpsPath.live)) { _, _ in
        jsonResponse(status: .ok, body: #"{"status":"up"}"#)
    }
    router.get(RouterPath(OpsPath.health)) { _, _ in
        let report = await health.report()
        return Response(
            status: report.isHealthy ? .ok : .serviceUnavailable,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: report.jsonData()))
        )
    }
    router.get(RouterPath(OpsPath.ready)) { _, _ in
        let (ready, report) = await health.readiness()
        var body = report
        if !ready && report.isHealthy {
            // Not ready although healthy: starting up or draining.
            body.status = .down
        }
        return Response(
            status: ready ? .ok : .serviceUnavailable,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body.jsonData()))
        )
    }
    router.get(RouterPath(OpsPath.metrics)) { _, _ in
        await metrics.collect()
        return Response(
            status: .ok,
            headers: [.contentType: TelemetryMetrics.contentType],
            body: .init(byteBuffer: ByteBuffer(bytes: metrics.renderPrometheusBytes()))
        )
    }
}

private func jsonResponse(status: HTTPResponse.Status, body: String) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(string: body))
    )
}

extension ServiceConfiguration {
    /// The connection limits of every HTTP listener (docs/adr/0017).
    public var httpConnectionLimits: HTTPConnectionLimits {
        HTTPConnectionLimits(headerTimeout: .seconds(httpHeaderTimeoutSeconds), bodyTimeout: .seconds(httpBodyTimeoutSeconds),
                             idleTimeout: .seconds(httpIdleTimeoutSeconds), maxConnections: httpMaxConnections)
    }

    /// The HTTP/1 server of every listener, with ``httpConnectionLimits``.
    var httpServer: HTTPServerBuilder { .guardedHTTP1(limits: httpConnectionLimits) }
}
