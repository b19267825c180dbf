import GatewayCore
import Logging
import ServiceKit
import Telemetry

// The api-gateway: OpenAI-compatible HTTP API in front of every tenant's agents.
let configuration = try ServiceConfiguration(service: "api-gateway", defaultHTTPPort: 8080, defaultOpsPort: 9080)
let gateway = try GatewayConfiguration()
TelemetryLogging.bootstrap(service: "api-gateway", level: configuration.logLevel, format: configuration.logFormat)
let metrics = TelemetryMetrics()
metrics.bootstrap()
let logger = Logger(label: "api-gateway")
let group = try await buildGateway(configuration: configuration, gateway: gateway, logger: logger, metrics: metrics)
try await group.run()
