import ArgumentParser
import Foundation
import Logging
import Messaging
import Schemas
import Tenancy

/// `switchyard doctor`: the production-readiness check against a running installation.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check a running installation: streams, consumers, buckets, migrations, secrets, permissions, providers, clocks, disk.",
        discussion: """
            The tenant service checks the JetStream streams, durables (max deliver, dead letters) and KV buckets \
            against the expected configuration and replicas, JetStream storage and PostgreSQL, and gathers the \
            report of every service instance that answers within --wait-ms (secrets set and not defaults, \
            migrations applied, disk, providers reachable, clock). This command adds what only a client can see: \
            that nats-server refuses clients without credentials and that the admin user cannot use the JetStream \
            API. One line per check: PASS, WARN or FAIL; exit status 1 if anything fails.
            """)

    @OptionGroup(title: "Connection and output options") var options: AdminOptions
    @Option(name: .customLong("wait-ms"), help: "How long to wait for the services' reports (default 1500).")
    var waitMs: UInt32 = 1_500

    func validate() throws {
        guard (100...30_000).contains(waitMs) else { throw ValidationError("--wait-ms must be 100 to 30000") }
    }

    struct Report: Encodable {
        var ok: Bool
        var pass: Int
        var warn: Int
        var fail: Int
        var checks: [DoctorCheck]
        var instances: [DoctorReport]
    }

    func run() async throws {
        let nats = options.nats
        var local: [DoctorCheck] = []
        local.append(await Self.unauthenticatedRefused(servers: nats.servers, display: nats.displayURL))
        // The call waits for the services' reports: its timeout covers the wait.
        var options = self.options
        options.timeout = max(options.timeout, Double(waitMs) / 1000 + 15)
        let report = try await options.withSession { session in
            let sent = EventClock.nowUnixNanos()
            let response: DoctorResponse = try await session.call(.doctor, DoctorRequest(waitMs: waitMs))
            let received = EventClock.nowUnixNanos()
            var checks = response.checks
            let difference = abs(response.nowUnixNanos - received) - (received - sent)
            let skew = max(0, difference)
            checks.append(DoctorCheck(
                name: "clock switchyard-cli", status: skew > 10_000_000_000 ? "fail" : skew > 2_000_000_000 ? "warn" : "pass",
                detail: String(format: "%.3f s from the tenant service's clock", Double(skew) / 1e9), source: "switchyard-cli"))
            checks.append(await Self.adminRestricted(session.client.connection, user: nats.user))
            checks.append(SecretHygiene.check("SWITCHYARD_ADMIN_TOKEN (this CLI)", (try? options.adminToken()) ?? ""))
            for index in local.indices { local[index].source = "switchyard-cli" }
            checks[checks.count - 1].source = "switchyard-cli"
            checks = local + checks
            let counts = Dictionary(grouping: checks, by: \.status).mapValues(\.count)
            return Report(ok: (counts["fail"] ?? 0) == 0, pass: counts["pass"] ?? 0, warn: counts["warn"] ?? 0,
                          fail: counts["fail"] ?? 0, checks: checks, instances: response.reports)
        }
        if options.json {
            try Output.printJSON(report)
        } else {
            var table = TextTable("STATUS", "CHECK", "DETAIL", "SOURCE")
            for check in report.checks {
                table.add(check.status.uppercased(), check.name, check.detail, check.source)
            }
            table.print(ifEmpty: "no checks")
            print("\(report.pass) passed, \(report.warn) warnings, \(report.fail) failed "
                  + "(\(report.instances.count) service instances answered)")
        }
        if !report.ok { throw CLIFailure("doctor: \(report.fail) check(s) failed") }
    }

    /// nats-server must refuse a client without credentials (docs/adr/0009).
    static func unauthenticatedRefused(servers: [String], display: String) async -> DoctorCheck {
        let stripped = servers.map(NATSOptions.withoutCredentials)
        let logger = Logger(label: "doctor") { _ in SwiftLogNoOpLogHandler() }
        do {
            let connection = try await NATSConnection.connect(
                NATSConfiguration(servers: stripped, name: "switchyard-doctor", connectAttempts: 1), logger: logger)
            connection.close()
            return DoctorCheck(name: "nats authentication", status: "fail",
                               detail: "\(display) accepts a client without credentials: configure users (scripts/nats-auth.conf.tmpl)")
        } catch {
            let reason = (error as? NATSError)?.status ?? "\(error)"
            guard reason.localizedCaseInsensitiveContains("authoriz") || reason.localizedCaseInsensitiveContains("authentic") else {
                return DoctorCheck(name: "nats authentication", status: "warn",
                                   detail: "could not tell: connecting without credentials failed otherwise (\(reason))")
            }
            return DoctorCheck(name: "nats authentication", status: "pass",
                               detail: "a client without credentials is refused")
        }
    }

    /// The admin user may send admin commands and read events, nothing else: a JetStream API request must fail.
    static func adminRestricted(_ connection: NATSConnection, user: String?) async -> DoctorCheck {
        guard user == "admin" else {
            return DoctorCheck(name: "nats permissions", status: "warn", detail: "connected as \(user ?? "nobody"), not admin: not checked",
                               source: "switchyard-cli")
        }
        do {
            _ = try await connection.request("$JS.API.INFO", payload: [], timeout: .seconds(1))
            return DoctorCheck(name: "nats permissions", status: "fail",
                               detail: "the admin user may call the JetStream API: the per-user permissions are not in force",
                               source: "switchyard-cli")
        } catch {
            return DoctorCheck(name: "nats permissions", status: "pass",
                               detail: "the admin user is refused the JetStream API", source: "switchyard-cli")
        }
    }
}
