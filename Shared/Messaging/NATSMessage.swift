@preconcurrency import CNats

/// NATS headers as a simple map (one value per key). Keys are case-sensitive as on the wire.
public typealias NATSHeaders = [String: String]

/// A message received on a core NATS subscription or as a reply, copied out of nats.c memory.
public struct NATSMessage: Sendable {
    public var subject: String
    public var reply: String?
    public var headers: NATSHeaders
    public var payload: [UInt8]

    public init(subject: String, reply: String? = nil, headers: NATSHeaders = [:], payload: [UInt8]) {
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload
    }

    /// Copies a nats.c message into a Swift value; the caller still owns (and destroys) `msg`.
    init(copying msg: OpaquePointer) {
        subject = String(cString: natsMsg_GetSubject(msg))
        if let replyPointer = natsMsg_GetReply(msg) {
            let value = String(cString: replyPointer)
            reply = value.isEmpty ? nil : value
        } else {
            reply = nil
        }
        headers = Self.copyHeaders(msg)
        let length = Int(natsMsg_GetDataLength(msg))
        if length > 0, let data = natsMsg_GetData(msg) {
            payload = data.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
            }
        } else {
            payload = []
        }
    }

    static func copyHeaders(_ msg: OpaquePointer) -> NATSHeaders {
        var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var count: Int32 = 0
        guard natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK, let keys, count > 0 else { return [:] }
        defer { free(keys) }
        var result: NATSHeaders = [:]
        result.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            guard let key = keys[index] else { continue }
            var value: UnsafePointer<CChar>?
            if natsMsgHeader_Get(msg, key, &value) == NATS_OK, let value {
                result[String(cString: key)] = String(cString: value)
            }
        }
        return result
    }
}

/// Creates a nats.c message with payload and headers. The returned pointer must be destroyed by the caller.
func makeCMessage(subject: String, reply: String?, headers: NATSHeaders, payload: [UInt8]) throws(NATSError)
    -> OpaquePointer
{
    var msg: OpaquePointer?
    let status: natsStatus = payload.withUnsafeBufferPointer { buffer in
        buffer.baseAddress.withMemoryRebound(to: CChar.self, capacity: max(buffer.count, 1)) { data in
            natsMsg_Create(&msg, subject, reply, data, Int32(buffer.count))
        }
    }
    guard status == NATS_OK, let msg else {
        throw NATSError.fromStatus(status, code: .invalidArgument, context: "creating message")
    }
    for (key, value) in headers {
        let headerStatus = natsMsgHeader_Set(msg, key, value)
        if headerStatus != NATS_OK {
            natsMsg_Destroy(msg)
            throw NATSError.fromStatus(headerStatus, code: .invalidArgument, context: "setting message header")
        }
    }
    return msg
}

extension Optional where Wrapped == UnsafePointer<UInt8> {
    fileprivate func withMemoryRebound<R>(to: CChar.Type, capacity: Int, _ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .none: return body(nil)
        case .some(let pointer): return pointer.withMemoryRebound(to: CChar.self, capacity: capacity) { body($0) }
        }
    }
}

/// Validates a subject for publishing: non-empty tokens, no whitespace, no wildcards.
/// Header names defined by NATS itself.
public enum NATSHeaderName {
    /// JetStream de-duplication id.
    public static let messageID = "Nats-Msg-Id"
}

public enum SubjectValidation {
    public static func isValidPublishSubject(_ subject: String) -> Bool {
        if subject.isEmpty || subject.utf8.count > 1024 { return false }
        var previousWasDot = true
        for byte in subject.utf8 {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"), 0,
                UInt8(ascii: "*"), UInt8(ascii: ">"):
                return false
            case UInt8(ascii: "."):
                if previousWasDot { return false }
                previousWasDot = true
            default:
                previousWasDot = false
            }
        }
        return !previousWasDot
    }
}
