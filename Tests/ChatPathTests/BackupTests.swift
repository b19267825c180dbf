import AsyncHTTPClient
import Contracts
import Foundation
import Messaging
import NIOCore
import Schemas
import Storage
import Synchronization
import Testing
import TestKit

/// `switchyard backup` → wipe → `switchyard restore` with the real CLI and the seven real binaries: a fresh
/// nats-server and PostgreSQL get back the tenants, keys, ledger and streams, and the restored installation
/// serves the old API key without billing anything twice.
@Suite("Backups: round trip into a fresh installation", .serialized)
struct BackupTests {
    typealias Installation = DoctorTests.Installation

    struct Counts: Equatable, CustomStringConvertible {
        var tenants: Int
        var keys: Int
        var ledger: Int
        var events: UInt64
        var usage: UInt64
        var description: String { "tenants \(tenants), keys \(keys), ledger \(ledger), events \(events), usage \(usage)" }
    }

    static func counts(_ installation: Installation) async throws -> Counts {
        let pool = try PostgresPool(configuration: PostgresConfiguration(
            connectionString: installation.postgres.connectionString, poolSize: 1), logger: Stack.logger)
        defer { Task { await pool.close() } }
        func count(_ table: String) async throws -> Int {
            Int(try await pool.query("SELECT count(*) FROM \(table)").first?.decode(Int64.self, at: 0) ?? -1)
        }
        let (connection, jetStream) = try await Stack.connect(installation.nats, user: "tenant",
                                                              password: installation.passwords["tenant"])
        defer { connection.close() }
        return Counts(tenants: try await count("tenants"), keys: try await count("api_keys"),
                      ledger: try await count("billing_ledger"),
                      events: try await jetStream.streamState(StreamNames.events).messages,
                      usage: try await jetStream.streamState(StreamNames.usage).messages)
    }

    /// Starts the seven services (tenant first) and waits until each is ready.
    static func startAll(_ installation: Installation, _ http: HTTPClient, tokens: String) async throws -> [String: TestProcess] {
        var processes: [String: TestProcess] = [:]
        do {
            for service in DoctorTests.services {
                processes[service] = try DoctorTests.start(service, installation, adminTokens: tokens)
                if service == "tenant" {
                    try await DoctorTests.waitReady(http, service, port: installation.opsPorts[service]!, processes[service]!)
                }
            }
            for service in DoctorTests.services {
                try await DoctorTests.waitReady(http, service, port: installation.opsPorts[service]!, processes[service]!)
            }
        } catch {
            for process in processes.values { process.terminate(signal: SIGKILL) }
            throw error
        }
        return processes
    }

    static func installation(_ nats: NATSServer, _ postgres: PostgresServer, passwords: [String: String]) throws -> Installation {
        var ops: [String: Int] = [:]
        for service in DoctorTests.services { ops[service] = try freeTCPPort() }
        return Installation(nats: nats, postgres: postgres, passwords: passwords, opsPorts: ops,
                            httpPorts: ["api-gateway": try freeTCPPort()])
    }

    static func chat(_ http: HTTPClient, _ installation: Installation, key: String) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(installation.httpPorts["api-gateway"]!)/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(key)")
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"model":"restaurant-host","messages":[{"role":"user","content":"When are you open on Sunday?"}]}"#))
        let response = try await http.execute(request, timeout: .seconds(30))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    /// Waits until the ledger has `rows` lines (billing has caught up), or fails after a minute.
    static func waitLedger(_ installation: Installation, rows: Int) async throws -> Counts {
        let deadline = ContinuousClock.now + .seconds(60)
        var last = try await counts(installation)
        while last.ledger < rows && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            last = try await counts(installation)
        }
        return last
    }

    static func cli(_ arguments: [String], _ installation: Installation, user: String) async throws -> (Int32, String) {
        try await TestProcess.run(try builtProduct("switchyard"), arguments, environment: [
            "SWITCHYARD_NATS_URL": installation.nats.url, "SWITCHYARD_NATS_USER": user,
            "SWITCHYARD_NATS_PASSWORD": installation.passwords[user] ?? "",
            "SWITCHYARD_DATABASE_URL": installation.postgres.connectionString,
            "SWITCHYARD_ADMIN_TOKEN": DoctorTests.adminToken, "SWITCHYARD_ACTOR": "ci",
        ], check: false)
    }

    @Test("backup, wipe, restore: tenants, keys, ledger rows and event counts equal; the old key works; nothing billed twice")
    func roundTrip() async throws {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await http.shutdown() } }
        let passwords = NATSAuthTemplate.randomPasswords()
        let tokens = "operator:\(DoctorTests.adminToken)"
        let directory = try makeTemporaryDirectory(prefix: "backup-test")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backup = directory + "/backup"
        var demoKey = ""
        var before = Counts(tenants: 0, keys: 0, ledger: 0, events: 0, usage: 0)
        let chats = 12

        // The installation that is backed up: seeded demo tenant, some chats, all billed.
        try await NATSServer.withServer(configuration: try NATSAuthTemplate.render(passwords: passwords)) { nats in
            try await PostgresServer.withServer { postgres in
                let original = try Self.installation(nats, postgres, passwords: passwords)
                var processes = try await Self.startAll(original, http, tokens: tokens)
                defer { for process in processes.values { process.terminate(signal: SIGKILL) } }
                let envFile = directory + "/demo.env"
                let (seeded, seedOutput) = try await Self.cli(
                    ["demo", "seed", "--env-file", envFile, "--base-url", "http://127.0.0.1/v1", "--rpm", "0", "--tpm", "0"],
                    original, user: "admin")
                #expect(seeded == 0, "\(seedOutput)")
                let env = (try? String(contentsOfFile: envFile, encoding: .utf8)) ?? ""
                demoKey = env.split(separator: "\n").first { $0.hasPrefix("SWITCHYARD_API_KEY=") }
                    .map { String($0.dropFirst("SWITCHYARD_API_KEY=".count)) } ?? ""
                #expect(!demoKey.isEmpty)
                // The gateways learn the new key through the KV mirror: the first chats may be 401 for a moment.
                var ok = 0
                for _ in 0..<400 where ok < chats {
                    if try await Self.chat(http, original, key: demoKey) == 200 { ok += 1 } else { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(ok == chats)
                before = try await Self.waitLedger(original, rows: chats)
                #expect(before.ledger == chats && before.tenants == 1 && before.keys >= 1 && before.events > 0, "\(before)")

                let (status, output) = try await Self.cli(["backup", "--out", backup], original, user: "backup")
                #expect(status == 0, "\(output)")
                #expect(output.contains("backup written to"))
                for process in processes.values { _ = await process.terminateAndWait() }
                processes.removeAll()
            }
        }
        let manifest = try #require(FileManager.default.contents(atPath: backup + "/manifest.json"))
        let parsed = try #require(try JSONSerialization.jsonObject(with: manifest) as? [String: Any])
        #expect((parsed["streams"] as? [[String: Any]])?.count == 3)

        // A fresh nats-server and PostgreSQL (the old ones are gone with their data): restore, then start.
        try await NATSServer.withServer(configuration: try NATSAuthTemplate.render(passwords: passwords)) { nats in
            try await PostgresServer.withServer { postgres in
                let fresh = try Self.installation(nats, postgres, passwords: passwords)
                // A manifest naming a file outside the backup is refused before anything is written.
                let hostile = directory + "/hostile"
                try FileManager.default.copyItem(atPath: backup, toPath: hostile)
                let manifestPath = hostile + "/manifest.json"
                let original = try String(contentsOfFile: manifestPath, encoding: .utf8)
                try original.replacingOccurrences(of: "\"usage.stream\"", with: "\"../backup/usage.stream\"")
                    .write(toFile: manifestPath, atomically: true, encoding: .utf8)
                let (traversal, traversalOutput) = try await Self.cli(["restore", "--from", hostile], fresh, user: "backup")
                #expect(traversal != 0 && traversalOutput.contains("not one this version backs up"), "\(traversalOutput)")
                // A corrupted copy is refused before anything is written.
                let copy = directory + "/corrupt"
                try FileManager.default.copyItem(atPath: backup, toPath: copy)
                let usageFile = copy + "/usage.stream"
                var bytes = try #require(FileManager.default.contents(atPath: usageFile))
                bytes[bytes.count - 1] ^= 0xFF
                try bytes.write(to: URL(fileURLWithPath: usageFile))
                let (refused, refusal) = try await Self.cli(["restore", "--from", copy], fresh, user: "backup")
                #expect(refused != 0 && refusal.contains("SHA-256"), "\(refusal)")

                let (status, output) = try await Self.cli(["restore", "--from", backup], fresh, user: "backup")
                #expect(status == 0, "\(output)")
                let after = try await Self.counts(fresh)
                #expect(after == before, "restored \(after), backed up \(before)")
                // A second restore into the now non-empty installation is refused.
                let (again, refusedAgain) = try await Self.cli(["restore", "--from", backup], fresh, user: "backup")
                #expect(again != 0 && refusedAgain.contains("fresh"), "\(refusedAgain)")

                // The restored installation runs: the old key answers, billing re-reads the usage log and bills
                // only the new chat, and the restored requests are not routed again (the work durables start after
                // the restored log).
                let (watcher, _) = try await Stack.connect(nats, user: "tenant", password: passwords["tenant"])
                defer { watcher.close() }
                let routed = try watcher.subscribe("evt.chat.routed.>")
                let routedCount = Mutex(0)
                let counter = Task { for await _ in routed.messages { routedCount.withLock { $0 += 1 } } }
                defer { routed.unsubscribe(); counter.cancel() }
                try await watcher.flush()
                let processes = try await Self.startAll(fresh, http, tokens: tokens)
                defer { for process in processes.values { process.terminate(signal: SIGKILL) } }
                var status200 = false
                for _ in 0..<200 where !status200 {
                    status200 = try await Self.chat(http, fresh, key: demoKey) == 200
                    if !status200 { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(status200, "the restored key must work")
                let settled = try await Self.waitLedger(fresh, rows: chats + 1)
                let (connection, jetStream) = try await Stack.connect(nats, user: "tenant", password: passwords["tenant"])
                defer { connection.close() }
                for _ in 0..<600 {
                    if let state = try? await jetStream.consumerState(stream: StreamNames.usage, durable: Consumers.billingUsage.durable),
                       state.pending == 0, state.ackPending == 0 { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(try await Self.counts(fresh).ledger == chats + 1, "\(settled)")
                #expect(routedCount.withLock { $0 } == 1, "only the new chat was routed, no restored request ran again")
            }
        }
    }
}
