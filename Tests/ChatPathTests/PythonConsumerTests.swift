import Foundation
import Testing
import TestKit

/// The outside-consumer example (`examples/python-consumer`), run as a user would: its run.sh (a virtualenv
/// from PyPI, classes generated from Proto/ by protoc), given only an env file like the one `make run` writes,
/// against a stack whose nats-server requires the per-service users of `scripts/nats-auth.conf.tmpl`.
@Suite("Outside consumers: the Python example and the read-only NATS user", .serialized)
struct PythonConsumerTests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../examples/python-consumer/run.sh").standardizedFileURL.path

    @Test("the Python example, given only the env file with the reader's URL, receives and decodes a live chat's events")
    func pythonExampleDecodesLiveEvents() async throws {
        try await Stack.with(natsAuth: true) { stack in
            let passwords = try #require(stack.natsPasswords)
            let port = try #require(URL(string: stack.nats.url)?.port)
            let directory = try makeTemporaryDirectory(prefix: "python-consumer")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let envFile = directory + "/demo.env"
            try """
                SWITCHYARD_BASE_URL=\(stack.baseURL)
                SWITCHYARD_NATS_URL=nats://reader:\(try #require(passwords["reader"]))@127.0.0.1:\(port)
                SWITCHYARD_NATS_INBOX_PREFIX=_INBOX_reader

                """.write(toFile: envFile, atomically: true, encoding: .utf8)
            // The chat's four events on the log: requested, routed, completed, the agent's decision.
            let consumer = try TestProcess(executable: "/bin/bash", arguments: [
                Self.example, "--env-file", envFile, "--durable", "python-test", "--subject",
                "evt.*.*.\(Stack.tenant)", "--count", "4", "--idle-timeout", "60",
            ])
            defer { consumer.terminate(signal: SIGKILL) }
            // Ready once it says so (the first run creates the virtualenv: minutes on a cold cache).
            let deadline = ContinuousClock.now + .seconds(300)
            while !consumer.output.contains("consuming evt.") && consumer.isRunning && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            try #require(consumer.output.contains("consuming evt."), "the example did not start:\n\(consumer.output.suffix(3000))")
            let response = try await stack.chat(["model": "host", "messages": [["role": "user", "content": "When are you open?"]]])
            #expect(response.status == 200)
            let requestID = try #require(response.headers["x-switchyard-request-id"])
            // It exits after 4 events, or by itself after 60 s without one (--idle-timeout).
            let status = await consumer.waitUntilExit()
            #expect(status == 0, "exit \(status):\n\(consumer.output.suffix(3000))")
            let events = consumer.output.split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }
            let ours = events.filter { $0["request_id"] as? String == requestID }
            #expect(Set(ours.compactMap { $0["type"] as? String }) == [
                "switchyard.v1.ChatRequested", "switchyard.v1.ChatRouted", "switchyard.v1.ChatCompleted",
                "switchyard.v1.AgentDecision",
            ], "decoded: \(events)")
            let completed = try #require(ours.first { $0["type"] as? String == "switchyard.v1.ChatCompleted" })
            #expect(completed["tenant"] as? String == Stack.tenant)
            let body = try #require(completed["event"] as? [String: Any])
            #expect((body["content"] as? String)?.contains("Tuesday to Sunday") == true, "\(body)")
            #expect(body["agent"] as? String == "host")
        }
    }
}
