import Logging
import Messaging
import ServiceLifecycle
import Synchronization

/// Counts live gateway replicas so per-key rate limits hold across them (docs/adr/0006): every replica
/// announces itself on `gw.heartbeat` each `interval`; each replica counts the distinct instances heard within
/// `3 × interval` and gives the limiter its share (`limit / replicas`).
public struct ReplicaHeartbeatService: Service {
    public static let subject = "gw.heartbeat"
    let connection: NATSConnection
    let instanceID: String
    let limiter: RateLimiterRegistry
    let interval: Duration
    let logger: Logger

    public init(connection: NATSConnection, instanceID: String, limiter: RateLimiterRegistry,
                interval: Duration = .seconds(1), logger: Logger) {
        self.connection = connection
        self.instanceID = instanceID
        self.limiter = limiter
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        let subscription = try connection.subscribe(Self.subject)
        defer { subscription.unsubscribe() }
        let seen = LastSeen()
        let window = interval * 3
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in subscription.messages {
                    let id = String(decoding: message.payload, as: UTF8.self)
                    seen.entries.withLock { $0[id] = .now }
                }
            }
            let connection = self.connection, instanceID = self.instanceID, limiter = self.limiter
            let interval = self.interval, logger = self.logger
            group.addTask {
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    try? connection.publish(Self.subject, payload: Array(instanceID.utf8))
                    // A shutdown ends the wait at once (graceful shutdown is not cancellation).
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
                    let now = ContinuousClock.now
                    let live = seen.entries.withLock { entries -> Int in
                        entries = entries.filter { now - $0.value <= window }
                        return entries.count
                    }
                    if live != limiter.replicaCount {
                        logger.info("gateway replicas changed", metadata: ["replicas": "\(max(live, 1))"])
                        limiter.setReplicaCount(max(live, 1))
                    }
                }
                subscription.unsubscribe()
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// When each gateway instance was last heard from.
final class LastSeen: Sendable {
    let entries = Mutex<[String: ContinuousClock.Instant]>([:])
}
