@testable import Messaging
import Testing

/// Which failed publishes ride out a nats-server restart (``JetStream/publish(_:timeout:)``).
@Suite("Publishes retried through a restart")
struct PublishRetryTests {
    @Test("JetStream's own 503 while it starts is retried, like no responders; a real rejection is not")
    func classification() {
        let starting = Array(#"{"type":"io.nats.jetstream.api.v1.pub_ack_response","error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#.utf8)
        do {
            _ = try JetStream.decodeAck(starting)
            Issue.record("a 503 answer decoded as an ack")
        } catch {
            #expect(error.status == "503")
            #expect(JetStream.retriableDuringOutage(error, hasMessageID: false))
        }
        let rejected = Array(#"{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}"#.utf8)
        do {
            _ = try JetStream.decodeAck(rejected)
            Issue.record("a rejection decoded as an ack")
        } catch {
            #expect(error.jetStreamCode == 10060)
            #expect(!JetStream.retriableDuringOutage(error, hasMessageID: true))
        }
        #expect(JetStream.retriableDuringOutage(NATSError(.noResponders, context: "x"), hasMessageID: false))
        #expect(JetStream.retriableDuringOutage(NATSError(.timeout, context: "x"), hasMessageID: true))
        #expect(!JetStream.retriableDuringOutage(NATSError(.timeout, context: "x"), hasMessageID: false))
    }
}
