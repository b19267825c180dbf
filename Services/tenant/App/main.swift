import ServiceKit
import TenantCore

// The tenant service: source of truth for tenants, plans, API keys, manifests, rollouts and knowledge base;
// serves admin commands (NATS `admin.tenant.*`, HTTP `/admin/v1/tenant/*`) and keeps the KV mirror.
await ServiceMain.run(.tenant, httpPort: 8084, opsPort: 9084) { setup in
    try await buildTenantService(configuration: setup.configuration,
                                 tenant: try TenantConfiguration(environment: setup.environment),
                                 logger: setup.logger, metrics: setup.metrics)
}
