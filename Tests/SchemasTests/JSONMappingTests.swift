import Foundation
import Testing
import Schemas

/// The generated `Codable` conformances follow the proto3 JSON mapping (scripts/gen-swift-schemas.py).
@Suite("JSON mapping")
struct JSONMappingTests {
    private static func encode(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try encoder.encode(value)
    }

    private static func decode<M: Decodable>(_: M.Type, _ json: String) throws -> M {
        try JSONDecoder().decode(M.self, from: Data(json.utf8))
    }

    /// The `DecodingError` that decoding `json` throws, or nil (recorded as an issue) when it does not throw one.
    private static func decodingError<M: Decodable>(
        _: M.Type, _ json: String, sourceLocation: SourceLocation = #_sourceLocation
    ) -> DecodingError? {
        do {
            let value = try decode(M.self, json)
            Issue.record("decoded \(value) from \(json), expected a DecodingError", sourceLocation: sourceLocation)
        } catch let error as DecodingError {
            return error
        } catch {
            Issue.record("expected a DecodingError, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// The top-level JSON object of an encoded value, as Foundation sees it.
    private static func object(_ value: some Encodable) throws -> [String: Any] {
        let any = try JSONSerialization.jsonObject(with: try encode(value))
        return try #require(any as? [String: Any])
    }

    /// Encodes, decodes and re-encodes: the value and the (sorted-key) bytes survive unchanged.
    private static func roundTrip<M: Codable & Equatable>(
        _ value: M, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> M {
        let data = try encode(value)
        let decoded = try JSONDecoder().decode(M.self, from: data)
        #expect(decoded == value, sourceLocation: sourceLocation)
        #expect(try encode(decoded) == data, "re-encoding is stable", sourceLocation: sourceLocation)
        return decoded
    }

    static let tenant = Tenant(
        id: "pizza-roma", name: "Pizzeria Roma — Zürich 🍕", planID: "pro", status: "active",
        packageName: "gastronomy", consentPolicy: "with\nnewline\t\"quotes\" \\ and {json}",
        createdAtUnixNanos: 1_700_000_000_123_456_789, updatedAtUnixNanos: Int64.max,
        featureFlags: ["streaming": true, "handoff": false, "ß": true, "": true]
    )

    // MARK: round trips

    @Test func fullyPopulatedTenantRoundTrips() throws {
        let decoded = try Self.roundTrip(Self.tenant)
        #expect(decoded.updatedAtUnixNanos == Int64.max)
        #expect(decoded.featureFlags["handoff"] == false)
        #expect(try Self.roundTrip(Tenant(createdAtUnixNanos: Int64.min)).createdAtUnixNanos == Int64.min)
    }

    @Test func packageManifestWithNestedRepeatedMessagesRoundTrips() throws {
        let manifest = PackageManifest(
            packageName: "gastronomy",
            agents: [
                AgentManifest(
                    agent: "host", provider: "local", model: "kb", systemPrompt: "Du bist ein Gastgeber.",
                    intents: [
                        IntentRule(name: "reservation", keywords: ["tisch", "reservieren", "日本語"], pattern: "^tisch", priority: -3),
                        IntentRule(name: "menu", keywords: [], pattern: "", priority: Int32.max),
                    ],
                    fallbackAgent: "support", enabled: true, version: "v2", handoffThreshold: 0.35
                ),
                AgentManifest(agent: "support", enabled: false, handoffThreshold: -.infinity),
                AgentManifest(),
            ],
            defaultAgent: "host", tenantID: "pizza-roma"
        )
        let decoded = try Self.roundTrip(manifest)
        #expect(decoded.agents.count == 3)
        #expect(decoded.agents[0].intents[0].keywords == ["tisch", "reservieren", "日本語"])
        #expect(decoded.agents[0].intents[1].priority == Int32.max)
        #expect(decoded.agents[1].handoffThreshold == -.infinity)

        // Nested repeated messages are JSON arrays of objects.
        let json = try Self.object(manifest)
        let agents = try #require(json["agents"] as? [[String: Any]])
        #expect(agents.count == 3)
        #expect((agents[0]["intents"] as? [[String: Any]])?.first?["name"] as? String == "reservation")
        // Infinity has no JSON number: it is written as proto3's string form.
        #expect(agents[1]["handoffThreshold"] as? String == "-Infinity")
    }

    @Test func apiKeyRecordRoundTrips() throws {
        let key = ApiKeyRecord(
            keyID: "k_123", prefix: "sy_live_0123", hashHex: String(repeating: "ab", count: 32), tenantID: "pizza-roma",
            scopes: ["chat", "admin:read"], status: "revoked", createdAtUnixNanos: 1_700_000_000_000_000_001,
            expiresAtUnixNanos: 0, revokedAtUnixNanos: 1_700_000_100_000_000_000, label: "ci"
        )
        let decoded = try Self.roundTrip(key)
        #expect(decoded.hashHex.count == 64)
        #expect(decoded.createdAtUnixNanos == 1_700_000_000_000_000_001, "no rounding through Double")
    }

    @Test func createTenantRequestWithNestedOptionalMessageRoundTrips() throws {
        let request = CreateTenantRequest(adminToken: "secret-admin-token", actor: "ops@example.com", tenant: Self.tenant)
        #expect(try Self.roundTrip(request).tenant == Self.tenant)
        #expect((try Self.object(request))["tenant"] is [String: Any])

        // An unset message field is left out of the JSON and comes back nil; an empty one stays set.
        let bare = CreateTenantRequest(adminToken: "t", actor: "a", tenant: nil)
        #expect(try Self.roundTrip(bare).tenant == nil)
        #expect((try Self.object(bare)).keys.sorted() == ["actor", "adminToken"])
        #expect(try Self.roundTrip(CreateTenantRequest(tenant: Tenant())).tenant == Tenant())
    }

    @Test("every message type round-trips sparse and dense samples", arguments: allSampleableTypes.map(SampleType.init))
    func everyType(_ type: SampleType) throws {
        let cast: (any (Sampleable & Codable).Type)? = type.type as? any (Sampleable & Codable).Type
        let codable = try #require(cast, "\(type.type.protoName) is not Codable")
        try Self.roundTripSamples(codable)
    }

    private static func roundTripSamples<M: Sampleable & Codable>(_: M.Type) throws {
        for (seeds, dense) in [(0..<40 as Range<UInt64>, false), (1000..<1040, true)] {
            for seed in seeds {
                var g = SampleGen(seed: seed, dense: dense)
                let original = M.sample(&g)
                let data = try encode(original)
                let decoded = try JSONDecoder().decode(M.self, from: data)
                #expect(decoded == original, "\(M.protoName) seed \(seed) dense \(dense)")
                if decoded != original { return }
            }
        }
    }

    // MARK: decoding rules

    @Test func missingFieldsAreDefaults() throws {
        #expect(try Self.decode(Tenant.self, "{}") == Tenant())
        #expect(try Self.decode(Tenant.self, #"{"name":"Shop"}"#) == Tenant(name: "Shop"))
        let request = try Self.decode(CreateTenantRequest.self, #"{"actor":"ops"}"#)
        #expect(request == CreateTenantRequest(actor: "ops"))
        #expect(request.tenant == nil)
        #expect(try Self.decode(PackageManifest.self, #"{"agents":[{}]}"#).agents == [AgentManifest()])
    }

    @Test func nullIsTheDefault() throws {
        let tenant = try Self.decode(
            Tenant.self, #"{"id":null,"planId":null,"createdAtUnixNanos":null,"featureFlags":null}"#)
        #expect(tenant == Tenant())
        #expect(try Self.decode(ApiKeyRecord.self, #"{"scopes":null}"#).scopes == [])
        #expect(try Self.decode(CreateTenantRequest.self, #"{"tenant":null}"#).tenant == nil)
    }

    @Test func int64AcceptsNumberOrDecimalString() throws {
        let fromString = try Self.decode(
            Tenant.self, #"{"createdAtUnixNanos":"1700000000000000001","updatedAtUnixNanos":"-9223372036854775808"}"#)
        #expect(fromString.createdAtUnixNanos == 1_700_000_000_000_000_001)
        #expect(fromString.updatedAtUnixNanos == Int64.min)
        let fromNumber = try Self.decode(Tenant.self, #"{"createdAtUnixNanos":9223372036854775807}"#)
        #expect(fromNumber.createdAtUnixNanos == Int64.max)

        // Written as a JSON number, not a string.
        let json = try Self.object(Tenant(createdAtUnixNanos: 42))
        #expect(json["createdAtUnixNanos"] as? Int == 42)
        #expect(!(json["createdAtUnixNanos"] is String))
        #expect(String(decoding: try Self.encode(Tenant(createdAtUnixNanos: 42)), as: UTF8.self)
            .contains(#""createdAtUnixNanos":42"#))
    }

    @Test func malformedNumericStringsAreRejected() throws {
        for bad in [#""12abc""#, #""""#, #"" 1""#, #""9223372036854775808""#, #""1.5""#] {
            let error = Self.decodingError(Tenant.self, #"{"createdAtUnixNanos":\#(bad)}"#)
            guard case .dataCorrupted(let context)? = error else {
                Issue.record("\(bad): expected dataCorrupted, got \(String(describing: error))")
                continue
            }
            #expect(context.codingPath.map(\.stringValue) == ["createdAtUnixNanos"], "\(bad)")
            #expect(!context.debugDescription.contains("12abc"), "client input is not echoed")
        }
        #expect(try Self.decode(Plan.self, #"{"rpm":"600"}"#).rpm == 600, "32-bit numbers take strings too")
    }

    @Test func unknownKeyIsRejectedByName() throws {
        let error = Self.decodingError(Tenant.self, #"{"id":"shop-1","nmae":"Shop"}"#)
        guard case .dataCorrupted(let context)? = error else {
            Issue.record("expected dataCorrupted, got \(String(describing: error))")
            return
        }
        #expect(context.debugDescription == #"unknown field "nmae" in switchyard.v1.Tenant"#)
        #expect(context.codingPath.map(\.stringValue) == ["nmae"])

        // Inside a nested message: the path leads to it.
        let nested = Self.decodingError(CreateTenantRequest.self, #"{"tenant":{"plan":"pro"}}"#)
        guard case .dataCorrupted(let nestedContext)? = nested else {
            Issue.record("expected dataCorrupted, got \(String(describing: nested))")
            return
        }
        #expect(nestedContext.debugDescription == #"unknown field "plan" in switchyard.v1.Tenant"#)
        #expect(nestedContext.codingPath.map(\.stringValue) == ["tenant", "plan"])
    }

    @Test func protoFieldNamesAreAcceptedButNotTwice() throws {
        let tenant = try Self.decode(Tenant.self, #"{"plan_id":"pro","created_at_unix_nanos":"7"}"#)
        #expect(tenant == Tenant(planID: "pro", createdAtUnixNanos: 7))
        let error = Self.decodingError(Tenant.self, #"{"plan_id":"pro","planId":"basic"}"#)
        guard case .dataCorrupted(let context)? = error else {
            Issue.record("expected dataCorrupted, got \(String(describing: error))")
            return
        }
        #expect(context.debugDescription.contains("planId"))
    }

    @Test func wrongTypesAreRejected() throws {
        let cases: [(String, String)] = [
            (#"{"name":5}"#, "name"),
            (#"{"createdAtUnixNanos":true}"#, "createdAtUnixNanos"),
            (#"{"featureFlags":["streaming"]}"#, "featureFlags"),
            (#"{"featureFlags":{"streaming":"yes"}}"#, "featureFlags"),
        ]
        for (json, key) in cases {
            let error = Self.decodingError(Tenant.self, json)
            guard case .typeMismatch(_, let context)? = error else {
                Issue.record("\(json): expected typeMismatch, got \(String(describing: error))")
                continue
            }
            #expect(context.codingPath.first?.stringValue == key, "\(json)")
        }
        guard case .typeMismatch? = Self.decodingError(Tenant.self, #"["not","an","object"]"#) else {
            Issue.record("a JSON array is not a message")
            return
        }
        guard case .typeMismatch? = Self.decodingError(CreateTenantRequest.self, #"{"tenant":"pizza-roma"}"#) else {
            Issue.record("a string is not a nested message")
            return
        }
        guard case .typeMismatch? = Self.decodingError(ApiKeyRecord.self, #"{"scopes":"chat"}"#) else {
            Issue.record("a string is not a repeated field")
            return
        }
    }

    // MARK: encoding

    @Test func keysAreLowerCamelCaseAndComplete() throws {
        let tenant = try Self.object(Tenant())
        #expect(tenant.keys.sorted() == [
            "consentPolicy", "createdAtUnixNanos", "featureFlags", "id", "name", "packageName", "planId", "status",
            "timeZone", "updatedAtUnixNanos",
        ])
        #expect(tenant["planId"] as? String == "")
        #expect(tenant["featureFlags"] as? [String: Any] != nil)

        let key = try Self.object(ApiKeyRecord(keyID: "k1", hashHex: "ff", tenantID: "t", createdAtUnixNanos: 5))
        #expect(key.keys.sorted() == [
            "createdAtUnixNanos", "env", "expiresAtUnixNanos", "hashHex", "keyId", "label", "lastUsedAtUnixNanos",
            "prefix", "revokedAtUnixNanos", "scopes", "status", "tenantId",
        ])
        #expect(key["keyId"] as? String == "k1")
        #expect(key["hashHex"] as? String == "ff")
        #expect(key["createdAtUnixNanos"] as? Int == 5)
        #expect(key["scopes"] as? [Any] != nil)

        let request = try Self.object(CreateTenantRequest(adminToken: "t", tenant: Tenant(planID: "pro")))
        #expect(request["adminToken"] as? String == "t")
        #expect((request["tenant"] as? [String: Any])?["planId"] as? String == "pro")
        for name in Array(tenant.keys) + Array(key.keys) + Array(request.keys) {
            #expect(!name.contains("_"), "\(name)")
        }
    }

    @Test func temperaturePresenceKeepsItsWireFlag() throws {
        let unset = try Self.object(ChatRequested(model: "m"))
        #expect(unset["hasTemperature"] as? Bool == false)
        #expect(unset["temperature"] as? Double == 0)
        #expect(try Self.roundTrip(ChatRequested(temperature: nil)).temperature == nil)
        #expect(try Self.roundTrip(ChatRequested(temperature: 0)).temperature == 0)
        #expect(try Self.roundTrip(ChatRequested(temperature: 1.25)).temperature == 1.25)

        #expect(try Self.decode(ChatRequested.self, #"{"temperature":0.5}"#).temperature == 0.5)
        #expect(try Self.decode(ChatRequested.self, #"{"temperature":null}"#).temperature == nil)
        #expect(try Self.decode(ChatRequested.self, #"{"hasTemperature":true}"#).temperature == 0)
        #expect(try Self.decode(ChatRequested.self, #"{"temperature":0.5,"hasTemperature":false}"#).temperature == nil)
        #expect(try Self.decode(ChatRequested.self, #"{"temperature":"Infinity"}"#).temperature == .infinity)
        guard case .dataCorrupted? = Self.decodingError(ChatRequested.self, #"{"temperature":"inf"}"#) else {
            Issue.record("only proto3's spellings of non-finite numbers are accepted")
            return
        }
    }
}
