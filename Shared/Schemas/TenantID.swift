/// Tenant id rules. Tenant ids become NATS subject tokens, so anything outside
/// `[a-z0-9][a-z0-9-]{0,62}` (dots, `*`, `>`, spaces, uppercase, non-ASCII, > 63 bytes) is rejected.
public enum TenantID {
    /// Longest valid tenant id, in bytes.
    public static let maxLength = 63

    /// `true` when `id` matches `[a-z0-9][a-z0-9-]{0,62}` exactly.
    public static func isValid(_ id: some StringProtocol) -> Bool {
        var count = 0
        for byte in id.utf8 {
            count += 1
            if count > maxLength { return false }
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                continue
            case UInt8(ascii: "-") where count > 1:
                continue
            default:
                return false
            }
        }
        return count > 0
    }
}
