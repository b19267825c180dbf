import Logging
import Synchronization
import Tracing
import W3CTraceContext

/// A span after `end()`: what exporters receive.
public struct FinishedSpan: Sendable {
    public let operationName: String
    public let kind: SpanKind
    /// The span's own ids (trace id shared with its parent).
    public let traceContext: TraceContext
    /// The parent's span id; `nil` for a root span.
    public let parentSpanID: SpanID?
    public let status: SpanStatus?
    public let attributes: SpanAttributes
    public let events: [SpanEvent]
    /// Descriptions of recorded errors (type names only, never payloads).
    public let errors: [String]
    public let startNanosecondsSinceEpoch: UInt64
    public let endNanosecondsSinceEpoch: UInt64

    /// Duration in nanoseconds.
    public var durationNanoseconds: UInt64 {
        endNanosecondsSinceEpoch &- startNanosecondsSinceEpoch
    }
}

/// Receives finished, sampled spans. Must be cheap and thread-safe: it runs on the thread ending the span.
public protocol SpanExporter: Sendable {
    func export(_ span: FinishedSpan)
}

/// Drops every span.
public struct NoOpSpanExporter: SpanExporter {
    public init() {}
    public func export(_ span: FinishedSpan) {}
}

/// Writes each finished span as a log line with constant message `span finished`.
public struct LoggingSpanExporter: SpanExporter {
    public let logger: Logger
    public let level: Logger.Level

    public init(logger: Logger, level: Logger.Level = .debug) {
        self.logger = logger
        self.level = level
    }

    public func export(_ span: FinishedSpan) {
        var metadata: Logger.Metadata = [
            "span.name": .string(span.operationName),
            LogKey.traceID: .string(span.traceContext.traceID.description),
            LogKey.spanID: .string(span.traceContext.spanID.description),
            "span.duration_ms": .stringConvertible(Double(span.durationNanoseconds) / 1_000_000),
        ]
        if let parent = span.parentSpanID { metadata["span.parent_id"] = .string(parent.description) }
        if let status = span.status { metadata["span.status"] = .string("\(status.code)") }
        span.attributes.forEach { key, value in
            metadata["span.attr." + key] = .string(String(describing: value))
        }
        logger.log(level: level, "span finished", metadata: metadata)
    }
}

/// Collects finished spans in memory (tests, debugging).
public final class CollectingSpanExporter: SpanExporter {
    private let storage = Mutex<[FinishedSpan]>([])

    public init() {}

    public func export(_ span: FinishedSpan) {
        storage.withLock { $0.append(span) }
    }

    /// Every span exported so far, in end order.
    public var spans: [FinishedSpan] {
        storage.withLock { $0 }
    }
}

/// A swift-distributed-tracing `Tracer` propagating W3C Trace Context (`traceparent`, `tracestate`).
///
/// Root spans get a fresh random trace id; children keep their parent's trace id, flags and state and get a
/// new span id. The active span's ``TraceContext`` lives in `ServiceContext` under ``TraceContextKey``.
/// Finished spans whose `sampled` flag is set go to the ``SpanExporter``.
public struct W3CTracer: Tracer {
    public typealias Span = W3CSpan

    public let exporter: any SpanExporter
    /// Whether new root traces are sampled (recorded and exported).
    public let sampleRootSpans: Bool

    public init(exporter: any SpanExporter = NoOpSpanExporter(), sampleRootSpans: Bool = true) {
        self.exporter = exporter
        self.sampleRootSpans = sampleRootSpans
    }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String,
        context: @autoclosure () -> ServiceContext,
        ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant,
        function: String,
        file fileID: String,
        line: UInt
    ) -> W3CSpan {
        var spanContext = context()
        let parent = spanContext.traceContext
        let traceContext: TraceContext
        if let parent {
            traceContext = TraceContext(
                traceID: parent.traceID, spanID: .random(), flags: parent.flags, state: parent.state)
        } else {
            traceContext = TraceContext(
                traceID: .random(), spanID: .random(), flags: sampleRootSpans ? .sampled : [], state: TraceState())
        }
        spanContext.traceContext = traceContext
        return W3CSpan(
            operationName: operationName,
            kind: kind,
            context: spanContext,
            traceContext: traceContext,
            parentSpanID: parent?.spanID,
            startNanoseconds: instant().nanosecondsSinceEpoch,
            exporter: exporter
        )
    }

    public func forceFlush() {}

    public func inject<Carrier, Inject>(
        _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
    ) where Inject: Injector, Carrier == Inject.Carrier {
        guard let trace = context.traceContext else { return }
        injector.inject(trace.traceParentHeaderValue, forKey: W3CHeader.traceParent, into: &carrier)
        if let state = trace.traceStateHeaderValue {
            injector.inject(state, forKey: W3CHeader.traceState, into: &carrier)
        }
    }

    /// Reads `traceparent`/`tracestate`. A missing or malformed `traceparent` leaves `context` untouched, so
    /// the next span starts a fresh root trace; a malformed `tracestate` alone is dropped (W3C §3.3.1).
    public func extract<Carrier, Extract>(
        _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
    ) where Extract: Extractor, Carrier == Extract.Carrier {
        guard let parent = extractor.extract(key: W3CHeader.traceParent, from: carrier) else { return }
        let state = extractor.extract(key: W3CHeader.traceState, from: carrier)
        if let trace = try? TraceContext(traceParentHeaderValue: parent, traceStateHeaderValue: state) {
            context.traceContext = trace
        } else if state != nil, let trace = try? TraceContext(traceParentHeaderValue: parent) {
            context.traceContext = trace
        }
    }
}

/// Header names of W3C Trace Context.
public enum W3CHeader {
    public static let traceParent = "traceparent"
    public static let traceState = "tracestate"
}

/// A span of ``W3CTracer``. Thread-safe; ending it twice has no further effect.
public final class W3CSpan: Tracing.Span {
    private struct State {
        var operationName: String
        var attributes = SpanAttributes()
        var status: SpanStatus?
        var events: [SpanEvent] = []
        var errors: [String] = []
        var ended = false
    }

    public let context: ServiceContext
    public let kind: SpanKind
    /// This span's trace context (its own span id).
    public let traceContext: TraceContext
    public let parentSpanID: SpanID?
    private let startNanoseconds: UInt64
    private let exporter: any SpanExporter
    private let state: Mutex<State>

    init(
        operationName: String, kind: SpanKind, context: ServiceContext, traceContext: TraceContext,
        parentSpanID: SpanID?, startNanoseconds: UInt64, exporter: any SpanExporter
    ) {
        self.kind = kind
        self.context = context
        self.traceContext = traceContext
        self.parentSpanID = parentSpanID
        self.startNanoseconds = startNanoseconds
        self.exporter = exporter
        self.state = Mutex(State(operationName: operationName))
    }

    public var isRecording: Bool {
        traceContext.flags.contains(.sampled) && !state.withLock { $0.ended }
    }

    public var operationName: String {
        get { state.withLock { $0.operationName } }
        set { state.withLock { $0.operationName = newValue } }
    }

    public var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    /// The status set so far, if any.
    public var status: SpanStatus? {
        state.withLock { $0.status }
    }

    public func setStatus(_ status: SpanStatus) {
        state.withLock { state in
            // OpenTelemetry semantics: `ok` is final, and an unset status can be upgraded.
            if state.status?.code == .ok { return }
            state.status = status
        }
    }

    public func addEvent(_ event: SpanEvent) {
        state.withLock { $0.events.append(event) }
    }

    public func recordError<Instant: TracerInstant>(
        _ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant
    ) {
        let event = SpanEvent(name: "exception", at: instant(), attributes: attributes)
        let typeName = String(describing: type(of: error))
        state.withLock { state in
            state.errors.append(typeName)
            state.events.append(event)
        }
    }

    public func addLink(_ link: SpanLink) {}

    public func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        let end = instant().nanosecondsSinceEpoch
        let finished: State? = state.withLock { state in
            guard !state.ended else { return nil }
            state.ended = true
            return state
        }
        guard let finished, traceContext.flags.contains(.sampled) else { return }
        exporter.export(
            FinishedSpan(
                operationName: finished.operationName,
                kind: kind,
                traceContext: traceContext,
                parentSpanID: parentSpanID,
                status: finished.status,
                attributes: finished.attributes,
                events: finished.events,
                errors: finished.errors,
                startNanosecondsSinceEpoch: startNanoseconds,
                endNanosecondsSinceEpoch: end
            ))
    }
}
