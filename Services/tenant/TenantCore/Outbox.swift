import Contracts
import Logging
import Messaging
import Schemas
import Security
import ServiceLifecycle
import Storage

/// Publishes the events a committed change left in the `outbox` table to the event log, then deletes them.
/// `Nats-Msg-Id` is `<tenant>:<event id>`, so publishing the same row twice (a crash between publish and
/// delete, two replicas sweeping) is stored once.
public struct Outbox: Sendable {
    let pool: PostgresPool
    let jetStream: JetStream
    let logger: Logger

    public init(pool: PostgresPool, jetStream: JetStream, logger: Logger) {
        self.pool = pool
        self.jetStream = jetStream
        self.logger = logger
    }

    static func event(_ kind: Subjects.EventKind, tenant: String, eventID: String, payload: [UInt8]) -> OutboxEvent {
        OutboxEvent(subject: Subjects.event(kind, tenant: tenant), messageID: "\(tenant):\(eventID)",
                    eventType: kind.protoName, payload: payload)
    }

    /// Publishes right after a commit; failures are left to the sweep (the rows stay).
    func publish(_ events: [OutboxEvent]) async {
        var published: [Int64] = []
        for event in events {
            do {
                try await jetStream.publish(OutboundMessage(
                    subject: event.subject, payload: event.payload, headers: [Headers.eventType: event.eventType],
                    messageID: event.messageID))
                published.append(event.id)
            } catch {
                logger.warning("event publish failed; the outbox sweep retries",
                               metadata: ["subject": "\(event.subject)", "error": "\(error)"])
            }
        }
        guard !published.isEmpty else { return }
        do {
            _ = try await pool.execute("DELETE FROM outbox WHERE id = ANY (string_to_array($1, ',')::bigint[])",
                                       [.text(published.map(String.init).joined(separator: ","))])
        } catch {
            logger.warning("outbox cleanup failed; the sweep re-publishes (de-duplicated)", metadata: ["error": "\(error)"])
        }
    }

    /// Publishes rows older than `minimumAge` (left by a crash or a NATS outage). Returns how many.
    @discardableResult
    public func sweep(minimumAge: Duration = .seconds(5), limit: Int = 200) async throws -> Int {
        let cutoff = EventClock.nowUnixNanos() - minimumAge.nanosecondsValue
        return try await pool.transaction { connection in
            let rows = try await connection.query("""
                SELECT id, subject, msg_id, event_type, encode(payload, 'hex') AS payload FROM outbox
                WHERE created_at_unix_nanos <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
                """, [.int64(cutoff), .int(limit)])
            var done: [Int64] = []
            for row in rows {
                let event = OutboxEvent(
                    id: try row.decode(Int64.self, column: "id"), subject: try row.decode(String.self, column: "subject"),
                    messageID: try row.decode(String.self, column: "msg_id"),
                    eventType: try row.decode(String.self, column: "event_type"),
                    payload: Hex.decode(try row.decode(String.self, column: "payload")) ?? [])
                do {
                    try await jetStream.publish(OutboundMessage(
                        subject: event.subject, payload: event.payload, headers: [Headers.eventType: event.eventType],
                        messageID: event.messageID))
                } catch {
                    // Keep what was published so far deleted; the rest waits for the next sweep, in order.
                    logger.warning("outbox publish failed; retrying at the next sweep",
                                   metadata: ["subject": "\(event.subject)", "error": "\(error)"])
                    break
                }
                done.append(event.id)
            }
            if !done.isEmpty {
                _ = try await connection.execute(
                    "DELETE FROM outbox WHERE id = ANY (string_to_array($1, ',')::bigint[])",
                    [.text(done.map(String.init).joined(separator: ","))])
            }
            return done.count
        }
    }
}

/// Runs `Outbox.sweep` every `interval` until shutdown.
public struct OutboxSweepService: Service {
    let outbox: Outbox
    let interval: Duration

    public init(outbox: Outbox, interval: Duration = .seconds(2)) {
        self.outbox = outbox
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let count = try await outbox.sweep()
                if count > 0 { outbox.logger.notice("outbox sweep published events", metadata: ["count": "\(count)"]) }
            } catch {
                outbox.logger.warning("outbox sweep failed", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
