import Contracts
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Telemetry
import Tenancy
import Tracing

/// What a typed handler gets besides the decoded event.
public struct EventContext: Sendable {
    /// The delivery: subject, stream sequence, delivery count, headers.
    public let delivery: JetStreamDelivery
    /// The event's validated meta (valid tenant id, non-empty event id).
    public let meta: EventMeta
    /// Headers that travel on to the next hop: trace context and the gateway's reply subject.
    public let hopHeaders: NATSHeaders
    /// The caller's trace, extracted from `traceparent` / `tracestate` (top level when absent).
    public let trace: ServiceContext
    /// The process's tracer (``PlatformTracing``), for the handler's spans.
    public var tracer: any Tracer = W3CTracer()

    public var tenant: String { meta.tenantID }
    /// The gateway instance's reply subject, when the request has one.
    public var replySubject: String? { hopHeaders[Headers.replyTo] }

    /// A span of this hop, child of the caller's (end it when the hop's work is done).
    public func startSpan(_ name: String, ofKind kind: SpanKind = .consumer) -> any Span {
        tracer.startSpan(name, context: trace, ofKind: kind)
    }

    /// The hop headers with the trace context of `span`: what the next hop receives as its parent.
    public func headers(continuing span: any Span) -> NATSHeaders {
        var headers = hopHeaders
        tracer.inject(span.context, into: &headers, using: DictionaryInjector())
        return headers
    }
}

/// The handler prologue every consumer shares, as a value: wait for the tenancy mirror (after a restart,
/// don't reject tenants just because it is still loading), decode (undecodable → dead letter at once),
/// validate the meta (invalid → dead letter), extract trace context and hop headers, then run the handler.
/// Errors are settled by ``JetStreamConsumerService``: retriable → nak with backoff, else dead letter + term.
public struct TypedEventHandler<Event: EventMessage>: Sendable {
    public typealias Handler = @Sendable (Event, EventContext) async throws -> Void

    let directory: TenantDirectory?
    let meta: @Sendable (Event) -> EventMeta?
    let handler: Handler
    let tracer: any Tracer

    public init(directory: TenantDirectory?, meta: @escaping @Sendable (Event) -> EventMeta? = { $0.meta },
                tracer: any Tracer = W3CTracer(), handler: @escaping Handler) {
        self.directory = directory
        self.meta = meta
        self.tracer = tracer
        self.handler = handler
    }

    public func handle(_ delivery: JetStreamDelivery) async throws {
        let (event, context) = try await prepare(delivery)
        try await handler(event, context)
    }

    /// The prologue alone: the decoded event and its context, or the error that settles the delivery.
    public func prepare(_ delivery: JetStreamDelivery) async throws -> (Event, EventContext) {
        if let directory, !directory.isSynced { try await directory.waitUntilSynced() }
        let event = try Event(protobuf: delivery.payload)
        guard let meta = meta(event), TenantID.isValid(meta.tenantID), !meta.eventID.isEmpty else {
            throw PoisonMessage("\(Event.protoName) without valid event metadata")
        }
        let hopHeaders = HopHeaders.propagate(from: delivery.headers)
        var trace = ServiceContext.topLevel
        if hopHeaders[Headers.traceparent] != nil {
            tracer.extract(hopHeaders, into: &trace, using: DictionaryExtractor())
        }
        return (event, EventContext(delivery: delivery, meta: meta, hopHeaders: hopHeaders, trace: trace, tracer: tracer))
    }
}

/// A typed batch handler's input and output: the events that passed the prologue, and one outcome per event
/// (nil = done; an error settles that delivery like a handler error, e.g. ``PoisonMessage`` → dead letter).
public typealias TypedBatchHandler<Event: EventMessage> =
    @Sendable ([(Event, EventContext)]) async throws -> [(any Error)?]

extension ServiceBuilder {
    /// A durable consumer with a typed handler: provisions the consumer's stream (see ``streams(_:)``) and the
    /// durable (this service must own it), then adds the consume loop. `meta` picks the event's meta (default:
    /// its own). `spec` overrides the contract's settings (e.g. an operator-configured AckWait).
    ///
    /// - Parameters:
    ///   - batchSize: the most messages one pull request asks for.
    ///   - maxInFlight: the most messages this replica holds unsettled (default: twice `batchSize`).
    ///   - keepAlive: send in-progress acks while a handler runs longer than AckWait/2.
    public func consume<Event: EventMessage>(
        _ contract: ConsumerContract, _ type: Event.Type, spec: ConsumerSpec? = nil, batchSize: Int = 64,
        maxInFlight: Int? = nil, keepAlive: Bool = true,
        meta: @escaping @Sendable (Event) -> EventMeta? = { $0.meta },
        handler: @escaping TypedEventHandler<Event>.Handler
    ) async throws {
        let typed = TypedEventHandler(directory: directory, meta: meta, tracer: platform.tracer, handler: handler)
        try await consume(contract, spec: spec, batchSize: batchSize, maxInFlight: maxInFlight,
                          keepAlive: keepAlive, handler: typed.handle)
    }

    /// A durable consumer whose handler takes events in batches (what arrived together, up to `batchSize`), e.g.
    /// to write them in one transaction. Deliveries failing the prologue (undecodable, invalid meta) are
    /// dead-lettered without reaching the handler. When the handler throws, every event it was given is settled
    /// with that error (retriable → nak with backoff).
    public func consumeBatches<Event: EventMessage>(
        _ contract: ConsumerContract, _ type: Event.Type, spec: ConsumerSpec? = nil, batchSize: Int = 256,
        concurrentBatches: Int = 2, maxInFlight: Int? = nil, keepAlive: Bool = true,
        meta: @escaping @Sendable (Event) -> EventMeta? = { $0.meta },
        handler: @escaping TypedBatchHandler<Event>
    ) async throws {
        let typed = TypedEventHandler<Event>(directory: directory, meta: meta, tracer: platform.tracer) { _, _ in }
        let spec = try await provision(contract, spec: spec)
        add(JetStreamConsumerService.batches(
            jetStream: jetStream, stream: contract.stream.name, consumer: spec, batchSize: batchSize,
            concurrentBatches: concurrentBatches, maxInFlight: maxInFlight, keepAlive: keepAlive, logger: logger
        ) { deliveries in
            var outcomes = [(any Error)?](repeating: nil, count: deliveries.count)
            var prepared: [(Event, EventContext)] = []
            var positions: [Int] = []
            for (index, delivery) in deliveries.enumerated() {
                do {
                    prepared.append(try await typed.prepare(delivery))
                    positions.append(index)
                } catch {
                    outcomes[index] = error
                }
            }
            guard !prepared.isEmpty else { return outcomes }
            do {
                let results = try await handler(prepared)
                guard results.count == prepared.count else {
                    throw NATSError(.invalidArgument, context: "batch handler returned the wrong number of outcomes")
                }
                for (position, result) in zip(positions, results) { outcomes[position] = result }
            } catch {
                for position in positions { outcomes[position] = error }
            }
            return outcomes
        })
    }

    /// A durable consumer whose handler takes raw deliveries in batches (for consumers of several event types,
    /// which decode by subject). Outcomes as for ``consumeBatches(_:_:spec:batchSize:concurrentBatches:maxInFlight:keepAlive:meta:handler:)``.
    public func consumeRawBatches(
        _ contract: ConsumerContract, spec: ConsumerSpec? = nil, batchSize: Int = 256, concurrentBatches: Int = 2,
        maxInFlight: Int? = nil, keepAlive: Bool = true, handler: @escaping JetStreamConsumerService.BatchHandler
    ) async throws {
        let spec = try await provision(contract, spec: spec)
        add(JetStreamConsumerService.batches(
            jetStream: jetStream, stream: contract.stream.name, consumer: spec, batchSize: batchSize,
            concurrentBatches: concurrentBatches, maxInFlight: maxInFlight, keepAlive: keepAlive, logger: logger,
            handler: handler))
    }

    /// A durable consumer with a raw handler (for consumers that batch or read several event types).
    public func consume(
        _ contract: ConsumerContract, spec: ConsumerSpec? = nil, batchSize: Int = 64, maxInFlight: Int? = nil,
        keepAlive: Bool = true, handler: @escaping JetStreamConsumerService.Handler
    ) async throws {
        let spec = try await provision(contract, spec: spec)
        add(JetStreamConsumerService(
            jetStream: jetStream, stream: contract.stream.name, consumer: spec, batchSize: batchSize,
            maxInFlight: maxInFlight, keepAlive: keepAlive, logger: logger, handler: handler))
    }
}

extension ServiceBuilder {
    /// Adds a consume loop, counting its dead letters in `nats_messages_dead_lettered_total{stream,consumer}`.
    public func add(_ consumer: JetStreamConsumerService) {
        var consumer = consumer
        consumer.onDeadLetter = ServiceMetrics.deadLetterCounter(metrics)
        add(consumer as any Service)
    }

    /// The consumer's stream (see ``streams(_:)``) and its durable; this service must own the durable.
    func provision(_ contract: ConsumerContract, spec: ConsumerSpec?) async throws -> ConsumerSpec {
        precondition(contract.owner.rawValue == configuration.service,
                     "\(configuration.service) consumes \(contract.durable), which \(contract.owner.rawValue) owns")
        try await streams(contract.stream)
        let spec = spec ?? contract.spec
        try await jetStream.ensureConsumer(stream: contract.stream.name, spec)
        // Messages the server gives up on without an outcome (a handler that crashes the process) are parked.
        add(try await MaxDeliveries.service(jetStream: jetStream, stream: contract.stream.name,
                                            consumer: spec.durable, logger: logger,
                                            onDeadLetter: ServiceMetrics.deadLetterCounter(metrics)))
        ServiceMetrics.watchConsumer(metrics, jetStream: jetStream, stream: contract.stream.name, durable: spec.durable)
        return spec
    }
}
