import Storage

/// The analytics service's tables (docs/adr/0015): minute rollups of the event log per series (a tenant × agent ×
/// agent version × rollout cohort × channel × package, numbered once in `analytics_series`, so rollup keys are
/// two integers rather than six strings) and minute, all derived from the log alone.
/// - `analytics_applied`: the event-log sequences already folded, the ledger that makes a redelivered event change
///   nothing: one row per batch, kind and minute with the batch's sequences as an array (migration 3; it was a
///   row per event, half of PostgreSQL's row work when folding); pruned below the durables' ack floor, deleted
///   by minute for a rebuild.
/// - `analytics_minutes`: counters; `analytics_errors`: failures per error code; `analytics_latency`: per-hop
///   latency histograms as (bucket, count) rows (``LatencyBuckets``), which add up to any window exactly;
///   `analytics_conversations`: one row per conversation (its first minute and whether it was answered or handed
///   off; flags only ever turn on, so folding an event twice cannot change them).
public enum AnalyticsSchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "series, minute rollups, latency histograms, conversations", sql: """
            CREATE TABLE analytics_series (
                id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant_id      text NOT NULL,
                agent          text NOT NULL,
                agent_version  text NOT NULL,
                rollout_cohort text NOT NULL,
                channel        text NOT NULL,
                package_name   text NOT NULL,
                UNIQUE (tenant_id, agent, agent_version, rollout_cohort, channel, package_name)
            );
            CREATE TABLE analytics_applied (
                seq    bigint      PRIMARY KEY,
                minute timestamptz NOT NULL
            );
            CREATE INDEX analytics_applied_minute ON analytics_applied USING brin (minute);
            CREATE TABLE analytics_minutes (
                series_id            integer     NOT NULL REFERENCES analytics_series (id),
                minute               timestamptz NOT NULL,
                requests             bigint      NOT NULL,
                completions          bigint      NOT NULL,
                failures             bigint      NOT NULL,
                handoffs             bigint      NOT NULL,
                consent_asked        bigint      NOT NULL,
                consent_granted      bigint      NOT NULL,
                consent_denied       bigint      NOT NULL,
                kb_answered          bigint      NOT NULL,
                kb_no_answer         bigint      NOT NULL,
                prompt_tokens        bigint      NOT NULL,
                completion_tokens    bigint      NOT NULL,
                cost_micros          bigint      NOT NULL,
                unpriced_completions bigint      NOT NULL,
                PRIMARY KEY (series_id, minute)
            );
            CREATE INDEX analytics_minutes_minute ON analytics_minutes USING brin (minute);
            CREATE TABLE analytics_errors (
                series_id  integer     NOT NULL REFERENCES analytics_series (id),
                minute     timestamptz NOT NULL,
                error_code text        NOT NULL,
                failures   bigint      NOT NULL,
                PRIMARY KEY (series_id, minute, error_code)
            );
            CREATE INDEX analytics_errors_minute ON analytics_errors USING brin (minute);
            CREATE TABLE analytics_latency (
                series_id integer     NOT NULL REFERENCES analytics_series (id),
                minute    timestamptz NOT NULL,
                hop       text        NOT NULL,
                bucket    integer     NOT NULL,
                samples   bigint      NOT NULL,
                PRIMARY KEY (series_id, minute, hop, bucket)
            );
            CREATE INDEX analytics_latency_minute ON analytics_latency USING brin (minute);
            CREATE TABLE analytics_conversations (
                tenant_id       text        NOT NULL,
                conversation_id text        NOT NULL,
                started         timestamptz NOT NULL,
                answered        boolean     NOT NULL,
                handed_off      boolean     NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            );
            CREATE INDEX analytics_conversations_started ON analytics_conversations (tenant_id, started);
            """),
        // Rebuilds run in the background of the replica that got the command; their progress is here, so any
        // replica answers `rebuild-status`. A running row whose heartbeat stopped was abandoned (its replica
        // stopped; the rebuild's transaction rolled back, nothing changed).
        Migration(version: 2, name: "rebuild jobs", sql: """
            CREATE TABLE analytics_rebuilds (
                id             bigserial   PRIMARY KEY,
                requested_by   text        NOT NULL,
                from_minute    timestamptz,
                state          text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
                first_sequence bigint      NOT NULL DEFAULT 0,
                last_sequence  bigint      NOT NULL DEFAULT 0,
                replayed       bigint      NOT NULL DEFAULT 0,
                folded         bigint      NOT NULL DEFAULT 0,
                failure        text        NOT NULL DEFAULT '',
                started_at     timestamptz NOT NULL DEFAULT now(),
                heartbeat_at   timestamptz NOT NULL DEFAULT now(),
                finished_at    timestamptz
            );
            """),
        // The ledger of applied sequences: a row per batch, kind and minute instead of a row per event (docs/adr/
        // 0015). Sequences applied before are kept, as rows of kind `any` per minute, which every kind's check
        // reads, until pruning drops them.
        Migration(version: 3, name: "applied sequences per batch", sql: """
            CREATE TABLE analytics_applied_batches (
                kind      text        NOT NULL,
                minute    timestamptz NOT NULL,
                first_seq bigint      NOT NULL,
                last_seq  bigint      NOT NULL,
                seqs      bigint[]    NOT NULL
            );
            INSERT INTO analytics_applied_batches (kind, minute, first_seq, last_seq, seqs)
            SELECT 'any', minute, min(seq), max(seq), array_agg(seq ORDER BY seq) FROM analytics_applied GROUP BY minute;
            DROP TABLE analytics_applied;
            ALTER TABLE analytics_applied_batches RENAME TO analytics_applied;
            CREATE INDEX analytics_applied_range ON analytics_applied (last_seq, first_seq);
            CREATE INDEX analytics_applied_minute ON analytics_applied (minute);
            """),
        // Room on every page for the next versions of its rows: the rollups are updated over and over while their
        // minute lasts, and an update that fits on its page without changing an indexed column touches no index
        // (a heap-only tuple). Applies to pages written from now on.
        Migration(version: 4, name: "rollup pages keep room for updates", sql: """
            ALTER TABLE analytics_minutes SET (fillfactor = 70);
            ALTER TABLE analytics_errors SET (fillfactor = 70);
            ALTER TABLE analytics_latency SET (fillfactor = 70);
            ALTER TABLE analytics_conversations SET (fillfactor = 70);
            """),
    ]
}
