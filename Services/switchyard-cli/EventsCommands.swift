import ArgumentParser
import Contracts
import Foundation
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
        @Flag(help: "One JSON object per event: {\"subject\", \"type\", \"event\"} (proto3 JSON names).")
        var json = false

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
                print(EventPrinter.line(for: message, json: json))
                seen += 1
                if let count, seen == count { subscription.unsubscribe() }
            }
        }
    }
}

/// Decodes an event by the kind in its subject (`evt.<kind>.<tenant>`) and renders it as one line: the
/// subject and the event as compact JSON (proto3 JSON names), or with `--json` a JSON object per line
/// (`{"subject": …, "type": …, "event": {…}}`) for piping into jq.
enum EventPrinter {
    /// The payload decoded as the kind's message type (no table: ``EventKind/messageType``).
    static func decode(_ kind: EventKind, _ payload: [UInt8]) throws -> (any Encodable)? {
        try kind.messageType.init(protobuf: payload) as? any Encodable
    }

    static func line(for message: NATSMessage, json: Bool = false) -> String {
        // The `Switchyard-Event-Type` header names the payload's protobuf type; the subject's kind is the fallback.
        let tokens = message.subject.split(separator: ".")
        let kind = message.headers[Headers.eventType].flatMap(EventKind.init(protoName:))
            ?? (tokens.count == 4 ? EventKind(rawValue: "\(tokens[1]).\(tokens[2])") : nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var body: String
        var problem: String?
        do {
            if let kind, let event = try decode(kind, message.payload) {
                body = String(decoding: try encoder.encode(event), as: UTF8.self)
            } else {
                body = "null"
                problem = "\(message.payload.count) bytes, no decoder for this kind"
            }
        } catch {
            body = "null"
            problem = "undecodable: \(error)"
        }
        guard json else { return "\(message.subject) \(problem ?? body)" }
        var object: [String: Any] = ["subject": message.subject, "type": kind?.rawValue ?? NSNull()]
        object["event"] = (try? JSONSerialization.jsonObject(with: Data(body.utf8), options: .fragmentsAllowed)) ?? NSNull()
        if let problem { object["error"] = problem }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
