import Logging
import Storage
import Synchronization

/// Billing's price table, read-only: analytics prices tokens with the same versions billing bills with (the
/// price of the provider and model in effect when the request occurred, rounded like billing's ledger), so that
/// there is one source of truth for prices. Reloaded every few seconds; a model without a price is counted as
/// unpriced rather than costing zero. Without billing's table (billing not deployed yet) everything is unpriced.
public final class PriceBook: Sendable {
    struct Version: Sendable {
        var effectiveFromUnixNanos: Int64
        var inputMicrosPerMillion: Int64
        var outputMicrosPerMillion: Int64
    }

    private struct State: Sendable {
        var versions: [String: [Version]] = [:]   // "provider\u{0}model" → versions, newest first
        var loadedAt: ContinuousClock.Instant?
    }

    private let pool: PostgresPool
    private let refresh: Duration
    private let state = Mutex(State())

    public init(pool: PostgresPool, refresh: Duration = .seconds(5)) {
        self.pool = pool
        self.refresh = refresh
    }

    /// Reloads the table when it is older than the refresh interval.
    func refreshIfStale() async throws {
        let now = ContinuousClock.now
        let stale = state.withLock { state in state.loadedAt.map { now - $0 >= refresh } ?? true }
        if stale { try await load() }
    }

    /// Loads the whole table now (e.g. before a rebuild, so it prices with the latest versions).
    public func load() async throws {
        let exists = try await pool.query("SELECT to_regclass('billing_prices') IS NOT NULL")
        var versions: [String: [Version]] = [:]
        if try exists.first?.decode(Bool.self, at: 0) == true {
            let rows = try await pool.query("""
                SELECT provider, model, (extract(epoch FROM effective_from) * 1e9)::bigint,
                       input_micros_per_million, output_micros_per_million
                FROM billing_prices ORDER BY provider, model, effective_from DESC
                """)
            for row in rows {
                let key = try row.decode(String.self, at: 0) + "\u{0}" + (try row.decode(String.self, at: 1))
                versions[key, default: []].append(Version(
                    effectiveFromUnixNanos: try row.decode(Int64.self, at: 2),
                    inputMicrosPerMillion: try row.decode(Int64.self, at: 3),
                    outputMicrosPerMillion: try row.decode(Int64.self, at: 4)))
            }
        }
        let loaded = versions
        state.withLock { $0 = State(versions: loaded, loadedAt: ContinuousClock.now) }
    }

    /// The cost in micro-units, or nil when no price was in effect for that provider and model at that time.
    func cost(provider: String, model: String, atUnixNanos: Int64, promptTokens: Int64,
              completionTokens: Int64) -> Int64? {
        let version = state.withLock { state in
            state.versions[provider + "\u{0}" + model]?.first { $0.effectiveFromUnixNanos <= atUnixNanos }
        }
        guard let version else { return nil }
        // Billing's rounding: (tokens × price per million + 500,000) / 1,000,000.
        return (promptTokens * version.inputMicrosPerMillion + completionTokens * version.outputMicrosPerMillion
                + 500_000) / 1_000_000
    }
}
