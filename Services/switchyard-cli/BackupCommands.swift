import ArgumentParser
import Contracts
import Foundation
import Messaging
import Security

/// `switchyard backup` / `switchyard restore`: a PostgreSQL dump and the JetStream streams' messages, with a
/// manifest, and back into a fresh installation (docs/OPERATIONS.md, "Backups").
///
/// Backup order: the database first (one consistent snapshot, `pg_dump`), then each stream up to the last message
/// it holds at that moment — so every ledger line's usage event is in the copy of the usage log (billing
/// re-reading it after a restore adds what came after the dump, and skips what it has). Analytics' rollups are
/// left out (schema only): after a restore analytics folds the restored event log from its first message, which is
/// what a rebuild would compute.
struct BackupOptions: ParsableArguments {
    @OptionGroup var nats: NATSOptions

    @Option(name: .customLong("database-url"),
            help: ArgumentHelp("PostgreSQL URL (env SWITCHYARD_DATABASE_URL).", valueName: "url"))
    var databaseURLOption: String?

    var databaseURL: String? { databaseURLOption ?? CLIEnvironment.value("SWITCHYARD_DATABASE_URL") }

    func requireDatabaseURL() throws(CLIFailure) -> String {
        guard let url = databaseURL else {
            throw CLIFailure("missing credentials: give --database-url or SWITCHYARD_DATABASE_URL",
                             exitCode: CLIFailure.missingCredentials)
        }
        return url
    }
}

/// The streams a backup holds (the KV buckets are mirrors of PostgreSQL, rebuilt by the tenant service).
enum BackupStreams {
    static let contracts = [Streams.events, Streams.usage, Streams.deadLetter]
}

/// `manifest.json` of a backup directory: what it holds, with sizes and SHA-256 digests.
struct BackupManifest: Codable, Equatable {
    struct File: Codable, Equatable {
        var name: String
        var bytes: UInt64
        var sha256: String
    }
    struct StreamCopy: Codable, Equatable {
        var stream: String
        var file: File
        var messages: UInt64
        var firstSequence: UInt64
        var lastSequence: UInt64
    }
    static let currentFormat = "switchyard-backup/1"
    var format: String
    var createdAt: String
    var postgres: File
    var postgresExcludedData: [String]
    var streams: [StreamCopy]
}

/// A stream copy's records: `SYSTREAM1\n`, then per message the subject, headers, payload, original sequence and
/// store time, each length-prefixed (big-endian u32 lengths, u64/i64 numbers).
enum StreamFile {
    static let magic = Array("SYSTREAM1\n".utf8)

    static func encode(_ delivery: JetStreamDelivery, into buffer: inout [UInt8]) {
        func u32(_ value: Int) { withUnsafeBytes(of: UInt32(value).bigEndian) { buffer += $0 } }
        func bytes(_ value: some Collection<UInt8>) { u32(value.count); buffer += value }
        bytes(Array(delivery.subject.utf8))
        let headers = delivery.headers.sorted { $0.key < $1.key }
        u32(headers.count)
        for (name, value) in headers {
            bytes(Array(name.utf8))
            bytes(Array(value.utf8))
        }
        bytes(delivery.payload)
        withUnsafeBytes(of: delivery.streamSequence.bigEndian) { buffer += $0 }
        withUnsafeBytes(of: delivery.storedAtUnixNanos.bigEndian) { buffer += $0 }
    }

    struct Record {
        var subject: String
        var headers: [String: String]
        var payload: [UInt8]
        var sequence: UInt64
        var storedAtUnixNanos: Int64
    }

}

/// Reads a stream copy record by record (a copy may be gigabytes: never held whole in memory).
final class StreamFileReader {
    let file: String
    private let handle: FileHandle
    private var buffer: [UInt8] = []
    private var offset = 0
    private var position = 0

    init(path: String, file: String) throws(CLIFailure) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIFailure("\(file): cannot be read") }
        self.handle = handle
        self.file = file
        guard try take(StreamFile.magic.count).elementsEqual(StreamFile.magic) else {
            throw CLIFailure("\(file): not a Switchyard stream copy")
        }
    }

    deinit { try? handle.close() }

    /// Whether `count` more bytes are there (reading on as needed); false only at a clean end of file.
    private func fill(_ count: Int) -> Bool {
        while buffer.count - offset < count {
            if offset > 0 {
                buffer.removeFirst(offset)
                offset = 0
            }
            guard let chunk = try? handle.read(upToCount: max(1 << 20, count)), !chunk.isEmpty else { return false }
            buffer += chunk
        }
        return true
    }

    private func take(_ count: Int) throws(CLIFailure) -> ArraySlice<UInt8> {
        guard count >= 0, count <= 64 << 20, fill(count) else { throw CLIFailure("\(file): truncated at byte \(position)") }
        defer {
            offset += count
            position += count
        }
        return buffer[offset..<offset + count]
    }

    private func number<T: FixedWidthInteger>(_: T.Type) throws(CLIFailure) -> T {
        try take(MemoryLayout<T>.size).reduce(T(0)) { $0 << 8 | T($1) }
    }

    private func text() throws(CLIFailure) -> String {
        let length = Int(try number(UInt32.self))
        guard let value = String(bytes: try take(length), encoding: .utf8) else {
            throw CLIFailure("\(file): bad text at byte \(position)")
        }
        return value
    }

    /// The next record, or nil at the end of the file.
    func next() throws(CLIFailure) -> StreamFile.Record? {
        guard fill(1) else { return nil }
        let subject = try text()
        var headers: [String: String] = [:]
        let count = Int(try number(UInt32.self))
        guard count <= 1_000 else { throw CLIFailure("\(file): implausible header count at byte \(position)") }
        for _ in 0..<count {
            let name = try text()
            headers[name] = try text()
        }
        let payload = Array(try take(Int(try number(UInt32.self))))
        let sequence = try number(UInt64.self)
        let stored = Int64(bitPattern: try number(UInt64.self))
        return StreamFile.Record(subject: subject, headers: headers, payload: payload, sequence: sequence,
                                 storedAtUnixNanos: stored)
    }
}

/// Whether `subject` is one of `filters` (NATS wildcards: `*` one token, `>` the rest).
func subjectMatches(_ subject: String, _ filters: [String]) -> Bool {
    let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
    return filters.contains { filter in
        let parts = filter.split(separator: ".", omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() {
            if part == ">" { return tokens.count > index }
            guard index < tokens.count, part == "*" || part == tokens[index], !tokens[index].isEmpty else { return false }
        }
        return tokens.count == parts.count
    }
}

enum PostgresTools {
    /// `name` from PATH or the newest `/usr/lib/postgresql/*/bin`.
    static func find(_ name: String) throws(CLIFailure) -> String {
        let path = (CLIEnvironment.value("PATH") ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
        for directory in path + versions where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw CLIFailure("\(name) not found (install postgresql-client: make deps)")
    }

    /// Runs a PostgreSQL client tool against `databaseURL`; its output goes to this process's stderr. The URL goes
    /// without its password (`PGPASSWORD` in the tool's environment), so no other local user sees it in the
    /// process list.
    @discardableResult
    static func run(_ name: String, _ arguments: [String], databaseURL: String, capture: Bool = false)
        throws(CLIFailure) -> String
    {
        var environment = ProcessInfo.processInfo.environment
        var url = databaseURL
        if var components = URLComponents(string: databaseURL), let password = components.password {
            environment["PGPASSWORD"] = password
            components.password = nil
            url = components.string ?? databaseURL
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try find(name))
        process.arguments = arguments + ["--dbname=\(url)"]
        process.environment = environment
        let output = Pipe()
        process.standardOutput = capture ? output : FileHandle.standardError
        process.standardError = FileHandle.standardError
        do {
            try process.run()
        } catch {
            throw CLIFailure("\(name) could not start: \(error)")
        }
        let printed = capture ? output.fileHandleForReading.readDataToEndOfFile() : Data()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLIFailure("\(name) failed (exit \(process.terminationStatus))") }
        return String(decoding: printed, as: UTF8.self)
    }
}


/// The size and SHA-256 of a file, read in 1 MiB pieces.
func describeFile(_ path: String, name: String) throws(CLIFailure) -> BackupManifest.File {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw CLIFailure("\(path): cannot be read") }
    defer { try? handle.close() }
    let hasher = SHA256.Hasher()
    var bytes: UInt64 = 0
    while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
        hasher.update(chunk)
        bytes += UInt64(chunk.count)
    }
    return BackupManifest.File(name: name, bytes: bytes, sha256: Hex.encode(hasher.finish()))
}

func progress(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Write a PostgreSQL dump and the JetStream streams' messages, with a manifest, into a new directory.",
        discussion: """
            Needs the database URL and the NATS user `backup` (make backup uses it, from .run/secrets.env). The database is dumped first (pg_dump, one consistent snapshot; analytics' rollups as schema \
            only: they are rebuilt from the restored log), then EVENTS, USAGE and DEADLETTER up to their last message \
            at that moment. manifest.json, written last, lists every file with its size and SHA-256.
            """)

    @OptionGroup(title: "Connection options") var options: BackupOptions
    @Option(help: ArgumentHelp("The directory to create (must not exist or be empty).", valueName: "dir")) var out: String

    func run() async throws {
        let databaseURL = try options.requireDatabaseURL()
        let fileManager = FileManager.default
        if let existing = try? fileManager.contentsOfDirectory(atPath: out), !existing.isEmpty {
            throw CLIFailure("\(out) is not empty: a backup goes into a new directory")
        }
        try? fileManager.createDirectory(atPath: out, withIntermediateDirectories: true)
        guard fileManager.fileExists(atPath: out) else { throw CLIFailure("\(out): cannot create the directory") }
        let excluded = ["analytics_*"]

        progress("backup: dumping PostgreSQL (pg_dump)…")
        try PostgresTools.run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges"]
            + excluded.map { "--exclude-table-data=\($0)" } + ["--file=\(out)/postgres.dump"], databaseURL: databaseURL)
        let dump = try describeFile("\(out)/postgres.dump", name: "postgres.dump")
        progress("backup: PostgreSQL dump \(dump.bytes) bytes")

        let connection = try await options.nats.connect(inboxPrefix: "_INBOX")
        defer { connection.close() }
        let jetStream: JetStream
        do { jetStream = try JetStream(connection: connection) } catch { throw CLIFailure("JetStream: \(error)") }
        var copies: [BackupManifest.StreamCopy] = []
        for contract in BackupStreams.contracts {
            copies.append(try await Self.copy(contract.name, jetStream: jetStream, into: out))
        }
        let manifest = BackupManifest(format: BackupManifest.currentFormat,
                                      createdAt: ISO8601DateFormatter().string(from: Date()), postgres: dump,
                                      postgresExcludedData: excluded, streams: copies)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard (try? encoder.encode(manifest).write(to: URL(fileURLWithPath: "\(out)/manifest.json"))) != nil else {
            throw CLIFailure("\(out)/manifest.json: cannot be written")
        }
        print("backup written to \(out): PostgreSQL \(dump.bytes) bytes; "
              + copies.map { "\($0.stream) \($0.messages) messages" }.joined(separator: ", "))
    }

    /// Copies one stream, up to the last message it holds now, through a temporary durable.
    static func copy(_ stream: String, jetStream: JetStream, into directory: String) async throws -> BackupManifest.StreamCopy {
        let name = "\(stream.lowercased()).stream"
        let path = "\(directory)/\(name)"
        guard FileManager.default.createFile(atPath: path, contents: Data(StreamFile.magic)),
              let handle = FileHandle(forWritingAtPath: path) else { throw CLIFailure("\(path): cannot be written") }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        let state: JetStream.StreamState
        do { state = try await jetStream.streamState(stream) } catch {
            throw CLIFailure("stream \(stream): \(error) (is this the NATS user `backup`?)")
        }
        var written: UInt64 = 0
        if state.messages > 0 {
            // A CLI exits right after an error: the temporary durable is removed before it is reported.
            var buffer: [UInt8] = []
            try await jetStream.readRange(stream: stream, start: .sequence(state.firstSequence),
                                          through: state.lastSequence, durablePrefix: "backup") { delivery in
                StreamFile.encode(delivery, into: &buffer)
                written += 1
                if buffer.count >= 1 << 20 {
                    handle.write(Data(buffer))
                    buffer.removeAll(keepingCapacity: true)
                }
                if written % 10_000 == 0 { progress("backup: \(stream) \(written)/\(state.messages) messages") }
            }
            handle.write(Data(buffer))
        }
        progress("backup: \(stream) \(written) messages")
        try? handle.close()
        return BackupManifest.StreamCopy(stream: stream, file: try describeFile(path, name: name), messages: written,
                                         firstSequence: state.firstSequence, lastSequence: state.lastSequence)
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Bring a fresh installation back from a backup directory (before its services start).",
        discussion: """
            Checks every file against manifest.json first. Refuses a database that already has tables or a stream \
            that already holds messages: restore into a fresh installation, then start the services — the tenant \
            service rebuilds the KV mirror from PostgreSQL, billing re-reads the usage log (skipping what the \
            ledger has), analytics folds the restored event log. Messages keep their subjects, headers and order \
            (new sequence numbers); streams are created with --replicas (env SWITCHYARD_STREAM_REPLICAS, default 1).
            """)

    @OptionGroup(title: "Connection options") var options: BackupOptions
    @Option(help: ArgumentHelp("The backup directory.", valueName: "dir")) var from: String
    @Option(help: "Replicas of the streams restore creates (1-5).") var replicas: Int?

    func validate() throws {
        if let replicas, !(1...5).contains(replicas) { throw ValidationError("--replicas must be 1 to 5") }
    }

    func run() async throws {
        let databaseURL = try options.requireDatabaseURL()
        guard let data = FileManager.default.contents(atPath: "\(from)/manifest.json"),
              let manifest = try? JSONDecoder().decode(BackupManifest.self, from: data) else {
            throw CLIFailure("\(from)/manifest.json: missing or unreadable (an incomplete backup has none)")
        }
        guard manifest.format == BackupManifest.currentFormat else {
            throw CLIFailure("\(from): format \(manifest.format), this CLI reads \(BackupManifest.currentFormat)")
        }
        // Everything is checked before anything is written: names, sizes, digests, every record's subject.
        guard manifest.postgres.name == "postgres.dump" else { throw CLIFailure("\(from): unexpected file \(manifest.postgres.name)") }
        var contracts: [(copy: BackupManifest.StreamCopy, contract: StreamContract)] = []
        for copy in manifest.streams {
            guard let contract = BackupStreams.contracts.first(where: { $0.name == copy.stream }),
                  copy.file.name == "\(copy.stream.lowercased()).stream",
                  !contracts.contains(where: { $0.copy.stream == copy.stream }) else {
                throw CLIFailure("\(from): stream \(copy.stream) (\(copy.file.name)) is not one this version backs up")
            }
            contracts.append((copy, contract))
        }
        for file in [manifest.postgres] + manifest.streams.map(\.file) {
            let found = try describeFile("\(from)/\(file.name)", name: file.name)
            guard found == file else { throw CLIFailure("\(from)/\(file.name): size or SHA-256 differs from the manifest") }
        }
        for (copy, contract) in contracts {
            let reader = try StreamFileReader(path: "\(from)/\(copy.file.name)", file: copy.file.name)
            var count: UInt64 = 0
            while let record = try reader.next() {
                guard subjectMatches(record.subject, contract.spec.subjects) else {
                    throw CLIFailure("\(copy.file.name): message \(count + 1) has subject \(record.subject.prefix(80)), "
                                     + "which stream \(copy.stream) does not capture")
                }
                count += 1
            }
            guard count == copy.messages else {
                throw CLIFailure("\(copy.file.name): \(count) messages, the manifest says \(copy.messages)")
            }
        }
        progress("backup \(from) (\(manifest.createdAt)) verified")

        let tables = try PostgresTools.run("psql", ["--no-psqlrc", "-At", "-c",
                                                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
                                           databaseURL: databaseURL, capture: true)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard tables == "0" else { throw CLIFailure("the database already has \(tables) tables: restore needs a fresh one") }

        let connection = try await options.nats.connect(inboxPrefix: "_INBOX")
        defer { connection.close() }
        let replicas = replicas ?? CLIEnvironment.value("SWITCHYARD_STREAM_REPLICAS").flatMap(Int.init) ?? 1
        guard (1...5).contains(replicas) else { throw CLIFailure("SWITCHYARD_STREAM_REPLICAS must be 1 to 5") }
        let jetStream: JetStream
        do { jetStream = try JetStream(connection: connection, replicas: replicas) } catch { throw CLIFailure("JetStream: \(error)") }
        for (copy, _) in contracts {
            // Only a missing or empty stream is fresh; an error reading it is not.
            if try await jetStream.inspectStream(copy.stream) != nil,
               try await jetStream.streamState(copy.stream).messages > 0 {
                throw CLIFailure("stream \(copy.stream) already holds messages: restore needs a fresh installation")
            }
        }

        progress("restore: PostgreSQL (pg_restore)…")
        try PostgresTools.run("pg_restore", ["--no-owner", "--no-privileges", "--exit-on-error",
                                             "\(from)/\(manifest.postgres.name)"], databaseURL: databaseURL)
        var restored: [String] = []
        for (copy, contract) in contracts {
            try await jetStream.ensureStream(contract.spec)
            let reader = try StreamFileReader(path: "\(from)/\(copy.file.name)", file: copy.file.name)
            var published: UInt64 = 0
            var ids = Set<String>()
            while let record = try reader.next() {
                var headers = record.headers
                var messageID = headers.removeValue(forKey: "Nats-Msg-Id")
                // Two messages the stream stored under one id (more than its duplicate window apart) both come back:
                // the second goes without an id, or the window would drop it now.
                if let id = messageID, !ids.insert(id).inserted { messageID = nil }
                // In order, one at a time: the log keeps its order (each publish waits for its ack).
                let ack = try await jetStream.publish(OutboundMessage(subject: record.subject, payload: record.payload,
                                                                      headers: headers, messageID: messageID))
                guard !ack.duplicate else {
                    throw CLIFailure("stream \(copy.stream): message \(published + 1) was taken for a duplicate")
                }
                published += 1
                if published % 10_000 == 0 { progress("restore: \(copy.stream) \(published)/\(copy.messages) messages") }
            }
            let state = try await jetStream.streamState(copy.stream)
            guard state.messages == copy.messages else {
                throw CLIFailure("stream \(copy.stream): \(state.messages) messages after the restore, the backup has \(copy.messages)")
            }
            progress("restore: \(copy.stream) \(published) messages")
            restored.append("\(copy.stream) \(published) messages")
        }
        // The work durables start after the restored log: its requests were answered long ago and must not run again
        // (the services find the durables and keep where they start).
        let events = try await jetStream.streamState(StreamNames.events)
        for contract in [Consumers.routerRequested, Consumers.routerEvalRequested, Consumers.orchestratorRouted,
                         Consumers.tenantKeyUsage] {
            var spec = contract.spec
            spec.start = .sequence(events.lastSequence + 1)
            try await jetStream.ensureConsumer(stream: StreamNames.events, spec)
        }
        print("restored \(from) (\(manifest.createdAt)): PostgreSQL, " + restored.joined(separator: ", ")
              + "; now start the services")
    }
}
