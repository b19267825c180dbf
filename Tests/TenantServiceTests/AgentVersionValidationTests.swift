import Schemas
import Tenancy
import TenantCore
import Testing

@Suite("Manifests: an agent listed once per version")
struct AgentVersionValidationTests {
    static func candidate(_ version: String) -> AgentManifest {
        AgentManifest(agent: "host", provider: "openai", model: "gpt-test", systemPrompt: "Candidate.", intents: [],
                      fallbackAgent: "", enabled: true, version: version, handoffThreshold: 0.1)
    }

    @Test("a second entry with another version is accepted, and its version becomes runnable")
    func secondVersionAccepted() throws {
        var manifest = TenantStack.manifest()
        manifest.agents.append(Self.candidate("v2"))
        let valid = try AdminValidation.manifest(manifest, tenant: "legit")
        #expect(valid.agents.count == 3)
        #expect(valid.versions(of: "host", rollout: nil) == ["v1", "v2"])
        #expect(valid.versions(of: "host", rollout: RolloutSettings(agent: "host", stableVersion: "v1",
                                                                    canaryVersion: "v3")) == ["v1", "v2", "v3"])
    }

    @Test("the same agent twice with the same or no version is refused", arguments: ["v1", ""])
    func duplicateVersionRefused(version: String) {
        var manifest = TenantStack.manifest()
        manifest.agents.append(Self.candidate(version))
        #expect(throws: AdminFailure.self) { try AdminValidation.manifest(manifest, tenant: "legit") }
    }
}
