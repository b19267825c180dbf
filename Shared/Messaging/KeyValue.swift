@preconcurrency import CNats
import Foundation
import Synchronization

/// A KV bucket to provision (created idempotently by its owning service).
public struct KVBucketSpec: Sendable, Equatable {
    public var name: String
    public var history: UInt8
    public var ttl: Duration
    public var replicas: Int
    public var maxValueSize: Int32
    public init(name: String, history: UInt8 = 1, ttl: Duration = .zero, replicas: Int = 1,
                maxValueSize: Int32 = 1 << 20) {
        self.name = name
        self.history = history
        self.ttl = ttl
        self.replicas = replicas
        self.maxValueSize = maxValueSize
    }
}

public struct KVEntry: Sendable, Equatable {
    public enum Operation: Sendable, Equatable { case put, delete, purge }
    public var key: String
    public var value: [UInt8]
    public var revision: UInt64
    public var operation: Operation
}

/// What a watch yields: entries, and once, a marker that the initial values have all been delivered.
public enum KVWatchEvent: Sendable, Equatable {
    case entry(KVEntry)
    case initialValuesDone
}

/// One KV bucket (`kvStore`). `@unchecked Sendable`: nats.c KV handles are thread-safe; every blocking call
/// runs on this bucket's lane.
public final class KeyValueBucket: @unchecked Sendable {
    private let store: OpaquePointer
    private let lane: BlockingLane
    /// The JetStream context (and through it the connection) this bucket was bound on: kept alive as long
    /// as the bucket is.
    public let jetStream: JetStream
    public let name: String

    init(store: OpaquePointer, name: String, jetStream: JetStream) {
        self.store = store
        self.name = name
        self.jetStream = jetStream
        self.lane = BlockingLane(label: "kv.\(name)")
    }

    deinit { kvStore_Destroy(store) }

    public func get(_ key: String) async throws(NATSError) -> KVEntry? {
        let store = SendablePointer(self.store)
        return try await lane.run { () throws(NATSError) -> KVEntry? in
            var entry: OpaquePointer?
            let status = kvStore_Get(&entry, store.pointer, key)
            if status == NATS_NOT_FOUND { return nil }
            guard status == NATS_OK, let entry else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "kv get")
            }
            defer { kvEntry_Destroy(entry) }
            return Self.copy(entry)
        }
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        try await write(key, value, context: "kv put") { rev, store, key, data, len in
            kvStore_Put(rev, store, key, data, len)
        }
    }

    /// Creates the key; fails with `.keyExists` if it already has a value.
    @discardableResult
    public func create(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        do {
            return try await write(key, value, context: "kv create") { rev, store, key, data, len in
                kvStore_Create(rev, store, key, data, len)
            }
        } catch where error.code == .wrongLastRevision {
            throw NATSError(.keyExists, context: "kv create of an existing key", jetStreamCode: error.jetStreamCode)
        }
    }

    /// Compare-and-set: succeeds only if the key's current revision is `revision`; else `.wrongLastRevision`.
    @discardableResult
    public func update(_ key: String, _ value: [UInt8], expectedRevision revision: UInt64)
        async throws(NATSError) -> UInt64
    {
        try await write(key, value, context: "kv update") { rev, store, key, data, len in
            kvStore_Update(rev, store, key, data, len, revision)
        }
    }

    public func delete(_ key: String) async throws(NATSError) {
        let store = SendablePointer(self.store)
        try await lane.run { () throws(NATSError) in
            let status = kvStore_Delete(store.pointer, key)
            if status != NATS_OK { throw Self.kvError(status, context: "kv delete") }
        }
    }

    private func write(
        _ key: String, _ value: [UInt8], context: String,
        _ call: @escaping @Sendable (UnsafeMutablePointer<UInt64>, OpaquePointer, String, UnsafeRawPointer?, Int32)
            -> natsStatus
    ) async throws(NATSError) -> UInt64 {
        let store = SendablePointer(self.store)
        return try await lane.run { () throws(NATSError) -> UInt64 in
            var revision: UInt64 = 0
            let status = value.withUnsafeBytes { bytes in
                call(&revision, store.pointer, key, bytes.baseAddress, Int32(bytes.count))
            }
            if status != NATS_OK { throw Self.kvError(status, context: context) }
            return revision
        }
    }

    /// nats.c reports a failed compare-and-set as a generic error whose last-error text names the JetStream
    /// error; read it right here, on the failing thread.
    private static func kvError(_ status: natsStatus, context: String) -> NATSError {
        var lastStatus = NATS_OK
        let last = nats_GetLastError(&lastStatus).map { String(cString: $0) } ?? ""
        // Only this failure's text: nats.c never clears the thread-local last error on success.
        let text = lastStatus == status ? last : ""
        if text.contains("10071") || text.lowercased().contains("wrong last sequence") {
            return NATSError(.wrongLastRevision, context: context, status: "wrong last sequence", jetStreamCode: 10071)
        }
        return NATSError.fromStatus(status, code: .jetStream, context: context)
    }

    static func copy(_ entry: OpaquePointer) -> KVEntry {
        let length = Int(kvEntry_ValueLen(entry))
        var value: [UInt8] = []
        if length > 0, let pointer = kvEntry_Value(entry) {
            value = Array(UnsafeRawBufferPointer(start: pointer, count: length))
        }
        let op: KVEntry.Operation
        switch kvEntry_Operation(entry) {
        case kvOp_Delete: op = .delete
        case kvOp_Purge: op = .purge
        default: op = .put
        }
        return KVEntry(key: String(cString: kvEntry_Key(entry)), value: value,
                       revision: kvEntry_Revision(entry), operation: op)
    }

    /// Watches every key: first the current values, then `.initialValuesDone`, then live changes, until the
    /// consuming task stops iterating (or drops the stream). The watch runs on a thread of its own; starting it
    /// (a round trip to the server) runs on this bucket's lane, off the cooperative pool.
    public func watchAll() async throws(NATSError) -> AsyncThrowingStream<KVWatchEvent, any Error> {
        let store = SendablePointer(self.store)
        let handle = try await lane.run { () throws(NATSError) -> SendablePointer in
            var watcher: OpaquePointer?
            let status = kvStore_WatchAll(&watcher, store.pointer, nil)
            guard status == NATS_OK, let watcher else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "kv watch")
            }
            return SendablePointer(watcher)
        }
        let watcher = KVWatcher(handle.pointer, bucket: self)
        let (stream, continuation) = AsyncThrowingStream<KVWatchEvent, any Error>.makeStream()
        continuation.onTermination = { _ in watcher.stop() }
        let thread = Thread { watcher.pump(into: continuation) }
        thread.name = "kv-watch-\(name)"
        thread.start()
        return stream
    }
}

/// Owns a nats.c `kvWatcher`: destroyed in `deinit`, i.e. only once both the watch thread and the stream's
/// termination handler have let go of it, so `kvWatcher_Stop` can never run on a destroyed watcher. Keeps
/// its bucket (and through it the JetStream context and the connection) alive while it exists.
///
/// `@unchecked Sendable`: `kvWatcher_Stop` is thread-safe in nats.c and may race with `kvWatcher_Next`
/// (it wakes it up); `kvWatcher_Next` is only called from the one watch thread.
final class KVWatcher: @unchecked Sendable {
    private let watcher: OpaquePointer
    private let bucket: KeyValueBucket
    private let stopped = Atomic<Bool>(false)

    init(_ watcher: OpaquePointer, bucket: KeyValueBucket) {
        self.watcher = watcher
        self.bucket = bucket
        bucket.jetStream.counters.kvWatchers.add(1, ordering: .relaxed)
    }

    deinit {
        kvWatcher_Destroy(watcher)
        bucket.jetStream.counters.kvWatchers.subtract(1, ordering: .relaxed)
    }

    /// Stops the watch; the watch thread's next `kvWatcher_Next` returns and the thread ends. Idempotent.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        kvWatcher_Stop(watcher)
    }

    var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// The watch thread's loop: copies every entry into Swift memory and frees it at once.
    func pump(into continuation: AsyncThrowingStream<KVWatchEvent, any Error>.Continuation) {
        while !isStopped {
            var entry: OpaquePointer?
            let status = kvWatcher_Next(&entry, watcher, 250)
            if status == NATS_TIMEOUT { continue }
            if status != NATS_OK {
                if isStopped { break }
                continuation.finish(throwing: NATSError.fromStatus(status, code: .jetStream, context: "kv watch"))
                return
            }
            guard let entry else {
                continuation.yield(.initialValuesDone)
                continue
            }
            let copy = KeyValueBucket.copy(entry)
            kvEntry_Destroy(entry)
            continuation.yield(.entry(copy))
        }
        continuation.finish()
    }
}

extension JetStream {
    /// Creates the bucket if missing and returns it; binds to it if it exists.
    public func keyValue(_ spec: KVBucketSpec) async throws(NATSError) -> KeyValueBucket {
        let ctx = SendablePointer(context)
        let replicas = self.replicas
        let store = try await connection.lane.run { () throws(NATSError) -> SendablePointer in
            let arena = CStringArena()
            var config = kvConfig()
            kvConfig_Init(&config)
            config.Bucket = arena.string(spec.name)
            config.History = spec.history
            config.TTL = spec.ttl.nanoseconds
            config.Replicas = Int32(replicas ?? spec.replicas)
            config.MaxValueSize = spec.maxValueSize
            var kv: OpaquePointer?
            var status = js_CreateKeyValue(&kv, ctx.pointer, &config)
            if status != NATS_OK {
                status = js_KeyValue(&kv, ctx.pointer, spec.name)
            }
            guard status == NATS_OK, let kv else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "provisioning kv bucket")
            }
            return SendablePointer(kv)
        }
        return KeyValueBucket(store: store.pointer, name: spec.name, jetStream: self)
    }
}
