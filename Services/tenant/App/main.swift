import Logging
import ServiceKit
import Telemetry
import TenantCore

// The tenant service: source of truth for tenants, plans, API keys, manifests, rollouts and knowledge base;
// serves admin commands (NATS `admin.tenant.*`, HTTP `/admin/v1/tenant/*`) and keeps the KV mirror.
let configuration = try ServiceConfiguration(service: "tenant", defaultHTTPPort: 8084, defaultOpsPort: 9084)
let tenant = try TenantConfiguration()
TelemetryLogging.bootstrap(service: "tenant", level: configuration.logLevel, format: configuration.logFormat)
let metrics = TelemetryMetrics()
metrics.bootstrap()
let logger = Logger(label: "tenant")
let group = try await buildTenantService(configuration: configuration, tenant: tenant, logger: logger, metrics: metrics)
try await group.run()
