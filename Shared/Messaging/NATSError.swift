@preconcurrency import CNats

/// An error from the messaging layer. The description never contains payloads, header values or credentials.
public struct NATSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Opaque error code; compare against the static members.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        public static let connectionFailed = Code("connection_failed")
        public static let connectionClosed = Code("connection_closed")
        public static let timeout = Code("timeout")
        public static let noResponders = Code("no_responders")
        public static let publishFailed = Code("publish_failed")
        public static let subscribeFailed = Code("subscribe_failed")
        public static let jetStream = Code("jetstream")
        public static let invalidArgument = Code("invalid_argument")
        public static let keyExists = Code("kv_key_exists")
        public static let wrongLastRevision = Code("kv_wrong_last_revision")
        public static let notFound = Code("not_found")
        public static let ackFailed = Code("ack_failed")
    }

    public let code: Code
    /// nats.c status text (e.g. "Timeout"), never payload data.
    public let status: String?
    /// JetStream API error code (e.g. 10071), when the server sent one.
    public let jetStreamCode: Int?
    /// A constant explanation of what was being done.
    public let context: String

    public init(_ code: Code, context: String, status: String? = nil, jetStreamCode: Int? = nil) {
        self.code = code
        self.context = context
        self.status = status
        self.jetStreamCode = jetStreamCode
    }

    /// Whether retrying later may succeed (timeouts, connection trouble), as opposed to a fatal error.
    public var isRetriable: Bool {
        switch code {
        case .connectionFailed, .connectionClosed, .timeout, .noResponders, .publishFailed, .ackFailed:
            return true
        case .jetStream:
            // 503-class JetStream errors are transient; config errors are not.
            return jetStreamCode == nil
        default:
            return false
        }
    }

    public var description: String {
        var text = "NATSError(\(code)): \(context)"
        if let status { text += " [status: \(status)]" }
        if let jetStreamCode { text += " [jetstream code: \(jetStreamCode)]" }
        return text
    }

    /// Builds an error from a nats.c status. Call it right where the failing nats.c call returned, on the same
    /// thread: it reads nats.c's thread-local last-error text (which names the failure more precisely than the
    /// status, e.g. "wrong last sequence" or a permissions violation), and that text is gone after the next call.
    static func fromStatus(_ status: natsStatus, code: Code, context: String, jsErr: jsErrCode = jsErrCode(0))
        -> NATSError
    {
        var lastStatus = NATS_OK
        let last = nats_GetLastError(&lastStatus).map { String(cString: $0) } ?? ""
        let statusText = String(cString: natsStatus_GetText(status))
        // The last error belongs to this failure only if nats.c recorded one with the same status.
        // nats.c never clears it on success, so it may belong to an earlier failure with the same status on this
        // thread: label it as what it is.
        let text = !last.isEmpty && lastStatus == status && last != statusText
            ? "\(statusText); last nats.c error: \(last)" : statusText
        let js = Int(jsErr.rawValue)
        var mapped = code
        if status == NATS_TIMEOUT { mapped = .timeout }
        if status == NATS_NO_RESPONDERS { mapped = .noResponders }
        if status == NATS_CONNECTION_CLOSED { mapped = .connectionClosed }
        if status == NATS_NOT_FOUND { mapped = .notFound }
        if js == 10071 { mapped = .wrongLastRevision }
        return NATSError(mapped, context: context, status: String(text.prefix(300)), jetStreamCode: js == 0 ? nil : js)
    }
}
