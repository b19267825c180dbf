import Schemas
import Testing
@testable import RouterCore

@Suite("makeRouted")
struct MakeRoutedTests {
    private let decision = RoutingDecision(agent: "menu", agentVersion: "2.0.0-rc1", provider: "anthropic",
                                           model: "claude-3-5-haiku", intent: "menu-question", cohort: .canary,
                                           reason: "intent:menu-question", basis: .intent, fallbackAgent: "support")

    private func request(eventID: String = "evt-123") -> ChatRequested {
        var request = Fixture.request(user: "vegan menu?", eventID: eventID)
        request.hops = [HopStamp(hop: "gateway.in", unixNanos: 100), HopStamp(hop: "gateway.out", unixNanos: 200)]
        return request
    }

    @Test func copiesMetaIntoANewEvent() throws {
        let request = request()
        let routed = makeRouted(request, decision: decision, producer: "router", nowUnixNanos: 5_000)
        let meta = try #require(routed.meta)
        let requestMeta = try #require(request.meta)
        #expect(meta.tenantID == requestMeta.tenantID)
        #expect(meta.requestID == requestMeta.requestID)
        #expect(meta.traceID == requestMeta.traceID)
        #expect(meta.producer == "router")
        #expect(meta.occurredAtUnixNanos == 5_000)
        #expect(meta.schemaVersion == EventMeta.currentSchemaVersion)
        #expect(meta.eventID != requestMeta.eventID)
    }

    @Test("event id is hex of the first 16 bytes of SHA-256(\"<request event id>:routed\")")
    func deterministicEventID() {
        // printf '%s' 'evt-123:routed' | sha256sum | cut -c1-32
        let expected = "c426fe0146418febe838115ad082ff75"
        #expect(RouterEvents.routedEventID(forRequestEventID: "evt-123") == expected)
        let first = makeRouted(request(), decision: decision, producer: "router", nowUnixNanos: 1)
        let second = makeRouted(request(), decision: decision, producer: "router-2", nowUnixNanos: 99)
        #expect(first.meta?.eventID == expected)
        #expect(second.meta?.eventID == expected, "a redelivery yields the same id")
        let other = makeRouted(request(eventID: "evt-124"), decision: decision, producer: "router", nowUnixNanos: 1)
        #expect(other.meta?.eventID != expected)
        #expect(other.meta?.eventID.count == 32)
    }

    @Test func appendsRouterHopAndEmbedsRequest() {
        let request = request()
        let routed = makeRouted(request, decision: decision, producer: "router", nowUnixNanos: 5_000)
        #expect(routed.hops == request.hops + [HopStamp(hop: "router", unixNanos: 5_000)])
        #expect(routed.request == request, "the embedded request is unchanged")
    }

    @Test func copiesTheDecision() {
        let routed = makeRouted(request(), decision: decision, producer: "router", nowUnixNanos: 1)
        #expect(routed.agent == "menu")
        #expect(routed.agentVersion == "2.0.0-rc1")
        #expect(routed.provider == "anthropic")
        #expect(routed.model == "claude-3-5-haiku")
        #expect(routed.intent == "menu-question")
        #expect(routed.rolloutCohort == "canary")
        #expect(routed.reason == "intent:menu-question")
        #expect(routed.fallbackAgent == "support")
    }

    @Test func survivesProtobufRoundTrip() throws {
        let routed = makeRouted(request(), decision: decision, producer: "router", nowUnixNanos: 7)
        #expect(try ChatRouted(protobuf: routed.protobufBytes()) == routed)
    }

    @Test func requestWithoutMetaStillGetsAStableEvent() {
        var request = request()
        request.meta = nil
        let routed = makeRouted(request, decision: decision, producer: "router", nowUnixNanos: 1)
        #expect(routed.meta?.eventID == RouterEvents.routedEventID(forRequestEventID: ""))
        #expect(routed.meta?.tenantID == "")
    }

    @Test func policyDecisionFeedsMakeRouted() throws {
        let request = Fixture.request(user: "Do you serve ham?")
        let decision = try #require(decide(Fixture.input(manifest: Fixture.gastronomy, request: request)).decision)
        let routed = makeRouted(request, decision: decision, producer: "router", nowUnixNanos: 1)
        #expect(routed.agent == "menu")
        #expect(routed.rolloutCohort == "stable")
        #expect(routed.hops.last?.hop == RouterEvents.hopName)
    }
}
