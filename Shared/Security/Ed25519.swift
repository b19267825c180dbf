import COpenSSL

/// Ed25519 signatures through OpenSSL's EVP API (used to sign the tenancy KV mirror so readers can tell the
/// tenant service's records from forged ones; docs/adr/0009).
public enum Ed25519 {
    public static let privateKeyByteCount = 32
    public static let publicKeyByteCount = 32
    public static let signatureByteCount = 64

    /// A signing key (the 32-byte private seed). Holds an `EVP_PKEY`; create once, sign many times.
    public final class SigningKey: @unchecked Sendable {
        fileprivate let key: OpaquePointer
        /// The matching 32-byte public key.
        public let publicKey: [UInt8]

        /// - Returns: nil unless `seed` is exactly 32 bytes.
        public init?(seed: [UInt8]) {
            guard seed.count == privateKeyByteCount,
                  let key = seed.withUnsafeBufferPointer({
                      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count)
                  }) else { return nil }
            var publicKey = [UInt8](repeating: 0, count: publicKeyByteCount)
            var length = publicKeyByteCount
            guard EVP_PKEY_get_raw_public_key(key, &publicKey, &length) == 1, length == publicKeyByteCount else {
                EVP_PKEY_free(key)
                return nil
            }
            self.key = key
            self.publicKey = publicKey
        }

        /// A new random key.
        public static func generate() -> SigningKey {
            SigningKey(seed: SecureRandom.bytes(count: privateKeyByteCount))!
        }

        deinit { EVP_PKEY_free(key) }

        /// The 64-byte signature of `message`.
        public func sign(_ message: some Collection<UInt8>) -> [UInt8] {
            var signature = [UInt8](repeating: 0, count: signatureByteCount)
            var length = signatureByteCount
            let ok: Bool = withContiguousBytes(message) { input in
                guard let context = EVP_MD_CTX_new() else { return false }
                defer { EVP_MD_CTX_free(context) }
                return EVP_DigestSignInit(context, nil, nil, nil, key) == 1
                    && EVP_DigestSign(context, &signature, &length, input.baseAddress, input.count) == 1
            }
            // Signing with a valid Ed25519 key only fails when OpenSSL itself is broken.
            precondition(ok && length == signatureByteCount, "OpenSSL Ed25519 signing failed")
            return signature
        }
    }

    /// A verification key (32-byte public key).
    public final class VerifyingKey: @unchecked Sendable {
        fileprivate let key: OpaquePointer

        /// - Returns: nil unless `publicKey` is a valid 32-byte Ed25519 public key.
        public init?(publicKey: [UInt8]) {
            guard publicKey.count == publicKeyByteCount,
                  let key = publicKey.withUnsafeBufferPointer({
                      EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count)
                  }) else { return nil }
            self.key = key
        }

        deinit { EVP_PKEY_free(key) }

        /// Whether `signature` is this key's signature of `message`.
        public func isValidSignature(_ signature: some Collection<UInt8>, for message: some Collection<UInt8>) -> Bool {
            let signature = Array(signature)
            guard signature.count == signatureByteCount else { return false }
            return withContiguousBytes(message) { input in
                guard let context = EVP_MD_CTX_new() else { return false }
                defer { EVP_MD_CTX_free(context) }
                return EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1
                    && EVP_DigestVerify(context, signature, signature.count, input.baseAddress, input.count) == 1
            }
        }
    }
}
