import Logging
import Tracing
import W3CTraceContext

/// The `ServiceContext` key holding the current W3C trace context (the active span's ids).
public enum TraceContextKey: ServiceContextKey {
    public typealias Value = TraceContext
    public static var nameOverride: String? { "w3c-trace-context" }
}

extension ServiceContext {
    /// The W3C trace context of the active span, if any.
    public var traceContext: TraceContext? {
        get { self[TraceContextKey.self] }
        set { self[TraceContextKey.self] = newValue }
    }

    /// The 32-hex-digit trace id of the active span (the `trace.id` log field), if any.
    public var traceID: String? {
        traceContext?.traceID.description
    }

    /// The 16-hex-digit span id of the active span (the `span.id` log field), if any.
    public var spanID: String? {
        traceContext?.spanID.description
    }
}

/// Metadata keys shared by every service's logs.
public enum LogKey {
    public static let tenantID = "tenant.id"
    public static let requestID = "request.id"
    public static let traceID = "trace.id"
    public static let spanID = "span.id"
    public static let agent = "agent"
    public static let subject = "subject"
}

extension Logger.Metadata {
    /// `tenant.id`, `request.id`, `trace.id` and `span.id` entries for whichever of them are known.
    /// `context` defaults to the task-local `ServiceContext.current`.
    public static func switchyard(
        tenant: String? = nil,
        requestID: String? = nil,
        context: ServiceContext? = ServiceContext.current
    ) -> Logger.Metadata {
        var metadata: Logger.Metadata = [:]
        if let tenant { metadata[LogKey.tenantID] = .string(tenant) }
        if let requestID { metadata[LogKey.requestID] = .string(requestID) }
        if let trace = context?.traceContext {
            metadata[LogKey.traceID] = .string(trace.traceID.description)
            metadata[LogKey.spanID] = .string(trace.spanID.description)
        }
        return metadata
    }
}

extension Logger.MetadataProvider {
    /// Adds `trace.id` and `span.id` from the task-local `ServiceContext.current` to every log line.
    public static let switchyardTracing = Logger.MetadataProvider {
        guard let trace = ServiceContext.current?.traceContext else { return [:] }
        return [
            LogKey.traceID: .string(trace.traceID.description),
            LogKey.spanID: .string(trace.spanID.description),
        ]
    }
}

// MARK: - Dictionary carriers

/// Writes propagation headers into a `[String: String]` (tests, and any header map keyed by string).
public struct DictionaryInjector: Injector {
    public init() {}

    public func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

/// Reads propagation headers from a `[String: String]`; key lookup is case-insensitive, as header names are.
public struct DictionaryExtractor: Extractor {
    public init() {}

    public func extract(key: String, from carrier: [String: String]) -> String? {
        if let exact = carrier[key] { return exact }
        let lowered = key.lowercased()
        return carrier.first { $0.key.lowercased() == lowered }?.value
    }
}
