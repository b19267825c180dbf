import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceLifecycle
import Synchronization
import Tenancy

#if canImport(Glibc)
import Glibc
#endif

/// The checks one process runs when probed; services register theirs while they are built.
public final class DoctorChecks: Sendable {
    public typealias Probe = @Sendable () async -> [DoctorCheck]
    private let probes = Mutex<[Probe]>([])

    public init() {}

    public func add(_ probe: @escaping Probe) { probes.withLock { $0.append(probe) } }

    /// Every registered probe's checks, in registration order.
    public func run() async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        for probe in probes.withLock({ $0 }) { checks += await probe() }
        return checks
    }

    /// Free space of the file system holding `path` (the process's working directory by default).
    public static func disk(path: String = FileManager.default.currentDirectoryPath) -> DoctorCheck {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0, stats.f_blocks > 0 else {
            return Doctor.check(.warn, "disk", "cannot read the free space of \(path)")
        }
        let free = Double(stats.f_bavail) / Double(stats.f_blocks)
        let freeGiB = Double(stats.f_bavail) * Double(stats.f_frsize) / 1_073_741_824
        let detail = String(format: "%.0f %% free (%.1f GiB) on the file system of %@", free * 100, freeGiB, path)
        if free < 0.02 { return Doctor.check(.fail, "disk", detail) }
        if free < 0.10 { return Doctor.check(.warn, "disk", detail) }
        return Doctor.check(.pass, "disk", detail)
    }
}

/// Answers doctor probes on `_sy.doctor` with this instance's report until shutdown.
struct DoctorResponderService: Service {
    let connection: NATSConnection
    let service: String
    let instance: String
    let checks: DoctorChecks
    let logger: Logger

    func run() async throws {
        let subscription = try connection.subscribe(Doctor.probeSubject)
        defer { subscription.unsubscribe() }
        for await message in subscription.messages.cancelOnGracefulShutdown() {
            guard let reply = message.reply, ReplySubjects.isInbox(reply) else { continue }
            let source = "\(service)/\(instance)"
            let found = await checks.run().map { check in
                var check = check
                check.source = source
                return check
            }
            let report = DoctorReport(service: service, instance: instance, nowUnixNanos: EventClock.nowUnixNanos(),
                                      checks: found)
            do {
                try connection.publishReply(report, to: reply)
            } catch {
                logger.warning("doctor report not sent", metadata: ["error": "\(error)"])
            }
        }
    }
}
