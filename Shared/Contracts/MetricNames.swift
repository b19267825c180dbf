import Telemetry

// MARK: - Every metric name of Switchyard

extension MetricName {
    // Seed names (docs/ARCHITECTURE.md "Observability"; rules and dashboards depend on them).
    public static let agentRequestsTotal = MetricName(
        "agent_requests_total", help: "Agent tasks started, by tenant, agent and package.")
    public static let agentErrorsTotal = MetricName(
        "agent_errors_total", help: "Agent tasks that failed, by tenant, agent and outcome.")
    public static let agentHandoffsTotal = MetricName(
        "agent_handoffs_total", help: "Conversations handed off to a human.")
    public static let agentConsentChecksTotal = MetricName(
        "agent_consent_checks_total", help: "Consent checks performed, by outcome.")
    public static let httpRequestDurationSeconds = MetricName(
        "http_request_duration_seconds", help: "HTTP request duration in seconds.")
    public static let chatRequestsTotal = MetricName(
        "chat_requests_total", help: "Chat completion requests accepted by the gateway.")
    public static let chatCompletionsTotal = MetricName(
        "chat_completions_total", help: "Chat completions answered, by outcome.")
    public static let agentDecisionDurationSeconds = MetricName(
        "agent_decision_duration_seconds", help: "Time an agent took to decide, in seconds.")

    // Providers (label `provider` is operator-configured, so bounded).
    public static let providerAttemptsTotal = MetricName(
        "provider_attempts_total", help: "Upstream provider attempts, by provider and outcome.")
    public static let providerLatencySeconds = MetricName(
        "provider_latency_seconds", help: "Upstream provider attempt latency in seconds.")

    // Administration (tenant service).
    public static let adminCommandsTotal = MetricName(
        "admin_commands_total", help: "Admin commands handled by the tenant service, by command and outcome.")

    // Billing.
    public static let evalRunsTotal = MetricName(
        "eval_runs_total", help: "Eval runs finished by this process, by outcome (completed, failed).")
    public static let billingUsageEventsTotal = MetricName(
        "billing_usage_events_total",
        help: "Usage events handled by billing, by outcome (recorded, duplicate, unpriced, rejected, failed).")
    public static let billingSpendMicrosTotal = MetricName(
        "billing_spend_micros_total",
        help: "Cost recorded in the ledger, in micro-units of the billing currency, by tenant (the first 100 tenants "
            + "a billing process sees; the rest as `other`).")
    public static let billingLedgerLagSeconds = MetricName(
        "billing_ledger_lag_seconds",
        help: "Seconds between a usage event's time and its recording in the ledger (last batch).")

    // Analytics (docs/adr/0015).
    public static let agentRequestDurationSeconds = MetricName(
        "agent_request_duration_seconds",
        help: "Whole-path duration of answered requests (gateway in to orchestrator done, from the event log's hop "
            + "stamps), by tenant (the top tenants by traffic, the rest as `other`) and agent.")
    public static let analyticsEventsTotal = MetricName(
        "analytics_events_total",
        help: "Event-log messages handled by analytics, by outcome (folded, duplicate, ignored = a kind the rollups "
            + "do not count, rejected = dead-lettered).")
    public static let analyticsLagSeconds = MetricName(
        "analytics_lag_seconds",
        help: "Seconds between the newest folded event's time and its folding into the rollups (last batch).")

    // Budgets (gateway admission, docs/adr/0014).
    public static let gatewayBudgetRejectionsTotal = MetricName(
        "gateway_budget_rejections_total",
        help: "Requests the gateway did not admit because of a budget, by tenant, period (daily, monthly, none) and "
            + "outcome (refused = 429 insufficient_quota; probing = the first request of a budgeted account is still "
            + "being priced; unavailable = the budget figures could not be read).")

    // Messaging and storage.
    public static let natsMessagesPublishedTotal = MetricName(
        "nats_messages_published_total", help: "Messages published to NATS.")
    public static let natsMessagesConsumedTotal = MetricName(
        "nats_messages_consumed_total", help: "Messages consumed from NATS JetStream.")
    public static let natsMessagesDeadLetteredTotal = MetricName(
        "nats_messages_dead_lettered_total", help: "Messages sent to a dead-letter subject.")
    public static let dbQueryDurationSeconds = MetricName(
        "db_query_duration_seconds", help: "PostgreSQL query duration in seconds.")

    // Replies after a reconnect (docs/adr/0016).
    public static let replyResendsTotal = MetricName(
        "reply_resends_total", help: "Answers sent again to a gateway that reconnected to NATS, by outcome (resent, malformed request).")

    // Every service, from start (ServiceKit `ServiceMetrics`).
    public static let processResidentMemoryBytes = MetricName(
        "process_resident_memory_bytes", help: "Resident memory size in bytes.")
    public static let processVirtualMemoryBytes = MetricName(
        "process_virtual_memory_bytes", help: "Virtual memory size in bytes.")
    public static let processCPUSecondsTotal = MetricName(
        "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.")
    public static let processOpenFDs = MetricName("process_open_fds", help: "Number of open file descriptors.")
    public static let processMaxFDs = MetricName("process_max_fds", help: "Maximum number of open file descriptors.")
    public static let processStartTimeSeconds = MetricName(
        "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.")
    public static let natsConnected = MetricName(
        "nats_connected", help: "Whether the NATS connection is up (1) or reconnecting or closed (0).")
    public static let natsReconnectsTotal = MetricName(
        "nats_reconnects_total", help: "Times the NATS connection was re-established.")
    public static let jetStreamConsumerPendingMessages = MetricName(
        "jetstream_consumer_pending_messages", help: "Messages of a durable this service owns not yet delivered, by stream and consumer.")
    public static let jetStreamConsumerAckPendingMessages = MetricName(
        "jetstream_consumer_ack_pending_messages", help: "Messages of a durable delivered and not yet acknowledged, by stream and consumer.")
    public static let jetStreamConsumerRedeliveredMessages = MetricName(
        "jetstream_consumer_redelivered_messages", help: "Messages of a durable being redelivered, by stream and consumer.")
    public static let dbPoolConnections = MetricName(
        "db_pool_connections", help: "PostgreSQL pool connections by state (in_use, idle) and the pool's size (max).")
    public static let dbPoolWaitingRequests = MetricName(
        "db_pool_waiting_requests", help: "Callers waiting for a PostgreSQL pool connection.")

    /// All declared names, for documentation and checks.
    public static let all: [MetricName] = [
        .agentRequestsTotal, .agentErrorsTotal, .agentHandoffsTotal, .agentConsentChecksTotal,
        .httpRequestDurationSeconds, .chatRequestsTotal, .chatCompletionsTotal, .agentDecisionDurationSeconds,
        .natsMessagesPublishedTotal, .natsMessagesConsumedTotal, .natsMessagesDeadLetteredTotal,
        .dbQueryDurationSeconds, .providerAttemptsTotal, .providerLatencySeconds, .adminCommandsTotal,
        .billingUsageEventsTotal, .billingSpendMicrosTotal, .billingLedgerLagSeconds, .gatewayBudgetRejectionsTotal,
        .analyticsEventsTotal, .analyticsLagSeconds, .evalRunsTotal, .agentRequestDurationSeconds, .replyResendsTotal,
        .processResidentMemoryBytes, .processVirtualMemoryBytes, .processCPUSecondsTotal, .processOpenFDs, .processMaxFDs,
        .processStartTimeSeconds, .natsConnected, .natsReconnectsTotal, .jetStreamConsumerPendingMessages,
        .jetStreamConsumerAckPendingMessages, .jetStreamConsumerRedeliveredMessages, .dbPoolConnections,
        .dbPoolWaitingRequests,
    ]
}

// MARK: - The bounded label names

extension MetricLabel {
    /// Tenant id (bounded by the number of tenants).
    public static let tenant = MetricLabel("tenant")
    /// Agent name.
    public static let agent = MetricLabel("agent")
    /// Vertical package (e.g. `gastronomy`).
    public static let package = MetricLabel("package")
    /// Emitting service.
    public static let service = MetricLabel("service")
    /// Result class, e.g. `ok`, `error`, `timeout`, `granted`, `denied`.
    public static let outcome = MetricLabel("outcome")
    /// Budget period: `daily`, `monthly` (or `none`).
    public static let period = MetricLabel("period")
    /// Upstream provider name (operator-configured: `local`, `openai`, `anthropic`, …).
    public static let provider = MetricLabel("provider")

    /// Admin command name (`create`, `issue-key`, …; a fixed set).
    public static let command = MetricLabel("command")

    /// JetStream stream and durable consumer names (declared in Contracts: a fixed set).
    public static let stream = MetricLabel("stream")
    public static let consumer = MetricLabel("consumer")
    /// A pool connection's state: `in_use`, `idle`, `max`.
    public static let state = MetricLabel("state")
    /// HTTP method, route (the path of a served route, `unmatched` for a 404) and status code.
    public static let method = MetricLabel("method")
    public static let route = MetricLabel("route")
    public static let status = MetricLabel("status")

    /// All declared label names.
    public static let all: [MetricLabel] = [.tenant, .agent, .package, .service, .outcome, .provider, .command, .stream,
                                            .consumer, .state, .method, .route, .status]
}
