import Contracts
import KnowledgeBase
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Synchronization

/// Per-tenant BM25 indexes over the knowledge base, reloaded from PostgreSQL at most every `ttl`. While
/// PostgreSQL can't be reached, the last complete index keeps serving; a tenant without one gets an error.
public final class KnowledgeCache: Sendable {
    private struct State {
        var indexes: [String: (index: KnowledgeIndex, loaded: ContinuousClock.Instant)] = [:]
        /// Bumped by every invalidation, so a load that started before one doesn't store a stale index.
        var generations: [String: UInt64] = [:]
    }

    private let store: KnowledgeStore
    private let ttl: Duration
    private let state = Mutex(State())

    public init(store: KnowledgeStore, ttl: Duration = .seconds(5)) {
        self.store = store
        self.ttl = ttl
    }

    public func index(tenant: String) async throws -> KnowledgeIndex {
        let now = ContinuousClock.now
        let (cached, generation) = state.withLock { ($0.indexes[tenant], $0.generations[tenant] ?? 0) }
        if let cached, now - cached.loaded < ttl { return cached.index }
        let index: KnowledgeIndex
        do {
            index = KnowledgeIndex(entries: try await store.entries(tenant: tenant))
        } catch {
            // PostgreSQL unreachable: a complete index loaded a little earlier is still a real knowledge base;
            // without one, the caller fails the request rather than answer from nothing.
            if let cached { return cached.index }
            throw error
        }
        state.withLock { state in
            if (state.generations[tenant] ?? 0) == generation { state.indexes[tenant] = (index, now) }
        }
        return index
    }

    /// Drops a tenant's index so the next request reloads it (after a knowledge-base change).
    public func invalidate(tenant: String) {
        state.withLock { state in
            state.indexes.removeValue(forKey: tenant)
            state.generations[tenant, default: 0] &+= 1
        }
    }
}

/// Invalidates `KnowledgeCache` entries when the tenant service reports a knowledge-base change
/// (`evt.tenant.changed.<tenant>`, change `knowledge` or `deleted`), so edits apply at once instead of after
/// the cache's TTL (which remains the fallback if an event is missed).
public struct KnowledgeInvalidationService: Service {
    let connection: NATSConnection
    let cache: KnowledgeCache
    let logger: Logger

    public init(connection: NATSConnection, cache: KnowledgeCache, logger: Logger) {
        self.connection = connection
        self.cache = cache
        self.logger = logger
    }

    public func run() async throws {
        let subscription = try connection.subscribe(Subjects.event(.tenantChanged, tenant: "*"))
        try? await cancelWhenGracefulShutdown {
            for await message in subscription.messages {
                guard let changed = try? TenantChanged(protobuf: message.payload),
                      let tenant = changed.meta?.tenantID, ["knowledge", "deleted"].contains(changed.change)
                else { continue }
                cache.invalidate(tenant: tenant)
            }
        }
        subscription.unsubscribe()
    }
}
