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

    /// Every registered probe's checks, in registration order, the probes running at once. One that has not
    /// finished by `deadline` (an unreachable provider, a database that does not answer) is reported as such,
    /// so the report still arrives in time and says what is slow.
    public func run(deadline: Duration = .seconds(5)) async -> [DoctorCheck] {
        let all = probes.withLock { $0 }
        var found = [[DoctorCheck]?](repeating: nil, count: all.count)
        await withTaskGroup(of: (Int, [DoctorCheck]?).self) { group in
            for (index, probe) in all.enumerated() { group.addTask { (index, await probe()) } }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return (-1, nil)
            }
            while let (index, checks) = await group.next() {
                if index < 0 { break }
                found[index] = checks
                if !found.contains(where: { $0 == nil }) { break }
            }
            group.cancelAll()
        }
        return found.enumerated().flatMap { index, checks in
            checks ?? [Doctor.check(.warn, "check \(index + 1) of this instance",
                                    "did not finish within \(deadline) (a dependency that does not answer?)")]
        }
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
        await withTaskGroup(of: Void.self) { group in
            for await message in subscription.messages.cancelOnGracefulShutdown() {
                guard let reply = message.reply, ReplySubjects.isInbox(reply) else { continue }
                // The probe says how long the gatherer waits; answer well within it, each probe on its own.
                let wait = Int64(String(decoding: message.payload, as: UTF8.self)) ?? 1_500
                let deadline = Duration.milliseconds(max(300, min(wait, 30_000) - 500))
                group.addTask { [connection, service, instance, checks, logger] in
                    let source = "\(service)/\(instance)"
                    let found = await checks.run(deadline: deadline).map { check in
                        var check = check
                        check.source = source
                        return check
                    }
                    let report = DoctorReport(service: service, instance: instance,
                                              nowUnixNanos: EventClock.nowUnixNanos(), checks: found)
                    do {
                        try connection.publishReply(report, to: reply)
                    } catch {
                        logger.warning("doctor report not sent", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}
