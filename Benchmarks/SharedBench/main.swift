// shared-bench: throughput of the Shared layer on this machine (`make bench-shared`).
// Starts its own nats-server and PostgreSQL (TestKit) on free ports; prints one line per measurement.
import Foundation
import Logging
import Messaging
import Schemas
import Storage
import TestKit

let logger = Logger(label: "shared-bench") { _ in SwiftLogNoOpLogHandler() }

func measure(_ name: String, count: Int, unit: String = "msg", _ body: () async throws -> Void) async rethrows {
    let clock = ContinuousClock()
    let elapsed = try await clock.measure { try await body() }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let rate = Double(count) / seconds
    print(String(format: "%-44@ %10.0f %@/s   (%d in %.3f s)", name as NSString, rate, unit as NSString, count, seconds))
}

func sampleRequest(_ index: Int) -> ChatRequested {
    var request = ChatRequested()
    request.meta = EventMeta.make(tenantID: "demo-restaurant", producer: "api-gateway",
                                  requestID: "req-\(index)", traceID: "4bf92f3577b34da6a3ce929d0e0e4736")
    request.messages = [
        ChatMessage(role: "system", content: "You are the host of a restaurant.", name: ""),
        ChatMessage(role: "user", content: "When are you open on Sundays? Wann habt ihr sonntags geöffnet?", name: ""),
    ]
    request.model = "restaurant-host"
    request.maxTokens = 256
    request.temperature = 0.2
    request.conversationID = "conv-\(index % 1000)"
    request.channel = "web"
    request.metadata = ["table": "4", "locale": "de-DE"]
    request.replySubject = "_INBOX.gateway-1.replies"
    return request
}

print("Switchyard shared-bench — \(ProcessInfo.processInfo.activeProcessorCount) cores")

// MARK: protobuf
let protoCount = 200_000
let requests = (0..<1000).map(sampleRequest)
var encoded: [[UInt8]] = []
await measure("protobuf encode ChatRequested (\(requests[0].protobufBytes().count) B)", count: protoCount) {
    var total = 0
    for index in 0..<protoCount { total &+= requests[index % 1000].protobufBytes().count }
    precondition(total > 0)
}
encoded = requests.map { $0.protobufBytes() }
try await measure("protobuf decode ChatRequested", count: protoCount) {
    var total = 0
    for index in 0..<protoCount { total &+= try ChatRequested(protobuf: encoded[index % 1000]).messages.count }
    precondition(total > 0)
}

// MARK: JetStream
let server = try await NATSServer.start()
do {
    let connection = try await NATSConnection.connect(
        NATSConfiguration(servers: [server.url], name: "bench", sendAsap: false), logger: logger)
    let jetStream = try JetStream(connection: connection)
    try await jetStream.ensureStream(StreamSpec(name: "BENCH", subjects: ["bench.*"], retention: .workQueue))
    let publishCount = 50_000
    let messages = (0..<publishCount).map {
        OutboundMessage(subject: "bench.demo-restaurant", payload: encoded[$0 % 1000], messageID: "demo:\($0)")
    }
    await measure("JetStream publish, awaited, 1 in flight (bulk conn)", count: 2_000) {
        for index in 0..<2_000 {
            try! await jetStream.publish(OutboundMessage(subject: "bench.single", payload: encoded[0],
                                                         messageID: "single:\(index)"))
        }
    }
    // Services' connections use sendAsap (flush each write at once) for latency.
    let fastConnection = try await NATSConnection.connect(
        NATSConfiguration(servers: [server.url], name: "bench-asap", sendAsap: true), logger: logger)
    let fastJetStream = try JetStream(connection: fastConnection)
    await measure("JetStream publish, awaited, 1 in flight (sendAsap)", count: 5_000) {
        for index in 0..<5_000 {
            try! await fastJetStream.publish(OutboundMessage(subject: "bench.single", payload: encoded[0],
                                                             messageID: "asap:\(index)"))
        }
    }
    fastConnection.close()
    await measure("JetStream publish, pipelined (256 in flight)", count: publishCount) {
        let acks = try! await jetStream.publishPipelined(messages, maxInFlight: 256)
        precondition(acks.count == publishCount)
    }
    try await jetStream.ensureConsumer(stream: "BENCH", ConsumerSpec(durable: "bench", filterSubject: "bench.demo-restaurant"))
    let consumer = try await PullConsumer.bind(jetStream: jetStream, stream: "BENCH", durable: "bench")
    await measure("JetStream pull fetch (batch 256) + ack", count: publishCount) {
        var received = 0
        while received < publishCount {
            guard let message = try! await consumer.next(timeout: .seconds(5), batch: 256) else { break }
            try! message.ack()
            received += 1
        }
        precondition(received == publishCount, "received \(received)")
    }
    try await connection.flush()
    connection.close()
}
await server.stop()

// MARK: PostgreSQL
let postgres = try await PostgresServer.start()
do {
    let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: postgres.connectionString,
                                                                     poolSize: 2), logger: logger)
    try await pool.execute("""
        CREATE TABLE bench_usage (tenant_id text NOT NULL, event_id text NOT NULL, tokens bigint NOT NULL,
                                  PRIMARY KEY (tenant_id, event_id))
        """)
    let rowCount = 100_000
    let rows: [[PostgresValue]] = (0..<rowCount).map { [.text("demo-restaurant"), .text("evt-\($0)"), .int64(Int64($0))] }
    try await measure("Postgres batch insert (pipeline mode)", count: rowCount, unit: "row") {
        let inserted = try await pool.batchExecute(
            "INSERT INTO bench_usage VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", rows: rows)
        precondition(inserted == rowCount)
    }
    try await measure("Postgres single INSERT, autocommit", count: 2_000, unit: "row") {
        for index in 0..<2_000 {
            try await pool.execute("INSERT INTO bench_usage VALUES ($1, $2, $3)",
                                   [.text("demo-restaurant"), .text("single-\(index)"), .int64(1)])
        }
    }
    await pool.close()
}
await postgres.stop()
