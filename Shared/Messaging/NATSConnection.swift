@preconcurrency import CNats
import Dispatch
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection to NATS (nats.c `natsConnection`), shared by everything in a process.
///
/// `@unchecked Sendable`: nats.c connections are thread-safe; the only Swift state is behind `Mutex`es.
public final class NATSConnection: @unchecked Sendable {
    let handle: OpaquePointer
    /// The options the connection was made from; nats.c reads them while reconnecting.
    private let options: NATSOptionsHandle
    /// Retained for nats.c until its closed callback runs (see `ConnectionEvents.closed`).
    private let events: Unmanaged<ConnectionEvents>
    let logger: Logger
    public let configuration: NATSConfiguration
    let lane: BlockingLane
    private let requests: RequestMultiplexer
    private let closed = Atomic<Bool>(false)
    /// Shared with the event callbacks (which may outlive this object by a moment, see `deinit`).
    private let eventCounts: ConnectionEventCounts

    private init(handle: OpaquePointer, options: NATSOptionsHandle, events: Unmanaged<ConnectionEvents>,
                 configuration: NATSConfiguration, logger: Logger, lane: BlockingLane) throws(NATSError) {
        self.handle = handle
        self.options = options
        self.events = events
        self.configuration = configuration
        self.logger = logger
        self.lane = lane
        self.eventCounts = events.takeUnretainedValue().counts
        self.requests = try RequestMultiplexer(connection: handle, inboxPrefix: configuration.inboxPrefix)
    }

    /// Connects, retrying the initial connect with backoff; after that nats.c reconnects forever.
    public static func connect(_ configuration: NATSConfiguration, logger: Logger) async throws -> NATSConnection {
        let lane = BlockingLane(label: "connection")
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await lane.run { () throws(NATSError) -> NATSConnection in
                    try connectOnce(configuration, logger: logger, lane: lane)
                }
            } catch {
                if let limit = configuration.connectAttempts, attempt >= limit { throw error }
                logger.warning("nats connect failed, retrying", metadata: [
                    "attempt": "\(attempt)", "error": "\(error)",
                ])
                let backoff = min(Double(configuration.reconnectWait.milliseconds) * Double(attempt), 5000)
                try await Task.sleep(for: .milliseconds(Int64(backoff)))
            }
        }
    }

    private static func connectOnce(_ configuration: NATSConfiguration, logger: Logger, lane: BlockingLane)
        throws(NATSError) -> NATSConnection
    {
        // Owned from here on: every early exit below frees it; a connection keeps it until it is gone.
        let options = try NATSOptionsHandle()
        let arena = CStringArena()
        func check(_ s: natsStatus, _ what: String) throws(NATSError) {
            if s != NATS_OK { throw NATSError.fromStatus(s, code: .invalidArgument, context: what) }
        }
        let raw = options.pointer
        try check(natsOptions_SetServers(raw, arena.stringArray(configuration.servers),
                                         Int32(configuration.servers.count)), "setting servers")
        if let user = configuration.user {
            try check(natsOptions_SetUserInfo(raw, user, configuration.password ?? ""), "setting user")
        }
        try check(natsOptions_SetName(raw, configuration.name), "setting name")
        if configuration.inboxPrefix != "_INBOX" {
            guard SubjectValidation.isValidPublishSubject(configuration.inboxPrefix) else {
                throw NATSError(.invalidArgument, context: "invalid inbox prefix")
            }
            try check(natsOptions_SetCustomInboxPrefix(raw, configuration.inboxPrefix), "setting inbox prefix")
        }
        try check(natsOptions_SetMaxReconnect(raw, -1), "setting max reconnect")
        try check(natsOptions_SetReconnectWait(raw, configuration.reconnectWait.milliseconds),
                  "setting reconnect wait")
        try check(natsOptions_SetReconnectJitter(raw, 100, 1000), "setting reconnect jitter")
        try check(natsOptions_SetSendAsap(raw, configuration.sendAsap), "setting send asap")
        try check(natsOptions_SetTimeout(raw, 2000), "setting timeout")
        try check(natsOptions_SetReconnectBufSize(raw, 64 * 1024 * 1024), "setting reconnect buffer")

        // Retained for nats.c: released by the closed callback once a connection exists, by hand before that.
        let events = Unmanaged.passRetained(ConnectionEvents(logger: logger))
        var connection: OpaquePointer?
        do throws(NATSError) {
            let closure = UnsafeMutableRawPointer(events.toOpaque())
            try check(natsOptions_SetDisconnectedCB(raw, ConnectionEvents.disconnected, closure), "disconnected cb")
            try check(natsOptions_SetReconnectedCB(raw, ConnectionEvents.reconnected, closure), "reconnected cb")
            try check(natsOptions_SetClosedCB(raw, ConnectionEvents.closed, closure), "closed cb")
            try check(natsOptions_SetErrorHandler(raw, ConnectionEvents.asyncError, closure), "error handler")
            let status = natsConnection_Connect(&connection, raw)
            guard status == NATS_OK, connection != nil else {
                throw NATSError.fromStatus(status, code: .connectionFailed, context: "connecting")
            }
        } catch {
            events.release()
            throw error
        }
        guard let connection else { throw NATSError(.connectionFailed, context: "connecting") }
        logger.info("nats connected", metadata: ["nats.servers": "\(configuration.servers.count)"])
        do {
            return try NATSConnection(handle: connection, options: options, events: events,
                                      configuration: configuration, logger: logger, lane: lane)
        } catch {
            // Closing the connection fires the closed callback, which releases `events`.
            natsConnection_Destroy(connection)
            throw error
        }
    }

    deinit {
        requests.shutdown()
        if !closed.load(ordering: .acquiring) { natsConnection_Close(handle) }
        natsConnection_Destroy(handle)
        // `options` is destroyed after this (ARC), once the connection is gone.
        // `events` is released by the closed callback: nats.c calls it on its own thread, possibly after
        // this deinit returned, so releasing here would leave it a dangling pointer.
    }

    /// How many times nats.c has reconnected this connection. Server-side state bound to the old connection
    /// (waiting pull requests) is gone after a reconnect; ``ContinuousPull`` watches this to re-issue them.
    public var reconnectCount: Int { eventCounts.reconnects.load(ordering: .acquiring) }

    /// Whether the connection is currently connected (not reconnecting or closed).
    public var isConnected: Bool {
        natsConnection_Status(handle) == NATS_CONN_STATUS_CONNECTED
    }

    /// The last error the server reported on this connection (e.g. `Permissions Violation for Subscription to
    /// "admin.>"`), or nil. Subjects may appear in it; payloads never do.
    public var lastErrorText: String? {
        var text: UnsafePointer<CChar>?
        let status = natsConnection_GetLastError(handle, &text)
        guard status != NATS_OK, let text else { return nil }
        return String(cString: text)
    }

    // MARK: core publish / request

    /// Publishes a core NATS message (fire and forget; buffered by nats.c while reconnecting).
    public func publish(_ subject: String, payload: [UInt8], headers: NATSHeaders = [:], reply: String? = nil)
        throws(NATSError)
    {
        guard SubjectValidation.isValidPublishSubject(subject) else {
            throw NATSError(.invalidArgument, context: "publishing to an invalid subject")
        }
        let msg = try makeCMessage(subject: subject, reply: reply, headers: headers, payload: payload)
        defer { natsMsg_Destroy(msg) }
        let status = natsConnection_PublishMsg(handle, msg)
        if status != NATS_OK {
            throw NATSError.fromStatus(status, code: .publishFailed, context: "publishing")
        }
    }

    /// Sends a request and awaits the first reply. Many requests can be in flight at once; replies are
    /// multiplexed over one wildcard inbox subscription.
    public func request(_ subject: String, payload: [UInt8], headers: NATSHeaders = [:],
                        timeout: Duration? = nil) async throws(NATSError) -> NATSMessage
    {
        guard SubjectValidation.isValidPublishSubject(subject) else {
            throw NATSError(.invalidArgument, context: "requesting on an invalid subject")
        }
        return try await requests.request(subject: subject, headers: headers, payload: payload,
                                          timeout: timeout ?? configuration.requestTimeout)
    }

    /// Flushes pending writes to the server and waits for its acknowledgement.
    public func flush(timeout: Duration = .seconds(5)) async throws(NATSError) {
        let handle = SendablePointer(self.handle)
        let millis = timeout.milliseconds
        try await lane.run { () throws(NATSError) in
            let status = natsConnection_FlushTimeout(handle.pointer, millis)
            if status != NATS_OK { throw NATSError.fromStatus(status, code: .timeout, context: "flushing") }
        }
    }

    // MARK: subscriptions

    /// Subscribes (optionally in a queue group) and returns a subscription whose `messages` stream yields
    /// copies of every message. Cancel by calling `unsubscribe()` or dropping the subscription.
    public func subscribe(_ subject: String, queue: String? = nil) throws(NATSError) -> NATSSubscription {
        try NATSSubscription(connection: self, subject: subject, queue: queue)
    }

    /// Drains subscriptions and pending publishes, then closes the connection.
    public func drainAndClose(timeout: Duration = .seconds(10)) async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        requests.shutdown()
        let handle = SendablePointer(self.handle)
        let millis = timeout.milliseconds
        await lane.run {
            if natsConnection_DrainTimeout(handle.pointer, millis) == NATS_OK {
                // Drain closes the connection asynchronously; wait until it's closed.
                var waited: Int64 = 0
                while natsConnection_Status(handle.pointer) != NATS_CONN_STATUS_CLOSED && waited < millis {
                    usleep(10_000)
                    waited += 10
                }
            }
            natsConnection_Close(handle.pointer)
        }
    }

    /// Closes at once (pending writes are flushed best effort).
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        requests.shutdown()
        natsConnection_Close(handle)
    }
}

/// Owns a nats.c `natsOptions`, destroyed in `deinit`.
///
/// `@unchecked Sendable`: set up on one thread before the connection exists, read-only afterwards.
final class NATSOptionsHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    init() throws(NATSError) {
        var options: OpaquePointer?
        let status = natsOptions_Create(&options)
        guard status == NATS_OK, let options else {
            throw NATSError.fromStatus(status, code: .connectionFailed, context: "creating options")
        }
        pointer = options
    }

    deinit { natsOptions_Destroy(pointer) }
}

/// Counts of connection events, shared by the callbacks and the connection.
final class ConnectionEventCounts: Sendable {
    let reconnects = Atomic<Int>(0)
}

/// Connection event callbacks: logged (never touching payloads) and counted.
final class ConnectionEvents: Sendable {
    let logger: Logger
    let counts = ConnectionEventCounts()
    init(logger: Logger) { self.logger = logger }

    static let disconnected: natsConnectionHandler = { _, closure in
        guard let closure else { return }
        Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().logger.warning("nats disconnected")
    }
    static let reconnected: natsConnectionHandler = { _, closure in
        guard let closure else { return }
        let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
        events.counts.reconnects.add(1, ordering: .releasing)
        events.logger.info("nats reconnected")
    }
    /// The last callback nats.c makes for a connection: it takes back the retain made at connect.
    static let closed: natsConnectionHandler = { _, closure in
        guard let closure else { return }
        let events = Unmanaged<ConnectionEvents>.fromOpaque(closure).takeRetainedValue()
        events.logger.info("nats connection closed")
    }
    static let asyncError: natsErrHandler = { _, _, status, closure in
        guard let closure else { return }
        Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().logger.error(
            "nats async error", metadata: ["nats.status": "\(String(cString: natsStatus_GetText(status)))"])
    }
}
