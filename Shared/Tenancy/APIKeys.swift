import Schemas
import Security

/// API key format and storage rules.
///
/// A key is `sy_<env>_<random>`: `env` is `live` or `test`; `random` is 40 lower-case base32 characters
/// (25 CSPRNG bytes, 200 bits). The first 8 characters of `random` are the **lookup id**: the key of the
/// record in the `apikeys` KV bucket, `ApiKeyRecord.prefix` and `ApiKeyRecord.keyID`. The remaining 32
/// characters (160 bits) never leave the client. Only a hash of the full key is stored:
/// `hex(HMAC-SHA256(pepper, key))` when the operator configures a pepper (so a leaked KV bucket can't be
/// brute-forced offline without the pepper), else `hex(SHA-256(key))`.
///
/// The 40-bit lookup id can collide after ~10⁶ keys: the issuer creates the KV entry with "create only"
/// semantics and regenerates on conflict.
public enum APIKeyFormat {
    /// Literal prefix of every key.
    public static let scheme = "sy"
    /// Characters of the random part.
    public static let randomLength = 40
    /// Characters of the random part that form the lookup id.
    public static let lookupIDLength = 8
    /// Longest accepted `Authorization` header (anything longer is rejected without inspection).
    public static let maxHeaderLength = 200

    /// Stored hash (lower-case hex) of a full plaintext key.
    public static func hashHex(key: String, pepper: [UInt8]?) -> String {
        if let pepper, !pepper.isEmpty {
            return Hex.encode(HMACSHA256.authenticate(key: pepper, message: key))
        }
        return Hex.encode(SHA256.hash(key))
    }

    /// The `apikeys` KV key for a lookup id (the id itself: base32 is a valid KV key).
    public static func kvKey(lookupID: String) -> String { lookupID }
}

/// Where a key may be used.
public enum APIKeyEnvironment: String, Sendable, Hashable, CaseIterable {
    case live
    case test
}

/// Issues new keys (used by the tenant service, the CLI and tests; the gateway verifies them).
public enum APIKeyGenerator {
    /// A new key and the record to store under `APIKeyFormat.kvKey(lookupID: record.prefix)`.
    /// The plaintext is shown to the operator once and never stored.
    ///
    /// - Parameter randomBytes: 25 bytes of randomness; defaults to the CSPRNG (tests inject fixed bytes).
    public static func generate(
        env: APIKeyEnvironment, pepper: [UInt8]?, tenantID: String = "", scopes: [String] = [], label: String = "",
        nowUnixNanos: Int64 = 0, expiresAtUnixNanos: Int64 = 0,
        randomBytes: [UInt8] = SecureRandom.bytes(count: 25)
    ) -> (plaintext: String, record: ApiKeyRecord) {
        precondition(randomBytes.count == 25, "API keys need 25 random bytes")
        let random = Base32.encode(randomBytes)  // 40 characters, lower case
        let plaintext = "\(APIKeyFormat.scheme)_\(env.rawValue)_\(random)"
        let lookupID = String(random.prefix(APIKeyFormat.lookupIDLength))
        let record = ApiKeyRecord(
            keyID: lookupID, prefix: lookupID, hashHex: APIKeyFormat.hashHex(key: plaintext, pepper: pepper),
            tenantID: tenantID, scopes: scopes, status: "active", createdAtUnixNanos: nowUnixNanos,
            expiresAtUnixNanos: expiresAtUnixNanos, revokedAtUnixNanos: 0, label: label)
        return (plaintext, record)
    }
}
