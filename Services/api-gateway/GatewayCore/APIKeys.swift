import Schemas
import Security
import Tenancy

/// A syntactically valid key from an `Authorization` header. Holds the secret, so its `description`,
/// `debugDescription` and reflection show only the lookup id.
public struct ParsedKey: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public let environment: APIKeyEnvironment
    /// First 8 characters of the random part: the `apikeys` KV key.
    public let lookupID: String
    /// The full plaintext key. Hash it; never log it.
    let plaintext: String

    init(environment: APIKeyEnvironment, lookupID: String, plaintext: String) {
        self.environment = environment
        self.lookupID = lookupID
        self.plaintext = plaintext
    }

    public var description: String { "ParsedKey(sy_\(environment.rawValue)_\(lookupID)…redacted)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["environment": environment, "lookupID": lookupID], displayStyle: .struct)
    }
}

/// Parses `Authorization: Bearer sy_…` headers. Errors are constant 401s and never contain the header.
public enum APIKeyParser {
    public static func parse(authorizationHeader: String?) -> Result<ParsedKey, GatewayError> {
        guard let header = authorizationHeader else {
            return .failure(.invalidAPIKey("Missing API key. Send 'Authorization: Bearer <key>'."))
        }
        // Bound the work before looking at the content at all.
        guard header.utf8.count <= APIKeyFormat.maxHeaderLength else {
            return .failure(.invalidAPIKey("Malformed Authorization header."))
        }
        var bytes = Substring(header).utf8[...]
        // Trim surrounding spaces/tabs.
        while let first = bytes.first, first == 0x20 || first == 0x09 { bytes.removeFirst() }
        while let last = bytes.last, last == 0x20 || last == 0x09 { bytes.removeLast() }

        // Scheme: "Bearer", case-insensitive, then at least one space.
        let scheme = Array("bearer".utf8)
        guard bytes.count > scheme.count + 1 else {
            return .failure(.invalidAPIKey("Malformed Authorization header."))
        }
        var index = bytes.startIndex
        for expected in scheme {
            let c = bytes[index]
            let lower = (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) ? c + 32 : c
            guard lower == expected else {
                return .failure(.invalidAPIKey("Unsupported authorization scheme; use 'Bearer'."))
            }
            index = bytes.index(after: index)
        }
        guard bytes[index] == 0x20 else {
            return .failure(.invalidAPIKey("Malformed Authorization header."))
        }
        while index < bytes.endIndex, bytes[index] == 0x20 { index = bytes.index(after: index) }
        let token = bytes[index...]

        // The token: no whitespace, no control characters, ASCII only.
        for c in token where c <= 0x20 || c >= 0x7F {
            return .failure(.invalidAPIKey("Malformed Authorization header."))
        }
        return parse(key: token)
    }

    /// Checks the `sy_<live|test>_<base32>` shape of a bare key.
    static func parse(key token: Substring.UTF8View.SubSequence) -> Result<ParsedKey, GatewayError> {
        let malformed = GatewayError.invalidAPIKey("Invalid API key format.")
        let text = String(Substring(token))
        let parts = text.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == APIKeyFormat.scheme,
              let environment = APIKeyEnvironment(rawValue: String(parts[1]))
        else { return .failure(malformed) }
        let random = parts[2]
        guard random.utf8.count == APIKeyFormat.randomLength,
              random.utf8.allSatisfy({ ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))
                  || ($0 >= UInt8(ascii: "2") && $0 <= UInt8(ascii: "7")) })
        else { return .failure(malformed) }
        let lookupID = String(random.prefix(APIKeyFormat.lookupIDLength))
        return .success(ParsedKey(environment: environment, lookupID: lookupID, plaintext: text))
    }
}

/// Who is calling, once a key is verified.
public struct AuthContext: Sendable, Hashable {
    public var tenantID: String
    public var keyID: String
    public var environment: APIKeyEnvironment
    public var scopes: [String]
    public var tenant: Tenant

    public init(tenantID: String, keyID: String, environment: APIKeyEnvironment, scopes: [String], tenant: Tenant) {
        self.tenantID = tenantID
        self.keyID = keyID
        self.environment = environment
        self.scopes = scopes
        self.tenant = tenant
    }
}

/// Verifies a parsed key against its `apikeys` record and its tenant. Pure: the caller looks the record up
/// by `parsed.lookupID` and the tenant by `record.tenantID` (e.g. from `TenantDirectory`) and passes `now`.
///
/// Order: the hash is compared (constant time) before anything about the record is revealed, so an
/// unauthenticated caller learns nothing but "invalid"; only the key's owner sees "revoked"/"expired".
public struct APIKeyVerifier: Sendable {
    /// HMAC pepper; `nil`/empty = plain SHA-256 hashes.
    let pepper: [UInt8]?

    public init(pepper: [UInt8]?) {
        self.pepper = pepper
    }

    public func verify(
        _ parsed: ParsedKey, record: ApiKeyRecord?, tenant: Tenant?, nowUnixNanos: Int64
    ) -> Result<AuthContext, GatewayError> {
        let invalid = GatewayError.invalidAPIKey()
        guard let record else { return .failure(invalid) }

        let computed = Array(APIKeyFormat.hashHex(key: parsed.plaintext, pepper: pepper).utf8)
        let stored = Array(record.hashHex.lowercased().utf8)
        // Lookup id must match too (defends against a record stored under the wrong KV key).
        let lookupMatches = constantTimeEquals(Array(record.prefix.utf8), Array(parsed.lookupID.utf8))
        let hashMatches = constantTimeEquals(computed, stored)
        guard hashMatches, lookupMatches else { return .failure(invalid) }

        if record.status != "active" || (record.revokedAtUnixNanos != 0 && nowUnixNanos >= record.revokedAtUnixNanos) {
            return .failure(.invalidAPIKey("This API key has been revoked."))
        }
        if record.expiresAtUnixNanos != 0 && nowUnixNanos >= record.expiresAtUnixNanos {
            return .failure(.invalidAPIKey("This API key has expired."))
        }
        guard TenantID.isValid(record.tenantID), let tenant, tenant.id == record.tenantID else {
            return .failure(invalid)
        }
        switch tenant.status {
        case "active": break
        case "suspended": return .failure(.tenantSuspended())
        default: return .failure(invalid)  // deleted or unknown
        }
        return .success(AuthContext(tenantID: record.tenantID, keyID: record.keyID.isEmpty ? record.prefix : record.keyID,
                                    environment: parsed.environment, scopes: record.scopes, tenant: tenant))
    }
}

