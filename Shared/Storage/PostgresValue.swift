/// A statement parameter. Values travel in text format, except `bytea`, which travels in binary,
/// so no value is ever spliced into SQL text.
public enum PostgresValue: Sendable, Hashable {
    case null
    /// Text; the server infers the parameter type from context (works for text, varchar, uuid, jsonb…).
    /// Must not contain NUL (libpq text parameters are C strings): sending one is an `.invalidParameter`.
    case text(String)
    /// Text given as raw bytes; validated as UTF-8 without NUL before anything is sent.
    case utf8Bytes([UInt8])
    case int64(Int64)
    case int32(Int32)
    case double(Double)
    case bool(Bool)
    /// Binary data (`bytea`), sent in binary format.
    case bytea([UInt8])

    /// `.int64` from an `Int`.
    public static func int(_ value: Int) -> PostgresValue { .int64(Int64(value)) }

    /// `.text` or `.null`.
    public static func text(_ value: String?) -> PostgresValue { value.map { .text($0) } ?? .null }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
}

/// Types that convert themselves into a statement parameter.
public protocol PostgresEncodable {
    var postgresValue: PostgresValue { get }
}

extension PostgresValue: PostgresEncodable { public var postgresValue: PostgresValue { self } }
extension String: PostgresEncodable { public var postgresValue: PostgresValue { .text(self) } }
extension Substring: PostgresEncodable { public var postgresValue: PostgresValue { .text(String(self)) } }
extension Int: PostgresEncodable { public var postgresValue: PostgresValue { .int64(Int64(self)) } }
extension Int64: PostgresEncodable { public var postgresValue: PostgresValue { .int64(self) } }
extension Int32: PostgresEncodable { public var postgresValue: PostgresValue { .int32(self) } }
extension Double: PostgresEncodable { public var postgresValue: PostgresValue { .double(self) } }
extension Bool: PostgresEncodable { public var postgresValue: PostgresValue { .bool(self) } }
extension Array: PostgresEncodable where Element == UInt8 {
    public var postgresValue: PostgresValue { .bytea(self) }
}
extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresValue: PostgresValue { self?.postgresValue ?? .null }
}

/// Well-known type OIDs (from `pg_type`).
enum PostgresOID {
    static let unspecified: UInt32 = 0
    static let bool: UInt32 = 16
    static let bytea: UInt32 = 17
    static let int8: UInt32 = 20
    static let int2: UInt32 = 21
    static let int4: UInt32 = 23
    static let text: UInt32 = 25
    static let oid: UInt32 = 26
    static let float4: UInt32 = 700
    static let float8: UInt32 = 701
    static let varchar: UInt32 = 1043
    static let numeric: UInt32 = 1700
}

/// Parameters encoded for libpq: one contiguous buffer of NUL-terminated values plus offsets,
/// lengths, formats and type OIDs. Built (and validated) before anything is sent.
struct EncodedParameters: Sendable {
    var buffer: [UInt8] = [0]  // never empty, so it always has a base address
    var offsets: [Int] = []    // -1 for NULL
    var lengths: [Int32] = []
    var formats: [Int32] = []
    var types: [UInt32] = []

    var count: Int { offsets.count }

    init(_ values: [PostgresValue]) throws(PostgresError) {
        offsets.reserveCapacity(values.count)
        lengths.reserveCapacity(values.count)
        formats.reserveCapacity(values.count)
        types.reserveCapacity(values.count)
        for (index, value) in values.enumerated() {
            switch value {
            case .null:
                offsets.append(-1); lengths.append(0); formats.append(0); types.append(PostgresOID.unspecified)
            case .text(let s):
                if s.utf8.contains(0) {
                    throw PostgresError(code: .invalidParameter,
                                        message: "parameter $\(index + 1) contains a NUL character, which PostgreSQL text cannot store")
                }
                appendText(s.utf8)
                types.append(PostgresOID.unspecified)
            case .utf8Bytes(let bytes):
                if bytes.contains(0) {
                    throw PostgresError(code: .invalidParameter,
                                        message: "parameter $\(index + 1) contains a NUL character, which PostgreSQL text cannot store")
                }
                guard String(validating: bytes, as: UTF8.self) != nil else {
                    throw PostgresError(code: .invalidParameter,
                                        message: "parameter $\(index + 1) is not valid UTF-8")
                }
                appendText(bytes)
                types.append(PostgresOID.unspecified)
            case .int64(let v):
                appendText(Array(String(v).utf8)); types.append(PostgresOID.int8)
            case .int32(let v):
                appendText(Array(String(v).utf8)); types.append(PostgresOID.int4)
            case .double(let v):
                let text: String
                if v.isNaN { text = "NaN" }
                else if v == .infinity { text = "Infinity" }
                else if v == -.infinity { text = "-Infinity" }
                else { text = String(v) }
                appendText(Array(text.utf8)); types.append(PostgresOID.float8)
            case .bool(let v):
                appendText(v ? [UInt8(ascii: "t")] : [UInt8(ascii: "f")]); types.append(PostgresOID.bool)
            case .bytea(let bytes):
                guard bytes.count <= Int(Int32.max) else {
                    throw PostgresError(code: .invalidParameter, message: "parameter $\(index + 1) is too large")
                }
                offsets.append(buffer.count)
                buffer.append(contentsOf: bytes)
                buffer.append(0)
                lengths.append(Int32(bytes.count)); formats.append(1); types.append(PostgresOID.bytea)
            }
        }
    }

    private mutating func appendText<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        offsets.append(buffer.count)
        buffer.append(contentsOf: bytes)
        buffer.append(0)
        lengths.append(Int32(clamping: bytes.count))
        formats.append(0)
    }

    /// Calls `body` with the C arrays libpq expects (`paramValues`, `paramLengths`, `paramFormats`).
    func withCArrays<R>(
        _ body: (UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) throws -> R
    ) rethrows -> R {
        try buffer.withUnsafeBytes { raw in
            let base = raw.baseAddress!
            var pointers = [UnsafePointer<CChar>?]()
            pointers.reserveCapacity(offsets.count)
            for offset in offsets {
                pointers.append(offset < 0 ? nil : (base + offset).assumingMemoryBound(to: CChar.self))
            }
            return try pointers.withUnsafeBufferPointer { p in
                try lengths.withUnsafeBufferPointer { l in
                    try formats.withUnsafeBufferPointer { f in
                        try body(p.baseAddress, l.baseAddress, f.baseAddress)
                    }
                }
            }
        }
    }

    /// A cache key component describing the parameter types.
    var typeSignature: String {
        types.map(String.init).joined(separator: ",")
    }
}
