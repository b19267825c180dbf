import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where finished log lines go. Each call receives one complete line including its trailing `\n`.
public struct LogSink: Sendable {
    /// Receives one encoded line (UTF-8, newline-terminated).
    public let write: @Sendable ([UInt8]) -> Void

    /// A sink calling `write` for every line; `write` must be thread-safe.
    public init(_ write: @escaping @Sendable ([UInt8]) -> Void) {
        self.write = write
    }

    /// Standard output, one `write(2)` loop per line under a process-wide lock so lines never interleave.
    public static let stdout = LogSink { bytes in
        StandardOutputWriter.shared.write(bytes)
    }
}

/// Serialises writes to file descriptor 1.
final class StandardOutputWriter: Sendable {
    static let shared = StandardOutputWriter()
    private let lock = Mutex<Void>(())

    func write(_ bytes: [UInt8]) {
        lock.withLock { _ in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    #if canImport(Darwin)
                    let written = Darwin.write(1, raw.baseAddress! + offset, raw.count - offset)
                    #else
                    let written = Glibc.write(1, raw.baseAddress! + offset, raw.count - offset)
                    #endif
                    if written < 0 {
                        if errno == EINTR { continue }
                        return  // stdout gone: dropping the log line is the only option
                    }
                    offset += written
                }
            }
        }
    }
}

/// A `LogHandler` writing one JSON object per line:
/// `{"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"...","service":"router","logger":"router.consumer",
/// "tenant.id":"acme",...}`.
///
/// Nested metadata dictionaries are flattened with dots (`["tenant": ["id": "x"]]` → `"tenant.id"`), keys are
/// sorted, and values under a key named `authorization`, `api_key`, `password` or `token` (any case, also as
/// the last component of a dotted key) are replaced by `"[redacted]"`.
public struct JSONLogHandler: LogHandler {
    /// Service name written as `service` on every line.
    public let service: String
    /// Logger label written as `logger`.
    public let label: String
    /// Where lines go.
    public let sink: LogSink

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?

    /// - Parameters:
    ///   - label: the logger label (`Logger(label:)`).
    ///   - service: the service name, e.g. `api-gateway`.
    ///   - logLevel: minimum level (the `Logger` filters before calling the handler).
    ///   - sink: output; `.stdout` in production, a capturing sink in tests.
    ///   - metadataProvider: e.g. ``Logger/MetadataProvider/switchyardTracing``.
    public init(
        label: String,
        service: String,
        logLevel: Logger.Level = .info,
        sink: LogSink = .stdout,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.service = service
        self.logLevel = logLevel
        self.sink = sink
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty {
            merged.merge(provided) { _, new in new }
        }
        if let explicit = event.metadata, !explicit.isEmpty {
            merged.merge(explicit) { _, new in new }
        }
        var line = JSONLineEncoder()
        line.encode(
            timestamp: WallClock.nowMilliseconds(),
            level: event.level,
            message: event.message.description,
            service: service,
            logger: label,
            error: event.error,
            metadata: merged
        )
        sink.write(line.bytes)
    }
}

/// Names of metadata keys whose values are never written.
enum Redaction {
    static let placeholder = "[redacted]"

    /// Whether `key` (or its last dotted component) names a secret.
    static func isSecret(_ key: String) -> Bool {
        let last = key.utf8.lastIndex(of: UInt8(ascii: ".")).map { key[key.utf8.index(after: $0)...] } ?? key[...]
        guard last.utf8.count <= 13 else { return false }
        switch last.lowercased() {
        case "authorization", "api_key", "password", "token": return true
        default: return false
        }
    }
}

/// Builds one JSON log line into a byte buffer.
struct JSONLineEncoder {
    private(set) var bytes: [UInt8] = []

    init() {
        bytes.reserveCapacity(256)
    }

    static let reservedKeys: Set<String> = ["ts", "level", "msg", "service", "logger", "error"]

    mutating func encode(
        timestamp: Int64,
        level: Logger.Level,
        message: String,
        service: String,
        logger: String,
        error: (any Error)?,
        metadata: Logger.Metadata
    ) {
        bytes.append(contentsOf: #"{"ts":""#.utf8)
        RFC3339.appendMilliseconds(timestamp, to: &bytes)
        bytes.append(contentsOf: #"","level":""#.utf8)
        bytes.append(contentsOf: level.rawValue.utf8)
        bytes.append(contentsOf: #"","msg":"#.utf8)
        appendString(message)
        bytes.append(contentsOf: #","service":"#.utf8)
        appendString(service)
        bytes.append(contentsOf: #","logger":"#.utf8)
        appendString(logger)
        if let error {
            bytes.append(contentsOf: #","error":"#.utf8)
            appendString(String(describing: error))
        }
        if !metadata.isEmpty {
            var flat: [(String, Logger.MetadataValue)] = []
            flat.reserveCapacity(metadata.count)
            Self.flatten(metadata, prefix: nil, into: &flat)
            flat.sort { $0.0 < $1.0 }
            for (key, value) in flat {
                bytes.append(UInt8(ascii: ","))
                appendString(Self.reservedKeys.contains(key) ? "meta." + key : key)
                bytes.append(UInt8(ascii: ":"))
                if Redaction.isSecret(key) {
                    appendString(Redaction.placeholder)
                } else {
                    appendValue(value)
                }
            }
        }
        bytes.append(contentsOf: "}\n".utf8)
    }

    private static func flatten(
        _ metadata: Logger.Metadata, prefix: String?, into out: inout [(String, Logger.MetadataValue)]
    ) {
        for (key, value) in metadata {
            let fullKey = prefix.map { $0 + "." + key } ?? key
            if case .dictionary(let nested) = value, !nested.isEmpty, !Redaction.isSecret(fullKey) {
                flatten(nested, prefix: fullKey, into: &out)
            } else {
                out.append((fullKey, value))
            }
        }
    }

    private mutating func appendValue(_ value: Logger.MetadataValue) {
        switch value {
        case .string(let string):
            appendString(string)
        case .stringConvertible(let convertible):
            appendString(convertible.description)
        case .array(let values):
            bytes.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                appendValue(element)
            }
            bytes.append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            bytes.append(UInt8(ascii: "{"))
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                appendString(key)
                bytes.append(UInt8(ascii: ":"))
                if Redaction.isSecret(key) {
                    appendString(Redaction.placeholder)
                } else {
                    appendValue(dictionary[key]!)
                }
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Appends `string` as a quoted JSON string. Escapes `"`, `\`, all C0 control characters and DEL, and
    /// U+2028/U+2029 (valid JSON, but line terminators for JavaScript and some log shippers).
    mutating func appendString(_ string: String) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { utf8 in
            var index = 0
            let count = utf8.count
            var runStart = 0
            while index < count {
                let byte = utf8[index]
                let escape: Bool
                if byte < 0x20 || byte == 0x22 || byte == 0x5c || byte == 0x7f {
                    escape = true
                } else if byte == 0xe2, index + 2 < count, utf8[index + 1] == 0x80,
                    utf8[index + 2] == 0xa8 || utf8[index + 2] == 0xa9
                {
                    escape = true
                } else {
                    escape = false
                }
                if !escape {
                    index += 1
                    continue
                }
                if runStart < index {
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index]))
                }
                switch byte {
                case 0x22: bytes.append(contentsOf: #"\""#.utf8)
                case 0x5c: bytes.append(contentsOf: #"\\"#.utf8)
                case 0x0a: bytes.append(contentsOf: #"\n"#.utf8)
                case 0x0d: bytes.append(contentsOf: #"\r"#.utf8)
                case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
                case 0x08: bytes.append(contentsOf: #"\b"#.utf8)
                case 0x0c: bytes.append(contentsOf: #"\f"#.utf8)
                case 0xe2:
                    bytes.append(contentsOf: (utf8[index + 2] == 0xa8 ? #"\u2028"# : #"\u2029"#).utf8)
                    index += 2
                default:
                    bytes.append(contentsOf: #"\u00"#.utf8)
                    bytes.append(Self.hexDigits[Int(byte >> 4)])
                    bytes.append(Self.hexDigits[Int(byte & 0x0f)])
                }
                index += 1
                runStart = index
            }
            if runStart < count {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<count]))
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Wall-clock time without Foundation.
enum WallClock {
    /// Milliseconds since the Unix epoch.
    static func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    /// Nanoseconds since the Unix epoch.
    static func nowNanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}

/// RFC 3339 timestamps in UTC with millisecond precision, e.g. `2024-05-01T12:00:00.123Z`.
public enum RFC3339 {
    /// Formats `millisecondsSinceEpoch` (may be negative) as RFC 3339 UTC with milliseconds.
    public static func string(millisecondsSinceEpoch: Int64) -> String {
        var bytes: [UInt8] = []
        appendMilliseconds(millisecondsSinceEpoch, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func appendMilliseconds(_ millis: Int64, to bytes: inout [UInt8]) {
        let (secondsTotal, ms) = floorDivide(millis, 1000)
        let (days, secondOfDay) = floorDivide(secondsTotal, 86_400)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        appendDigits(year, width: 4, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(month, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(day, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "T"))
        appendDigits(secondOfDay / 3600, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(secondOfDay / 60 % 60, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(secondOfDay % 60, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "."))
        appendDigits(ms, width: 3, to: &bytes)
        bytes.append(UInt8(ascii: "Z"))
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
        let q = a / b
        let r = a % b
        return r < 0 ? (q - 1, r + b) : (q, r)
    }

    /// Proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's days-to-civil algorithm).
    private static func civilDate(daysSinceEpoch: Int64) -> (Int64, Int64, Int64) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    /// Appends `value` zero-padded to at least `width` digits, without allocating.
    private static func appendDigits(_ value: Int64, width: Int, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        var digitCount = 1
        var limit: UInt64 = 10
        while digitCount < 19, magnitude >= limit {
            digitCount += 1
            limit *= 10
        }
        for _ in digitCount..<max(width, digitCount) { bytes.append(UInt8(ascii: "0")) }
        var divisor: UInt64 = 1
        for _ in 1..<digitCount { divisor *= 10 }
        var rest = magnitude
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}
