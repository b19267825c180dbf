import Tenancy
import Foundation
@testable import GatewayCore
import Schemas
import Testing

@Suite("RequestValidator")
struct RequestValidatorTests {
    let validator = RequestValidator()

    func validate(_ json: String, header: String? = nil, plan: Plan? = nil) -> Result<ValidatedChatRequest, GatewayError> {
        validator.validate(body: bytes(json), conversationIDHeader: header, plan: plan)
    }

    func rejected(
        _ json: String, header: String? = nil, plan: Plan? = nil, param: String?, secrets: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let error = failure(validate(json, header: header, plan: plan), sourceLocation: sourceLocation) else { return }
        #expect(error.status == 400, sourceLocation: sourceLocation)
        #expect(error.code == .invalidRequest, sourceLocation: sourceLocation)
        #expect(error.type == "invalid_request_error", sourceLocation: sourceLocation)
        #expect(error.param == param, "\(error)", sourceLocation: sourceLocation)
        if let param { #expect(error.message.contains(param), sourceLocation: sourceLocation) }
        expectNoEcho(error, secrets, sourceLocation: sourceLocation)
    }

    // MARK: Accepted

    @Test func minimalRequest() throws {
        let v = try #require(success(validate(#"{"model":"host","messages":[{"role":"user","content":"hi"}]}"#)))
        #expect(v.model == "host")
        #expect(v.messages == [ChatMessage(role: "user", content: "hi", name: "")])
        #expect(v.stream == false)
        #expect(v.includeUsage == false)
        #expect(v.maxTokens == nil)
        #expect(v.temperature == nil)
        #expect(v.conversationID == nil)
        #expect(v.channel == "api")
        #expect(v.endUserID == "")
        #expect(v.metadata.isEmpty)
        #expect(v.totalContentChars == 2)
        #expect(v.upfrontTokenEstimate == v.estimatedPromptTokens + GatewayLimits().defaultCompletionTokenEstimate)
    }

    @Test func fullRequestWithUnknownFieldsIgnored() throws {
        let json = """
        {"model":"support","messages":[
            {"role":"system","content":"be nice"},
            {"role":"developer","content":"dev"},
            {"role":"user","content":"hello","name":"ann"},
            {"role":"assistant","content":null},
            {"role":"tool","content":"42","tool_call_id":"call_1"}],
         "stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"temperature":0.7,
         "user":"end-user-1","metadata":{"channel":"whatsapp","conversation_id":"conv-1","k":"v"},
         "n":1,"tools":[{"type":"function"}],"frequency_penalty":0,"unknown":{"deep":[1,2,3]}}
        """
        let v = try #require(success(validate(json)))
        #expect(v.messages.map(\.role) == ["system", "developer", "user", "assistant", "tool"])
        #expect(v.messages[2].name == "ann")
        #expect(v.messages[3].content == "")
        #expect(v.stream)
        #expect(v.includeUsage)
        #expect(v.maxTokens == 100)
        #expect(v.temperature == 0.7)
        #expect(v.endUserID == "end-user-1")
        #expect(v.channel == "whatsapp")
        #expect(v.conversationID == "conv-1")
        #expect(v.metadata["k"] == "v")
        #expect(v.upfrontTokenEstimate == v.estimatedPromptTokens + 100)
    }

    @Test func includeUsageOnlyWhenStreaming() throws {
        let v = try #require(success(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#)))
        #expect(v.includeUsage == false)
    }

    @Test func contentPartsAreConcatenated() throws {
        let json = """
        {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Hello, "},{"type":"text","text":"world"}]}]}
        """
        let v = try #require(success(validate(json)))
        #expect(v.messages[0].content == "Hello, world")
        #expect(v.totalContentChars == 12)
    }

    @Test func maxCompletionTokensWins() throws {
        let v = try #require(success(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"max_completion_tokens":20}"#)))
        #expect(v.maxTokens == 20)
    }

    @Test func boundaryValuesAccepted() throws {
        let json = #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":8192,"temperature":2}"#
        #expect(success(validate(json)) != nil)
        let json0 = #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1,"temperature":0}"#
        #expect(success(validate(json0)) != nil)
    }

    // MARK: Body shape

    @Test func malformedJSON() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"SECRET"#, param: nil, secrets: ["SECRET"])
        rejected("not json at all SECRET", param: nil, secrets: ["SECRET"])
    }

    @Test func emptyBody() {
        rejected("", param: nil)
    }

    @Test func invalidUTF8() throws {
        var body = bytes(#"{"model":"m","messages":[{"role":"user","content":"abc"#)
        body += [0xFF, 0xFE, 0xC3]
        body += bytes(#""}]}"#)
        let error = try #require(failure(validator.validate(body: body)))
        #expect(error.status == 400)
        #expect(error.message.contains("UTF-8"))
    }

    @Test(arguments: ["[1,2,3]", "\"string\"", "42", "null", "true"])
    func nonObjectBody(_ json: String) throws {
        let error = try #require(failure(validate(json)))
        #expect(error.status == 400)
        #expect(error.message == "Request body must be a JSON object.")
        #expect(error.param == nil)
    }

    @Test func tooLargeBody() throws {
        let small = RequestValidator(limits: GatewayLimits(maxBodyBytes: 64))
        let json = #"{"model":"m","messages":[{"role":"user","content":"\#(String(repeating: "a", count: 100))"}]}"#
        let error = try #require(failure(small.validate(body: bytes(json))))
        #expect(error.status == 413)
        #expect(error.code == .requestTooLarge)
    }

    // MARK: Missing / wrong types

    @Test("n > 1 is refused, not silently answered with one choice; n = 1 is fine")
    func severalChoices() throws {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":5}"#, param: "n")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#, param: "n")
        #expect(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1}"#)) != nil)
    }

    @Test("a tool message needs its tool_call_id")
    func toolMessageNeedsCallID() {
        let assistant = #"{"role":"assistant","content":null}"#
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"},\#(assistant),{"role":"tool","content":"42"}]}"#,
                 param: "messages[2].tool_call_id")
        rejected(#"{"model":"m","messages":[{"role":"tool","content":"42","tool_call_id":""}]}"#,
                 param: "messages[0].tool_call_id")
        #expect(success(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","content":"42","tool_call_id":"call_1"}]}"#)) != nil)
    }

    @Test("a raw NUL byte in a string is named as such, not as a wrong type")
    func rawControlCharacter() throws {
        let body = Array(#"{"model":"m","messages":[{"role":"user","content":"a"#.utf8) + [0]
            + Array(#"b"}]}"#.utf8)
        let error = try #require(failure(validator.validate(body: body)))
        #expect(error.status == 400)
        #expect(!error.message.contains("must be an array"), "\(error.message)")
        #expect(error.message.contains("control character") || error.message.contains("not valid JSON"), "\(error.message)")
    }

    @Test func missingMessages() {
        rejected(#"{"model":"m"}"#, param: "messages")
    }

    @Test func missingModel() {
        rejected(#"{"messages":[{"role":"user","content":"x"}]}"#, param: "model")
    }

    @Test func missingRole() {
        rejected(#"{"model":"m","messages":[{"content":"x"}]}"#, param: "messages[0].role")
    }

    @Test func messagesWrongType() throws {
        rejected(#"{"model":"m","messages":"SECRETVALUE"}"#, param: "messages", secrets: ["SECRETVALUE"])
        let error = try #require(failure(validate(#"{"model":"m","messages":"x"}"#)))
        #expect(error.message == "'messages' must be an array.")
    }

    @Test func wrongScalarTypes() {
        rejected(#"{"model":12345,"messages":[{"role":"user","content":"x"}]}"#, param: "model", secrets: ["12345"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, param: "stream",
                 secrets: ["yes"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"77777"}"#,
                 param: "max_tokens", secrets: ["77777"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#, param: "max_tokens")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                 param: "temperature", secrets: ["hot"])
        rejected(#"{"model":"m","messages":[{"role":99999,"content":"x"}]}"#, param: "messages[0].role",
                 secrets: ["99999"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":31337}]}"#, param: "messages[0].content",
                 secrets: ["31337"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":"no"}}"#,
                 param: "stream_options.include_usage")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":["a"]}"#, param: "metadata")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":["u"]}"#, param: "user")
        rejected(#"{"model":"m","messages":[1]}"#, param: "messages[0]")
    }

    @Test func hugeNumberIsRejectedWithoutEcho() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":98765432109876543210987}"#,
                 param: "max_tokens", secrets: ["98765432109876543210987"])
    }

    @Test func metadataValueWrongTypeDoesNotEchoKey() throws {
        let error = try #require(failure(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"SECRETKEY":5}}"#)))
        #expect(error.status == 400)
        #expect(error.param == "metadata")
        expectNoEcho(error, ["SECRETKEY"])
        // Numeric-looking keys carry an intValue in the coding path; still never rendered.
        let numeric = try #require(failure(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"918273":true}}"#)))
        #expect(numeric.param == "metadata")
        expectNoEcho(numeric, ["918273"])
    }

    @Test func integerFieldMessages() throws {
        let error = try #require(failure(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"12"}"#)))
        #expect(error.message == "'max_tokens' must be an integer.")
        let fraction = try #require(failure(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":2.5}"#)))
        #expect(fraction.param == "max_completion_tokens")
        let exponent = try #require(success(validate(
            #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e3}"#)))
        #expect(exponent.maxTokens == 1000)
    }

    @Test func nullModel() {
        rejected(#"{"model":null,"messages":[{"role":"user","content":"x"}]}"#, param: "model")
    }

    // MARK: Rules

    @Test func emptyMessages() {
        rejected(#"{"model":"m","messages":[]}"#, param: "messages")
    }

    @Test func tooManyMessages() {
        let one = #"{"role":"user","content":"x"}"#
        let many = Array(repeating: one, count: 257).joined(separator: ",")
        rejected(#"{"model":"m","messages":[\#(many)]}"#, param: "messages")
        let ok = Array(repeating: one, count: 256).joined(separator: ",")
        #expect(success(validate(#"{"model":"m","messages":[\#(ok)]}"#)) != nil)
    }

    @Test func badRole() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"SUPERUSER","content":"x"}]}"#,
                 param: "messages[1].role", secrets: ["SUPERUSER"])
    }

    @Test func missingContentForUser() {
        rejected(#"{"model":"m","messages":[{"role":"user"}]}"#, param: "messages[0].content")
    }

    @Test func unsupportedContentPart() {
        let json = """
        {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url_SECRET","image_url":{"url":"http://x"}}]}]}
        """
        rejected(json, param: "messages[0].content[1].type", secrets: ["image_url_SECRET", "http://x"])
    }

    @Test func textPartWithoutText() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
                 param: "messages[0].content[0].text")
    }

    @Test func contentPartWrongType() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":7}]}]}"#,
                 param: "messages[0].content[0].text")
    }

    @Test func totalContentCap() {
        let limited = RequestValidator(limits: GatewayLimits(maxTotalChars: 10))
        let ok = #"{"model":"m","messages":[{"role":"user","content":"12345"},{"role":"user","content":"6789ü"}]}"#
        #expect(success(limited.validate(body: bytes(ok))) != nil)
        let over = #"{"model":"m","messages":[{"role":"user","content":"12345"},{"role":"user","content":"67890x"}]}"#
        let error = failure(limited.validate(body: bytes(over)))
        #expect(error?.param == "messages")
        #expect(error?.status == 400)
    }

    @Test func defaultTotalContentCap() {
        let big = String(repeating: "a", count: 200_001)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"\#(big)"}]}"#, param: "messages")
    }

    @Test func maxTokensRange() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":8193}"#,
                 param: "max_tokens", secrets: ["8193"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1000000000}"#,
                 param: "max_tokens", secrets: ["1000000000"])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, param: "max_tokens")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#, param: "max_tokens")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":9000}"#,
                 param: "max_completion_tokens")
    }

    @Test func planCapsMaxTokens() {
        let plan = Plan(id: "starter", maxTokensPerRequest: 500)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":501}"#, plan: plan,
                 param: "max_tokens", secrets: ["501"])
        #expect(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":500}"#,
                                 plan: plan)) != nil)
        // 0 = no plan cap
        #expect(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":8000}"#,
                                 plan: Plan(id: "p"))) != nil)
    }

    @Test(arguments: ["-0.1", "2.01", "100", "-3"])
    func temperatureOutOfRange(_ value: String) {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":\#(value)}"#,
                 param: "temperature", secrets: [value])
    }

    @Test func modelRules() {
        rejected(#"{"model":"","messages":[{"role":"user","content":"x"}]}"#, param: "model")
        let long = String(repeating: "m", count: 129)
        rejected(#"{"model":"\#(long)","messages":[{"role":"user","content":"x"}]}"#, param: "model", secrets: [long])
        let max = String(repeating: "m", count: 128)
        #expect(success(validate(#"{"model":"\#(max)","messages":[{"role":"user","content":"x"}]}"#)) != nil)
        rejected(#"{"model":"bad model","messages":[{"role":"user","content":"x"}]}"#, param: "model",
                 secrets: ["bad model"])
    }

    @Test func metadataLimits() {
        let seventeen = (0..<17).map { #""k\#($0)":"v""# }.joined(separator: ",")
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{\#(seventeen)}}"#,
                 param: "metadata")
        let sixteen = (0..<16).map { #""k\#($0)":"v""# }.joined(separator: ",")
        #expect(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{\#(sixteen)}}"#))
                != nil)

        let longKey = String(repeating: "K", count: 65)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"\#(longKey)":"v"}}"#,
                 param: "metadata", secrets: [longKey])
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"":"v"}}"#, param: "metadata")
        let longValue = String(repeating: "V", count: 513)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"k":"\#(longValue)"}}"#,
                 param: "metadata", secrets: [longValue])
        let okValue = String(repeating: "V", count: 512)
        #expect(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"k":"\#(okValue)"}}"#))
                != nil)
    }

    @Test func conversationIDFromHeaderWinsOverMetadata() throws {
        let json = #"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"conversation_id":"from-meta"}}"#
        let v = try #require(success(validate(json, header: "hdr:1.2_3-4")))
        #expect(v.conversationID == "hdr:1.2_3-4")
        let w = try #require(success(validate(json)))
        #expect(w.conversationID == "from-meta")
    }

    @Test(arguments: ["", "has space", "semi;colon", "slash/", "ümlaut", "star*", String(repeating: "a", count: 129),
                      "new\nline"])
    func invalidConversationIDs(_ id: String) {
        let json = #"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        rejected(json, header: id, param: "x-switchyard-conversation-id", secrets: id.isEmpty ? [] : [id])
        let escaped = id.replacingOccurrences(of: "\n", with: "\\n")
        let meta = #"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"conversation_id":"\#(escaped)"}}"#
        rejected(meta, param: "metadata.conversation_id", secrets: id.isEmpty ? [] : [id])
    }

    @Test func validConversationIDs() {
        #expect(RequestValidator.isValidConversationID("a"))
        #expect(RequestValidator.isValidConversationID("A-z_0.9:x"))
        #expect(RequestValidator.isValidConversationID(String(repeating: "a", count: 128)))
    }

    @Test func channelValidation() {
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"channel":"Bad Channel!"}}"#,
                 param: "metadata.channel", secrets: ["Bad Channel!"])
    }

    @Test func userLimits() {
        let long = String(repeating: "u", count: 257)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":"\#(long)"}"#, param: "user",
                 secrets: [long])
    }

    @Test func nameLimit() {
        let long = String(repeating: "n", count: 65)
        rejected(#"{"model":"m","messages":[{"role":"user","content":"x","name":"\#(long)"}]}"#,
                 param: "messages[0].name", secrets: [long])
    }

    // MARK: ChatRequested

    @Test func makesChatRequested() throws {
        let json = """
        {"model":"host","messages":[{"role":"developer","content":"rules"},{"role":"user","content":"hi"}],
         "stream":true,"stream_options":{"include_usage":true},"max_tokens":64,"temperature":0.5,"user":"u1",
         "metadata":{"channel":"web","conversation_id":"c-1"}}
        """
        let v = try #require(success(validate(json)))
        let event = makeChatRequested(
            v, tenantID: "acme", apiKeyID: "abcdefgh", requestID: "req-1", traceID: "0af7651916cd43dd8448eb211c80319c",
            replySubject: "_INBOX.gw1", deadlineUnixNanos: 2_000, now: 1_000)
        #expect(event.meta?.tenantID == "acme")
        #expect(event.meta?.producer == "api-gateway")
        #expect(event.meta?.requestID == "req-1")
        #expect(event.meta?.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(event.meta?.occurredAtUnixNanos == 1_000)
        #expect(event.meta?.eventID.count == 32)
        #expect(event.messages.map(\.role) == ["system", "user"])
        #expect(event.model == "host")
        #expect(event.stream)
        #expect(event.includeUsage)
        #expect(event.maxTokens == 64)
        #expect(event.temperature == 0.5)
        #expect(event.conversationID == "c-1")
        #expect(event.channel == "web")
        #expect(event.endUserID == "u1")
        #expect(event.replySubject == "_INBOX.gw1")
        #expect(event.deadlineUnixNanos == 2_000)
        #expect(event.apiKeyID == "abcdefgh")
        #expect(event.hops == [HopStamp(hop: "gateway.in", unixNanos: 1_000)])
        // Round-trips through protobuf.
        let decoded = try ChatRequested(protobuf: event.protobufBytes())
        #expect(decoded == event)
    }

    @Test func makesChatRequestedDefaults() throws {
        let v = try #require(success(validate(#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)))
        let event = makeChatRequested(v, tenantID: "t", apiKeyID: "k", requestID: "r", traceID: "", replySubject: "s",
                                      deadlineUnixNanos: 0, now: 5)
        #expect(event.maxTokens == 0)
        #expect(event.temperature == nil)
        #expect(event.conversationID == "")
        #expect(event.channel == "api")
    }
}
