import Testing
import Schemas

@Suite("Round trips")
struct RoundTripTests {
    private func roundTrip<M: Sampleable>(_: M.Type, seeds: Range<UInt64>, dense: Bool) throws {
        for seed in seeds {
            var g = SampleGen(seed: seed, dense: dense)
            let original = M.sample(&g)
            let bytes = original.protobufBytes()
            let decoded = try M(protobuf: bytes)
            #expect(decoded == original, "\(M.protoName) seed \(seed) dense \(dense)")
            // Deterministic: re-encoding gives identical bytes.
            #expect(decoded.protobufBytes() == bytes, "\(M.protoName) seed \(seed)")
            if decoded != original { return }
        }
    }

    @Test("every message type round-trips sparse and dense samples", arguments: allSampleableTypes.map(SampleType.init))
    func everyType(_ type: SampleType) throws {
        try roundTrip(type.type, seeds: 0..<150, dense: false)
        try roundTrip(type.type, seeds: 1000..<1150, dense: true)
    }

    @Test func denseSamplesAreNotDefault() throws {
        for type in allSampleableTypes {
            try checkNonDefault(type)
        }
    }

    private func checkNonDefault<M: Sampleable>(_: M.Type) throws {
        var g = SampleGen(seed: 7, dense: true)
        let m = M.sample(&g)
        #expect(m != M(), "\(M.protoName)")
        #expect(!m.protobufBytes().isEmpty, "\(M.protoName)")
    }

    @Test func catalogListsEveryTypeOnce() {
        let names = SchemaCatalog.allMessageTypes.map { $0.protoName }
        #expect(Set(names).count == names.count)
        #expect(names.count == allSampleableTypes.count)
        #expect(names.allSatisfy { $0.hasPrefix("switchyard.v1.") })
        #expect(SchemaCatalog.messageType(named: "switchyard.v1.ChatRequested") == ChatRequested.self)
        #expect(SchemaCatalog.messageType(named: "switchyard.v1.Nope") == nil)
    }

    @Test func chatRequestedFullValue() throws {
        let request = ChatRequested(
            meta: EventMeta(eventID: "e1", tenantID: "pizza-roma", occurredAtUnixNanos: 1_700_000_000_123_456_789,
                            producer: "api-gateway", schemaVersion: 1, requestID: "req-1", traceID: "4bf92f3577b34da6"),
            messages: [
                ChatMessage(role: "system", content: "Du bist ein Gastgeber. 🍕", name: ""),
                ChatMessage(role: "user", content: "Tisch für 2 um 19:00? 日本語も", name: "Jörg"),
                ChatMessage(role: "assistant", content: "", name: ""),
            ],
            model: "local-kb", stream: true, maxTokens: 256, temperature: 0.0,
            conversationID: "conv-42", channel: "web", endUserID: "u-1",
            metadata: ["locale": "de-DE", "": "empty key", "emoji": "🎉"],
            replySubject: "_INBOX.gw1.abc", deadlineUnixNanos: 1_700_000_030_000_000_000,
            includeUsage: true, apiKeyID: "k_123",
            hops: [HopStamp(hop: "gateway.in", unixNanos: 1), HopStamp(hop: "gateway.out", unixNanos: 2)]
        )
        let decoded = try ChatRequested(protobuf: request.protobufBytes())
        #expect(decoded == request)
        #expect(decoded.temperature == 0.0)
        #expect(decoded.metadata[""] == "empty key")
        #expect(decoded.messages[1].name == "Jörg")
    }

    @Test func temperaturePresenceSurvivesTheWire() throws {
        var request = ChatRequested(model: "m")
        #expect(try ChatRequested(protobuf: request.protobufBytes()).temperature == nil)
        request.temperature = 0
        #expect(try ChatRequested(protobuf: request.protobufBytes()).temperature == 0)
        request.temperature = 1.25
        #expect(try ChatRequested(protobuf: request.protobufBytes()).temperature == 1.25)
    }

    @Test func nestedMessagesAndPresence() throws {
        let routed = ChatRouted(
            meta: .make(tenantID: "clinic-7", producer: "router"),
            request: ChatRequested(messages: [ChatMessage(role: "user", content: "hi")], metadata: ["a": "b"]),
            agent: "host", agentVersion: "v2", provider: "local", model: "kb", intent: "reservation",
            rolloutCohort: "canary", reason: "intent match", fallbackAgent: "support",
            hops: [HopStamp(hop: "router.in", unixNanos: 5)]
        )
        #expect(try ChatRouted(protobuf: routed.protobufBytes()) == routed)

        // Unset message fields stay nil; set-but-empty ones stay set.
        let ok = CreateTenantResponse(error: nil, tenant: Tenant())
        let decoded = try CreateTenantResponse(protobuf: ok.protobufBytes())
        #expect(decoded.error == nil)
        #expect(decoded.tenant == Tenant())
        let failed = CreateTenantResponse(error: AdminError(code: "conflict", message: "exists"))
        #expect(try CreateTenantResponse(protobuf: failed.protobufBytes()).error?.code == "conflict")
    }

    @Test func mapsAndRepeatedStrings() throws {
        let tenant = Tenant(id: "shop-1", name: "Shop", featureFlags: ["streaming": true, "handoff": false, "ß": true])
        #expect(try Tenant(protobuf: tenant.protobufBytes()) == tenant)
        let key = ApiKeyRecord(keyID: "k", scopes: ["chat", "", "admin:read", "ü"], status: "active")
        #expect(try ApiKeyRecord(protobuf: key.protobufBytes()) == key)
        let manifest = PackageManifest(packageName: "gastronomy", agents: [
            AgentManifest(agent: "host", intents: [IntentRule(name: "book", keywords: ["tisch", "reservieren"], priority: -3)],
                          enabled: true, handoffThreshold: 0.35),
            AgentManifest(agent: "support"),
        ], defaultAgent: "host")
        #expect(try PackageManifest(protobuf: manifest.protobufBytes()) == manifest)
    }

    @Test func mapEncodingIsIndependentOfInsertionOrder() {
        var a: [String: String] = [:]
        var b: [String: String] = [:]
        let keys = (0..<50).map { "key-\($0)" }
        for k in keys { a[k] = k.uppercased() }
        for k in keys.reversed() { b[k] = k.uppercased() }
        #expect(ChatRequested(metadata: a).protobufBytes() == ChatRequested(metadata: b).protobufBytes())
    }

    @Test func defaultsEncodeToNothingAndEmptyDecodesToDefaults() throws {
        for type in allSampleableTypes {
            try checkDefaults(type)
        }
    }

    private func checkDefaults<M: Sampleable>(_: M.Type) throws {
        #expect(M().protobufBytes().isEmpty, "\(M.protoName)")
        #expect(try M(protobuf: [UInt8]()) == M(), "\(M.protoName)")
    }

    @Test func knownWireBytes() throws {
        // Field 1 (role), wire type 2, length 4, "user"; field 3 (name) "é" as 2 UTF-8 bytes.
        let expected: [UInt8] = [0x0A, 0x04, 0x75, 0x73, 0x65, 0x72, 0x1A, 0x02, 0xC3, 0xA9]
        #expect(ChatMessage(role: "user", name: "é").protobufBytes() == expected)
        #expect(try ChatMessage(protobuf: expected) == ChatMessage(role: "user", name: "é"))
        // Usage.total_tokens = 300 -> field 3 varint [0xAC, 0x02].
        #expect(Usage(totalTokens: 300).protobufBytes() == [0x18, 0xAC, 0x02])
        // has_temperature = field 7, temperature = field 6 (fixed64).
        let t = ChatRequested(temperature: 1.0).protobufBytes()
        #expect(t == [0x31, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0x38, 0x01])
    }

    @Test func largeValuesUseManyArenaChunks() throws {
        let big = String(repeating: "ä", count: 600_000)
        var completed = ChatCompleted(content: big)
        completed.attempts = (0..<500).map { ProviderAttempt(provider: "p\($0)", model: "m", attempt: UInt32($0)) }
        completed.hops = (0..<500).map { HopStamp(hop: "hop-\($0)", unixNanos: Int64($0)) }
        #expect(try ChatCompleted(protobuf: completed.protobufBytes()) == completed)
    }

    @Test func decodesFromNonContiguousAndSlicedCollections() throws {
        let usage = UsageRecorded(conversationID: "c", promptTokens: 10, completionTokens: 20, estimated: true)
        let bytes = usage.protobufBytes()
        #expect(try UsageRecorded(protobuf: bytes.lazy.map { $0 }) == usage)
        let padded = [0xFF, 0xFF] + bytes + [0xFF]
        #expect(try UsageRecorded(protobuf: padded[2..<(2 + bytes.count)]) == usage)
    }
}

/// Wraps a metatype so it can be a parameterized-test argument.
struct SampleType: CustomTestStringConvertible, Sendable {
    let type: any Sampleable.Type
    var testDescription: String { type.protoName }
}
