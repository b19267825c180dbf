import KnowledgeBase
import Logging
import Schemas
import Storage

/// The orchestrator's PostgreSQL state: conversation history and consent decisions (the knowledge base is
/// `KnowledgeBase.KnowledgeStore`). Every query filters by tenant; every write is idempotent (keyed by request id), so a
/// redelivered task never duplicates a turn.
public struct OrchestratorStore: Sendable {
    public let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    public static let migrations: [Migration] = [
        Migration(version: 2, name: "conversation turns", sql: """
            CREATE TABLE conversation_turns (
                tenant_id       text        NOT NULL,
                conversation_id text        NOT NULL,
                request_id      text        NOT NULL,
                seq             smallint    NOT NULL,
                role            text        NOT NULL,
                content         text        NOT NULL,
                agent           text        NOT NULL DEFAULT '',
                created_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, conversation_id, request_id, seq)
            );
            CREATE INDEX conversation_turns_recent ON conversation_turns (tenant_id, conversation_id, created_at DESC);
            """),
        Migration(version: 3, name: "consent", sql: """
            CREATE TABLE consent_decisions (
                tenant_id       text        NOT NULL,
                conversation_id text        NOT NULL,
                granted         boolean     NOT NULL,
                decided_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, conversation_id)
            );
            """),
    ]

    public func migrate(logger: Logger) async throws {
        try await Storage.migrate(pool: pool, service: "orchestrator", migrations: Self.migrations, logger: logger)
    }

    // MARK: conversations

    /// The last `limit` turns of a conversation, oldest first.
    public func history(tenant: String, conversation: String, limit: Int) async throws -> [ChatMessage] {
        let rows = try await pool.query("""
            SELECT role, content FROM (
                SELECT role, content, created_at, seq FROM conversation_turns
                WHERE tenant_id = $1 AND conversation_id = $2
                ORDER BY created_at DESC, seq DESC LIMIT $3) recent
            ORDER BY created_at ASC, seq ASC
            """, [.text(tenant), .text(conversation), .int64(Int64(limit))])
        return try rows.map {
            ChatMessage(role: try $0.decode(String.self, column: "role"),
                        content: try $0.decode(String.self, column: "content"))
        }
    }

    /// Records the user's message and the answer of one request; a redelivery writes nothing new.
    public func recordTurn(tenant: String, conversation: String, requestID: String, user: String,
                           assistant: String, agent: String) async throws {
        _ = try await pool.batchExecute("""
            INSERT INTO conversation_turns (tenant_id, conversation_id, request_id, seq, role, content, agent)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
            """, rows: [
                [.text(tenant), .text(conversation), .text(requestID), .int32(0), .text("user"), .text(user),
                 .text(agent)],
                [.text(tenant), .text(conversation), .text(requestID), .int32(1), .text("assistant"),
                 .text(assistant), .text(agent)],
            ])
    }

    /// Whether the conversation's owner may read it: a tenant only ever sees its own conversations.
    public func conversationExists(tenant: String, conversation: String) async throws -> Bool {
        try await !pool.query(
            "SELECT 1 FROM conversation_turns WHERE tenant_id = $1 AND conversation_id = $2 LIMIT 1",
            [.text(tenant), .text(conversation)]).isEmpty
    }

    // MARK: consent

    public func consent(tenant: String, conversation: String) async throws -> Bool? {
        let rows = try await pool.query(
            "SELECT granted FROM consent_decisions WHERE tenant_id = $1 AND conversation_id = $2",
            [.text(tenant), .text(conversation)])
        return try rows.first?.decode(Bool.self, column: "granted")
    }

    public func recordConsent(tenant: String, conversation: String, granted: Bool) async throws {
        _ = try await pool.execute("""
            INSERT INTO consent_decisions (tenant_id, conversation_id, granted) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET granted = EXCLUDED.granted, decided_at = now()
            """, [.text(tenant), .text(conversation), .bool(granted)])
    }
}
