import Security

/// Signed values in the tenancy KV mirror (docs/adr/0009).
///
/// The tenant service signs every value it writes to the `tenants` and `apikeys` buckets with its Ed25519
/// key (`SWITCHYARD_MIRROR_SIGNING_KEY`); readers configured with the public key
/// (`SWITCHYARD_MIRROR_PUBLIC_KEY`) accept only values carrying a valid signature over the bucket, the KV key
/// and the payload — so a record written by anyone else (a compromised service that found a way to publish
/// into `$KV.…`) or moved to another key is ignored.
///
/// Layout: `0xFF 0x53 0x01` ‖ 64-byte signature ‖ protobuf payload. `0xFF 0x53` can never start a valid
/// protobuf message (it would be a tag with wire type 7), so signed and unsigned values are told apart
/// without ambiguity.
public enum MirrorSignature {
    static let magic: [UInt8] = [0xFF, 0x53, 0x01]
    static let headerLength = 3 + Ed25519.signatureByteCount

    static func message(bucket: String, key: String, payload: some Collection<UInt8>) -> [UInt8] {
        Array(bucket.utf8) + [0x2F] + Array(key.utf8) + [0x00] + Array(payload)
    }

    /// The value to store: signed when `signer` is set, else the payload as is.
    public static func seal(bucket: String, key: String, payload: [UInt8], signer: Ed25519.SigningKey?) -> [UInt8] {
        guard let signer else { return payload }
        return magic + signer.sign(message(bucket: bucket, key: key, payload: payload)) + payload
    }

    /// The payload of a stored value, or nil when it must be ignored: with a `verifier`, only values with a
    /// valid signature for this bucket and key pass; without one, signed and unsigned values both pass.
    public static func open(bucket: String, key: String, value: [UInt8], verifier: Ed25519.VerifyingKey?) -> [UInt8]? {
        let signed = value.count >= headerLength && value.starts(with: magic)
        guard let verifier else { return signed ? Array(value[headerLength...]) : value }
        guard signed else { return nil }
        let signature = value[3..<headerLength]
        let payload = value[headerLength...]
        guard verifier.isValidSignature(signature, for: message(bucket: bucket, key: key, payload: payload)) else {
            return nil
        }
        return Array(payload)
    }
}
