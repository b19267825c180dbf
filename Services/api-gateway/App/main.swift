import GatewayCore
import ServiceKit

// The api-gateway: OpenAI-compatible HTTP API in front of every tenant's agents.
await ServiceMain.run(.apiGateway, httpPort: 8080, opsPort: 9080) { setup in
    try await buildGateway(configuration: setup.configuration, gateway: try GatewayConfiguration(environment: setup.environment),
                           logger: setup.logger, metrics: setup.metrics)
}
