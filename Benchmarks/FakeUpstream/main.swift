// fake-upstream: a zero-latency OpenAI-compatible server for `make bench` (the only allowed test double:
// an external provider speaking the real wire format). POST /v1/chat/completions answers at once, as JSON or
// as an SSE stream when the request asks for `"stream": true`.
import Foundation
import Hummingbird
import Logging

let port = Int(ProcessInfo.processInfo.environment["FAKE_UPSTREAM_PORT"] ?? "") ?? 9999
let json = ByteBuffer(string: """
    {"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-bench","choices":[{"index":0,\
    "message":{"role":"assistant","content":"We are open Tuesday to Sunday from noon."},"finish_reason":"stop"}],\
    "usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}
    """)
var sse = ""
for word in ["We ", "are ", "open ", "Tuesday ", "to ", "Sunday."] {
    sse += "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\(word)\"},\"finish_reason\":null}]}\n\n"
}
sse += "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":6,\"total_tokens\":26}}\n\ndata: [DONE]\n\n"
let stream = ByteBuffer(string: sse)
let streamMarker = Array("\"stream\":true".utf8)

let router = Router()
router.post("/v1/chat/completions") { request, _ -> Response in
    var request = request
    let body = try await request.collectBody(upTo: 1 << 20)
    let wantsStream = body.readableBytesView.withContiguousStorageIfAvailable { bytes in
        bytes.count >= streamMarker.count && (0...(bytes.count - streamMarker.count)).contains {
            bytes[$0..<$0 + streamMarker.count].elementsEqual(streamMarker)
        }
    } ?? false
    var headers = HTTPFields()
    headers[.contentType] = wantsStream ? "text/event-stream" : "application/json"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: wantsStream ? stream : json))
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
                      logger: Logger(label: "fake-upstream"))
try await app.runService()
