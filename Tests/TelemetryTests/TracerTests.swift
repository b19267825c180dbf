import Telemetry
import Testing
import Tracing
import W3CTraceContext

@Suite("W3CTracer")
struct TracerTests {
    @Test func rootSpanGetsFreshIDs() {
        let tracer = W3CTracer()
        let first = tracer.startSpan("a", context: .topLevel)
        let second = tracer.startSpan("b", context: .topLevel)
        #expect(first.parentSpanID == nil)
        #expect(first.traceContext.traceID != second.traceContext.traceID)
        #expect(first.traceContext.traceID != .null)
        #expect(first.traceContext.spanID != .null)
        #expect(first.context.traceID == first.traceContext.traceID.description)
        #expect(first.traceContext.flags.contains(.sampled))
    }

    @Test func injectExtractRoundTripMakesChildInSameTrace() throws {
        let exporter = CollectingSpanExporter()
        let tracer = W3CTracer(exporter: exporter)
        let parent = tracer.startSpan("publish", context: .topLevel, ofKind: .producer)
        var parentContext = parent.context
        parentContext.traceContext?.state = TraceState([(.simple("sy"), "t1")])

        var headers: [String: String] = [:]
        tracer.inject(parentContext, into: &headers, using: DictionaryInjector())
        let traceparent = try #require(headers["traceparent"])
        #expect(traceparent.hasPrefix("00-\(parent.traceContext.traceID)-\(parent.traceContext.spanID)-"))
        #expect(headers["tracestate"] == "sy=t1")

        var received = ServiceContext.topLevel
        tracer.extract(headers, into: &received, using: DictionaryExtractor())
        #expect(received.traceID == parent.context.traceID)
        #expect(received.spanID == parent.context.spanID)

        let child = tracer.startSpan("consume", context: received, ofKind: .consumer)
        #expect(child.traceContext.traceID == parent.traceContext.traceID)
        #expect(child.traceContext.spanID != parent.traceContext.spanID)
        #expect(child.parentSpanID == parent.traceContext.spanID)
        #expect(child.traceContext.state[.simple("sy")] == "t1")

        child.attributes["tenant"] = "acme"
        child.setStatus(.init(code: .error, message: "boom"))
        child.end()
        child.end()
        parent.end()

        let spans = exporter.spans
        #expect(spans.map(\.operationName) == ["consume", "publish"])
        #expect(spans[0].parentSpanID == parent.traceContext.spanID)
        #expect(spans[0].status?.code == .error)
        #expect(spans[0].attributes["tenant"]?.toSpanAttribute() == "acme")
    }

    @Test func withSpanNestsThroughTaskLocalContext() throws {
        let exporter = CollectingSpanExporter()
        let tracer = W3CTracer(exporter: exporter)
        tracer.withSpan("outer", context: .topLevel) { outer in
            tracer.withSpan("inner") { inner in
                #expect(inner.context.traceID == outer.context.traceID)
                #expect(ServiceContext.current?.spanID == inner.context.spanID)
            }
        }
        let spans = exporter.spans
        #expect(spans.count == 2)
        #expect(spans[0].parentSpanID == spans[1].traceContext.spanID)
    }

    @Test(arguments: [
        "garbage",
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  // too short
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  // null trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  // null span id
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  // bad delimiter
        "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  // bad version
        "00-0af7651916cd43dd8448eb211c8031xx-b7ad6b7169203331-01",  // non-hex
    ])
    func malformedTraceparentStartsFreshRoot(header: String) {
        let tracer = W3CTracer()
        var context = ServiceContext.topLevel
        tracer.extract(["traceparent": header], into: &context, using: DictionaryExtractor())
        #expect(context.traceContext == nil)
        let span = tracer.startSpan("handle", context: context)
        #expect(span.parentSpanID == nil)
        #expect(span.traceContext.traceID.description != "0af7651916cd43dd8448eb211c80319c")
    }

    @Test func malformedTracestateIsDroppedButParentKept() {
        var context = ServiceContext.topLevel
        W3CTracer().extract(
            ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "=,,=="],
            into: &context, using: DictionaryExtractor())
        #expect(context.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(context.traceContext?.state.isEmpty == true)
    }

    @Test func extractorIsCaseInsensitiveAndNoContextInjectsNothing() {
        var context = ServiceContext.topLevel
        W3CTracer().extract(
            ["TraceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"], into: &context,
            using: DictionaryExtractor())
        #expect(context.traceID == "0af7651916cd43dd8448eb211c80319c")

        var headers: [String: String] = [:]
        W3CTracer().inject(.topLevel, into: &headers, using: DictionaryInjector())
        #expect(headers.isEmpty)
    }

    @Test func unsampledSpansAreNotExported() {
        let exporter = CollectingSpanExporter()
        let tracer = W3CTracer(exporter: exporter)
        var context = ServiceContext.topLevel
        tracer.extract(
            ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"], into: &context,
            using: DictionaryExtractor())
        let span = tracer.startSpan("quiet", context: context)
        #expect(!span.isRecording)
        span.end()
        #expect(exporter.spans.isEmpty)
    }
}
