import Contracts
import Logging
import Messaging
import Schemas
import ServiceKit
import ServiceKitPostgres
import ServiceLifecycle
import Storage
import Synchronization
import TestKit
import Testing

@Suite("ServiceKit wiring against real nats-server and PostgreSQL")
struct InfrastructureTests {
    let logger = Logger(label: "infra-tests") { _ in SwiftLogNoOpLogHandler() }

    func configuration(nats: String, database: String) throws -> ServiceConfiguration {
        try ServiceConfiguration(
            environment: ["SWITCHYARD_NATS_URL": nats, "SWITCHYARD_DATABASE_URL": database,
                          "SWITCHYARD_DB_POOL_SIZE": "2", "SWITCHYARD_INSTANCE_ID": "t1"],
            service: "infra-test")
    }

    @Test("health checks report NATS and PostgreSQL up, then down when they go away")
    func healthChecks() async throws {
        let nats = try await NATSServer.start()
        let postgres = try await PostgresServer.start()
        let config = try configuration(nats: nats.url, database: postgres.connectionString)
        var natsConfig = config.natsConfiguration()
        natsConfig.connectAttempts = 3
        let connection = try await NATSConnection.connect(natsConfig, logger: logger)
        let pool = try PostgresPool(configuration: config.postgresConfiguration, logger: logger)
        let health = HealthRegistry(checkTimeout: .seconds(3))
        health.register(NATSHealthCheck(connection: connection))
        health.register(PostgresHealthCheck(pool: pool))

        let upReport = await health.report()
        #expect(upReport.isHealthy)
        #expect(upReport.components["nats"]?.status == .up)
        #expect(upReport.components["postgres"]?.status == .up)

        await nats.stop()
        await postgres.stop()
        // The client notices the lost server asynchronously; wait for it rather than for a fixed time.
        for _ in 0..<200 where connection.isConnected { try await Task.sleep(for: .milliseconds(25)) }
        let downReport = await health.report()
        #expect(!downReport.isHealthy)
        #expect(downReport.components["nats"]?.status == .down)
        #expect(downReport.components["postgres"]?.status == .down)
        connection.close()
        await pool.close()
    }

    @Test("a payload that fails to decode is dead-lettered on its first delivery")
    func undecodablePayloadIsPoison() async throws {
        try await NATSServer.withServer { server in
            let connection = try await NATSConnection.connect(
                NATSConfiguration(servers: [server.url], connectAttempts: 3), logger: logger)
            defer { connection.close() }
            let jetStream = try JetStream(connection: connection)
            try await jetStream.ensureStream(Streams.events.spec)
            try await jetStream.ensureStream(Streams.deadLetter.spec)
            let spec = Consumers.routerRequested.spec
            try await jetStream.ensureConsumer(stream: StreamNames.events, spec)

            var valid = ChatRequested()
            valid.meta = EventMeta.make(tenantID: "acme", producer: "test")
            valid.model = "host"
            try await jetStream.publish(OutboundMessage(subject: Subjects.event(.chatRequested, tenant: "acme"),
                                                        payload: [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]))
            try await jetStream.publish(OutboundMessage(subject: Subjects.event(.chatRequested, tenant: "acme"),
                                                        payload: valid.protobufBytes()))
            let attempts = Mutex(0)
            let decoded = Mutex<[ChatRequested]>([])
            let service = JetStreamConsumerService(
                jetStream: jetStream, stream: StreamNames.events, consumer: spec, logger: logger
            ) { delivery in
                attempts.withLock { $0 += 1 }
                let request = try ChatRequested(protobuf: delivery.payload)
                decoded.withLock { $0.append(request) }
            }
            let dlq = try connection.subscribe(Subjects.deadLetterAll)
            let group = ServiceGroup(services: [service], logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var iterator = dlq.messages.makeAsyncIterator()
                let parked = try #require(await iterator.next())
                #expect(parked.headers[DeadLetter.deliveriesHeader] == "1")
                #expect(parked.payload == [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
                for _ in 0..<200 where decoded.withLock({ $0.isEmpty }) {
                    try await Task.sleep(for: .milliseconds(25))
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            #expect(decoded.withLock { $0 } == [valid])
            #expect(attempts.withLock { $0 } == 2)
        }
    }
}
