import CLibPQ
import Dispatch
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection (`PGconn*`), owned by this object and closed with `PQfinish` in `deinit`
/// (or earlier by `close()`).
///
/// libpq calls block, and a `PGconn` is not thread-safe, so every call runs on this connection's own
/// serial `DispatchQueue`, never on Swift's cooperative pool; async callers are bridged with
/// continuations. Results are copied into Swift values (`PostgresRow`) and the `PGresult` is cleared at
/// once. Usually obtained from a `PostgresPool`; a connection is meant for one task at a time (calls
/// from several tasks are serialized, but would interleave inside transactions).
///
/// `@unchecked Sendable`: the mutable state (`handle`, the statement cache) is only touched on `queue`
/// (or in `deinit`, when no other reference exists); everything else is immutable.
public final class PostgresConnection: @unchecked Sendable {
    /// The server process id serving this connection (`pg_backend_pid()`).
    public let backendPID: Int32
    let configuration: PostgresConfiguration
    let logger: Logger

    private let queue: DispatchQueue
    // Touched only on `queue`.
    private var handle: OpaquePointer?
    private var statements: [String: String] = [:]
    private var nextStatementNumber = 0

    /// Retained for libpq's notice receiver (released in `deinit`, after `PQfinish`).
    private let noticeSink: Unmanaged<NoticeSink>

    private init(handle: OpaquePointer, queue: DispatchQueue, configuration: PostgresConfiguration, logger: Logger) {
        self.handle = handle
        self.queue = queue
        self.configuration = configuration
        self.logger = logger
        self.backendPID = PQbackendPID(handle)
        self.noticeSink = Unmanaged.passRetained(NoticeSink(logger: logger))
        // Server notices and warnings go to the logger (debug) instead of libpq's default: stderr.
        PQsetNoticeReceiver(handle, { context, result in
            guard let context, let result else { return }
            Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue().receive(result)
        }, noticeSink.toOpaque())
    }

    deinit {
        if let handle { PQfinish(handle) }
        noticeSink.release()
    }

    /// Opens a connection (off the cooperative pool) and prepares the session: UTF-8 client encoding,
    /// `DateStyle=ISO`, `TimeZone=UTC`, `bytea_output=hex`, and `statement_timeout` when configured.
    public static func connect(
        configuration: PostgresConfiguration,
        logger: Logger = Logger(label: "switchyard.storage")
    ) async throws(PostgresError) -> PostgresConnection {
        try configuration.validate()
        let queue = DispatchQueue(label: "switchyard.storage.connection")
        let result: Result<PostgresConnection, PostgresError> = await withCheckedContinuation { cont in
            queue.async {
                cont.resume(returning: Result { () throws(PostgresError) in
                    try openBlocking(configuration: configuration, queue: queue, logger: logger)
                })
            }
        }
        return try result.get()
    }

    private static func openBlocking(
        configuration: PostgresConfiguration, queue: DispatchQueue, logger: Logger
    ) throws(PostgresError) -> PostgresConnection {
        // The connection string comes first so the settings below override anything it says.
        let pairs: [(String, String)] = [
            ("dbname", configuration.connectionString),
            ("connect_timeout", String(configuration.connectTimeoutSeconds)),
            ("application_name", configuration.applicationName),
            ("client_encoding", "UTF8"),
        ]
        let keys = pairs.map { strdup($0.0) }
        let values = pairs.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        let keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        let valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        guard let conn = PQconnectdbParams(keyPointers, valuePointers, 1) else {
            throw PostgresError(code: .connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = PostgresError.sanitize(lastErrorMessage(conn), sqlState: nil)
            PQfinish(conn)
            throw PostgresError(code: .connection, message: message)
        }
        var setup = "SET DateStyle = 'ISO'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'"
        if let ms = configuration.statementTimeoutMilliseconds {
            setup += "; SET statement_timeout = \(ms)"
        }
        let res = PQexec(conn, setup)
        defer { PQclear(res) }
        guard PQresultStatus(res) == PGRES_COMMAND_OK else {
            let error = makeError(result: res, connection: conn)
            PQfinish(conn)
            throw error
        }
        return PostgresConnection(handle: conn, queue: queue, configuration: configuration, logger: logger)
    }

    /// Closes the connection now (idempotent). Later calls fail with a `.connection` error.
    public func close() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            queue.async {
                if let handle = self.handle { PQfinish(handle) }
                self.handle = nil
                cont.resume()
            }
        }
    }

    // MARK: - Queries

    /// Runs one statement with parameters and returns its rows.
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) async throws(PostgresError) -> [PostgresRow] {
        try await run(sql, parameters).rows
    }

    /// Runs one statement with parameters and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) async throws(PostgresError) -> Int {
        try await run(sql, parameters).affectedRows
    }

    /// Runs one statement. Statements with parameters are prepared once per connection and cached
    /// (keyed by SQL and parameter types); statements without parameters run unprepared.
    public func run(_ sql: String, _ parameters: [PostgresValue] = []) async throws(PostgresError) -> PostgresQueryResult {
        let encoded = try EncodedParameters(parameters)
        return try await onQueue { conn throws(PostgresError) in
            try self.executeBlocking(conn, sql: sql, parameters: encoded)
        }
    }

    /// Runs a script of one or more statements separated by `;`, without parameters (simple query
    /// protocol). Use it for DDL and migrations, never with SQL built from input.
    public func executeScript(_ sql: String) async throws(PostgresError) {
        guard !sql.utf8.contains(0) else {
            throw PostgresError(code: .invalidParameter, message: "SQL text contains a NUL character")
        }
        _ = try await onQueue { conn throws(PostgresError) in
            try Self.consume(PQexec(conn, sql), connection: conn)
        }
    }

    /// Runs `sql` once per element of `rows` through libpq's pipeline mode: all statements are sent
    /// without waiting for each result, with a sync point every `pipelineChunkSize` rows. Returns the
    /// total of affected rows. All rows are validated before anything is sent.
    ///
    /// Outside a transaction each chunk commits on its own; `batchExecute` wraps everything in one
    /// transaction and is usually what you want.
    public func pipelineExecute(_ sql: String, rows: [[PostgresValue]]) async throws(PostgresError) -> Int {
        guard !rows.isEmpty else { return 0 }
        var encodedRows = [EncodedParameters]()
        encodedRows.reserveCapacity(rows.count)
        for row in rows { encodedRows.append(try EncodedParameters(row)) }
        let chunk = configuration.pipelineChunkSize
        let prepared = encodedRows
        return try await onQueue { conn throws(PostgresError) in
            try self.pipelineBlocking(conn, sql: sql, rows: prepared, chunkSize: chunk)
        }
    }

    /// `pipelineExecute` inside one transaction (all rows or none).
    public func batchExecute(_ sql: String, rows: [[PostgresValue]]) async throws -> Int {
        try await transaction { conn in try await conn.pipelineExecute(sql, rows: rows) }
    }

    /// Runs `body` inside `BEGIN` … `COMMIT`; rolls back when `body` throws. A transaction that the
    /// server aborted (an error `body` caught and ignored) is rolled back and reported as an error.
    /// Transactions do not nest: calling this inside another transaction throws.
    public func transaction<T>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await onQueue { conn throws(PostgresError) in
            guard PQtransactionStatus(conn) == PQTRANS_IDLE else {
                throw PostgresError(code: .query, message: "a transaction is already open on this connection (transactions do not nest)")
            }
            _ = try Self.consume(PQexec(conn, "BEGIN"), connection: conn)
        }
        let result: T
        do {
            result = try await body(self)
        } catch {
            do {
                try await executeScript("ROLLBACK")
            } catch let rollbackError {
                logger.debug("rollback failed", metadata: ["error": "\(rollbackError)"])
            }
            throw error
        }
        let status = try await onQueue { conn throws(PostgresError) in
            try Self.consume(PQexec(conn, "COMMIT"), connection: conn).commandTag
        }
        if status == "ROLLBACK" {
            throw PostgresError(code: .query, message: "transaction was aborted by an earlier error and rolled back",
                                sqlState: "25P02")
        }
        return result
    }

    // MARK: - State used by the pool

    /// Whether the connection is open, idle (not inside a transaction) and was not closed by the
    /// server (pending input such as a termination notice is consumed without blocking).
    /// Call only while no operation is running on this connection.
    func isReusable() -> Bool {
        queue.sync {
            guard let handle else { return false }
            _ = PQconsumeInput(handle)
            return PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE
        }
    }

    // MARK: - Blocking internals (run on `queue` only)

    private func onQueue<R: Sendable>(
        _ work: @escaping @Sendable (OpaquePointer) throws(PostgresError) -> R
    ) async throws(PostgresError) -> R {
        let result: Result<R, PostgresError> = await withCheckedContinuation { cont in
            queue.async {
                guard let handle = self.handle else {
                    cont.resume(returning: .failure(PostgresError(code: .connection, message: "connection is closed")))
                    return
                }
                cont.resume(returning: Result { () throws(PostgresError) in try work(handle) })
            }
        }
        return try result.get()
    }

    private func executeBlocking(
        _ conn: OpaquePointer, sql: String, parameters: EncodedParameters
    ) throws(PostgresError) -> PostgresQueryResult {
        guard parameters.count > 0, configuration.statementCacheCapacity > 0 else {
            return try unpreparedBlocking(conn, sql: sql, parameters: parameters)
        }
        guard let name = try preparedName(conn, sql: sql, parameters: parameters, allowUnnamed: false) else {
            return try unpreparedBlocking(conn, sql: sql, parameters: parameters)
        }
        let res = parameters.withCArrays { values, lengths, formats in
            PQexecPrepared(conn, name, Int32(parameters.count), values, lengths, formats, 0)
        }
        do {
            return try Self.consume(res, connection: conn)
        } catch {
            // The cached plan became unusable (schema change) or vanished: forget it.
            if error.sqlState == "0A000" || error.sqlState == "26000" {
                forgetStatement(conn, sql: sql, parameters: parameters, name: name)
            }
            throw error
        }
    }

    private func unpreparedBlocking(
        _ conn: OpaquePointer, sql: String, parameters: EncodedParameters
    ) throws(PostgresError) -> PostgresQueryResult {
        let res = parameters.types.withUnsafeBufferPointer { types in
            parameters.withCArrays { values, lengths, formats in
                PQexecParams(conn, sql, Int32(parameters.count), types.baseAddress, values, lengths, formats, 0)
            }
        }
        return try Self.consume(res, connection: conn)
    }

    private func cacheKey(sql: String, parameters: EncodedParameters) -> String {
        parameters.typeSignature + "|" + sql
    }

    /// The name of a prepared statement for `sql`, preparing it if needed. Returns nil when the cache
    /// is full (unless `allowUnnamed`, which prepares the unnamed statement `""` instead).
    private func preparedName(
        _ conn: OpaquePointer, sql: String, parameters: EncodedParameters, allowUnnamed: Bool
    ) throws(PostgresError) -> String? {
        let key = cacheKey(sql: sql, parameters: parameters)
        if let name = statements[key] { return name }
        let cacheable = statements.count < configuration.statementCacheCapacity
        if !cacheable && !allowUnnamed { return nil }
        let name: String
        if cacheable {
            nextStatementNumber += 1
            name = "sy_\(nextStatementNumber)"
        } else {
            name = ""
        }
        let res = parameters.types.withUnsafeBufferPointer { types in
            PQprepare(conn, name, sql, Int32(parameters.count), types.baseAddress)
        }
        _ = try Self.consume(res, connection: conn)
        if cacheable { statements[key] = name }
        return name
    }

    private func forgetStatement(_ conn: OpaquePointer, sql: String, parameters: EncodedParameters, name: String) {
        statements[cacheKey(sql: sql, parameters: parameters)] = nil
        if PQtransactionStatus(conn) == PQTRANS_IDLE {
            PQclear(PQexec(conn, "DEALLOCATE \(name)"))
        }
    }

    private func pipelineBlocking(
        _ conn: OpaquePointer, sql: String, rows: [EncodedParameters], chunkSize: Int
    ) throws(PostgresError) -> Int {
        guard let name = try preparedName(conn, sql: sql, parameters: rows[0], allowUnnamed: true) else {
            throw PostgresError(code: .unexpectedResult, message: "could not prepare the batch statement")
        }
        guard PQenterPipelineMode(conn) == 1 else {
            throw PostgresError(code: .unexpectedResult,
                                message: PostgresError.sanitize(Self.lastErrorMessage(conn), sqlState: nil))
        }
        var affected = 0
        var firstError: PostgresError?
        var start = 0
        chunks: while start < rows.count {
            let end = min(start + chunkSize, rows.count)
            for row in rows[start..<end] {
                let sent = row.withCArrays { values, lengths, formats in
                    PQsendQueryPrepared(conn, name, Int32(row.count), values, lengths, formats, 0)
                }
                guard sent == 1 else { throw Self.connectionError(conn) }
            }
            guard PQpipelineSync(conn) == 1 else { throw Self.connectionError(conn) }
            var consecutiveNulls = 0
            while true {
                guard let res = PQgetResult(conn) else {
                    consecutiveNulls += 1
                    // One NULL ends each statement's results; two in a row means nothing is pending:
                    // the connection broke before the sync point arrived.
                    if consecutiveNulls >= 2 { throw Self.connectionError(conn) }
                    continue
                }
                consecutiveNulls = 0
                let status = PQresultStatus(res)
                if status == PGRES_PIPELINE_SYNC {
                    PQclear(res)
                    break
                }
                switch status {
                case PGRES_COMMAND_OK, PGRES_TUPLES_OK:
                    affected += Self.affectedRows(res)
                case PGRES_PIPELINE_ABORTED:
                    break
                default:
                    if firstError == nil { firstError = Self.makeError(result: res, connection: conn) }
                }
                PQclear(res)
            }
            if firstError != nil { break chunks }
            start = end
        }
        if PQexitPipelineMode(conn) != 1 {
            logger.debug("could not leave pipeline mode", metadata: ["backend.pid": "\(backendPID)"])
        }
        if let firstError { throw firstError }
        return affected
    }

    // MARK: - Result handling

    /// Turns a `PGresult` into a Swift value or error, and clears it.
    static func consume(_ res: OpaquePointer?, connection conn: OpaquePointer) throws(PostgresError) -> PostgresQueryResult {
        guard let res else { throw connectionError(conn) }
        defer { PQclear(res) }
        switch PQresultStatus(res) {
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            return PostgresQueryResult(rows: extractRows(res), affectedRows: affectedRows(res),
                                       commandTag: String(cString: PQcmdStatus(res)))
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PostgresQueryResult(rows: [], affectedRows: affectedRows(res),
                                       commandTag: String(cString: PQcmdStatus(res)))
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            throw makeError(result: res, connection: conn)
        default:
            throw PostgresError(code: .unexpectedResult,
                                message: "unexpected result status \(PQresultStatus(res).rawValue) (COPY is not supported)")
        }
    }

    private static func affectedRows(_ res: OpaquePointer) -> Int {
        guard let tuples = PQcmdTuples(res) else { return 0 }
        return Int(String(cString: tuples)) ?? 0
    }

    private static func extractRows(_ res: OpaquePointer) -> [PostgresRow] {
        let rowCount = Int(PQntuples(res))
        let columnCount = Int(PQnfields(res))
        var names = [String]()
        var types = [UInt32]()
        for c in 0..<columnCount {
            names.append(PQfname(res, Int32(c)).map { String(cString: $0) } ?? "?column?")
            types.append(PQftype(res, Int32(c)))
        }
        let columns = PostgresColumns(names: names, typeOIDs: types)
        var rows = [PostgresRow]()
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            let row = Int32(r)
            var total = 0
            for c in 0..<columnCount { total += Int(PQgetlength(res, row, Int32(c))) }
            var storage = [UInt8]()
            storage.reserveCapacity(total)
            var spans = [(start: Int32, length: Int32)]()
            spans.reserveCapacity(columnCount)
            for c in 0..<columnCount {
                let column = Int32(c)
                if PQgetisnull(res, row, column) == 1 {
                    spans.append((0, -1))
                    continue
                }
                let length = Int(PQgetlength(res, row, column))
                spans.append((Int32(storage.count), Int32(length)))
                if length > 0, let value = PQgetvalue(res, row, column) {
                    UnsafeRawPointer(value).withMemoryRebound(to: UInt8.self, capacity: length) {
                        storage.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
                    }
                }
            }
            rows.append(PostgresRow(columns: columns, storage: storage, spans: spans))
        }
        return rows
    }

    static func lastErrorMessage(_ conn: OpaquePointer) -> String {
        PQerrorMessage(conn).map { String(cString: $0) } ?? "unknown libpq error"
    }

    static func connectionError(_ conn: OpaquePointer) -> PostgresError {
        PostgresError(code: .connection, message: PostgresError.sanitize(lastErrorMessage(conn), sqlState: nil))
    }

    /// Builds an error from a failed result, reading the fields right here: SQLSTATE, primary message,
    /// constraint/table/column names. The DETAIL field is deliberately never read.
    static func makeError(result res: OpaquePointer?, connection conn: OpaquePointer) -> PostgresError {
        guard let res else { return connectionError(conn) }
        func field(_ code: Character) -> String? {
            PQresultErrorField(res, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let sqlState = field("C")
        let broken = PQstatus(conn) != CONNECTION_OK
        guard let primary = field("M") else {
            // Generated by libpq itself (e.g. the server went away).
            let text = PQresultErrorMessage(res).map { String(cString: $0) } ?? lastErrorMessage(conn)
            return PostgresError(code: broken ? .connection : .query,
                                 message: PostgresError.sanitize(text, sqlState: sqlState), sqlState: sqlState)
        }
        return PostgresError(
            code: broken ? .connection : .query,
            message: PostgresError.sanitize(primary, sqlState: sqlState),
            sqlState: sqlState,
            constraintName: field("n"),
            tableName: field("t"),
            columnName: field("c"))
    }
}

/// Receives server notices (NOTICE, WARNING, and FATAL messages sent outside a query) and logs
/// their severity, SQLSTATE and primary message at debug level (never the DETAIL field).
private final class NoticeSink: Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func receive(_ result: OpaquePointer) {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let sqlState = field("C")
        logger.debug("postgres notice", metadata: [
            "postgres.severity": "\(field("V") ?? field("S") ?? "NOTICE")",
            "postgres.sqlstate": "\(sqlState ?? "")",
            "postgres.message": "\(PostgresError.sanitize(field("M") ?? "", sqlState: sqlState))",
        ])
    }
}

/// The outcome of one statement.
public struct PostgresQueryResult: Sendable {
    public let rows: [PostgresRow]
    /// Rows affected (`INSERT`/`UPDATE`/`DELETE`/…) or returned (`SELECT`).
    public let affectedRows: Int
    /// The command tag, e.g. "INSERT 0 1".
    public let commandTag: String
}
