import Testing
import Schemas

/// Every decoder must either succeed or throw `SchemaError` for arbitrary input — never crash.
/// Inputs come from a seeded PRNG, so any failure reproduces with the printed seed.
@Suite("Decoder robustness")
struct RobustnessTests {
    struct Stats {
        var accepted = 0
        var rejected = 0
        var invalidUTF8 = 0
        var unstable: [String] = []
    }

    /// Decodes `bytes`; when accepted, checks that encode(decode(x)) is a fixed point.
    private static func probe<M: ProtoMessage>(_: M.Type, _ bytes: [UInt8], _ stats: inout Stats, _ label: @autoclosure () -> String) {
        do {
            let m = try M(protobuf: bytes)
            stats.accepted += 1
            let once = m.protobufBytes()
            do {
                let twice = try M(protobuf: once).protobufBytes()
                if twice != once, stats.unstable.count < 5 { stats.unstable.append(label()) }
            } catch {
                if stats.unstable.count < 5 { stats.unstable.append(label() + " (re-decode threw \(error))") }
            }
        } catch {
            stats.rejected += 1
            if error.code == .invalidUTF8 { stats.invalidUTF8 += 1 }
            #expect(error.messageType == M.protoName)
            #expect(!error.isRetriable)
        }
    }

    private static func varint(_ v: UInt64) -> [UInt8] {
        var v = v
        var out: [UInt8] = []
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
        return out
    }

    private static func mutate(_ valid: [UInt8], _ rng: inout SeededRNG) -> [UInt8] {
        var b = valid
        switch Int.random(in: 0..<9, using: &rng) {
        case 0 where !b.isEmpty: // bit flips
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<b.count, using: &rng)
                b[i] ^= 1 << UInt8.random(in: 0...7, using: &rng)
            }
        case 1 where !b.isEmpty: // truncation
            b.removeLast(Int.random(in: 1...b.count, using: &rng))
        case 2: // huge length-delimited field (length varint up to 2^64-1)
            let field = UInt64.random(in: 1...20, using: &rng)
            let len: UInt64 = [UInt64.max, UInt64(Int64.max), UInt64(UInt32.max), 1 << 35, 16 << 20][Int.random(in: 0..<5, using: &rng)]
            let at = Int.random(in: 0...b.count, using: &rng)
            b.insert(contentsOf: varint(field << 3 | 2) + varint(len) + [0x41, 0x42], at: at)
        case 3 where !b.isEmpty: // wrong wire type on an existing tag byte
            let i = Int.random(in: 0..<b.count, using: &rng)
            b[i] = (b[i] & ~0x07) | UInt8.random(in: 0...7, using: &rng)
        case 4: // overlong / unterminated varint
            let at = Int.random(in: 0...b.count, using: &rng)
            b.insert(contentsOf: [UInt8](repeating: 0xFF, count: Int.random(in: 9...12, using: &rng)), at: at)
        case 5 where !b.isEmpty: // random byte overwrite with invalid UTF-8 leads
            let i = Int.random(in: 0..<b.count, using: &rng)
            b[i] = [0xFF, 0xC0, 0xE0, 0xF8, 0x80, 0x00][Int.random(in: 0..<6, using: &rng)]
        case 6: // duplicated valid bytes (repeated fields / last-one-wins)
            b += valid
        case 7: // random garbage appended
            b += (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        default: // group / reserved wire types and field number 0
            let tags: [UInt8] = [0x03, 0x04, 0x0B, 0x0C, 0x06, 0x07, 0x00, 0x02]
            b.insert(tags[Int.random(in: 0..<tags.count, using: &rng)], at: Int.random(in: 0...b.count, using: &rng))
        }
        return b
    }

    private static func fuzz<M: Sampleable>(_: M.Type, seed: UInt64) -> Stats {
        var stats = Stats()
        var rng = SeededRNG(seed: seed)
        // Random byte strings.
        for i in 0..<1500 {
            let n = Int.random(in: 0...48, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            probe(M.self, bytes, &stats, "\(M.protoName) random #\(i) seed \(seed)")
        }
        // Mutated valid encodings.
        for i in 0..<1500 {
            var g = SampleGen(seed: seed &+ UInt64(i), dense: i % 2 == 0)
            let valid = M.sample(&g).protobufBytes()
            var bytes = mutate(valid, &rng)
            if i % 5 == 0 { bytes = mutate(bytes, &rng) }
            probe(M.self, bytes, &stats, "\(M.protoName) mutation #\(i) seed \(seed)")
        }
        return stats
    }

    @Test("random and mutated input never crashes a decoder", arguments: allSampleableTypes.map(SampleType.init))
    func fuzzDecoder(_ type: SampleType) {
        let stats = Self.fuzz(type.type, seed: 0x5EED_0000 &+ UInt64(type.type.protoName.utf8.count))
        #expect(stats.accepted + stats.rejected == 3000)
        #expect(stats.rejected > 0, "some corrupt inputs must be rejected")
        #expect(stats.accepted > 0, "some inputs must decode")
        #expect(stats.unstable.isEmpty, "encode(decode(x)) must be stable: \(stats.unstable)")
    }

    @Test func stringFieldsRejectInvalidUTF8() {
        // ChatMessage.content (field 2) = [0xFF, 0xFE]; overlong "/" ; lone surrogate; truncated sequence.
        let bad: [[UInt8]] = [[0x12, 0x02, 0xFF, 0xFE], [0x12, 0x02, 0xC0, 0xAF], [0x12, 0x03, 0xED, 0xA0, 0x80],
                              [0x12, 0x02, 0xE6, 0x97]]
        for bytes in bad {
            #expect(throws: SchemaError(.invalidUTF8, messageType: ChatMessage.protoName)) {
                try ChatMessage(protobuf: bytes)
            }
        }
        // Also inside nested messages, repeated strings and map keys.
        let nested: [UInt8] = [0x12, 0x04] + [0x12, 0x02, 0xFF, 0xFE] // ChatRequested.messages[0].content
        #expect(throws: SchemaError.self) { try ChatRequested(protobuf: nested) }
        let tag: [UInt8] = [0x2A, 0x01, 0xFF] // ApiKeyRecord.scopes[0]
        #expect(throws: SchemaError(.invalidUTF8, messageType: ApiKeyRecord.protoName)) { try ApiKeyRecord(protobuf: tag) }
        let mapKey: [UInt8] = [0x4A, 0x05, 0x0A, 0x01, 0xFF, 0x10, 0x01] // Tenant.feature_flags {"\xFF": true}
        #expect(throws: SchemaError(.invalidUTF8, messageType: Tenant.protoName)) { try Tenant(protobuf: mapKey) }
    }

    @Test func malformedAndOversizedInput() throws {
        #expect(throws: SchemaError(.malformed, messageType: ChatMessage.protoName)) {
            try ChatMessage(protobuf: [0x0A, 0x05, 0x61]) // length 5, 1 byte present
        }
        #expect(throws: SchemaError(.malformed, messageType: Usage.protoName)) {
            try Usage(protobuf: [0x08] + [UInt8](repeating: 0xFF, count: 11)) // varint longer than 10 bytes
        }
        #expect(throws: SchemaError(.malformed, messageType: ChatMessage.protoName)) {
            try ChatMessage(protobuf: [0x0A] + Self.varint(.max) + [0x61])
        }
        let tooLarge = [UInt8](repeating: 0, count: SchemaLimits.maxPayloadBytes + 1)
        #expect(throws: SchemaError(.tooLarge, messageType: ChatCompleted.protoName)) {
            try ChatCompleted(protobuf: tooLarge)
        }
        // Exactly at the limit is not rejected for size (a 16 MiB string field decodes).
        let content = [UInt8](repeating: 0x61, count: SchemaLimits.maxPayloadBytes - 5)
        let atLimit = [0x3A] + Self.varint(UInt64(content.count)) + content
        #expect(atLimit.count == SchemaLimits.maxPayloadBytes)
        #expect(try ChatCompleted(protobuf: atLimit).content.utf8.count == content.count)
    }

    @Test func errorDescriptionNeverContainsPayload() {
        let secret = "sy_live_SECRETSECRET"
        let bytes: [UInt8] = [0x12, UInt8(secret.utf8.count + 1)] + Array(secret.utf8) + [0xFF]
        do {
            _ = try IssueKeyResponse(protobuf: bytes)
            Issue.record("expected a SchemaError")
        } catch {
            #expect(error.code == .invalidUTF8)
            #expect(!error.description.contains("SECRET"))
            #expect(error.description == "SchemaError(invalidUTF8, type: switchyard.v1.IssueKeyResponse)")
        }
    }
}
