import Storage

/// The billing service's tables (docs/adr/0013). Money is integer micro-units of the platform currency; token
/// counts are bigint. The ledger is keyed by (tenant, event id): a redelivered or republished usage event
/// finds its row and changes nothing. Running totals change only in the statement that inserts the ledger
/// rows, so they always equal the ledger.
public enum BillingSchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "prices, ledger and running totals", sql: """
            CREATE TABLE billing_prices (
                id                        bigserial   PRIMARY KEY,
                provider                  text        NOT NULL,
                model                     text        NOT NULL,
                effective_from            timestamptz NOT NULL,
                input_micros_per_million  bigint      NOT NULL CHECK (input_micros_per_million >= 0),
                output_micros_per_million bigint      NOT NULL CHECK (output_micros_per_million >= 0),
                currency                  text        NOT NULL,
                created_at                timestamptz NOT NULL DEFAULT now(),
                created_by                text        NOT NULL DEFAULT '',
                UNIQUE (provider, model, effective_from)
            );
            CREATE TABLE billing_ledger (
                tenant_id         text        NOT NULL,
                event_id          text        NOT NULL,
                request_id        text        NOT NULL,
                conversation_id   text        NOT NULL,
                agent             text        NOT NULL,
                provider          text        NOT NULL,
                model             text        NOT NULL,
                prompt_tokens     bigint      NOT NULL CHECK (prompt_tokens >= 0),
                completion_tokens bigint      NOT NULL CHECK (completion_tokens >= 0),
                estimated         boolean     NOT NULL,
                occurred_at       timestamptz NOT NULL,
                price_id          bigint      REFERENCES billing_prices (id),
                cost_micros       bigint      NOT NULL,
                unpriced          boolean     NOT NULL,
                stream_sequence   bigint      NOT NULL,
                recorded_at       timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, event_id)
            );
            CREATE INDEX billing_ledger_tenant_time ON billing_ledger (tenant_id, occurred_at);
            CREATE TABLE billing_totals (
                tenant_id          text   NOT NULL,
                period             text   NOT NULL CHECK (period IN ('day', 'month')),
                period_start       date   NOT NULL,
                agent              text   NOT NULL,
                provider           text   NOT NULL,
                model              text   NOT NULL,
                requests           bigint NOT NULL,
                prompt_tokens      bigint NOT NULL,
                completion_tokens  bigint NOT NULL,
                cost_micros        bigint NOT NULL,
                unpriced_requests  bigint NOT NULL,
                estimated_requests bigint NOT NULL,
                PRIMARY KEY (tenant_id, period, period_start, agent, provider, model)
            );
            CREATE TABLE billing_conversations (
                tenant_id         text        NOT NULL,
                conversation_id   text        NOT NULL,
                requests          bigint      NOT NULL,
                prompt_tokens     bigint      NOT NULL,
                completion_tokens bigint      NOT NULL,
                cost_micros       bigint      NOT NULL,
                first_at          timestamptz NOT NULL,
                last_at           timestamptz NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            );
            """),
        Migration(version: 2, name: "stored invoices and the billing audit log", sql: """
            CREATE TABLE billing_invoices (
                tenant_id  text        NOT NULL,
                month      date        NOT NULL,
                body       bytea       NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, month)
            );
            CREATE TABLE billing_audit (
                id        bigserial   PRIMARY KEY,
                at        timestamptz NOT NULL DEFAULT now(),
                actor     text        NOT NULL,
                action    text        NOT NULL,
                tenant_id text        NOT NULL,
                detail    text        NOT NULL
            );
            """),
        // One running-total row per tenant × day × agent × provider × model instead of a day and a month row:
        // half the upserts per ledger batch (docs/adr/0013, "Figures"). A month is the sum of its ≤ 31 days.
        Migration(version: 3, name: "month totals from the day rows", sql: """
            DELETE FROM billing_totals WHERE period = 'month';
            CREATE VIEW billing_month_totals AS
                SELECT tenant_id, date_trunc('month', period_start)::date AS month, agent, provider, model,
                       sum(requests)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt_tokens,
                       sum(completion_tokens)::bigint AS completion_tokens, sum(cost_micros)::bigint AS cost_micros,
                       sum(unpriced_requests)::bigint AS unpriced_requests,
                       sum(estimated_requests)::bigint AS estimated_requests
                FROM billing_totals WHERE period = 'day'
                GROUP BY 1, 2, 3, 4, 5;
            """),
        // Each line's day in its tenant's time zone (UTC unless the tenant has one): the day and month its usage
        // counts toward in totals, budgets and invoices (docs/adr/0014). Earlier lines were all UTC.
        Migration(version: 4, name: "ledger lines carry their tenant-local day", sql: """
            ALTER TABLE billing_ledger ADD COLUMN day date;
            UPDATE billing_ledger SET day = (occurred_at AT TIME ZONE 'UTC')::date;
            ALTER TABLE billing_ledger ALTER COLUMN day SET NOT NULL;
            """),
    ]
}
