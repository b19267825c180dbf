import COpenSSL

/// SHA-256 through OpenSSL's EVP API.
public enum SHA256 {
    /// Length of a SHA-256 digest in bytes.
    public static let byteCount = 32

    /// The SHA-256 digest of `bytes`.
    public static func hash(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: byteCount)
        var outputLength: UInt = 0
        let ok: Int32 = withContiguousBytes(bytes) { input in
            output.withUnsafeMutableBufferPointer { out in
                EVP_Q_digest(nil, "SHA256", nil, input.baseAddress, input.count, out.baseAddress, &outputLength)
            }
        }
        // EVP_Q_digest only fails when the SHA256 implementation can't be fetched, which means the OpenSSL
        // installation is broken; nothing sensible can continue without a hash function.
        precondition(ok == 1 && outputLength == UInt(byteCount), "OpenSSL SHA-256 unavailable")
        return output
    }

    /// The SHA-256 digest of the UTF-8 bytes of `string`.
    public static func hash(_ string: String) -> [UInt8] {
        hash(Array(string.utf8))
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
        let result: UnsafeMutablePointer<UInt8>? = keyBytes.withUnsafeBufferPointer { keyBuffer in
            let keyPointer = keyBuffer.baseAddress ?? UnsafePointer(emptyByte)
            return withContiguousBytes(message) { input in
                output.withUnsafeMutableBufferPointer { out in
                    EVP_Q_mac(
                        nil, "HMAC", nil, "SHA256", nil,
                        keyPointer, keyBuffer.count,
                        input.baseAddress, input.count,
                        out.baseAddress, byteCount, &outputLength
                    )
                }
            }
        }
        precondition(result != nil && outputLength == byteCount, "OpenSSL HMAC-SHA-256 unavailable")
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
