import COpenSSL

/// OpenSSL algorithm implementations fetched once per process (an explicit fetch, instead of the lookup by name
/// that `EVP_Q_digest` / `EVP_Q_mac` make on every call). Fetched objects are immutable and may be shared by
/// threads.
private enum Fetched {
    /// Only nil when the OpenSSL installation is broken; nothing sensible can continue without a hash function.
    nonisolated(unsafe) static let sha256: OpaquePointer = {
        guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { preconditionFailure("OpenSSL SHA-256 unavailable") }
        return md
    }()
    nonisolated(unsafe) static let hmac: OpaquePointer = {
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else { preconditionFailure("OpenSSL HMAC unavailable") }
        return mac
    }()
}

/// SHA-256 through OpenSSL's EVP API.
public enum SHA256 {
    /// Length of a SHA-256 digest in bytes.
    public static let byteCount = 32

    /// The SHA-256 digest of `bytes`.
    public static func hash(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: byteCount)
        var outputLength: UInt32 = 0
        let ok: Int32 = withContiguousBytes(bytes) { input in
            output.withUnsafeMutableBufferPointer { out in
                EVP_Digest(input.baseAddress, input.count, out.baseAddress,
                           &outputLength, Fetched.sha256, nil)
            }
        }
        precondition(ok == 1 && outputLength == UInt32(byteCount), "OpenSSL SHA-256 failed")
        return output
    }

    /// The SHA-256 digest of the UTF-8 bytes of `string`.
    public static func hash(_ string: String) -> [UInt8] {
        var string = string
        return string.withUTF8 { hash($0) }
    }

    /// A digest computed piece by piece (files too large to hold in memory: backups).
    public final class Hasher {
        private let context: OpaquePointer

        public init() {
            guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex2(context, Fetched.sha256, nil) == 1 else {
                preconditionFailure("OpenSSL SHA-256 unavailable")
            }
            self.context = context
        }

        deinit { EVP_MD_CTX_free(context) }

        public func update(_ bytes: some Collection<UInt8>) {
            let ok: Int32 = withContiguousBytes(bytes) { input in EVP_DigestUpdate(context, input.baseAddress, input.count) }
            precondition(ok == 1, "OpenSSL SHA-256 failed")
        }

        /// The digest of everything given so far; the hasher is spent afterwards.
        public func finish() -> [UInt8] {
            var output = [UInt8](repeating: 0, count: byteCount)
            var outputLength: UInt32 = 0
            let ok = output.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &outputLength) }
            precondition(ok == 1 && outputLength == UInt32(byteCount), "OpenSSL SHA-256 failed")
            return output
        }
    }
}

/// HMAC-SHA-256 through OpenSSL's EVP MAC API.
public enum HMACSHA256 {
    /// Length of an HMAC-SHA-256 tag in bytes.
    public static let byteCount = 32

    /// The HMAC-SHA-256 tag of `message` under `key`.
    public static func authenticate(key: some Collection<UInt8>, message: some Collection<UInt8>) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: byteCount)
        var outputLength = 0
        // OpenSSL rejects a NULL key pointer even for an empty key, so always pass a real buffer.
        let keyBytes = Array(key)
        guard let context = EVP_MAC_CTX_new(Fetched.hmac) else { preconditionFailure("OpenSSL HMAC context") }
        defer { EVP_MAC_CTX_free(context) }
        let ok: Bool = OSSL_MAC_PARAM_DIGEST.withCString { name in
            "SHA256".withCString { digest in
                var params = [
                    OSSL_PARAM_construct_utf8_string(name, UnsafeMutablePointer(mutating: digest), 0),
                    OSSL_PARAM_construct_end(),
                ]
                return keyBytes.withUnsafeBufferPointer { keyBuffer in
                    withContiguousBytes(message) { input in
                        output.withUnsafeMutableBufferPointer { out in
                            EVP_MAC_init(context, keyBuffer.baseAddress ?? UnsafePointer(emptyByte), keyBuffer.count,
                                         &params) == 1
                                && EVP_MAC_update(context, input.baseAddress, input.count) == 1
                                && EVP_MAC_final(context, out.baseAddress, &outputLength, byteCount) == 1
                        }
                    }
                }
            }
        }
        precondition(ok && outputLength == byteCount, "OpenSSL HMAC-SHA-256 failed")
        return output
    }

    /// The HMAC-SHA-256 tag of the UTF-8 bytes of `message` under `key`.
    public static func authenticate(key: some Collection<UInt8>, message: String) -> [UInt8] {
        authenticate(key: key, message: Array(message.utf8))
    }
}

/// Compares two byte sequences in time that depends only on their lengths, never on their contents
/// (`CRYPTO_memcmp`). Sequences of different lengths are unequal.
public func constantTimeEquals(_ lhs: some Collection<UInt8>, _ rhs: some Collection<UInt8>) -> Bool {
    let left = Array(lhs)
    let right = Array(rhs)
    guard left.count == right.count else { return false }
    if left.isEmpty { return true }
    return left.withUnsafeBytes { l in
        right.withUnsafeBytes { r in
            CRYPTO_memcmp(l.baseAddress, r.baseAddress, l.count) == 0
        }
    }
}

/// A single zero byte whose address stands in for empty buffers handed to OpenSSL.
private nonisolated(unsafe) let emptyByte: UnsafeMutablePointer<UInt8> = {
    // Never written after initialisation; only its address is used.
    let pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    pointer.initialize(to: 0)
    return pointer
}()

/// Runs `body` over the bytes of `bytes` in contiguous memory, with a non-nil base address even when empty.
@inline(__always)
func withContiguousBytes<R>(_ bytes: some Collection<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    if let result = bytes.withContiguousStorageIfAvailable({ buffer -> R in
        if buffer.baseAddress == nil { return body(UnsafeBufferPointer(start: UnsafePointer(emptyByte), count: 0)) }
        return body(buffer)
    }) {
        return result
    }
    let copy = Array(bytes)
    return copy.withUnsafeBufferPointer { buffer in
        if buffer.baseAddress == nil { return body(UnsafeBufferPointer(start: UnsafePointer(emptyByte), count: 0)) }
        return body(buffer)
    }
}
