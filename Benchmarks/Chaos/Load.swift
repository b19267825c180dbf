import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization

/// One request's outcome as the client saw it.
struct Outcome: Sendable {
    var status: Int  // 0: no HTTP answer (connection refused or cut)
    var requestID: String?
    var milliseconds: Double
    /// A 200 whose answer lacks the knowledge base's fact (an answer composed without the knowledge base), or a
    /// stream that ended without `[DONE]` or with an error event.
    var wrong: Bool
    /// The start of the body of a failure (for the report).
    var failure: String = ""
}

/// Sends chats to the gateway: the question has one right answer in the tenant's knowledge base ("12:00").
final class LoadClient: Sendable {
    let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(timeout: .init(connect: .seconds(5))))
    let url: String
    let apiKey: String

    init(port: Int, apiKey: String) {
        url = "http://127.0.0.1:\(port)/v1/chat/completions"
        self.apiKey = apiKey
    }

    func send(stream: Bool) async -> Outcome {
        let started = ContinuousClock.now
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(apiKey)")
        request.headers.add(name: "content-type", value: "application/json")
        let body = #"{"model":"host","stream":\#(stream),"messages":[{"role":"user","content":"When are you open?"}]}"#
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await http.execute(request, timeout: .seconds(60))
            let collected = try await response.body.collect(upTo: 1 << 20)
            let text = String(buffer: collected)
            let status = Int(response.status.code)
            let elapsed = ContinuousClock.now - started
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            var wrong = false
            if status == 200 {
                wrong = !(stream ? Self.streamedContent(text) : Self.content(text)).map { $0.contains("12:00") }.isTrue
            }
            return Outcome(status: status, requestID: response.headers.first(name: "x-switchyard-request-id"),
                           milliseconds: milliseconds, wrong: wrong,
                           failure: status == 200 ? "" : String(text.prefix(200)))
        } catch {
            return Outcome(status: 0, requestID: nil, milliseconds: 0, wrong: false, failure: "\(error)".prefix(200).description)
        }
    }

    static func content(_ text: String) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let choices = json["choices"] as? [[String: Any]],
              let message = choices.first?["message"] as? [String: Any] else { return nil }
        return message["content"] as? String
    }

    /// The concatenated deltas of an SSE answer, or nil when it has an error event or no `[DONE]`.
    static func streamedContent(_ text: String) -> String? {
        var content = ""
        var done = false
        for line in text.split(separator: "\n") where line.hasPrefix("data: ") {
            let data = line.dropFirst(6)
            if data == "[DONE]" {
                done = true
                continue
            }
            guard let json = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else { return nil }
            if json["error"] != nil { return nil }
            if let choices = json["choices"] as? [[String: Any]], let delta = choices.first?["delta"] as? [String: Any],
               let piece = delta["content"] as? String {
                content += piece
            }
        }
        return done ? content : nil
    }

    func shutdown() async { try? await http.shutdown() }
}

extension Optional where Wrapped == Bool {
    var isTrue: Bool { self == true }
}

/// An open-loop load: `rate` requests a second for `duration` (every fifth one streamed), whatever the answers
/// take; `during` runs once a third of the way in (the fault).
func runLoad(client: LoadClient, rate: Int, duration: Duration,
             during fault: @escaping @Sendable () async throws -> Void) async throws -> [Outcome] {
    let outcomes = OutcomeLog()
    let total = Int(Double(rate) * Double(duration.components.seconds))
    let interval = Duration.nanoseconds(1_000_000_000 / max(1, rate))
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            try await Task.sleep(for: duration / 3)
            try await fault()
        }
        let start = ContinuousClock.now
        for index in 0..<total {
            try await Task.sleep(until: start + interval * index, clock: .continuous)
            group.addTask {
                let outcome = await client.send(stream: index % 5 == 4)
                outcomes.state.withLock { $0.append(outcome) }
            }
        }
        try await group.waitForAll()
    }
    return outcomes.state.withLock { $0 }
}

final class OutcomeLog: Sendable {
    let state = Mutex<[Outcome]>([])
}
