import ArgumentParser
import Foundation
import Logging
import Messaging
import Schemas
import Storage
import Tenancy

/// `switchyard` — the admin CLI. Talks to NATS (and, for the demo seed, PostgreSQL) directly.
@main
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "Administer a Switchyard installation.",
        subcommands: [Demo.self, Events.self])
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "NATS server URL (env SWITCHYARD_NATS_URL).")
    var nats: String = ProcessInfo.processInfo.environment["SWITCHYARD_NATS_URL"] ?? "nats://127.0.0.1:4222"

    func connect() async throws -> (NATSConnection, JetStream) {
        let logger = Logger(label: "switchyard-cli") { _ in SwiftLogNoOpLogHandler() }
        do {
            let connection = try await NATSConnection.connect(
                NATSConfiguration(servers: nats.split(separator: ",").map(String.init), name: "switchyard-cli",
                                  connectAttempts: 3),
                logger: logger)
            return (connection, try JetStream(connection: connection))
        } catch {
            throw ValidationError("cannot connect to NATS at the given URL: \(error)")
        }
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Demo data.", subcommands: [Seed.self])

    struct Seed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seed the demo tenant (demo-restaurant): tenant, plan, manifest, rollouts, knowledge base, API key.")

        @OptionGroup var connection: Connection
        @Option(help: "PostgreSQL URL (env SWITCHYARD_DATABASE_URL).")
        var database: String = ProcessInfo.processInfo.environment["SWITCHYARD_DATABASE_URL"]
            ?? "postgresql://switchyard@127.0.0.1:5432/switchyard"
        @Option(help: "Write SWITCHYARD_BASE_URL, SWITCHYARD_API_KEY and SWITCHYARD_NATS_URL to this file.")
        var envFile: String?
        @Option(help: "The gateway's base URL to write into the env file.")
        var baseURL: String = "http://127.0.0.1:8080/v1"
        @Option(help: "Requests per minute per key on the demo plan (0 = unlimited).")
        var rpm: UInt32 = DemoSeed.plan.rpm
        @Option(help: "Tokens per minute per key on the demo plan (0 = unlimited).")
        var tpm: UInt32 = DemoSeed.plan.tpm

        func run() async throws {
            let (nats, jetStream) = try await connection.connect()
            defer { nats.close() }
            let now = EventClock.nowUnixNanos()
            let writer = try await TenancyWriter(jetStream: jetStream)
            try await writer.put(DemoSeed.tenant(now: now))
            var plan = DemoSeed.plan
            plan.rpm = rpm
            plan.tpm = tpm
            try await writer.put(plan, tenant: DemoSeed.tenantID)
            try await writer.put(DemoSeed.manifest, tenant: DemoSeed.tenantID)
            for rollout in DemoSeed.rollouts(now: now) { try await writer.put(rollout, tenant: DemoSeed.tenantID) }

            let logger = Logger(label: "switchyard-cli") { _ in SwiftLogNoOpLogHandler() }
            let pool = try PostgresPool(configuration: PostgresConfiguration(connectionString: database, poolSize: 1),
                                        logger: logger)
            let knowledge = KnowledgeStore(pool: pool)
            try await knowledge.migrate(logger: logger)
            try await knowledge.upsert(DemoSeed.knowledge(now: now), tenant: DemoSeed.tenantID)
            await pool.close()

            // Reuse the demo key if it is still valid; otherwise issue a new one (shown once, stored hashed).
            var apiKey = existingKey()
            if let key = apiKey, await writer.keyIsActive(key) == false { apiKey = nil }
            if apiKey == nil {
                let (plaintext, record) = APIKeyGenerator.generate(
                    env: .test, pepper: nil, tenantID: DemoSeed.tenantID, scopes: ["chat"], label: "demo", nowUnixNanos: now)
                try await writer.put(record)
                apiKey = plaintext
            }
            if let envFile {
                let lines = [
                    "SWITCHYARD_BASE_URL=\(baseURL)",
                    "SWITCHYARD_API_KEY=\(apiKey!)",
                    "SWITCHYARD_NATS_URL=\(connection.nats)",
                ]
                try (lines.joined(separator: "\n") + "\n").write(toFile: envFile, atomically: true, encoding: .utf8)
                chmod(envFile, 0o600)
            }
            print("seeded tenant \(DemoSeed.tenantID): \(DemoSeed.manifest.agents.count) agents, "
                  + "\(DemoSeed.knowledge(now: now).count) knowledge entries")
        }

        func existingKey() -> String? {
            guard let envFile, let text = try? String(contentsOfFile: envFile, encoding: .utf8) else { return nil }
            for line in text.split(separator: "\n") where line.hasPrefix("SWITCHYARD_API_KEY=") {
                return String(line.dropFirst("SWITCHYARD_API_KEY=".count))
            }
            return nil
        }
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The event log.", subcommands: [Tail.self, Hops.self])

    struct Hops: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-hop latency from live chat.completed events (the hop stamps every service adds).")

        @OptionGroup var connection: Connection
        @Option(help: "How many completed chats to sample.") var count: Int = 1000

        func run() async throws {
            let (nats, _) = try await connection.connect()
            defer { nats.close() }
            let subscription = try nats.subscribe("evt.chat.completed.*")
            var spans: [String: [Int64]] = [:]
            var order: [String] = []
            var seen = 0
            for await message in subscription.messages where seen < count {
                guard let completed = try? ChatCompleted(protobuf: message.payload) else { continue }
                let hops = completed.hops
                for (from, to) in zip(hops, hops.dropFirst()) {
                    let name = "\(from.hop) → \(to.hop)"
                    if spans[name] == nil { order.append(name) }
                    spans[name, default: []].append(to.unixNanos - from.unixNanos)
                }
                if let first = hops.first, let last = hops.last {
                    if spans["total (in the event log)"] == nil { order.append("total (in the event log)") }
                    spans["total (in the event log)", default: []].append(last.unixNanos - first.unixNanos)
                }
                seen += 1
                // Unsubscribe and let the stream finish by itself rather than abandoning the iterator
                // while nats.c may still be delivering into it.
                if seen == count { subscription.unsubscribe() }
            }
            print("per-hop latency over \(seen) chats (ms):")
            for name in order {
                let values = spans[name, default: []].sorted()
                func pct(_ p: Double) -> String {
                    String(format: "%7.3f", Double(values[min(values.count - 1, Int(Double(values.count) * p))]) / 1e6)
                }
                print("  \(name.padding(toLength: 34, withPad: " ", startingAt: 0)) p50 \(pct(0.5))  p90 \(pct(0.9))  p99 \(pct(0.99))")
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print events live, decoded.")

        @OptionGroup var connection: Connection
        @Option(help: "Only this tenant's events.") var tenant: String?
        @Option(help: "Only this event type, e.g. chat.completed.") var type: String?
        @Option(help: "Stop after this many events.") var count: Int?

        func validate() throws {
            if let tenant, !TenantID.isValid(tenant) { throw ValidationError("invalid tenant id") }
            if let type, Subjects.EventKind(rawValue: type) == nil {
                throw ValidationError("unknown event type; one of: "
                    + Subjects.EventKind.allCases.map(\.rawValue).joined(separator: ", "))
            }
        }

        func run() async throws {
            let (nats, _) = try await connection.connect()
            defer { nats.close() }
            let subject = "evt.\(type ?? "*.*").\(tenant ?? "*")"
            let subscription = try nats.subscribe(subject)
            var seen = 0
            for await message in subscription.messages {
                if let count, seen >= count { continue }  // draining after unsubscribe
                print(EventPrinter.line(for: message))
                seen += 1
                if let count, seen == count { subscription.unsubscribe() }
            }
        }
    }
}

enum EventPrinter {
    static func line(for message: NATSMessage) -> String {
        let tokens = message.subject.split(separator: ".")
        guard tokens.count == 4, let kind = Subjects.EventKind(rawValue: "\(tokens[1]).\(tokens[2])") else {
            return "\(message.subject) (\(message.payload.count) bytes, unknown kind)"
        }
        let decoded: String
        do {
            switch kind {
            case .chatRequested: decoded = "\(try ChatRequested(protobuf: message.payload))"
            case .chatRouted: decoded = "\(try ChatRouted(protobuf: message.payload))"
            case .chatCompleted: decoded = "\(try ChatCompleted(protobuf: message.payload))"
            case .chatFailed: decoded = "\(try ChatFailed(protobuf: message.payload))"
            case .handoffRequested: decoded = "\(try HandoffRequested(protobuf: message.payload))"
            case .consentChecked: decoded = "\(try ConsentChecked(protobuf: message.payload))"
            case .agentDecision: decoded = "\(try AgentDecision(protobuf: message.payload))"
            case .tenantChanged: decoded = "\(try TenantChanged(protobuf: message.payload))"
            case .budgetExceeded: decoded = "\(try BudgetExceeded(protobuf: message.payload))"
            case .auditRecorded: decoded = "\(try AuditRecorded(protobuf: message.payload))"
            case .evalCompleted: decoded = "(\(message.payload.count) bytes)"
            }
        } catch {
            decoded = "undecodable: \(error)"
        }
        return "\(message.subject) \(decoded)"
    }
}
