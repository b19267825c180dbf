import Schemas
import Testing
@testable import RouterCore

@Suite("Rollout cohorts")
struct RolloutTests {
    private let manifest = Fixture.manifest([Fixture.agent("sales", version: "0.9.0")], defaultAgent: "sales")

    private func decision(_ rollouts: [RolloutSettings], conversationID: String = "conv-1",
                          requestID: String = "req-1") -> RoutingDecision? {
        let request = Fixture.request(conversationID: conversationID, requestID: requestID)
        return decide(Fixture.input(manifest: manifest, rollouts: rollouts, request: request)).decision
    }

    @Test("the bucket is SHA-256(tenant/agent/key), first 8 bytes big-endian, mod 10 000")
    func bucketGoldenValues() {
        // Computed independently: printf '%s' 'acme/sales/conv-1' | sha256sum → first 16 hex digits → mod 10000.
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales", stickyKey: "conv-1") == 4946)
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales", stickyKey: "req-42") == 8303)
    }

    @Test("10 % canary over 1,000 conversations: about 100 canaries, each conversation keeps its cohort")
    func tenPercentCanary() throws {
        let rollout = Fixture.canary("sales", percent: 10)
        var canaries = 0
        for index in 0..<1_000 {
            let conversation = "conversation-\(index)"
            let first = try #require(decision([rollout], conversationID: conversation, requestID: "r-\(index)-0"))
            if first.cohort == .canary {
                canaries += 1
                #expect(first.agentVersion == "2.0.0-rc1")
            } else {
                #expect(first.agentVersion == "1.0.0")
            }
            for repeatIndex in 1..<5 {
                // New request ids each time: the conversation id alone decides.
                let again = try #require(decision([rollout], conversationID: conversation,
                                                  requestID: "r-\(index)-\(repeatIndex)"))
                #expect(again.cohort == first.cohort)
                #expect(again.agentVersion == first.agentVersion)
            }
        }
        #expect((70...130).contains(canaries), "got \(canaries) canaries")
    }

    @Test("0 % never and 100 % (or more) always routes to the canary", arguments: [0, 100, 101, 250, UInt32.max])
    func extremes(percent: UInt32) throws {
        let rollout = Fixture.canary("sales", percent: percent)
        let expected: RolloutCohort = percent == 0 ? .stable : .canary
        for index in 0..<300 {
            let routed = try #require(decision([rollout], conversationID: "c-\(index)"))
            #expect(routed.cohort == expected)
            #expect(routed.agentVersion == (expected == .canary ? "2.0.0-rc1" : "1.0.0"))
        }
    }

    @Test func canaryNeedsACanaryVersion() {
        let rollout = Fixture.canary("sales", percent: 100, canary: "")
        #expect(decision([rollout])?.cohort == .stable)
        #expect(decision([rollout])?.agentVersion == "1.0.0")
    }

    @Test func emptyStableVersionFallsBackToTheManifestVersion() {
        #expect(decision([Fixture.canary("sales", percent: 0, stable: "")])?.agentVersion == "0.9.0")
        #expect(decision([])?.agentVersion == "0.9.0", "no rollout at all")
        #expect(decision([])?.cohort == .stable)
    }

    @Test func emptyConversationIDBucketsByRequestID() throws {
        let percent: UInt32 = 50
        let rollout = Fixture.canary("sales", percent: percent)
        var cohorts: Set<RolloutCohort> = []
        for index in 0..<200 {
            let requestID = "req-\(index)"
            let bucket = RoutingPolicy.rolloutBucket(tenantID: Fixture.tenantID, agent: "sales", stickyKey: requestID)
            let expected: RolloutCohort = bucket < UInt64(percent) * 100 ? .canary : .stable
            for _ in 0..<3 {
                let routed = try #require(decision([rollout], conversationID: "", requestID: requestID))
                #expect(routed.cohort == expected)
            }
            cohorts.insert(expected)
        }
        #expect(cohorts == [.stable, .canary], "50 % over 200 request ids yields both cohorts")
    }

    @Test func bucketDependsOnTenantAgentAndKey() {
        let base = RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales", stickyKey: "conv-1")
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales", stickyKey: "conv-1") == base)
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme2", agent: "sales", stickyKey: "conv-1") != base)
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales2", stickyKey: "conv-1") != base)
        #expect(RoutingPolicy.rolloutBucket(tenantID: "acme", agent: "sales", stickyKey: "conv-2") != base)
        for key in (0..<500).map({ "k\($0)" }) {
            #expect(RoutingPolicy.rolloutBucket(tenantID: "t", agent: "a", stickyKey: key) < RoutingPolicy.bucketCount)
        }
    }

    @Test func cohortUsesTheFinalAgentsRollout() throws {
        let manifest = Fixture.manifest([
            Fixture.agent("sales", fallback: "backup"),
            Fixture.agent("backup", version: "b-1"),
        ], defaultAgent: "sales")
        let rollouts = [
            RolloutSettings(agent: "sales", canaryVersion: "never", canaryPercent: 100, killSwitch: true),
            Fixture.canary("backup", percent: 100, stable: "b-stable", canary: "b-canary"),
        ]
        let routed = try #require(decide(Fixture.input(manifest: manifest, rollouts: rollouts)).decision)
        #expect(routed.agent == "backup")
        #expect(routed.cohort == .canary)
        #expect(routed.agentVersion == "b-canary")
    }
}

@Suite("Agent versions: per-version manifest entries and eval pins")
struct AgentVersionTests {
    /// `sales` at 1.0.0 (openai) plus a 2.0.0 entry of its own (anthropic) and a rollout naming 3.0.0 as canary.
    private let manifest = Fixture.manifest([
        Fixture.agent("sales", version: "1.0.0"),
        Fixture.agent("sales", provider: "anthropic", model: "claude-test", version: "2.0.0"),
    ], defaultAgent: "sales")

    private func pinned(_ version: String, rollouts: [RolloutSettings] = []) -> RoutingOutcome {
        var input = Fixture.input(manifest: manifest, rollouts: rollouts, request: Fixture.request(model: "sales"))
        input.pinnedVersion = version
        return decide(input)
    }

    @Test("a pin runs that version in the eval cohort, with its own entry's provider and model")
    func pinUsesTheVersionEntry() throws {
        let routed = try #require(pinned("2.0.0").decision)
        #expect(routed.agentVersion == "2.0.0")
        #expect(routed.cohort == .eval)
        #expect(routed.provider == "anthropic" && routed.model == "claude-test")
        let stable = try #require(pinned("1.0.0").decision)
        #expect(stable.provider == "openai" && stable.cohort == .eval)
    }

    @Test("a pin may name the rollout's versions; anything else is 404 unknown_version")
    func unknownPinsAreRejected() throws {
        #expect(pinned("9.9.9").rejection?.code == .unknownVersion)
        #expect(pinned("").rejection?.code == .unknownVersion)
        let rollout = Fixture.canary("sales", percent: 0, stable: "1.0.0", canary: "3.0.0")
        let routed = try #require(pinned("3.0.0", rollouts: [rollout]).decision)
        // No entry of its own: the agent's first entry configures it.
        #expect(routed.agentVersion == "3.0.0" && routed.provider == "openai")
    }

    @Test("a pin runs exactly the named agent: its kill switch does not hand over, an unknown or case-folded name is 404")
    func pinNamesOneAgent() throws {
        let manifest = Fixture.manifest([Fixture.agent("sales", version: "1.0.0", fallback: "support"),
                                         Fixture.agent("support", version: "1.0.0")], defaultAgent: "sales")
        var input = Fixture.input(manifest: manifest, rollouts: [Fixture.killed("sales")],
                                  request: Fixture.request(model: "sales"))
        input.pinnedVersion = "1.0.0"
        let routed = try #require(decide(input).decision)
        #expect(routed.agent == "sales" && routed.cohort == .eval, "a kill-switched agent is still the one evaluated")
        for model in ["Sales", "gpt-4o", "auto", "nobody", ""] {
            input.request = Fixture.request(model: model)
            #expect(decide(input).rejection?.code == .unknownModel, "model \(model)")
        }
    }

    @Test("without a pin a canary version with its own entry gets that entry's provider; the rollout split is unchanged")
    func canaryUsesItsEntry() throws {
        let rollout = Fixture.canary("sales", percent: 100, stable: "1.0.0", canary: "2.0.0")
        let routed = try #require(decide(Fixture.input(manifest: manifest, rollouts: [rollout],
                                                       request: Fixture.request(model: "sales"))).decision)
        #expect(routed.cohort == .canary && routed.agentVersion == "2.0.0" && routed.provider == "anthropic")
        let none = try #require(decide(Fixture.input(manifest: manifest, request: Fixture.request(model: "sales"))).decision)
        #expect(none.cohort == .stable && none.agentVersion == "1.0.0" && none.provider == "openai")
    }
}
