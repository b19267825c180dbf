import EvalCore
import ServiceKit

// Eval: golden suites per tenant and agent (runs, replays and gated rollouts build on them).
await ServiceMain.run(.eval, httpPort: 8087, opsPort: 9087) { setup in
    try await buildEval(configuration: setup.configuration, eval: try EvalConfiguration(environment: setup.environment),
                        logger: setup.logger, metrics: setup.metrics)
}
