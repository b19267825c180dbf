import Foundation
import Synchronization
import Telemetry

/// Collects log lines written through a ``LogSink``.
final class CapturingSink: Sendable {
    private let lines = Mutex<[[UInt8]]>([])

    var sink: LogSink {
        LogSink { [self] bytes in self.lines.withLock { $0.append(bytes) } }
    }

    var rawLines: [String] {
        lines.withLock { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Every line parsed with JSONSerialization; throws if any line is not a JSON object.
    func objects() throws -> [[String: Any]] {
        try lines.withLock { $0 }.map { bytes in
            guard bytes.last == UInt8(ascii: "\n") else { throw ParseFailure(reason: "line without newline") }
            guard bytes.dropLast().contains(UInt8(ascii: "\n")) == false else {
                throw ParseFailure(reason: "raw newline inside a line")
            }
            let object = try JSONSerialization.jsonObject(with: Data(bytes))
            guard let dictionary = object as? [String: Any] else { throw ParseFailure(reason: "not an object") }
            return dictionary
        }
    }

    struct ParseFailure: Error {
        let reason: String
    }
}
