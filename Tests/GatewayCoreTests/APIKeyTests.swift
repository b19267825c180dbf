@testable import GatewayCore
import Tenancy
import Schemas
import Security
import Testing

@Suite("API keys")
struct APIKeyTests {
    static let fixedRandom: [UInt8] = Array(0..<25)
    let pepper: [UInt8] = Array("pepper-for-tests".utf8)
    let now: Int64 = 1_700_000_000_000_000_000

    func issue(env: APIKeyEnvironment = .live, pepper: [UInt8]? = nil, tenant: String = "acme",
               expiresAt: Int64 = 0) -> (String, ApiKeyRecord) {
        let generated = APIKeyGenerator.generate(env: env, pepper: pepper, tenantID: tenant, scopes: ["chat"],
                                                 label: "ci", nowUnixNanos: now - 1, expiresAtUnixNanos: expiresAt)
        return (generated.plaintext, generated.record)
    }

    func tenant(_ id: String = "acme", status: String = "active") -> Tenant {
        Tenant(id: id, name: "Acme", planID: "starter", status: status)
    }

    func parsed(_ key: String) throws -> ParsedKey {
        try #require(success(APIKeyParser.parse(authorizationHeader: "Bearer \(key)")))
    }

    // MARK: Generator

    @Test func generatorFormat() throws {
        let (plaintext, record) = APIKeyGenerator.generate(env: .test, pepper: nil, tenantID: "acme",
                                                           randomBytes: Self.fixedRandom)
        let random = Base32.encode(Self.fixedRandom)
        #expect(plaintext == "sy_test_" + random)
        #expect(random.count == 40)
        #expect(record.prefix == String(random.prefix(8)))
        #expect(record.keyID == record.prefix)
        #expect(APIKeyFormat.kvKey(lookupID: record.prefix) == record.prefix)
        #expect(record.hashHex == Hex.encode(SHA256.hash(plaintext)))
        #expect(record.status == "active")
        #expect(record.tenantID == "acme")
        #expect(!record.hashHex.contains(plaintext))

        let peppered = APIKeyGenerator.generate(env: .live, pepper: pepper, randomBytes: Self.fixedRandom)
        #expect(peppered.record.hashHex == Hex.encode(HMACSHA256.authenticate(key: pepper, message: peppered.plaintext)))
        #expect(peppered.record.hashHex != Hex.encode(SHA256.hash(peppered.plaintext)))
    }

    @Test func generatedKeysAreUnique() {
        let a = APIKeyGenerator.generate(env: .live, pepper: nil).plaintext
        let b = APIKeyGenerator.generate(env: .live, pepper: nil).plaintext
        #expect(a != b)
        #expect(a.hasPrefix("sy_live_"))
    }

    @Test(arguments: [false, true])
    func roundTrip(withPepper: Bool) throws {
        let pepper = withPepper ? self.pepper : nil
        let (plaintext, record) = issue(pepper: pepper)
        let key = try parsed(plaintext)
        #expect(key.lookupID == record.prefix)
        #expect(key.environment == .live)
        let context = try #require(success(APIKeyVerifier(pepper: pepper).verify(
            key, record: record, tenant: tenant(), nowUnixNanos: now)))
        #expect(context.tenantID == "acme")
        #expect(context.keyID == record.keyID)
        #expect(context.scopes == ["chat"])
        #expect(context.environment == .live)
        #expect(context.tenant.id == "acme")
    }

    @Test func parsedKeyNeverPrintsSecret() throws {
        let (plaintext, _) = issue()
        let key = try parsed(plaintext)
        let secretPart = String(plaintext.dropFirst("sy_live_".count + 8))
        #expect(!String(describing: key).contains(secretPart))
        #expect(!String(reflecting: key).contains(secretPart))
        var dumped = ""
        dump(key, to: &dumped)
        #expect(!dumped.contains(secretPart))
    }

    // MARK: Verification failures

    @Test func wrongKey() throws {
        let (plaintext, record) = issue()
        // Same lookup id, different secret.
        var chars = Array(plaintext)
        chars[chars.count - 1] = chars[chars.count - 1] == "a" ? "b" : "a"
        let forged = try parsed(String(chars))
        let error = try #require(failure(APIKeyVerifier(pepper: nil).verify(forged, record: record, tenant: tenant(),
                                                                            nowUnixNanos: now)))
        #expect(error.status == 401)
        #expect(error.code == .invalidAPIKey)
        expectNoEcho(error, [String(chars), plaintext])
    }

    @Test func wrongPepper() throws {
        let (plaintext, record) = issue(pepper: pepper)
        let error = failure(APIKeyVerifier(pepper: Array("other".utf8)).verify(
            try parsed(plaintext), record: record, tenant: tenant(), nowUnixNanos: now))
        #expect(error?.status == 401)
    }

    @Test func unknownKey() throws {
        let (plaintext, _) = issue()
        let error = failure(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: nil, tenant: tenant(),
                                                               nowUnixNanos: now))
        #expect(error?.status == 401)
        #expect(error?.code == .invalidAPIKey)
    }

    @Test func revoked() throws {
        let (plaintext, record) = issue()
        var revoked = record
        revoked.status = "revoked"
        revoked.revokedAtUnixNanos = now - 10
        let error = try #require(failure(APIKeyVerifier(pepper: nil).verify(
            try parsed(plaintext), record: revoked, tenant: tenant(), nowUnixNanos: now)))
        #expect(error.status == 401)
        #expect(error.message.contains("revoked"))
        expectNoEcho(error, [plaintext])

        // Revocation scheduled in the future (rotation overlap): still valid until then.
        var scheduled = record
        scheduled.revokedAtUnixNanos = now + 10
        #expect(success(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: scheduled, tenant: tenant(),
                                                           nowUnixNanos: now)) != nil)
        #expect(failure(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: scheduled, tenant: tenant(),
                                                           nowUnixNanos: now + 10))?.status == 401)
    }

    @Test func expired() throws {
        let (plaintext, record) = issue(expiresAt: now)
        let error = try #require(failure(APIKeyVerifier(pepper: nil).verify(
            try parsed(plaintext), record: record, tenant: tenant(), nowUnixNanos: now)))
        #expect(error.status == 401)
        #expect(error.message.contains("expired"))
        #expect(success(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: record, tenant: tenant(),
                                                           nowUnixNanos: now - 1)) != nil)
    }

    @Test func statusOfRevokedKeyNotRevealedToWrongSecret() throws {
        let (plaintext, record) = issue()
        var revoked = record
        revoked.status = "revoked"
        var chars = Array(plaintext)
        chars[chars.count - 1] = chars[chars.count - 1] == "a" ? "b" : "a"
        let error = failure(APIKeyVerifier(pepper: nil).verify(try parsed(String(chars)), record: revoked,
                                                               tenant: tenant(), nowUnixNanos: now))
        #expect(error == GatewayError.invalidAPIKey())
    }

    @Test func suspendedTenant() throws {
        let (plaintext, record) = issue()
        let error = try #require(failure(APIKeyVerifier(pepper: nil).verify(
            try parsed(plaintext), record: record, tenant: tenant(status: "suspended"), nowUnixNanos: now)))
        #expect(error.status == 403)
        #expect(error.code == .tenantSuspended)
        #expect(error.type == "permission_error")
    }

    @Test func missingOrMismatchedTenant() throws {
        let (plaintext, record) = issue()
        let verifier = APIKeyVerifier(pepper: nil)
        #expect(failure(verifier.verify(try parsed(plaintext), record: record, tenant: nil, nowUnixNanos: now))?.status
            == 401)
        #expect(failure(verifier.verify(try parsed(plaintext), record: record, tenant: tenant("other"),
                                        nowUnixNanos: now))?.status == 401)
        #expect(failure(verifier.verify(try parsed(plaintext), record: record, tenant: tenant(status: "deleted"),
                                        nowUnixNanos: now))?.status == 401)
        // A record pointing at an invalid tenant id (not a subject token) is never accepted.
        let (badPlain, badRecord) = issue(tenant: "Bad.Tenant")
        #expect(failure(verifier.verify(try parsed(badPlain), record: badRecord, tenant: tenant("Bad.Tenant"),
                                        nowUnixNanos: now))?.status == 401)
    }

    @Test func recordUnderWrongLookupID() throws {
        let (plaintext, record) = issue()
        var moved = record
        moved.prefix = "zzzzzzzz"
        #expect(failure(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: moved, tenant: tenant(),
                                                           nowUnixNanos: now))?.status == 401)
    }

    @Test func upperCaseStoredHashAccepted() throws {
        let (plaintext, record) = issue()
        var upper = record
        upper.hashHex = record.hashHex.uppercased()
        #expect(success(APIKeyVerifier(pepper: nil).verify(try parsed(plaintext), record: upper, tenant: tenant(),
                                                           nowUnixNanos: now)) != nil)
    }

    // MARK: Parsing

    @Test func schemeIsCaseInsensitiveAndTrimmed() throws {
        let (plaintext, _) = issue()
        for header in ["bearer \(plaintext)", "BEARER \(plaintext)", "  Bearer   \(plaintext)  ", "Bearer \(plaintext)\t"] {
            let key = try #require(success(APIKeyParser.parse(authorizationHeader: header)))
            #expect(key.plaintext == plaintext)
        }
    }

    @Test func malformedHeaders() {
        let (plaintext, _) = issue()
        let random = String(plaintext.dropFirst("sy_live_".count))
        let headers: [String?] = [
            nil,
            "",
            "Bearer",
            "Bearer ",
            "Bearer\(plaintext)",
            "Basic \(plaintext)",
            "Basic dXNlcjpwYXNz",
            "Token \(plaintext)",
            "Bearer \(plaintext) extra",
            "Bearer \(plaintext)\u{0}",
            "Bearer \(plaintext)\r\nX-Injected: 1",
            "Bearer \t\(plaintext)",
            "Bearer sy_prod_\(random)",
            "Bearer sk-\(random)",
            "Bearer sy_live_\(random.uppercased())",
            "Bearer sy_live_\(random)a",
            "Bearer sy_live_\(random.dropLast())",
            "Bearer sy_live_\(random.dropLast())1",
            "Bearer sy_live__\(random)",
            "Bearer sy_live_\(random.dropLast())é",
            "Bearer " + String(repeating: "A", count: 10_000),
            String(repeating: "x", count: 10 * 1024),
        ]
        for header in headers {
            guard let error = failure(APIKeyParser.parse(authorizationHeader: header)) else { continue }
            #expect(error.status == 401)
            #expect(error.code == .invalidAPIKey)
            #expect(error.type == "authentication_error")
            if let header, !header.isEmpty {
                expectNoEcho(error, [header, random, "dXNlcjpwYXNz"])
            }
        }
    }

    @Test func oversizedHeaderRejectedFast() throws {
        let header = "Bearer sy_live_" + String(repeating: "a", count: 10 * 1024)
        let error = try #require(failure(APIKeyParser.parse(authorizationHeader: header)))
        #expect(error.status == 401)
        #expect(error.message == "Malformed Authorization header.")
    }

    @Test func basicSchemeMessage() throws {
        let error = try #require(failure(APIKeyParser.parse(authorizationHeader: "Basic dXNlcjpwYXNz")))
        #expect(error.message.contains("Bearer"))
        expectNoEcho(error, ["dXNlcjpwYXNz"])
    }
}
