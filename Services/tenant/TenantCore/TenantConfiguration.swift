import Foundation
import Security
import ServiceKit

/// Tenant-service settings beyond `ServiceConfiguration`.
public struct TenantConfiguration: Sendable {
    /// `SWITCHYARD_ADMIN_TOKENS`: `name:token` pairs (comma-separated) accepted for admin commands.
    public var adminTokens: [(name: String, token: String)]
    /// `SWITCHYARD_KEY_PEPPER` (hex, ≥ 16 bytes): must equal the gateways' pepper.
    public var keyPepper: [UInt8]?
    /// `SWITCHYARD_MIRROR_SIGNING_KEY` (32-byte Ed25519 seed, hex): signs every KV mirror value; readers get
    /// the public key as `SWITCHYARD_MIRROR_PUBLIC_KEY` (docs/adr/0009).
    public var mirrorSigningKey: Ed25519.SigningKey?

    public init(adminTokens: [(name: String, token: String)], keyPepper: [UInt8]? = nil,
                mirrorSigningKey: Ed25519.SigningKey? = nil) {
        self.adminTokens = adminTokens
        self.keyPepper = keyPepper
        self.mirrorSigningKey = mirrorSigningKey
    }

    public init(environment: EnvironmentReader = EnvironmentReader()) throws(ConfigurationError) {
        let tokens = try AdminAuthenticator.tokens(from: environment)
        guard !tokens.isEmpty else {
            throw ConfigurationError(code: .empty, variable: "SWITCHYARD_ADMIN_TOKENS",
                                     expectation: "at least one name:token pair (admin commands need a credential)")
        }
        let signingExpectation = "a 32-byte Ed25519 private key (seed), hex-encoded"
        var signingKey: Ed25519.SigningKey?
        if let seed = try environment.hexSecret("SWITCHYARD_MIRROR_SIGNING_KEY", minimumBytes: 32,
                                                expectation: signingExpectation) {
            guard let key = Ed25519.SigningKey(seed: seed) else {
                throw ConfigurationError(code: .invalidChoice, variable: "SWITCHYARD_MIRROR_SIGNING_KEY",
                                         expectation: signingExpectation)
            }
            signingKey = key
        }
        self.init(adminTokens: tokens, keyPepper: try environment.keyPepper(), mirrorSigningKey: signingKey)
    }
}
