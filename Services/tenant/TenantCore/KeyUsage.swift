import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import Storage

/// Maintains `api_keys.last_used_at` from the event log (`evt.chat.requested.*` carries the key id). Uses are
/// group-committed: every message of a fetched batch joins the next flush (one UPDATE for all of them) and is
/// acked only after that UPDATE committed, so the hot path costs one statement per batch, not per request.
public actor KeyUsageRecorder {
    private let pool: PostgresPool
    private let delay: Duration
    private var pending: [TenantStore.KeyUse: Int64] = [:]
    private var waiters: [CheckedContinuation<Void, any Error>] = []
    private var scheduled = false

    public init(pool: PostgresPool, delay: Duration = .milliseconds(100)) {
        self.pool = pool
        self.delay = delay
    }

    /// The consumer's handler (`Consumers.tenantKeyUsage`): records the use and returns once it is committed.
    public nonisolated func handle(_ request: ChatRequested, _ context: EventContext) async throws {
        guard !request.apiKeyID.isEmpty else { return }
        try await record(TenantStore.KeyUse(tenant: context.tenant, keyID: request.apiKeyID),
                         at: context.meta.occurredAtUnixNanos)
    }

    func record(_ use: TenantStore.KeyUse, at unixNanos: Int64) async throws {
        pending[use] = max(pending[use] ?? 0, unixNanos)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            waiters.append(continuation)
            if !scheduled {
                scheduled = true
                Task { await self.flush() }
            }
        }
    }

    private func flush() async {
        try? await Task.sleep(for: delay)
        let batch = pending
        let resumed = waiters
        pending = [:]
        waiters = []
        scheduled = false
        do {
            try await TenantStore.markUsed(batch, on: pool)
            for waiter in resumed { waiter.resume() }
        } catch {
            for waiter in resumed { waiter.resume(throwing: error) }
        }
    }
}
