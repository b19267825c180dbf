/// A PostgreSQL array literal (`{"a","b"}`, `{1,2}`, `{t,f}`) built element by element. Text elements are
/// double-quoted with `\\` and `"` escaped, so any string (NUL excluded, which text parameters can't carry)
/// arrives verbatim; the literal travels as one parameter, never spliced into SQL.
public struct PostgresArrayLiteral: Sendable {
    public init() {}

    private var body: [UInt8] = [UInt8(ascii: "{")]

    public mutating func append(text value: String) {
        separate()
        body.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { body.append(UInt8(ascii: "\\")) }
            body.append(byte)
        }
        body.append(UInt8(ascii: "\""))
    }

    public mutating func append(number value: Int64) {
        separate()
        body.append(contentsOf: String(value).utf8)
    }

    public mutating func append(flag value: Bool) {
        separate()
        body.append(value ? UInt8(ascii: "t") : UInt8(ascii: "f"))
    }

    private mutating func separate() {
        if body.count > 1 { body.append(UInt8(ascii: ",")) }
    }

    public var literal: String { String(decoding: body + [UInt8(ascii: "}")], as: UTF8.self) }
}
