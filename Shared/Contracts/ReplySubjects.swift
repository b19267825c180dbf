/// Reply subjects, declared once.
///
/// - A gateway instance receives its requests' answers on `_sy.gw.<instance>.<request id>` (one wildcard
///   subscription per instance, so replies never cross replicas); the subject travels in the
///   `Switchyard-Reply-To` header.
/// - Admin clients receive replies on `_INBOX_admin.…`, a prefix service users may neither subscribe nor
///   publish to (docs/adr/0009); services use nats.c's default `_INBOX.…`.
public enum ReplySubjects {
    /// Prefix of every gateway reply subject.
    public static let gatewayRoot = "_sy.gw"
    /// The inbox prefix of admin clients.
    public static let adminInboxPrefix = "_INBOX_admin"
    /// The default inbox prefix of service connections.
    public static let serviceInboxPrefix = "_INBOX"

    /// `_sy.gw.<instance token>.`: the instance id with anything but ASCII letters, digits and `-` replaced by `-`.
    public static func gatewayPrefix(instanceID: String) -> String {
        let token = String(instanceID.unicodeScalars.map {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") ? Character($0) : "-"
        })
        return "\(gatewayRoot).\(token)."
    }

    /// Whether `subject` is one a service may send a reply to (an inbox, never an arbitrary subject).
    public static func isInbox(_ subject: String) -> Bool {
        subject.hasPrefix(serviceInboxPrefix + ".") || subject.hasPrefix(adminInboxPrefix + ".")
    }
}
