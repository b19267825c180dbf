#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// `timestamptz` / `timestamp` <-> `Date`, in PostgreSQL's ISO text format. Every connection sets
// `DateStyle=ISO` and `TimeZone=UTC`, so the server sends `YYYY-MM-DD HH:MM:SS[.ffffff]+00`.
// Precision is PostgreSQL's: microseconds.

extension PostgresOID {
    static let timestamp: UInt32 = 1114
    static let timestamptz: UInt32 = 1184
}

extension PostgresValue {
    /// A `timestamptz` parameter (sent as UTC text with microseconds).
    public static func timestamp(_ date: Date) -> PostgresValue {
        .utf8Bytes(Array(PostgresTimestamp.format(date).utf8))
    }
}

extension Date: PostgresEncodable {
    public var postgresValue: PostgresValue { .timestamp(self) }
}

extension Date: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(PostgresError) -> Date {
        guard let bytes = cell.bytes else { throw cell.unexpectedNull(Date.self) }
        guard cell.typeOID == PostgresOID.timestamptz || cell.typeOID == PostgresOID.timestamp,
              let date = PostgresTimestamp.parse(bytes)
        else { throw cell.failure(Date.self) }
        return date
    }
}

enum PostgresTimestamp {
    static func format(_ date: Date) -> String {
        let totalMicros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let micros = Int64(totalMicros)
        var days = micros / 86_400_000_000
        var rest = micros % 86_400_000_000
        if rest < 0 { rest += 86_400_000_000; days -= 1 }
        let (y, m, d) = civil(fromDays: days)
        let secondsOfDay = rest / 1_000_000
        let fraction = rest % 1_000_000
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2)) \(pad(secondsOfDay / 3600, 2)):\(pad(secondsOfDay / 60 % 60, 2)):\(pad(secondsOfDay % 60, 2)).\(pad(fraction, 6))+00"
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.f…][(+|-)HH[:MM[:SS]]]` (no offset: UTC). Nil for anything else
    /// (BC dates, `infinity`).
    static func parse(_ bytes: ArraySlice<UInt8>) -> Date? {
        var i = bytes.startIndex
        func number(_ digits: Int) -> Int64? {
            guard bytes.endIndex - i >= digits else { return nil }
            var v: Int64 = 0
            for _ in 0..<digits {
                let c = bytes[i]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
                i += 1
            }
            return v
        }
        func expect(_ c: Character) -> Bool {
            guard i < bytes.endIndex, bytes[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              expect(" "), let hour = number(2), expect(":"), let minute = number(2), expect(":"),
              let second = number(2), (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        var micros: Int64 = 0
        if i < bytes.endIndex, bytes[i] == UInt8(ascii: ".") {
            i += 1
            var scale: Int64 = 100_000
            while i < bytes.endIndex, bytes[i] >= 48, bytes[i] <= 57 {
                micros += Int64(bytes[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offsetSeconds: Int64 = 0
        if i < bytes.endIndex {
            let sign: Int64
            switch bytes[i] {
            case UInt8(ascii: "+"): sign = 1
            case UInt8(ascii: "-"): sign = -1
            default: return nil
            }
            i += 1
            guard let oh = number(2) else { return nil }
            offsetSeconds = oh * 3600
            if expect(":") { guard let om = number(2) else { return nil }; offsetSeconds += om * 60 }
            if expect(":") { guard let os = number(2) else { return nil }; offsetSeconds += os }
            offsetSeconds *= sign
        }
        guard i == bytes.endIndex else { return nil }
        let days = daysFromCivil(year, month, day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }

    // Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
