import Foundation
import Schemas
import Security
import Tenancy

/// Checks admin tokens. Configured as `name:token` pairs (`SWITCHYARD_ADMIN_TOKENS`); only SHA-256 digests are
/// kept in memory and compared in constant time. The token's name is the authenticated actor recorded in the
/// audit log (the caller's declared `actor` is recorded next to it, never trusted alone).
public struct AdminAuthenticator: Sendable {
    struct Credential: Sendable {
        var name: String
        var digest: [UInt8]
    }

    public static let minimumTokenLength = 16
    private let credentials: [Credential]

    public init(tokens: [(name: String, token: String)]) {
        credentials = tokens.map { Credential(name: $0.name, digest: SHA256.hash($0.token)) }
    }

    /// `SWITCHYARD_ADMIN_TOKENS` from the environment, parsed (empty when unset).
    public static func tokens(from environment: EnvironmentReader) throws(ConfigurationError)
        -> [(name: String, token: String)]
    {
        do {
            return try parse(environment.optional("SWITCHYARD_ADMIN_TOKENS") ?? "")
        } catch {
            throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_ADMIN_TOKENS",
                                     expectation: "name:token pairs; names [a-z0-9-], tokens of 16+ characters")
        }
    }

    /// Parses `name:token,name2:token2` (a bare `token` is named "admin").
    public static func parse(_ value: String) throws(AdminFailure) -> [(name: String, token: String)] {
        var result: [(String, String)] = []
        for item in value.split(separator: ",") {
            let item = item.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !item.isEmpty else { continue }
            let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
            let (name, token) = parts.count == 2 ? (parts[0], parts[1]) : ("admin", parts[0])
            guard TenantID.isValid(name) else {
                throw AdminFailure(.invalidArgument, "admin token names must match [a-z0-9][a-z0-9-]{0,62}")
            }
            guard token.utf8.count >= minimumTokenLength else {
                throw AdminFailure(.invalidArgument, "admin tokens must be at least \(minimumTokenLength) characters")
            }
            result.append((name, token))
        }
        return result
    }

    public var isConfigured: Bool { !credentials.isEmpty }

    /// The audited actor of an admin request: the name of the credential its token matches, plus the caller's
    /// declared name when it differs (at most 100 bytes, no control characters). Unauthorized otherwise.
    public func actor(for request: some AdminRequest) throws(AdminFailure) -> String {
        guard let name = authenticate(request.adminToken) else {
            throw AdminFailure(.unauthorized, isConfigured
                ? "missing or invalid admin token" : "no admin tokens are configured (SWITCHYARD_ADMIN_TOKENS)")
        }
        let declared = request.actor
        guard declared.utf8.count <= 100 else { throw AdminFailure(.invalidArgument, "actor is longer than 100 bytes") }
        guard !declared.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw AdminFailure(.invalidArgument, "actor contains control characters")
        }
        return declared.isEmpty || declared == name ? name : "\(name) (\(declared))"
    }

    /// The name of the credential `token` matches, or nil. Every credential is compared (no early exit).
    public func authenticate(_ token: String) -> String? {
        guard !token.isEmpty, token.utf8.count <= 512 else { return nil }
        let digest = SHA256.hash(token)
        var match: String?
        for credential in credentials where constantTimeEquals(credential.digest, digest) {
            match = match ?? credential.name
        }
        return match
    }
}
