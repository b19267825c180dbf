/// Column metadata shared by all rows of one result.
public final class PostgresColumns: Sendable {
    public let names: [String]
    /// Type OIDs as reported by the server.
    public let typeOIDs: [UInt32]
    private let indexByName: [String: Int]

    init(names: [String], typeOIDs: [UInt32]) {
        self.names = names
        self.typeOIDs = typeOIDs
        var index = [String: Int]()
        for (i, name) in names.enumerated() where index[name] == nil { index[name] = i }
        self.indexByName = index
    }

    public func index(of name: String) -> Int? { indexByName[name] }
}

/// One cell handed to `PostgresDecodable`: the value in PostgreSQL's text format (`nil` for NULL).
public struct PostgresCell: Sendable {
    /// Raw text-format bytes, `nil` for SQL NULL.
    public let bytes: ArraySlice<UInt8>?
    /// The column's type OID.
    public let typeOID: UInt32
    public let columnName: String

    /// The bytes as a Swift string (PostgreSQL sends UTF-8 to this client).
    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    /// A decode error for this cell (never includes the value).
    public func failure(_ swiftType: Any.Type) -> PostgresError {
        PostgresError(code: .decode,
                      message: "cannot decode column \"\(columnName)\" (type oid \(typeOID)) as \(swiftType)",
                      columnName: columnName)
    }

    /// The error for a NULL read into a non-optional type.
    public func unexpectedNull(_ swiftType: Any.Type) -> PostgresError {
        PostgresError(code: .decode,
                      message: "column \"\(columnName)\" is NULL; decode it as \(swiftType)? instead",
                      columnName: columnName)
    }
}

/// A Swift type that can be read from a result column.
public protocol PostgresDecodable: Sendable {
    /// Decodes `cell` (NULL included: non-optional types throw `cell.unexpectedNull(Self.self)`).
    static func decode(from cell: PostgresCell) throws(PostgresError) -> Self
}

/// One result row, copied out of libpq. Values are kept in text format and decoded on demand.
public struct PostgresRow: Sendable {
    public let columns: PostgresColumns
    /// All cells of the row back to back.
    let storage: [UInt8]
    /// Start offset and length of each cell in `storage`; length -1 for NULL.
    let spans: [(start: Int32, length: Int32)]

    public var count: Int { spans.count }

    /// The cell at `index` (raw access; `decode` is usually what you want).
    public func cell(at index: Int) -> PostgresCell {
        let span = spans[index]
        let bytes: ArraySlice<UInt8>? = span.length < 0
            ? nil : storage[Int(span.start)..<Int(span.start) + Int(span.length)]
        return PostgresCell(bytes: bytes, typeOID: columns.typeOIDs[index], columnName: columns.names[index])
    }

    /// Whether the column is SQL NULL.
    public func isNull(_ index: Int) -> Bool { spans[index].length < 0 }

    /// Decodes the column at `index`.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, at index: Int) throws(PostgresError) -> T {
        guard index >= 0, index < spans.count else {
            throw PostgresError(code: .decode, message: "column index \(index) out of range (\(spans.count) columns)")
        }
        return try T.decode(from: cell(at: index))
    }

    /// Decodes the column named `column`.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, column: String) throws(PostgresError) -> T {
        guard let index = columns.index(of: column) else {
            throw PostgresError(code: .decode, message: "no column named \"\(column)\" in the result", columnName: column)
        }
        return try T.decode(from: cell(at: index))
    }
}

// MARK: - Standard decodable types

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Wrapped? {
        if cell.bytes == nil { return nil }
        return try Wrapped.decode(from: cell)
    }
}

extension String: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> String {
        guard let bytes = cell.bytes else { throw cell.unexpectedNull(String.self) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Bool: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Bool {
        guard let bytes = cell.bytes else { throw cell.unexpectedNull(Bool.self) }
        guard bytes.count == 1, cell.typeOID == PostgresOID.bool else { throw cell.failure(Bool.self) }
        switch bytes.first {
        case UInt8(ascii: "t"): return true
        case UInt8(ascii: "f"): return false
        default: throw cell.failure(Bool.self)
        }
    }
}

/// Integer columns (int2/int4/int8/oid, or numeric without fraction) into any fixed-width integer.
private func decodeInteger<T: FixedWidthInteger>(_ cell: PostgresCell, as type: T.Type) throws(PostgresError) -> T {
    guard let bytes = cell.bytes else { throw cell.unexpectedNull(T.self) }
    switch cell.typeOID {
    case PostgresOID.int2, PostgresOID.int4, PostgresOID.int8, PostgresOID.oid, PostgresOID.numeric:
        break
    default:
        throw cell.failure(T.self)
    }
    guard let value = T(String(decoding: bytes, as: UTF8.self), radix: 10) else { throw cell.failure(T.self) }
    return value
}

extension Int: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int { try decodeInteger(cell, as: Int.self) }
}
extension Int64: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int64 { try decodeInteger(cell, as: Int64.self) }
}
extension Int32: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int32 { try decodeInteger(cell, as: Int32.self) }
}
extension Int16: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Int16 { try decodeInteger(cell, as: Int16.self) }
}

extension Double: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Double {
        guard let bytes = cell.bytes else { throw cell.unexpectedNull(Double.self) }
        switch cell.typeOID {
        case PostgresOID.float4, PostgresOID.float8, PostgresOID.numeric,
             PostgresOID.int2, PostgresOID.int4, PostgresOID.int8:
            break
        default:
            throw cell.failure(Double.self)
        }
        let text = String(decoding: bytes, as: UTF8.self)
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default:
            guard let value = Double(text) else { throw cell.failure(Double.self) }
            return value
        }
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    /// `bytea` (hex output format `\x…`); for other types, the text representation's UTF-8 bytes.
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> [UInt8] {
        guard let bytes = cell.bytes else { throw cell.unexpectedNull([UInt8].self) }
        guard cell.typeOID == PostgresOID.bytea else { return Array(bytes) }
        guard bytes.count >= 2, bytes.first == UInt8(ascii: "\\"),
              bytes[bytes.startIndex + 1] == UInt8(ascii: "x"), bytes.count % 2 == 0
        else { throw cell.failure([UInt8].self) }
        var out = [UInt8]()
        out.reserveCapacity((bytes.count - 2) / 2)
        var i = bytes.startIndex + 2
        while i < bytes.endIndex {
            guard let hi = hexValue(bytes[i]), let lo = hexValue(bytes[i + 1]) else { throw cell.failure([UInt8].self) }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

@inline(__always)
private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}
