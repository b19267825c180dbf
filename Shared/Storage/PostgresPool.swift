import Logging
import Synchronization

/// A small connection pool.
///
/// - Opens connections lazily, up to `configuration.poolSize`.
/// - Callers that find no free connection wait in FIFO order; a returned connection goes straight
///   to the longest waiter. Waiting is cancellable.
/// - A connection that is broken (`PQstatus != CONNECTION_OK`, e.g. its backend was terminated) or
///   left inside a transaction is discarded on return or before reuse, and a new one is opened
///   when needed. The operation that hit the broken connection fails with a retriable error; the
///   next one gets a healthy connection.
///
/// All state lives in one `Mutex`; connections do their blocking work on their own queues.
public final class PostgresPool: Sendable {
    public let configuration: PostgresConfiguration
    let logger: Logger
    private let state: Mutex<State>

    private enum Lease {
        case connection(PostgresConnection)
        /// A slot was handed over: open a new connection in it.
        case openSlot
    }

    private struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<Lease, any Error>
    }

    private struct State {
        var idle: [PostgresConnection] = []
        /// Connections open, leased or being opened (slots in use).
        var slots = 0
        var waiters: [Waiter] = []
        var nextWaiterID = 0
        var closed = false
    }

    /// Creates a pool; nothing connects until the first use. Throws when the configuration is invalid.
    public init(configuration: PostgresConfiguration, logger: Logger = Logger(label: "switchyard.storage")) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        self.state = Mutex(State())
    }

    // MARK: - Public API

    /// The pool's state for metrics: its size, connections leased, idle and being opened, and callers waiting.
    public struct Statistics: Sendable, Equatable {
        public var size: Int
        public var inUse: Int
        public var idle: Int
        public var waiting: Int
    }

    public var statistics: Statistics {
        state.withLock { state in
            Statistics(size: configuration.poolSize, inUse: state.slots - state.idle.count, idle: state.idle.count,
                       waiting: state.waiters.count)
        }
    }

    /// Leases a connection for the duration of `body`, then returns it to the pool.
    public func withConnection<T>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await lease()
        let result: T
        do {
            result = try await body(connection)
        } catch {
            release(connection)
            throw error
        }
        release(connection)
        return result
    }

    /// Runs one statement and returns its rows.
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> [PostgresRow] {
        try await withConnection { try await $0.query(sql, parameters) }
    }

    /// Runs one statement and returns the number of affected rows.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int {
        try await withConnection { try await $0.execute(sql, parameters) }
    }

    /// Runs `body` in a transaction on one leased connection (`BEGIN`, `COMMIT`; `ROLLBACK` when it throws).
    public func transaction<T>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try await connection.transaction(isolation: isolation, body)
        }
    }

    /// Runs `sql` once per row through libpq pipeline mode, all in one transaction; returns the
    /// total of affected rows. All rows are validated before anything is sent.
    public func batchExecute(_ sql: String, rows: [[PostgresValue]]) async throws -> Int {
        try await withConnection { try await $0.batchExecute(sql, rows: rows) }
    }

    /// `SELECT 1` on a pooled connection.
    public func healthCheck() async -> Bool {
        do {
            let rows = try await query("SELECT 1 AS ok")
            return try rows.first?.decode(Int.self, at: 0) == 1
        } catch {
            return false
        }
    }

    /// Closes idle connections and fails waiting and future callers with `.poolClosed`. Leased
    /// connections are closed when they come back.
    public func close() async {
        let (idle, waiters) = state.withLock { s -> ([PostgresConnection], [Waiter]) in
            s.closed = true
            defer {
                s.slots -= s.idle.count
                s.idle = []
                s.waiters = []
            }
            return (s.idle, s.waiters)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: Self.closedError) }
        for connection in idle { await connection.close() }
    }

    // MARK: - Leasing

    private static let closedError = PostgresError(code: .poolClosed, message: "the connection pool is closed")

    private enum Action {
        case use(PostgresConnection)
        case open
        case wait
        case fail
    }

    private func lease() async throws -> PostgresConnection {
        while true {
            let action = state.withLock { s -> Action in
                if s.closed { return .fail }
                if let connection = s.idle.popLast() { return .use(connection) }
                if s.slots < configuration.poolSize {
                    s.slots += 1
                    return .open
                }
                return .wait
            }
            switch action {
            case .fail:
                throw Self.closedError
            case .use(let connection):
                if connection.isReusable() { return connection }
                logger.debug("discarding broken idle connection", metadata: ["backend.pid": "\(connection.backendPID)"])
                discard(connection)
                continue
            case .open:
                return try await openInSlot()
            case .wait:
                switch try await waitForLease() {
                case .connection(let connection):
                    if connection.isReusable() { return connection }
                    discard(connection)
                    continue
                case .openSlot:
                    return try await openInSlot()
                }
            }
        }
    }

    /// Opens a connection in a slot already counted in `slots`; gives the slot back on failure.
    private func openInSlot() async throws -> PostgresConnection {
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, logger: logger)
            logger.debug("opened connection", metadata: ["backend.pid": "\(connection.backendPID)"])
            return connection
        } catch {
            freeSlot()
            throw error
        }
    }

    private func waitForLease() async throws -> Lease {
        let id = state.withLock { s -> Int in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                let immediate: (any Error)? = state.withLock { s in
                    if s.closed { return Self.closedError }
                    if Task.isCancelled { return CancellationError() }
                    s.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let immediate { continuation.resume(throwing: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> Waiter? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Returns a leased connection: to the first waiter, to the idle list, or discarded when broken.
    private func release(_ connection: PostgresConnection) {
        let reusable = connection.isReusable()
        enum Outcome { case handedOver(Waiter), kept, drop }
        let outcome = state.withLock { s -> Outcome in
            if s.closed || !reusable { return .drop }
            if !s.waiters.isEmpty { return .handedOver(s.waiters.removeFirst()) }
            s.idle.append(connection)
            return .kept
        }
        switch outcome {
        case .handedOver(let waiter):
            waiter.continuation.resume(returning: .connection(connection))
        case .kept:
            break
        case .drop:
            if !reusable {
                logger.debug("discarding broken connection", metadata: ["backend.pid": "\(connection.backendPID)"])
            }
            discard(connection)
        }
    }

    /// Drops a connection (closed in its `deinit`) and frees its slot.
    private func discard(_ connection: PostgresConnection) {
        freeSlot()
    }

    /// Frees one slot, or hands it to the first waiter so that waiter opens a connection.
    private func freeSlot() {
        let waiter = state.withLock { s -> Waiter? in
            if !s.closed, !s.waiters.isEmpty { return s.waiters.removeFirst() }
            s.slots -= 1
            return nil
        }
        waiter?.continuation.resume(returning: .openSlot)
    }
}
