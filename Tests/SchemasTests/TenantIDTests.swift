import Testing
import Schemas

@Suite("Tenant ids and event meta")
struct TenantIDTests {
    @Test(arguments: ["a", "0", "pizza-roma", "a-", "abc123", "9-lives", String(repeating: "a", count: 63),
                      "a" + String(repeating: "-", count: 62)])
    func valid(_ id: String) {
        #expect(TenantID.isValid(id))
    }

    @Test(arguments: ["", "-a", "a.b", "a*", "*", ">", "a>", "a b", " a", "a ", "A", "acme-Corp", "café",
                      "日本", "a_b", "a/b", "a\u{0}", "a\n", "🦀", String(repeating: "a", count: 64),
                      String(repeating: "b", count: 200), "tenant.*", "ａ"])
    func invalid(_ id: String) {
        #expect(!TenantID.isValid(id))
    }

    @Test func substringsWork() {
        let s = "xx-tenant-1-yy"
        #expect(TenantID.isValid(s.dropFirst(3).dropLast(3)))
        #expect(!TenantID.isValid(s.dropFirst(2)))
    }

    @Test func makeEventMeta() throws {
        let before = EventClock.nowUnixNanos()
        let meta = EventMeta.make(tenantID: "t1", producer: "router", requestID: "r", traceID: "tr")
        let after = EventClock.nowUnixNanos()
        #expect(meta.tenantID == "t1")
        #expect(meta.producer == "router")
        #expect(meta.requestID == "r")
        #expect(meta.traceID == "tr")
        #expect(meta.schemaVersion == EventMeta.currentSchemaVersion)
        #expect(meta.occurredAtUnixNanos >= before && meta.occurredAtUnixNanos <= after)
        #expect(before > 1_600_000_000_000_000_000)
        #expect(meta.eventID.utf8.count == 32)
        #expect(meta.eventID.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        var seen = Set<String>()
        for _ in 0..<2000 { seen.insert(EventMeta.make(tenantID: "t", producer: "p").eventID) }
        #expect(seen.count == 2000)
        #expect(try EventMeta(protobuf: meta.protobufBytes()) == meta)
    }

    @Test func seededEventIDsAreReproducible() {
        var a = SeededRNG(seed: 42)
        var b = SeededRNG(seed: 42)
        #expect(EventID.random(using: &a) == EventID.random(using: &b))
    }
}
