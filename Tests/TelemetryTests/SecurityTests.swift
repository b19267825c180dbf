import Security
import Testing

@Suite("Security")
struct SecurityTests {
    @Test func sha256KnownVectors() {
        #expect(Hex.encode(SHA256.hash("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Hex.encode(SHA256.hash("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            Hex.encode(SHA256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func hmacRFC4231Vectors() throws {
        // Test case 1.
        let tag1 = HMACSHA256.authenticate(key: [UInt8](repeating: 0x0b, count: 20), message: "Hi There")
        #expect(Hex.encode(tag1) == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        // Test case 2.
        let tag2 = HMACSHA256.authenticate(key: Array("Jefe".utf8), message: "what do ya want for nothing?")
        #expect(Hex.encode(tag2) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Test case 6: key longer than the block size.
        let tag6 = HMACSHA256.authenticate(
            key: [UInt8](repeating: 0xaa, count: 131),
            message: "Test Using Larger Than Block-Size Key - Hash Key First")
        #expect(Hex.encode(tag6) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        // Empty key and message still work.
        #expect(HMACSHA256.authenticate(key: [], message: []).count == 32)
    }

    @Test func constantTimeEqualsIsLengthSafe() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(!constantTimeEquals([], [0]))
        #expect(constantTimeEquals([UInt8](), [UInt8]()))
        #expect(constantTimeEquals(SHA256.hash("k")[...], SHA256.hash("k")))
    }

    @Test func secureRandomProducesDistinctBytes() {
        let a = SecureRandom.bytes(count: 32)
        let b = SecureRandom.bytes(count: 32)
        #expect(a.count == 32)
        #expect(a != b)
        #expect(SecureRandom.bytes(count: 0).isEmpty)
    }

    @Test func hexRoundTripAndRejects() {
        let bytes: [UInt8] = [0x00, 0x7f, 0x80, 0xff, 0x12]
        #expect(Hex.encode(bytes) == "007f80ff12")
        #expect(Hex.decode("007F80ff12") == bytes)
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("") == [])
    }

    @Test(arguments: [
        ("", ""), ("f", "my"), ("fo", "mzxq"), ("foo", "mzxw6"), ("foob", "mzxw6yq"), ("fooba", "mzxw6ytb"),
        ("foobar", "mzxw6ytboi"),
    ])
    func base32RFC4648Vectors(plain: String, encoded: String) {
        #expect(Base32.encode(Array(plain.utf8)) == encoded)
        #expect(Base32.decode(encoded) == Array(plain.utf8))
        #expect(Base32.decode(encoded.uppercased()) == Array(plain.utf8))
    }

    @Test func base32RejectsInvalid() {
        #expect(Base32.decode("mzxw1") == nil)  // '1' not in alphabet
        #expect(Base32.decode("m") == nil)  // impossible length
        #expect(Base32.decode("mz") == nil)  // non-zero trailing bits
        let random = SecureRandom.bytes(count: 20)
        #expect(Base32.decode(Base32.encode(random)) == random)
    }

    @Test func ed25519KnownAnswerAndTampering() throws {
        // RFC 8032, section 7.1, test 1 (empty message) and test 2 (one byte 0x72).
        let seed = try #require(Hex.decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
        let key = try #require(Ed25519.SigningKey(seed: seed))
        #expect(Hex.encode(key.publicKey) == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        #expect(Hex.encode(key.sign([UInt8]())) == "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            + "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
        let seed2 = try #require(Hex.decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"))
        let key2 = try #require(Ed25519.SigningKey(seed: seed2))
        #expect(Hex.encode(key2.sign([0x72])) == "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            + "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")

        let verifier = try #require(Ed25519.VerifyingKey(publicKey: key.publicKey))
        let message = Array("tenants/acme\u{0}payload".utf8)
        let signature = key.sign(message)
        #expect(verifier.isValidSignature(signature, for: message))
        var tampered = message
        tampered[0] ^= 1
        #expect(!verifier.isValidSignature(signature, for: tampered))
        var badSignature = signature
        badSignature[10] ^= 0x80
        #expect(!verifier.isValidSignature(badSignature, for: message))
        #expect(!verifier.isValidSignature(signature.prefix(63), for: message))
        let other = try #require(Ed25519.VerifyingKey(publicKey: key2.publicKey))
        #expect(!other.isValidSignature(signature, for: message))
        #expect(Ed25519.SigningKey(seed: Array(seed.prefix(31))) == nil)
        #expect(Ed25519.VerifyingKey(publicKey: [UInt8](repeating: 1, count: 33)) == nil)
    }
}
