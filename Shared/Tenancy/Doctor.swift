import Foundation
import Schemas
import Security

/// The production-readiness check (`switchyard doctor`, docs/OPERATIONS.md): every service instance answers a
/// doctor probe (core NATS `_sy.doctor`, no queue group, so every replica answers) with its own findings —
/// secrets set and not defaults, migrations applied, disk, its providers — and the tenant service adds the
/// platform's (streams, consumers, buckets, storage) and gathers them for `admin.tenant.doctor`.
public enum Doctor {
    /// The probe subject every service instance answers.
    public static let probeSubject = "_sy.doctor"

    public enum Status: String, Sendable { case pass, warn, fail }

    public static func check(_ status: Status, _ name: String, _ detail: String) -> DoctorCheck {
        DoctorCheck(name: name, status: status.rawValue, detail: detail)
    }
}

/// Whether a secret is set, long enough, and not a value anybody could know: the dev overlay's, the docs',
/// a placeholder. Never reports the value.
public enum SecretHygiene {
    /// Fragments of values that are public: placeholders and the dev-only values committed in `k8s/overlays/dev`.
    static let publicFragments = ["devonly", "dev-only", "changeme", "change-me", "change_me", "example", "placeholder",
                                  "insecure", "dec0dedec0de", "your-", "xxxx", "replace-me", "todo"]
    /// Whole values that are guesses, compared ignoring case.
    static let guessable: Set<String> = ["password", "passw0rd", "secret", "admin", "token", "test", "default", "nats",
                                         "switchyard", "postgres", "root", "letmein", "1234567890123456"]
    /// Public keys and seeds (hex) committed for dev only.
    static let publicHex: Set<String> = [
        "a1bf422f92eebadada278b51f874139b886eedf536aff226a86ad5f1fbe6672d",  // k8s dev mirror signing key
        "204c19d183a85bb408cc8c60ebb31f9d30cc564afbcfdf722fa96877215480f7",  // its public key
        "dec0dedec0dedec0dedec0dedec0de00",  // k8s dev key pepper
    ]

    /// A text secret: `unset` says what happens without it (nil: it is required, so unset fails).
    public static func check(_ name: String, _ value: String?, minimumLength: Int = 16, unset: String? = nil)
        -> DoctorCheck
    {
        let label = "secret \(name)"
        guard let value, !value.isEmpty else {
            if let unset { return Doctor.check(.warn, label, "not set: \(unset)") }
            return Doctor.check(.fail, label, "not set")
        }
        if let problem = weakness(value, minimumLength: minimumLength) { return Doctor.check(.fail, label, problem) }
        return Doctor.check(.pass, label, "set (\(value.count) characters), not a known default")
    }

    /// A binary secret (pepper, key seed), checked by its hex form.
    public static func check(_ name: String, bytes: [UInt8]?, minimumBytes: Int = 16, unset: String? = nil) -> DoctorCheck {
        let label = "secret \(name)"
        guard let bytes, !bytes.isEmpty else {
            if let unset { return Doctor.check(.warn, label, "not set: \(unset)") }
            return Doctor.check(.fail, label, "not set")
        }
        let hex = Hex.encode(bytes)
        if bytes.count < minimumBytes { return Doctor.check(.fail, label, "only \(bytes.count) bytes (want \(minimumBytes)+)") }
        if publicHex.contains(hex) || Set(bytes).count <= 2 || publicFragments.contains(where: { hex.contains($0) }) {
            return Doctor.check(.fail, label, "a known default or trivial value (e.g. the k8s dev overlay's): generate a random one")
        }
        return Doctor.check(.pass, label, "set (\(bytes.count) bytes), not a known default")
    }

    /// Why `value` is weak, or nil.
    static func weakness(_ value: String, minimumLength: Int) -> String? {
        let lower = value.lowercased()
        if publicFragments.contains(where: { lower.contains($0) }) || guessable.contains(lower) || publicHex.contains(lower) {
            return "a known default or placeholder (e.g. the k8s dev overlay's or the docs'): generate a random one"
        }
        if Set(value).count <= 2 { return "trivial (at most two distinct characters)" }
        if value.count < minimumLength { return "shorter than \(minimumLength) characters" }
        return nil
    }
}
