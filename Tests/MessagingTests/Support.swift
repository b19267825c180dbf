import Logging
import Messaging
import TestKit

/// A connected client plus its JetStream context against a throwaway server.
struct Harness {
    let server: NATSServer
    let connection: NATSConnection
    let jetStream: JetStream

    static let logger = Logger(label: "messaging-tests") { _ in SwiftLogNoOpLogHandler() }

    static func connect(_ server: NATSServer, name: String = "test") async throws -> (NATSConnection, JetStream) {
        let connection = try await NATSConnection.connect(
            NATSConfiguration(servers: [server.url], name: name, connectAttempts: 3), logger: logger)
        return (connection, try JetStream(connection: connection))
    }
}

func withHarness<T>(_ body: (Harness) async throws -> T) async throws -> T {
    try await NATSServer.withServer { server in
        let (connection, jetStream) = try await Harness.connect(server)
        defer { connection.close() }
        return try await body(Harness(server: server, connection: connection, jetStream: jetStream))
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Whether no message arrived (noncopyable optionals can't be compared with `==`).
func isNone(_ message: consuming JetStreamMessage?) -> Bool {
    switch consume message {
    case .none: return true
    case .some: return false
    }
}

struct NoMessage: Error {}

/// Unwraps a message or fails the test (`#require` can't take noncopyable values).
func required(_ message: consuming JetStreamMessage?) throws -> JetStreamMessage {
    switch consume message {
    case .none: throw NoMessage()
    case .some(let value): return value
    }
}
