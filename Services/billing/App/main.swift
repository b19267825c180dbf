import BillingCore
import ServiceKit

// Billing: consumes the usage log into an exactly-once ledger with running totals (docs/adr/0013).
await ServiceMain.run(.billing, httpPort: 8085, opsPort: 9085) { setup in
    try await buildBilling(configuration: setup.configuration,
                           billing: try BillingConfiguration(environment: setup.environment),
                           logger: setup.logger, metrics: setup.metrics)
}
