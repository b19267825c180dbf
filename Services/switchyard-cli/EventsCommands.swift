import ArgumentParser
import Messaging
import Schemas

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The event log.", subcommands: [Tail.self, Hops.self])

    struct Hops: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-hop latency from live chat.completed events (the hop stamps every service adds).")

        @OptionGroup(title: "NATS options") var connection: NATSOptions
        @Option(help: "How many completed chats to sample.") var count: Int = 1000

        func run() async throws {
            let nats = try await connection.connect()
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

        @OptionGroup(title: "NATS options") var connection: NATSOptions
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
            let nats = try await connection.connect()
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
