import AnalyticsCore
import ServiceKit

// Analytics: folds the event log into minute rollups, serves stats and rebuilds (docs/adr/0015).
await ServiceMain.run(.analytics, httpPort: 8086, opsPort: 9086) { setup in
    try await buildAnalytics(configuration: setup.configuration,
                             analytics: try AnalyticsConfiguration(environment: setup.environment),
                             logger: setup.logger, metrics: setup.metrics)
}
