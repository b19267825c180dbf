import Foundation
import Logging
import Telemetry
import Tracing
import Testing

@Suite("JSONLogHandler")
struct JSONLogHandlerTests {
    func makeLogger(_ capture: CapturingSink, level: Logger.Level = .info) -> Logger {
        Logger(label: "router.consumer") { label in
            JSONLogHandler(label: label, service: "router", logLevel: level, sink: capture.sink)
        }
    }

    @Test func writesStandardFieldsAndFlattenedMetadata() throws {
        let capture = CapturingSink()
        var logger = makeLogger(capture)
        logger[metadataKey: "instance"] = "router-1"
        logger.info(
            "request routed",
            metadata: [
                "tenant": ["id": "acme"],
                "request.id": "req-1",
                "attempt": .stringConvertible(3),
                "agents": ["host", "support"],
            ])

        let objects = try capture.objects()
        #expect(objects.count == 1)
        let line = try #require(objects.first)
        #expect(line["level"] as? String == "info")
        #expect(line["msg"] as? String == "request routed")
        #expect(line["service"] as? String == "router")
        #expect(line["logger"] as? String == "router.consumer")
        #expect(line["tenant.id"] as? String == "acme")
        #expect(line["request.id"] as? String == "req-1")
        #expect(line["attempt"] as? String == "3")
        #expect(line["instance"] as? String == "router-1")
        #expect(line["agents"] as? [String] == ["host", "support"])

        // The first key is ts, in RFC 3339 UTC with milliseconds.
        let raw = try #require(capture.rawLines.first)
        #expect(raw.hasPrefix(#"{"ts":""#))
        let ts = try #require(line["ts"] as? String)
        #expect(ts.count == 24)
        #expect(ts.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil)
    }

    @Test func escapesEveryTrickyCharacter() throws {
        let capture = CapturingSink()
        let logger = makeLogger(capture)
        let nasty = "quote\" backslash\\ newline\n cr\r tab\t nul\u{0} bell\u{7} esc\u{1B} del\u{7F} ls\u{2028} ps\u{2029} emoji🚂 umlaut ä"
        logger.error("constant", metadata: ["payload": .string(nasty), "key\"with\nnewline": "v"])

        let raw = try #require(capture.rawLines.first)
        #expect(raw.contains(#"\u2028"#))
        #expect(raw.contains(#"\u2029"#))
        #expect(raw.contains(#"\u0000"#))
        #expect(!raw.dropLast().contains("\n"))
        #expect(!raw.contains("\u{2028}"))

        let line = try #require(try capture.objects().first)
        #expect(line["payload"] as? String == nasty)
        #expect(line["key\"with\nnewline"] as? String == "v")
        #expect(line["level"] as? String == "error")
    }

    @Test func redactsSecretsCaseInsensitively() throws {
        let capture = CapturingSink()
        let logger = makeLogger(capture)
        logger.warning(
            "auth failed",
            metadata: [
                "Authorization": "Bearer sy_live_secret1",
                "API_KEY": "sy_live_secret2",
                "password": "hunter2",
                "http": ["token": "secret3", "method": "POST"],
                "db.Password": "secret4",
                "credentials": ["nested": ["authorization": "secret5"]],
                "tokens_used": "42",
            ])

        let raw = try #require(capture.rawLines.first)
        for secret in ["secret1", "secret2", "hunter2", "secret3", "secret4", "secret5"] {
            #expect(!raw.contains(secret), "leaked \(secret)")
        }
        let line = try #require(try capture.objects().first)
        #expect(line["Authorization"] as? String == "[redacted]")
        #expect(line["API_KEY"] as? String == "[redacted]")
        #expect(line["password"] as? String == "[redacted]")
        #expect(line["http.token"] as? String == "[redacted]")
        #expect(line["http.method"] as? String == "POST")
        #expect(line["db.Password"] as? String == "[redacted]")
        #expect(line["credentials.nested.authorization"] as? String == "[redacted]")
        #expect(line["tokens_used"] as? String == "42")
    }

    @Test func reservedKeysDoNotDuplicateFields() throws {
        let capture = CapturingSink()
        let logger = makeLogger(capture)
        logger.info("real message", metadata: ["msg": "spoofed", "level": "spoofed"])
        let line = try #require(try capture.objects().first)
        #expect(line["msg"] as? String == "real message")
        #expect(line["level"] as? String == "info")
        #expect(line["meta.msg"] as? String == "spoofed")
    }

    @Test func respectsLogLevel() throws {
        let capture = CapturingSink()
        let logger = makeLogger(capture, level: .warning)
        logger.info("dropped")
        logger.debug("dropped")
        logger.warning("kept")
        let objects = try capture.objects()
        #expect(objects.map { $0["msg"] as? String } == ["kept"])
    }

    @Test func concurrentWritersProduceWholeLines() async throws {
        let capture = CapturingSink()
        let logger = makeLogger(capture)
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for index in 0..<100 {
                        logger.info("tick", metadata: ["task": "\(task)", "index": "\(index)"])
                    }
                }
            }
        }
        let objects = try capture.objects()
        #expect(objects.count == 800)
    }

    @Test func metadataProviderAddsTraceID() throws {
        let capture = CapturingSink()
        let logger = TelemetryLogging.makeLogger(label: "gw", service: "api-gateway", sink: capture.sink)
        var context = ServiceContext.topLevel
        var carrier = ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
        W3CTracer().extract(carrier, into: &context, using: DictionaryExtractor())
        ServiceContext.withValue(context) {
            logger.info("with trace")
        }
        logger.info("without trace")
        carrier.removeAll()

        let objects = try capture.objects()
        #expect(objects.count == 2)
        #expect(objects[0]["trace.id"] as? String == "0af7651916cd43dd8448eb211c80319c")
        #expect(objects[0]["span.id"] as? String == "b7ad6b7169203331")
        #expect(objects[1]["trace.id"] == nil)
        #expect(objects[0]["service"] as? String == "api-gateway")
    }

    @Test func metadataHelperCollectsRequestFields() {
        var context = ServiceContext.topLevel
        W3CTracer().extract(
            ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"], into: &context,
            using: DictionaryExtractor())
        let metadata = Logger.Metadata.switchyard(tenant: "acme", requestID: "r1", context: context)
        #expect(metadata["tenant.id"] == "acme")
        #expect(metadata["request.id"] == "r1")
        #expect(metadata["trace.id"] == "0af7651916cd43dd8448eb211c80319c")
        #expect(Logger.Metadata.switchyard(tenant: "acme", context: nil)["trace.id"] == nil)
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (Int64(951_782_400_123), "2000-02-29T00:00:00.123Z"),
        (Int64(1_714_565_045_007), "2024-05-01T12:04:05.007Z"),
        (Int64(-1), "1969-12-31T23:59:59.999Z"),
        (Int64(4_102_444_799_999), "2099-12-31T23:59:59.999Z"),
    ])
    func formatsRFC3339(millis: Int64, expected: String) {
        #expect(RFC3339.string(millisecondsSinceEpoch: millis) == expected)
    }
}
