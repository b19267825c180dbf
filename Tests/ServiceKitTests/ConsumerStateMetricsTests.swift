import Contracts
import Logging
import Messaging
@testable import ServiceKit
import Telemetry
import TestKit
import Testing

/// The durable figures a scrape shows come from nats-server at most once per interval: scrapes in between show
/// the last answer (nats-server 2.9 counts a filtered durable's pending messages on each ask).
@Suite("Consumer state on /metrics")
struct ConsumerStateMetricsTests {
    static let logger = Logger(label: "consumer-state") { _ in SwiftLogNoOpLogHandler() }

    /// The pending messages a scrape shows (nil: no such series).
    static func pending(_ metrics: TelemetryMetrics) async -> Double? {
        await metrics.collect()
        return metrics.renderPrometheusText().split(separator: "\n")
            .first { $0.hasPrefix("jetstream_consumer_pending_messages{") }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
    }

    @Test("a scrape asks nats-server only when the interval has passed since the last ask")
    func throttledAsks() async throws {
        let nats = try await NATSServer.start()
        defer { Task { await nats.stop() } }
        let connection = try await NATSConnection.connect(
            NATSConfiguration(servers: [nats.url], name: "consumer-state", connectAttempts: 3), logger: Self.logger)
        let jetStream = try JetStream(connection: connection)
        let stream = StreamSpec(name: "STATE", subjects: ["state.>"])
        try await jetStream.ensureStream(stream)
        try await jetStream.ensureConsumer(stream: "STATE", ConsumerSpec(durable: "watched", filterSubject: "state.*"))
        func publish(_ count: Int) async throws {
            for index in 0..<count {
                try await jetStream.publish(OutboundMessage(subject: "state.a", payload: [UInt8(index % 256)]))
            }
        }

        // An interval no test run reaches: only the first scrape asks.
        let throttled = TelemetryMetrics()
        ServiceMetrics.watchConsumer(throttled, jetStream: jetStream, stream: "STATE", durable: "watched",
                                     interval: .seconds(3600))
        // No interval: every scrape asks.
        let eager = TelemetryMetrics()
        ServiceMetrics.watchConsumer(eager, jetStream: jetStream, stream: "STATE", durable: "watched", interval: .zero)

        try await publish(3)
        #expect(await Self.pending(throttled) == 3)
        #expect(await Self.pending(eager) == 3)
        try await publish(4)
        #expect(await Self.pending(eager) == 7)
        #expect(await Self.pending(throttled) == 3, "a second scrape within the interval asked nats-server again")
        connection.close()
    }
}
