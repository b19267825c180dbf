/// How to reach PostgreSQL and how to size the pool.
public struct PostgresConfiguration: Sendable {
    /// A libpq connection string: URL (`postgresql://user@host:port/db`) or `key=value` conninfo.
    /// Default: `postgresql://postgres@127.0.0.1:5432/switchyard`.
    public var connectionString: String
    /// Maximum number of connections the pool opens (lazily). Default: 4.
    public var poolSize: Int
    /// Timeout for establishing one connection (libpq `connect_timeout`, whole seconds, min 2).
    /// Default: 10 s.
    public var connectTimeout: Duration
    /// Server-side `statement_timeout` set on every connection; `nil` keeps the server's setting
    /// (normally no limit). Default: `nil`.
    public var statementTimeout: Duration?
    /// `application_name` reported to the server (shows in `pg_stat_activity`). Default: "switchyard".
    public var applicationName: String
    /// Prepared statements cached per connection (keyed by SQL and parameter types); statements
    /// beyond the capacity run unprepared. Default: 256.
    public var statementCacheCapacity: Int
    /// Rows per pipeline sync in `batchExecute` (bounds memory for large batches). Default: 1000.
    public var pipelineChunkSize: Int

    public init(
        connectionString: String = "postgresql://postgres@127.0.0.1:5432/switchyard",
        poolSize: Int = 4,
        connectTimeout: Duration = .seconds(10),
        statementTimeout: Duration? = nil,
        applicationName: String = "switchyard",
        statementCacheCapacity: Int = 256,
        pipelineChunkSize: Int = 1000
    ) {
        self.connectionString = connectionString
        self.poolSize = poolSize
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
        self.applicationName = applicationName
        self.statementCacheCapacity = statementCacheCapacity
        self.pipelineChunkSize = pipelineChunkSize
    }

    /// Throws `.invalidParameter` when a value is out of range.
    public func validate() throws(PostgresError) {
        guard poolSize >= 1 else {
            throw PostgresError(code: .invalidParameter, message: "poolSize must be at least 1")
        }
        guard pipelineChunkSize >= 1 else {
            throw PostgresError(code: .invalidParameter, message: "pipelineChunkSize must be at least 1")
        }
        guard statementCacheCapacity >= 0 else {
            throw PostgresError(code: .invalidParameter, message: "statementCacheCapacity must not be negative")
        }
        guard !connectionString.utf8.contains(0), !applicationName.utf8.contains(0) else {
            throw PostgresError(code: .invalidParameter, message: "connection settings must not contain NUL")
        }
    }

    var connectTimeoutSeconds: Int {
        max(2, Int(connectTimeout.components.seconds))
    }

    var statementTimeoutMilliseconds: Int? {
        guard let statementTimeout else { return nil }
        let c = statementTimeout.components
        return max(1, Int(c.seconds) * 1000 + Int(c.attoseconds / 1_000_000_000_000_000))
    }
}
