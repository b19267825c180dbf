import Logging
import RouterCore
import ServiceKit
import Telemetry

// The router: consumes chat.request.*, decides the agent, publishes agent.task.<agent> and events.
let configuration = try ServiceConfiguration(service: "router", defaultHTTPPort: 8081, defaultOpsPort: 9081)
TelemetryLogging.bootstrap(service: "router", level: configuration.logLevel, format: configuration.logFormat)
let metrics = TelemetryMetrics()
metrics.bootstrap()
let logger = Logger(label: "router")
let group = try await buildRouter(configuration: configuration, logger: logger, metrics: metrics)
try await group.run()
