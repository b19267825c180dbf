@preconcurrency import CNats

/// Read-only views of what the server has, for the readiness check (`switchyard doctor`): a stream's and a
/// durable's configuration as stored (nil when missing), and the account's storage.
extension JetStream {
    /// A stream as the server has it: its configuration and how many of its replicas are current.
    public struct StreamInspection: Sendable, Equatable {
        public var spec: StreamSpec
        /// Replicas the cluster reports current (the leader counts); 1 on a single server.
        public var currentReplicas: Int
    }

    /// The stored configuration of stream `name`, or nil when there is no such stream.
    public func inspectStream(_ name: String) async throws(NATSError) -> StreamInspection? {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> StreamInspection? in
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetStreamInfo(&info, ctx.pointer, name, nil, &jsErr)
            if status == NATS_NOT_FOUND || jsErr.rawValue == 10059 { return nil }  // JSStreamNotFoundErr
            guard status == NATS_OK, let info, let config = info.pointee.Config?.pointee else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "reading stream \(name)", jsErr: jsErr)
            }
            defer { jsStreamInfo_Destroy(info) }
            var subjects: [String] = []
            for index in 0..<Int(config.SubjectsLen) {
                if let subject = config.Subjects?[index] { subjects.append(String(cString: subject)) }
            }
            let spec = StreamSpec(
                name: name, subjects: subjects,
                retention: config.Retention == js_WorkQueuePolicy ? .workQueue : .limits,
                storage: config.Storage == js_MemoryStorage ? .memory : .file, replicas: Int(config.Replicas),
                maxAge: .nanoseconds(config.MaxAge), maxBytes: config.MaxBytes,
                maxMessageSize: config.MaxMsgSize, duplicateWindow: .nanoseconds(config.Duplicates),
                denyDelete: config.DenyDelete, denyPurge: config.DenyPurge)
            var current = 1
            if let cluster = info.pointee.Cluster?.pointee {
                current = (cluster.Leader == nil ? 0 : 1)
                for index in 0..<Int(cluster.ReplicasLen) {
                    if let peer = cluster.Replicas?[index]?.pointee, peer.Current { current += 1 }
                }
            }
            return StreamInspection(spec: spec, currentReplicas: current)
        }
    }

    /// The stored configuration of durable `durable` on `stream`, or nil when there is no such durable (or
    /// stream).
    public func inspectConsumer(stream: String, durable: String) async throws(NATSError) -> ConsumerSpec? {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> ConsumerSpec? in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetConsumerInfo(&info, ctx.pointer, stream, durable, nil, &jsErr)
            // JSConsumerNotFoundErr, JSStreamNotFoundErr
            if status == NATS_NOT_FOUND || jsErr.rawValue == 10014 || jsErr.rawValue == 10059 { return nil }
            guard status == NATS_OK, let info, let config = info.pointee.Config?.pointee else {
                throw NATSError.fromStatus(status, code: .jetStream,
                                           context: "reading consumer \(durable) of stream \(stream)", jsErr: jsErr)
            }
            defer { jsConsumerInfo_Destroy(info) }
            return ConsumerSpec(durable: durable,
                                filterSubject: config.FilterSubject.map { String(cString: $0) },
                                ackWait: .nanoseconds(config.AckWait), maxDeliver: Int(config.MaxDeliver),
                                maxAckPending: Int(config.MaxAckPending))
        }
    }

    /// The account's JetStream file storage: bytes used and the limit (-1 = none).
    public func storageUsage() async throws(NATSError) -> (used: UInt64, limit: Int64) {
        let ctx = SendablePointer(context)
        return try await connection.lane.run { () throws(NATSError) -> (used: UInt64, limit: Int64) in
            var info: UnsafeMutablePointer<jsAccountInfo>?
            var jsErr = jsErrCode(0)
            let status = js_GetAccountInfo(&info, ctx.pointer, nil, &jsErr)
            guard status == NATS_OK, let info else {
                throw NATSError.fromStatus(status, code: .jetStream, context: "reading the account's JetStream usage",
                                           jsErr: jsErr)
            }
            defer { jsAccountInfo_Destroy(info) }
            return (info.pointee.Store, info.pointee.Limits.MaxStore)
        }
    }
}
