@preconcurrency import CNats
import Foundation
import Logging
import Synchronization

/// A stream to provision. Created idempotently by the service that owns it (see docs/adr/0002).
public struct StreamSpec: Sendable, Equatable {
    public enum Retention: Sendable { case limits, workQueue }
    public enum Storage: Sendable { case file, memory }

    public var name: String
    public var subjects: [String]
    public var retention: Retention
    public var storage: Storage
    public var replicas: Int
    /// 0 = unlimited.
    public var maxAge: Duration
    public var maxBytes: Int64
    public var maxMessageSize: Int32
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    public var duplicateWindow: Duration
    public var denyDelete: Bool
    public var denyPurge: Bool

    public init(name: String, subjects: [String], retention: Retention = .limits, storage: Storage = .file,
                replicas: Int = 1, maxAge: Duration = .zero, maxBytes: Int64 = -1,
                maxMessageSize: Int32 = 1 << 20, duplicateWindow: Duration = .seconds(120),
                denyDelete: Bool = false, denyPurge: Bool = false) {
        self.name = name
        self.subjects = subjects
        self.retention = retention
        self.storage = storage
        self.replicas = replicas
        self.maxAge = maxAge
        self.maxBytes = maxBytes
        self.maxMessageSize = maxMessageSize
        self.duplicateWindow = duplicateWindow
        self.denyDelete = denyDelete
        self.denyPurge = denyPurge
    }
}

/// A durable pull consumer to provision, always with explicit acks, MaxDeliver, AckWait and backoff.
public struct ConsumerSpec: Sendable, Equatable {
    public var durable: String
    public var filterSubject: String?
    /// How long the server waits for an ack before redelivering (a fetched message whose holder died).
    public var ackWait: Duration
    /// Deliveries before the server gives up; the consume loop dead-letters the last failing delivery.
    public var maxDeliver: Int
    /// Delays the consume loop uses when it naks a failed delivery (entry n-1 after the n-th delivery, the
    /// last entry after that): exponential by default.
    public var backoff: [Duration]
    /// Server-side redelivery delays after a *missing* ack. Empty by default, because nats-server then
    /// replaces AckWait by the first entry (see docs/adr/0004).
    public var ackTimeoutBackoff: [Duration]
    /// Unacknowledged messages the server lets the durable have out at once (all replicas together): size it
    /// for throughput × latency of the slowest handler, or it caps throughput.
    public var maxAckPending: Int
    /// Where a durable starts when it is created. Never changed afterwards (the server refuses to), so a
    /// recreated durable starts again by this policy.
    public var start: StartPolicy

    /// Where a new durable starts reading its stream.
    public enum StartPolicy: Sendable, Equatable {
        /// From the first message the stream still holds (work-queue streams, replays into empty tables).
        case all
        /// Only messages stored after the durable was created.
        case new
        /// Messages stored within `window` before the durable was created: a durable recreated on a long event
        /// log picks up what is still worth handling instead of replaying the whole log. Resolved to a start
        /// sequence when the durable is created.
        case recent(Duration)
        /// From this stream sequence on (a replay of a known range, e.g. an analytics rebuild).
        case sequence(UInt64)
    }

    public init(durable: String, filterSubject: String? = nil, ackWait: Duration = .seconds(30),
                maxDeliver: Int = 5,
                backoff: [Duration] = [.milliseconds(250), .seconds(1), .seconds(4), .seconds(15)],
                ackTimeoutBackoff: [Duration] = [], maxAckPending: Int = 10_000, start: StartPolicy = .all) {
        self.durable = durable
        self.filterSubject = filterSubject
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.backoff = backoff
        self.ackTimeoutBackoff = ackTimeoutBackoff
        self.maxAckPending = maxAckPending
        self.start = start
    }

    /// Nak delay after the given delivery attempt (1-based): the backoff entry, or the last one.
    public func retryDelay(afterDelivery delivery: Int) -> Duration {
        guard !backoff.isEmpty else { return .seconds(1) }
        return backoff[min(max(delivery - 1, 0), backoff.count - 1)]
    }
}

/// What the server answered to a JetStream publish.
public struct PublishAck: Sendable, Equatable, Decodable {
    public var stream: String
    public var sequence: UInt64
    public var duplicate: Bool

    enum CodingKeys: String, CodingKey { case stream, seq, duplicate }

    public init(stream: String, sequence: UInt64, duplicate: Bool) {
        self.stream = stream
        self.sequence = sequence
        self.duplicate = duplicate
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        stream = try container.decode(String.self, forKey: .stream)
        sequence = try container.decode(UInt64.self, forKey: .seq)
        duplicate = try container.decodeIfPresent(Bool.self, forKey: .duplicate) ?? false
    }
}

extension PublishAck {
    /// Fast path for the server's fixed-shape ack `{"stream":"S","seq":N[,"duplicate":true]}` (JSONDecoder costs
    /// more than the publish itself); anything else falls back to the full decoder.
    static func scan(_ bytes: [UInt8]) -> PublishAck? {
        guard bytes.first == UInt8(ascii: "{"), !bytes.contains(UInt8(ascii: "\\")) else { return nil }
        func find(_ key: String) -> Int? {
            let pattern = Array("\"\(key)\":".utf8)
            guard bytes.count >= pattern.count else { return nil }
            var index = 0
            while index <= bytes.count - pattern.count {
                if bytes[index] == pattern[0] && Array(bytes[index..<index + pattern.count]) == pattern {
                    var value = index + pattern.count
                    while value < bytes.count, bytes[value] == UInt8(ascii: " ") { value += 1 }
                    return value
                }
                index += 1
            }
            return nil
        }
        if find("error") != nil { return nil }
        guard var s = find("stream"), s < bytes.count, bytes[s] == UInt8(ascii: "\"") else { return nil }
        s += 1
        guard let end = bytes[s...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        let stream = String(decoding: bytes[s..<end], as: UTF8.self)
        guard var q = find("seq") else { return nil }
        var sequence: UInt64 = 0
        var digits = 0
        while q < bytes.count, bytes[q] >= 48, bytes[q] <= 57 {
            sequence = sequence &* 10 &+ UInt64(bytes[q] - 48)
            q += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
        var duplicate = false
        if let d = find("duplicate"), d + 4 <= bytes.count, Array(bytes[d..<d + 4]) == Array("true".utf8) {
            duplicate = true
        }
        return PublishAck(stream: stream, sequence: sequence, duplicate: duplicate)
    }
}

private struct PublishAckError: Decodable {
    struct Body: Decodable { var code: Int?; var err_code: Int? }
    var error: Body?
}

/// A message to publish to a stream.
public struct OutboundMessage: Sendable {
    public var subject: String
    public var payload: [UInt8]
    public var headers: NATSHeaders
    /// Deduplication id (`Nats-Msg-Id`), derived from tenant + event id — never from client input.
    public var messageID: String?

    public init(subject: String, payload: [UInt8], headers: NATSHeaders = [:], messageID: String? = nil) {
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.messageID = messageID
    }
}

/// A snapshot of ``JetStream/handleCounts``.
public struct HandleCounts: Sendable, Equatable {
    /// KV watchers not yet destroyed (a watch's thread and stream both hold it).
    public var kvWatchers: Int
    /// Pull subscriptions not yet destroyed (a consumer and every message fetched through it hold one).
    public var pullSubscriptions: Int
    /// Received messages whose handle was dropped without ack, nak or term (nak'ed on drop).
    public var droppedUnsettledMessages: Int
}

final class HandleCounters: Sendable {
    let kvWatchers = Atomic<Int>(0)
    let pullSubscriptions = Atomic<Int>(0)
    let droppedUnsettled = Atomic<Int>(0)
}

/// JetStream on one connection: provisioning, publishing, consumers and KV.
///
/// `@unchecked Sendable`: `jsCtx` is safe to use from several threads in nats.c; Swift state is immutable.
public final class JetStream: @unchecked Sendable {
    public let connection: NATSConnection
    let context: OpaquePointer
    let logger: Logger
    let counters = HandleCounters()
    /// Replicas of every stream and KV bucket this context creates or updates, in place of the specs' own
    /// (`SWITCHYARD_STREAM_REPLICAS`: 3 on a 3-node JetStream cluster); nil keeps each spec's.
    public let replicas: Int?

    /// How many nats.c handles made through this context are alive, and how many received messages were
    /// dropped without being settled (for health figures and the ownership tests).
    public var handleCounts: HandleCounts {
        HandleCounts(kvWatchers: counters.kvWatchers.load(ordering: .relaxed),
                     pullSubscriptions: counters.pullSubscriptions.load(ordering: .relaxed),
                     droppedUnsettledMessages: counters.droppedUnsettled.load(ordering: .relaxed))
    }

    public init(connection: NATSConnection, replicas: Int? = nil) throws(NATSError) {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = connection.configuration.requestTimeout.milliseconds
        var ctx: OpaquePointer?
        let status = natsConnection_JetStream(&ctx, connection.handle, &options)
        guard status == NATS_OK, let ctx else {
            throw NATSError.fromStatus(status, code: .jetStream, context: "creating JetStream context")
        }
        self.connection = connection
        self.context = ctx
        self.logger = connection.logger
        self.replicas = replicas
    }

    deinit { jsCtx_Destroy(context) }

    // MARK: provisioning

    /// nats.c's stream configuration for `spec`; its strings live in `arena`.
    static func streamConfig(_ spec: StreamSpec, replicas: Int? = nil, arena: CStringArena) -> jsStreamConfig {
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        config.Name = arena.string(spec.name)
        config.Subjects = arena.stringArray(spec.subjects)
        config.SubjectsLen = Int32(spec.subjects.count)
        config.Retention = spec.retention == .workQueue ? js_WorkQueuePolicy : js_LimitsPolicy
        config.Storage = spec.storage == .memory ? js_MemoryStorage : js_FileStorage
        config.Replicas = Int64(replicas ?? spec.replicas)
        config.MaxAge = spec.maxAge.nanoseconds
        config.MaxBytes = spec.maxBytes
        config.MaxMsgSize = spec.maxMessageSize
        config.Duplicates = spec.duplicateWindow.nanoseconds
        config.DenyDelete = spec.denyDelete
        config.DenyPurge = spec.denyPurge
        return config
    }

    /// Creates the stream, or updates it to `spec` if it exists. Safe to call from every replica at start.
    public func ensureStream(_ spec: StreamSpec) async throws(NATSError) {
        let ctx = SendablePointer(context)
        let replicas = self.replicas
        try await connection.lane.run { () throws(NATSError) in
            let arena = CStringArena()
            var config = Self.streamConfig(spec, replicas: replicas, arena: arena)
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var jsErr = jsErrCode(0)
            var status = js_AddStream(&info, ctx.pointer, &config, nil, &jsErr)
            if status != NATS_OK && jsErr.rawValue == 10058 {  // JSStreamNameExistErr: update in place
                jsErr = jsErrCode(0)
                status = js_UpdateStream(&info, ctx.pointer, &config, nil, &jsErr)
            }
            if let info { jsStreamInfo_Destroy(info) }
            if status != NATS_OK {
                throw NATSError.fromStatus(status, code: .jetStream, context: "provisioning stream", jsErr: jsErr)
            }
        }
        logger.debug("stream provisioned", metadata: ["stream": "\(spec.name)"])
    }

    /// Makes sure the stream exists without ever changing its configuration: binds to it if it is there,
    /// creates it from `spec` if it is not (so services can start in any order). Only the stream's owner calls
    /// ``ensureStream(_:)``, which also updates; everybody else calls this, so two versions running side by
    /// side never flip the configuration back and forth.
    /// - Returns: whether this call created the stream.
    @discardableResult
    public func ensureStreamExists(_ spec: StreamSpec) async throws(NATSError) -> Bool {
        let ctx = SendablePointer(context)
        let replicas = self.replicas
        return try await connection.lane.run { () throws(NATSError) -> Bool in
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var jsErr = jsErrCode(0)
            var status = js_GetStreamInfo(&info, ctx.pointer, spec.name, nil, &jsErr)
            if let info { jsStreamInfo_Destroy(info) }
            if status == NATS_OK { return false }
            guard status == NATS_NOT_FOUND || jsErr.rawValue == 10059 else {  // JSStreamNotFoundErr
                throw NATSError.fromStatus(status, code: .jetStream, context: "looking up stream", jsErr: jsErr)
            }
            let arena = CStringArena()
            var config = Self.streamConfig(spec, replicas: replicas, arena: arena)
            info = nil
            jsErr = jsErrCode(0)
            status = js_AddStream(&info, ctx.pointer, &config, nil, &jsErr)
            if let info { jsStreamInfo_Destroy(info) }
            if status == NATS_OK { return true }
            if jsErr.rawValue == 10058 { return false }  // created meanwhile by another service: leave it alone
            throw NATSError.fromStatus(status, code: .jetStream, context: "creating stream", jsErr: jsErr)
        }
    }

    /// Creates the durable pull consumer, or updates it to `spec`. Idempotent.
    public func ensureConsumer(stream: String, _ spec: ConsumerSpec) async throws(NATSError) {
        let ctx = SendablePointer(context)
        try await connection.lane.run { () throws(NATSError) in
            let arena = CStringArena()
            var config = jsConsumerConfig()
            jsConsumerConfig_Init(&config)
            config.Durable = arena.string(spec.durable)
            config.Name = arena.string(spec.durable)
            config.FilterSubject = arena.string(spec.filterSubject)
            config.AckPolicy = js_AckExplicit
            switch spec.start {
            case .all:
                config.DeliverPolicy = js_DeliverAll
            case .new:
                config.DeliverPolicy = js_DeliverNew
            case .sequence(let sequence):
                config.DeliverPolicy = js_DeliverByStartSequence
                config.OptStartSeq = max(1, sequence)
            case .recent(let window):
                // As a start *sequence*: nats-server 2.9 refuses any later update of a durable created with a
                // start time ("start time can not be updated"), even with the identical time.
                let sequence = try Self.firstSequence(storedSince: Self.unixNanosNow() - window.nanoseconds,
                                                      stream: stream, context: ctx.pointer)
                if sequence > 1 {
                    config.DeliverPolicy = js_DeliverByStartSequence
                    config.OptStartSeq = sequence
                } else {
                    config.DeliverPolicy = js_DeliverAll
                }
            }
            config.AckWait = spec.ackWait.nanoseconds
            config.MaxDeliver = Int64(spec.maxDeliver)
            config.MaxAckPending = Int64(spec.maxAckPending)
            if !spec.ackTimeoutBackoff.isEmpty {
                config.BackOff = arena.int64Array(spec.ackTimeoutBackoff.map(\.nanoseconds))
                config.BackOffLen = Int32(spec.ackTimeoutBackoff.count)
            }
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var jsErr = jsErrCode(0)
            // Existing: update what may change, keep where it started (immutable on the server), and send
            // nothing when nothing changed. Missing: create it with its start policy.
            var existing: UnsafeMutablePointer<jsConsumerInfo>?
            var status = js_GetConsumerInfo(&existing, ctx.pointer, stream, spec.durable, nil, &jsErr)
            if status == NATS_OK, let existing, let current = existing.pointee.Config {
                let unchanged = Self.sameUpdatableSettings(current.pointee, spec)
                config.DeliverPolicy = current.pointee.DeliverPolicy
                config.OptStartSeq = current.pointee.OptStartSeq
                config.OptStartTime = current.pointee.OptStartTime
                if !unchanged {
                    jsErr = jsErrCode(0)
                    status = js_UpdateConsumer(&info, ctx.pointer, stream, &config, nil, &jsErr)
                }
            } else if status == NATS_NOT_FOUND || jsErr.rawValue == 10014 {  // JSConsumerNotFoundErr
                jsErr = jsErrCode(0)
                status = js_AddConsumer(&info, ctx.pointer, stream, &config, nil, &jsErr)
                // Created meanwhile by another replica with the same contract: fine.
                if status != NATS_OK && (jsErr.rawValue == 10013 || jsErr.rawValue == 10148) { status = NATS_OK }
            }
            if let existing { jsConsumerInfo_Destroy(existing) }
            if let info { jsConsumerInfo_Destroy(info) }
            if status != NATS_OK {
                throw NATSError.fromStatus(status, code: .jetStream, context: "provisioning consumer", jsErr: jsErr)
            }
        }
        logger.debug("consumer provisioned", metadata: ["stream": "\(stream)", "consumer": "\(spec.durable)"])
    }

    /// Deletes a durable (e.g. a replay's temporary one); a durable that does not exist is not an error.
    public func deleteConsumer(stream: String, durable: String) async throws(NATSError) {
        let ctx = SendablePointer(context)
        try await connection.lane.run { () throws(NATSError) in
            var jsErr = jsErrCode(0)
            let status = js_DeleteConsumer(ctx.pointer, stream, durable, nil, &jsErr)
            if status != NATS_OK && status != NATS_NOT_FOUND {
                throw NATSError.fromStatus(status, code: .jetStream,
                                           context: "deleting consumer \(durable) of stream \(stream)", jsErr: jsErr)
            }
        }
    }

    /// The first sequence of `stream` stored at or after `unixNanos` (one past the last if none is).
    public func firstSequence(storedSince unixNanos: Int64, stream: String) async throws(NATSError) -> UInt64 {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> UInt64 in
            try Self.firstSequence(storedSince: unixNanos, stream: stream, context: ctx.pointer)
        }
    }

    /// Fails with `.notFound` (naming stream and durable) unless the durable exists: consume loops bind only to
    /// durables their owner provisioned, never create one implicitly (docs/adr/0002).
    func requireConsumer(stream: String, durable: String) async throws(NATSError) {
        let ctx = SendablePointer(context)
        try await connection.lane.run { () throws(NATSError) in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetConsumerInfo(&info, ctx.pointer, stream, durable, nil, &jsErr)
            if let info { jsConsumerInfo_Destroy(info) }
            if status != NATS_OK {
                throw NATSError.fromStatus(status, code: .jetStream,
                                           context: "looking up consumer \(durable) of stream \(stream)", jsErr: jsErr)
            }
        }
    }

    /// Whether an existing durable already has `spec`'s updatable settings (then nothing is sent: a restart
    /// doesn't touch the durable at all).
    static func sameUpdatableSettings(_ current: jsConsumerConfig, _ spec: ConsumerSpec) -> Bool {
        let filter = current.FilterSubject.map { String(cString: $0) }
        let backoff = (0..<Int(current.BackOffLen)).compactMap { current.BackOff?[$0] }
        return current.AckWait == spec.ackWait.nanoseconds && current.MaxDeliver == Int64(spec.maxDeliver)
            && current.MaxAckPending == Int64(spec.maxAckPending) && (filter ?? "") == (spec.filterSubject ?? "")
            && backoff == spec.ackTimeoutBackoff.map(\.nanoseconds)
    }

    /// The first sequence of `stream` stored at or after `unixNanos` (one past the last if none is), by binary
    /// search over stored times: about log2(messages) direct gets, once, when a durable is created. A missing
    /// sequence (deleted) counts as older.
    static func firstSequence(storedSince unixNanos: Int64, stream: String, context: OpaquePointer)
        throws(NATSError) -> UInt64
    {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var jsErr = jsErrCode(0)
        let status = js_GetStreamInfo(&info, context, stream, nil, &jsErr)
        guard status == NATS_OK, let info else {
            throw NATSError.fromStatus(status, code: .jetStream, context: "reading stream info", jsErr: jsErr)
        }
        let first = info.pointee.State.FirstSeq
        let last = info.pointee.State.LastSeq
        jsStreamInfo_Destroy(info)
        guard last >= first, last > 0 else { return last + 1 }
        var low = first
        var high = last + 1  // invariant: everything below `low` is older; `high` is at or after the time
        while low < high {
            let middle = low + (high - low) / 2
            var message: OpaquePointer?
            var getErr = jsErrCode(0)
            let got = js_GetMsg(&message, context, stream, middle, nil, &getErr)
            var stored: Int64 = .min
            if got == NATS_OK, let message {
                stored = natsMsg_GetTime(message)
                natsMsg_Destroy(message)
            } else if got != NATS_NOT_FOUND {
                throw NATSError.fromStatus(got, code: .jetStream, context: "reading a stream message", jsErr: getErr)
            }
            if stored >= unixNanos { high = middle } else { low = middle + 1 }
        }
        return low
    }

    static func unixNanosNow() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    // MARK: publishing

    /// Publishes to a stream and awaits the server's ack. Many publishes may be awaited concurrently: they are
    /// pipelined on the connection (see `publishPipelined`).
    @discardableResult
    public func publish(_ message: OutboundMessage, timeout: Duration? = nil) async throws(NATSError) -> PublishAck {
        var headers = message.headers
        if let id = message.messageID { headers[NATSHeaderName.messageID] = id }
        // A nats-server restart: while the client reconnects, publishes are buffered; right after it, JetStream
        // may not answer yet ("no responders") for a few milliseconds. Such a publish is retried for up to
        // `Self.outageGrace`: always after "no responders" (nothing was stored), and after a timeout only with a
        // message id (the stream's de-duplication drops the copy if the first one was stored after all).
        let clock = ContinuousClock()
        let giveUp = clock.now + Self.outageGrace
        var delay: Duration = .milliseconds(20)
        while true {
            do {
                let reply = try await connection.request(message.subject, payload: message.payload, headers: headers,
                                                         timeout: timeout)
                return try Self.decodeAck(reply.payload)
            } catch {
                guard Self.retriableDuringOutage(error, hasMessageID: message.messageID != nil),
                      clock.now + delay < giveUp, !Task.isCancelled else {
                    if error.code == .noResponders {
                        throw NATSError(.jetStream, context: "no stream captures this subject", status: "no responders")
                    }
                    throw error
                }
                Self.retries.add(1, ordering: .relaxed)
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .milliseconds(500))
            }
        }
    }

    /// Whether a failed publish is worth retrying while nats-server restarts: "no responders" and JetStream's own
    /// 503 (nothing was stored: JetStream is still starting), and a timeout when the message has an id (a copy
    /// stored after all is dropped by the stream's de-duplication).
    static func retriableDuringOutage(_ error: NATSError, hasMessageID: Bool) -> Bool {
        switch error.code {
        case .noResponders: true
        case .jetStream: error.status == "503"
        case .timeout: hasMessageID
        default: false
        }
    }

    /// How long ``publish(_:timeout:)`` keeps retrying through a nats-server restart.
    public static let outageGrace: Duration = .seconds(3)

    private static let retries = Atomic<Int>(0)
    /// Publish attempts retried by this process so far (see ``publish(_:timeout:)``).
    public static var publishRetries: Int { retries.load(ordering: .relaxed) }

    static func decodeAck(_ payload: [UInt8]) throws(NATSError) -> PublishAck {
        if let ack = PublishAck.scan(payload) { return ack }
        let data = Data(payload)
        if let ack = try? JSONDecoder().decode(PublishAck.self, from: data) { return ack }
        let failure = try? JSONDecoder().decode(PublishAckError.self, from: data)
        if failure?.error?.code == 503 {
            // JetStream not (yet) available, e.g. still recovering its streams right after a restart.
            throw NATSError(.jetStream, context: "JetStream is temporarily unavailable", status: "503",
                            jetStreamCode: failure?.error?.err_code ?? 503)
        }
        throw NATSError(.jetStream, context: "publish rejected by the stream",
                        jetStreamCode: failure?.error?.err_code ?? failure?.error?.code)
    }

    /// Publishes many messages with at most `maxInFlight` unacknowledged at once, returning acks in order.
    /// Fails fast on the first error (messages already acked stay stored; republish is safe thanks to
    /// `Nats-Msg-Id`).
    public func publishPipelined(_ messages: [OutboundMessage], maxInFlight: Int = 256)
        async throws(NATSError) -> [PublishAck]
    {
        do {
            return try await withThrowingTaskGroup(of: (Int, PublishAck).self) { group in
                var acks = [PublishAck?](repeating: nil, count: messages.count)
                var next = 0
                func add() {
                    let index = next
                    let message = messages[index]
                    next += 1
                    group.addTask { (index, try await self.publish(message)) }
                }
                while next < min(maxInFlight, messages.count) { add() }
                while let (index, ack) = try await group.next() {
                    acks[index] = ack
                    if next < messages.count { add() }
                }
                return acks.map { $0! }
            }
        } catch let error as NATSError {
            throw error
        } catch {
            throw NATSError(.publishFailed, context: "pipelined publish cancelled")
        }
    }
}

extension JetStream {
    /// A stream's current state (message count and sequence range), e.g. for health and tests.
    public struct StreamState: Sendable, Equatable {
        public var messages: UInt64
        public var firstSequence: UInt64
        public var lastSequence: UInt64
        public var consumers: Int
    }

    public func streamState(_ name: String) async throws(NATSError) -> StreamState {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> StreamState in
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetStreamInfo(&info, ctx.pointer, name, nil, &jsErr)
            guard status == NATS_OK, let info else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "reading stream info", jsErr: jsErr)
            }
            defer { jsStreamInfo_Destroy(info) }
            let state = info.pointee.State
            return StreamState(messages: state.Msgs, firstSequence: state.FirstSeq, lastSequence: state.LastSeq,
                               consumers: Int(state.Consumers))
        }
    }
}

extension JetStream {
    /// A durable's current state as the server sees it: what is waiting, delivered but unacknowledged, and
    /// redelivered (for metrics, health and tests that must wait until an ack reached the server).
    public struct ConsumerState: Sendable, Equatable {
        public var pending: UInt64
        public var ackPending: Int64
        public var redelivered: Int64
        public var waitingPulls: Int64
        public var ackFloorStreamSequence: UInt64
    }

    public func consumerState(stream: String, durable: String) async throws(NATSError) -> ConsumerState {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> ConsumerState in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetConsumerInfo(&info, ctx.pointer, stream, durable, nil, &jsErr)
            guard status == NATS_OK, let info else {
                throw NATSError.fromStatus(status, code: .jetStream,
                                           context: "reading consumer \(durable) of stream \(stream)", jsErr: jsErr)
            }
            defer { jsConsumerInfo_Destroy(info) }
            let ci = info.pointee
            return ConsumerState(pending: ci.NumPending, ackPending: ci.NumAckPending, redelivered: ci.NumRedelivered,
                                 waitingPulls: ci.NumWaiting, ackFloorStreamSequence: ci.AckFloor.Stream)
        }
    }
}
