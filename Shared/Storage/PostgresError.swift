/// An error from the storage layer.
///
/// `description` is safe to log: it carries the error code, the SQLSTATE and the server's primary
/// message only — never parameter values, never the `DETAIL` field (which echoes row values), and for
/// data exceptions (SQLSTATE class 22) the quoted input the server echoes back is cut off.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// An opaque error code; compare with the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case connection, query, decode, poolClosed, invalidParameter, unexpectedResult, migration
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Connecting failed or the connection broke (always retriable).
        public static let connection = Code(.connection)
        /// The server rejected a statement (see `sqlState`).
        public static let query = Code(.query)
        /// A column could not be decoded into the requested Swift type.
        public static let decode = Code(.decode)
        /// The pool was closed.
        public static let poolClosed = Code(.poolClosed)
        /// A parameter cannot be sent (e.g. a string containing NUL, bytes that are not UTF-8).
        public static let invalidParameter = Code(.invalidParameter)
        /// libpq returned something this layer did not expect.
        public static let unexpectedResult = Code(.unexpectedResult)
        /// A migration list is invalid (duplicate versions, …).
        public static let migration = Code(.migration)

        public var description: String { base.rawValue }
    }

    public let code: Code
    /// The five-character SQLSTATE reported by the server, when there is one (e.g. "23505").
    public let sqlState: String?
    /// A message safe to log (see the type's documentation).
    public let message: String
    /// Constraint named by the server for integrity violations (identifier, not data).
    public let constraintName: String?
    /// Table named by the server, when it reports one (identifier, not data).
    public let tableName: String?
    /// Column name (for decode errors, or when reported by the server).
    public let columnName: String?

    public init(
        code: Code, message: String, sqlState: String? = nil,
        constraintName: String? = nil, tableName: String? = nil, columnName: String? = nil
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.constraintName = constraintName
        self.tableName = tableName
        self.columnName = columnName
    }

    /// Whether retrying the operation (on a fresh connection, or the whole transaction) can succeed:
    /// broken connections, SQLSTATE class 08 (connection exception), 40001 (serialization failure),
    /// 40P01 (deadlock), 57P01/57P02/57P03 (admin/crash shutdown, cannot connect now),
    /// 53300 (too many connections).
    public var isRetriable: Bool {
        if code == .connection { return true }
        guard let sqlState else { return false }
        if sqlState.hasPrefix("08") { return true }
        return ["40001", "40P01", "57P01", "57P02", "57P03", "53300"].contains(sqlState)
    }

    /// Whether this is a unique violation (SQLSTATE 23505), e.g. to implement idempotent inserts.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    public var description: String {
        var s = "PostgresError(\(code)"
        if let sqlState { s += ", sqlState: \(sqlState)" }
        s += "): \(message)"
        return s
    }

    /// Keeps the first line of a server/libpq message and, for data exceptions, drops the echoed input.
    static func sanitize(_ raw: String, sqlState: String?) -> String {
        var line = raw.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
        line = line.trimmingWhitespace()
        if let sqlState, sqlState.hasPrefix("22") {
            if let r = line.firstRange(of: ": ") {
                line = String(line[..<r.lowerBound]) + ": <redacted>"
            }
        }
        return line
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let f = scalars.first, f.isWhitespace { scalars.removeFirst() }
        while let l = scalars.last, l.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
