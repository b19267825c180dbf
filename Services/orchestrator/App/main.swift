import Logging
import OrchestratorCore
import ServiceKit
import Telemetry

// The orchestrator: consumes agent.task.*, runs the agent (local knowledge base, OpenAI-compatible or
// Anthropic providers with retries, circuit breaker and fallback), answers the gateway, records events.
let configuration = try ServiceConfiguration(service: "orchestrator", defaultHTTPPort: 8082, defaultOpsPort: 9082)
let orchestrator = try OrchestratorConfiguration()
TelemetryLogging.bootstrap(service: "orchestrator", level: configuration.logLevel, format: configuration.logFormat)
let metrics = TelemetryMetrics()
metrics.bootstrap()
let logger = Logger(label: "orchestrator")
let group = try await buildOrchestrator(configuration: configuration, orchestrator: orchestrator, logger: logger,
                                        metrics: metrics)
try await group.run()
