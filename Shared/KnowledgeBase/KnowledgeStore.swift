import Logging
import Schemas
import Storage

/// Tenants' knowledge-base entries in PostgreSQL (written by the tenant service and the demo seed, read by the
/// orchestrator's `local` agent). Every query filters by tenant.
public struct KnowledgeStore: Sendable {
    public let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    public static let migrations: [Migration] = [
        Migration(version: 1, name: "knowledge base", sql: """
            CREATE TABLE knowledge_entries (
                tenant_id  text        NOT NULL,
                id         text        NOT NULL,
                title      text        NOT NULL,
                content    text        NOT NULL,
                language   text        NOT NULL DEFAULT '',
                tags       text        NOT NULL DEFAULT '',
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, id)
            );
            """),
    ]

    public func migrate(logger: Logger) async throws {
        try await Storage.migrate(pool: pool, service: "knowledge", migrations: Self.migrations, logger: logger)
    }

    /// Columns every knowledge query selects (decode with `entry(_:tenant:)`).
    public static let columns = "id, title, content, language, tags"

    /// One row of `columns` as an entry of `tenant`.
    public static func entry(_ row: PostgresRow, tenant: String) throws -> KnowledgeEntry {
        KnowledgeEntry(
            id: try row.decode(String.self, column: "id"), tenantID: tenant,
            title: try row.decode(String.self, column: "title"),
            content: try row.decode(String.self, column: "content"),
            language: try row.decode(String.self, column: "language"),
            tags: try row.decode(String.self, column: "tags").split(separator: ",").map(String.init))
    }

    /// Insert-or-replace of one entry; parameters from `upsertParameters(_:tenant:)`.
    public static let upsertSQL = """
        INSERT INTO knowledge_entries (tenant_id, id, title, content, language, tags) VALUES ($1,$2,$3,$4,$5,$6)
        ON CONFLICT (tenant_id, id) DO UPDATE SET title = EXCLUDED.title, content = EXCLUDED.content,
            language = EXCLUDED.language, tags = EXCLUDED.tags, updated_at = now()
        """

    public static func upsertParameters(_ entry: KnowledgeEntry, tenant: String) -> [PostgresValue] {
        [.text(tenant), .text(entry.id), .text(entry.title), .text(entry.content), .text(entry.language),
         .text(entry.tags.joined(separator: ","))]
    }

    public func entries(tenant: String) async throws -> [KnowledgeEntry] {
        try await pool.query("SELECT \(Self.columns) FROM knowledge_entries WHERE tenant_id = $1 ORDER BY id",
                             [.text(tenant)]).map { try Self.entry($0, tenant: tenant) }
    }

    public func upsert(_ entries: [KnowledgeEntry], tenant: String) async throws {
        guard !entries.isEmpty else { return }
        _ = try await pool.batchExecute(Self.upsertSQL, rows: entries.map { Self.upsertParameters($0, tenant: tenant) })
    }
}
