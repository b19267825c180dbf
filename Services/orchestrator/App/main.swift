import OrchestratorCore
import ServiceKit

// The orchestrator: consumes routed tasks, runs the agent (local knowledge base, OpenAI-compatible or
// Anthropic providers with retries, circuit breaker and fallback), answers the gateway, records events.
await ServiceMain.run(.orchestrator, httpPort: 8082, opsPort: 9082) { setup in
    try await buildOrchestrator(configuration: setup.configuration,
                                orchestrator: try OrchestratorConfiguration(environment: setup.environment),
                                logger: setup.logger, metrics: setup.metrics)
}
