// crash-consumer: a test fixture for the max-deliveries path (docs/adr/0004). A consume loop on
// CRASH_STREAM / CRASH_DURABLE (one message in flight) whose handler kills the process with SIGKILL for the
// payload "poison" and publishes `done.<payload>` (core NATS) for any other, plus the MaxDeliveries consume loop
// that parks what the server gives up on. Built with the tests; used by MessagingTests.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Messaging
import ServiceLifecycle

let environment = ProcessInfo.processInfo.environment
let logger = Logger(label: "crash-consumer") { _ in SwiftLogNoOpLogHandler() }
let stream = environment["CRASH_STREAM"] ?? "WORK"
let durable = environment["CRASH_DURABLE"] ?? "crashy"
let connection = try await NATSConnection.connect(
    NATSConfiguration(servers: [environment["CRASH_NATS_URL"] ?? "nats://127.0.0.1:4222"], name: "crash-consumer",
                      connectAttempts: 5), logger: logger)
let jetStream = try JetStream(connection: connection)
let spec = ConsumerSpec(durable: durable, ackWait: .seconds(1), maxDeliver: 3)
try await jetStream.ensureConsumer(stream: stream, spec)
let consumer = JetStreamConsumerService(jetStream: jetStream, stream: stream, consumer: spec, batchSize: 1,
                                        maxInFlight: 1, logger: logger) { delivery in
    let payload = String(decoding: delivery.payload, as: UTF8.self)
    if payload == "poison" { kill(getpid(), SIGKILL) }
    try connection.publish("done.\(payload)", payload: delivery.payload)
}
let parking = try await MaxDeliveries.service(jetStream: jetStream, stream: stream, consumer: durable, logger: logger)
print("ready")
try await ServiceGroup(services: [parking, consumer], gracefulShutdownSignals: [.sigterm], logger: logger).run()
