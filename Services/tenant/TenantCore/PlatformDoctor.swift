import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Storage
import Synchronization
import Tenancy

/// `admin.tenant.doctor`: the platform's readiness as this tenant service sees it — streams, durables and KV
/// buckets with the expected configuration and replicas, JetStream storage, PostgreSQL and its clock — plus
/// the report of every service instance that answers the doctor probe within the wait (their secrets,
/// migrations, disk, providers and clocks). A service of which no instance answers fails.
public struct PlatformDoctor: Sendable {
    let authenticator: AdminAuthenticator
    let jetStream: JetStream
    let pool: PostgresPool
    /// Stream replicas the installation is configured for (`SWITCHYARD_STREAM_REPLICAS`).
    let expectedReplicas: Int
    let logger: Logger

    public init(authenticator: AdminAuthenticator, jetStream: JetStream, pool: PostgresPool, expectedReplicas: Int,
                logger: Logger) {
        self.authenticator = authenticator
        self.jetStream = jetStream
        self.pool = pool
        self.expectedReplicas = expectedReplicas
        self.logger = logger
    }

    /// Clock differences that warn and fail.
    static let skewWarn: Int64 = 2_000_000_000
    static let skewFail: Int64 = 10_000_000_000

    public func run(_ request: DoctorRequest) async throws(AdminFailure) -> DoctorResponse {
        _ = try authenticator.actor(for: request)
        let wait = Duration.milliseconds(Int64(request.waitMs == 0 ? 1_500 : min(request.waitMs, 30_000)))
        var checks = await streamChecks()
        checks += await consumerChecks()
        checks += await storageChecks()
        checks += await databaseChecks()
        let reports = await gather(wait: wait)
        for report in reports { checks += report.checks }
        checks += Self.coverage(reports, wait: wait)
        for index in checks.indices where checks[index].source.isEmpty { checks[index].source = "tenant (platform)" }
        var summaries = reports
        for index in summaries.indices { summaries[index].checks = [] }
        return DoctorResponse(error: nil, checks: checks, nowUnixNanos: EventClock.nowUnixNanos(), reports: summaries)
    }

    // MARK: JetStream

    func streamChecks() async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        let expected = Streams.all.map { ($0.spec, $0.owner.rawValue) } + [(MaxDeliveries.stream, "every consumer")]
        for (spec, owner) in expected {
            let name = "stream \(spec.name)"
            do {
                guard let found = try await jetStream.inspectStream(spec.name) else {
                    checks.append(Doctor.check(.fail, name, "missing: \(owner) creates it at start (restart it)"))
                    continue
                }
                var problems: [String] = []
                if Set(found.spec.subjects) != Set(spec.subjects) { problems.append("subjects \(found.spec.subjects), want \(spec.subjects)") }
                if found.spec.retention != spec.retention { problems.append("retention \(found.spec.retention), want \(spec.retention)") }
                if found.spec.maxAge != spec.maxAge { problems.append("max age \(found.spec.maxAge), want \(spec.maxAge)") }
                if found.spec.denyDelete != spec.denyDelete || found.spec.denyPurge != spec.denyPurge {
                    problems.append("deny delete/purge \(found.spec.denyDelete)/\(found.spec.denyPurge), want \(spec.denyDelete)/\(spec.denyPurge)")
                }
                if found.spec.replicas < expectedReplicas {
                    problems.append("\(found.spec.replicas) replica(s), want \(expectedReplicas)")
                }
                if !problems.isEmpty {
                    checks.append(Doctor.check(.fail, name, problems.joined(separator: "; ")))
                } else if found.currentReplicas < found.spec.replicas {
                    checks.append(Doctor.check(.warn, name, "only \(found.currentReplicas) of \(found.spec.replicas) replicas current"))
                } else if found.spec.replicas < 3 {
                    checks.append(Doctor.check(.pass, name, "as configured; \(found.spec.replicas) replica (fine on one node; production runs 3)"))
                } else {
                    checks.append(Doctor.check(.pass, name, "as configured, \(found.spec.replicas) replicas current"))
                }
            } catch {
                checks.append(Doctor.check(.fail, name, "cannot be read: \(error)"))
            }
        }
        for bucket in [BucketNames.tenants, BucketNames.apiKeys, BucketNames.budgets] {
            let name = "kv bucket \(bucket)"
            do {
                guard let found = try await jetStream.inspectStream("KV_" + bucket) else {
                    checks.append(Doctor.check(.fail, name, "missing (tenant creates tenants and apikeys, gateway and billing budgets)"))
                    continue
                }
                if found.spec.replicas < expectedReplicas {
                    checks.append(Doctor.check(.fail, name, "\(found.spec.replicas) replica(s), want \(expectedReplicas)"))
                } else {
                    checks.append(Doctor.check(.pass, name, "present, \(found.spec.replicas) replica(s)"))
                }
            } catch {
                checks.append(Doctor.check(.fail, name, "cannot be read: \(error)"))
            }
        }
        if let parked = try? await jetStream.streamState(StreamNames.deadLetter).messages, parked > 0 {
            checks.append(Doctor.check(.warn, "dead letters", "\(parked) message(s) parked in \(StreamNames.deadLetter): read them with `switchyard events` / the DLQ headers"))
        }
        return checks
    }

    func consumerChecks() async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        for contract in Consumers.all {
            let name = "consumer \(contract.stream.name)/\(contract.durable)"
            do {
                guard let found = try await jetStream.inspectConsumer(stream: contract.stream.name, durable: contract.durable) else {
                    checks.append(Doctor.check(.fail, name, "missing: \(contract.owner.rawValue) creates it at start (not running, or it was deleted)"))
                    continue
                }
                var problems: [String] = []
                if found.maxDeliver != contract.spec.maxDeliver { problems.append("max deliver \(found.maxDeliver), want \(contract.spec.maxDeliver)") }
                if (found.filterSubject ?? "") != (contract.spec.filterSubject ?? "") {
                    problems.append("filter \(found.filterSubject ?? "none"), want \(contract.spec.filterSubject ?? "none")")
                }
                checks.append(problems.isEmpty
                    ? Doctor.check(.pass, name, "max deliver \(found.maxDeliver), dead letters to dlq.\(contract.stream.name).\(contract.durable)")
                    : Doctor.check(.fail, name, problems.joined(separator: "; ")))
            } catch {
                checks.append(Doctor.check(.fail, name, "cannot be read: \(error)"))
            }
        }
        return checks
    }

    func storageChecks() async -> [DoctorCheck] {
        do {
            let (used, limit) = try await jetStream.storageUsage()
            let usedMiB = Double(used) / 1_048_576
            guard limit > 0 else {
                return [Doctor.check(.pass, "jetstream storage", String(format: "%.1f MiB used, no account limit", usedMiB))]
            }
            let share = Double(used) / Double(limit)
            let detail = String(format: "%.1f MiB used of %.1f MiB (%.0f %%)", usedMiB, Double(limit) / 1_048_576, share * 100)
            return [Doctor.check(share > 0.95 ? .fail : share > 0.8 ? .warn : .pass, "jetstream storage", detail)]
        } catch {
            return [Doctor.check(.fail, "jetstream storage", "cannot be read: \(error)")]
        }
    }

    func databaseChecks() async -> [DoctorCheck] {
        do {
            let before = EventClock.nowUnixNanos()
            let rows = try await pool.query("""
                SELECT (extract(epoch FROM clock_timestamp()) * 1e9)::bigint, pg_database_size(current_database())
                """)
            let after = EventClock.nowUnixNanos()
            let databaseNow = try rows.first?.decode(Int64.self, at: 0) ?? 0
            let size = try rows.first?.decode(Int64.self, at: 1) ?? 0
            return [Doctor.check(.pass, "postgresql", String(format: "reachable, database %.1f MiB", Double(size) / 1_048_576)),
                    Self.skew("clock postgresql", theirs: databaseNow, ours: before / 2 + after / 2)]
        } catch {
            return [Doctor.check(.fail, "postgresql", "not reachable from the tenant service: \(error)")]
        }
    }

    static func skew(_ name: String, theirs: Int64, ours: Int64) -> DoctorCheck {
        let difference = abs(theirs - ours)
        let detail = String(format: "%.3f s from the tenant service's clock", Double(difference) / 1e9)
        return Doctor.check(difference > skewFail ? .fail : difference > skewWarn ? .warn : .pass, name, detail)
    }

    // MARK: instance reports

    /// Every report that arrives within `wait`, with a clock check each (against the arrival time, so the
    /// round trip counts against the reporter by at most the wait).
    func gather(wait: Duration) async -> [DoctorReport] {
        let connection = jetStream.connection
        let inbox = "\(ReplySubjects.serviceInboxPrefix).doctor.\(EventID.random())"
        let subscription: NATSSubscription
        do {
            subscription = try connection.subscribe(inbox)
            try await connection.flush()
            // The probe carries the wait (milliseconds), so each instance answers within it.
            let waitMs = wait.components.seconds * 1_000 + wait.components.attoseconds / 1_000_000_000_000_000
            try connection.publish(Doctor.probeSubject, payload: Array("\(waitMs)".utf8), reply: inbox)
        } catch {
            logger.warning("doctor probe not sent", metadata: ["error": "\(error)"])
            return []
        }
        let received = Mutex<[DoctorReport]>([])
        let collector = Task {
            for await message in subscription.messages {
                guard var report = try? DoctorReport(protobuf: message.payload) else { continue }
                report.checks.append(Self.skew("clock \(report.service)/\(report.instance)", theirs: report.nowUnixNanos,
                                               ours: EventClock.nowUnixNanos()))
                for index in report.checks.indices where report.checks[index].source.isEmpty {
                    report.checks[index].source = "\(report.service)/\(report.instance)"
                }
                received.withLock { $0.append(report) }
            }
        }
        try? await Task.sleep(for: wait)
        subscription.unsubscribe()
        collector.cancel()
        return received.withLock { $0 }.sorted { ($0.service, $0.instance) < ($1.service, $1.instance) }
    }

    /// A failing check for each of the seven services of which no instance answered.
    static func coverage(_ reports: [DoctorReport], wait: Duration) -> [DoctorCheck] {
        let answered = Set(reports.map(\.service))
        return ServiceName.all.map { service in
            let count = reports.filter { $0.service == service.rawValue }.count
            return answered.contains(service.rawValue)
                ? Doctor.check(.pass, "service \(service.rawValue)", "\(count) instance(s) answered")
                : Doctor.check(.fail, "service \(service.rawValue)", "no instance answered within \(wait) (not running, or not connected to NATS)")
        }
    }
}
