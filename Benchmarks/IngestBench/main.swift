// ingest-bench: a consumer service's sustained ingest rate from a pre-filled stream (`make bench-billing`,
// `make bench-analytics`). Starts its own nats-server and PostgreSQL (TestKit) on free ports, pre-fills the
// stream the service reads, starts the service binary given as the second argument, and measures from the first
// event it settles to the last.
//   ingest-bench billing <path to the billing binary>
//   ingest-bench analytics <path to the analytics binary>
import Foundation
import Logging
import Messaging
import TestKit

let benchLogger = Logger(label: "ingest-bench") { _ in SwiftLogNoOpLogHandler() }
let arguments = CommandLine.arguments
guard arguments.count > 2, ["billing", "analytics"].contains(arguments[1]),
      FileManager.default.isExecutableFile(atPath: arguments[2]) else {
    print("usage: ingest-bench billing|analytics <path to the service binary>")
    exit(64)
}
let nats = try await NATSServer.start()
let postgres = try await PostgresServer.start()
do {
    let connection = try await NATSConnection.connect(
        NATSConfiguration(servers: [nats.url], name: "ingest-bench", sendAsap: false), logger: benchLogger)
    let jetStream = try JetStream(connection: connection)
    if arguments[1] == "billing" {
        try await benchBilling(binary: arguments[2], nats: nats, postgres: postgres, connection: connection,
                               jetStream: jetStream)
    } else {
        try await benchAnalytics(binary: arguments[2], nats: nats, postgres: postgres, connection: connection,
                                 jetStream: jetStream)
    }
    connection.close()
}
await nats.stop()
await postgres.stop()
