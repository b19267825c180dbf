import Contracts
import Schemas
import Testing

@Suite("Reply types on the gateway's reply subject")
struct ReplyTypeTests {
    @Test func protobufNamesAndThePreviousReleasesNamesAreUnderstood() {
        #expect(ReplyType.isChunk("switchyard.v1.StreamChunk"))
        #expect(ReplyType.isChunk("chat.chunk"))
        #expect(ReplyType.isFailure("switchyard.v1.ChatFailed"))
        #expect(ReplyType.isFailure("chat.failed"))
        for final in ["switchyard.v1.ChatCompleted", "chat.completed", nil] {
            #expect(!ReplyType.isChunk(final) && !ReplyType.isFailure(final))
        }
        #expect(EventKind(protoName: ChatCompleted.protoName) == .chatCompleted)
        #expect(EventKind.allCases.allSatisfy { EventKind(protoName: $0.protoName) == $0 })
        #expect(EventKind(protoName: "chat.completed") == nil)
    }
}
