import RouterCore
import ServiceKit

// The router: consumes chat requests, decides the agent, publishes the task and the routing events.
await ServiceMain.run(.router, httpPort: 8081, opsPort: 9081) { setup in
    try await buildRouter(configuration: setup.configuration, logger: setup.logger, metrics: setup.metrics)
}
