/// Reply subjects, declared once.
///
/// - A gateway instance receives its requests' answers on `_sy.gw.<instance>.<request id>` (one wildcard
///   subscription per instance, so replies never cross replicas); the subject travels in the
///   `Switchyard-Reply-To` header.
/// - A gateway instance that reconnected to NATS asks every orchestrator to send again the answers of its
///   requests still waiting on `_sy.resend.<instance token>` (docs/adr/0016).
/// - Admin clients receive replies on `_INBOX_admin.…`, a prefix service users may neither subscribe nor
///   publish to (docs/adr/0009); services use nats.c's default `_INBOX.…`.
public enum ReplySubjects {
    /// Prefix of every gateway reply subject.
    public static let gatewayRoot = "_sy.gw"
    /// Prefix of the resend requests of gateway instances (`_sy.resend.<instance token>`).
    public static let resendRoot = "_sy.resend"
    /// The most request ids one resend request carries (a gateway sends several when more are waiting).
    public static let maxResendIDsPerMessage = 1_000
    /// The inbox prefix of admin clients.
    public static let adminInboxPrefix = "_INBOX_admin"
    /// The default inbox prefix of service connections.
    public static let serviceInboxPrefix = "_INBOX"

    /// `_sy.gw.<instance token>.`: the instance id with anything but ASCII letters, digits and `-` replaced by `-`.
    public static func gatewayPrefix(instanceID: String) -> String {
        "\(gatewayRoot).\(instanceToken(instanceID))."
    }

    /// `_sy.resend.<instance token>`: where gateway instance `instanceID` sends its resend requests.
    public static func resendSubject(instanceID: String) -> String {
        "\(resendRoot).\(instanceToken(instanceID))"
    }

    /// The reply subject of `requestID` at the gateway instance whose token is `token`, or nil when either is not
    /// a plain token (ASCII letters, digits, `-` and `_`): a resend never goes anywhere but a gateway's inbox.
    public static func gatewayReplySubject(instanceToken token: Substring, requestID: String) -> String? {
        guard isPlainToken(token), isPlainToken(Substring(requestID)) else { return nil }
        return "\(gatewayRoot).\(token).\(requestID)"
    }

    static func instanceToken(_ instanceID: String) -> String {
        String(instanceID.unicodeScalars.map {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") ? Character($0) : "-"
        })
    }

    static func isPlainToken(_ token: Substring) -> Bool {
        !token.isEmpty && token.utf8.count <= 128 && token.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F
        }
    }

    /// Whether `subject` is one a service may send a reply to (an inbox, never an arbitrary subject).
    public static func isInbox(_ subject: String) -> Bool {
        subject.hasPrefix(serviceInboxPrefix + ".") || subject.hasPrefix(adminInboxPrefix + ".")
    }
}
