import Foundation
import Schemas
import Security
import Synchronization
import Tenancy
@testable import TenantCore
import Testing
import TestKit

/// A tenant-service process killed (SIGKILL) in the middle of a burst of admin commands: nothing is
/// half-written, and the next replica's start-up repairs whatever the dead one left in KV.
@Suite(.serialized) struct TenantCrashTests {
    static var binary: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tenant").path,
            URL(fileURLWithPath: Bundle.main.bundlePath).deletingLastPathComponent().appendingPathComponent("tenant").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
    }

    @Test func killedMidBurstLeavesNoHalfWrittenChange() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the tenant service first")
        try await TenantStack.with(tenantReplicas: 1, chatPath: false) { stack in
            try await stack.createTenant("crashy")
            // Only the process serves commands from now on.
            await stack.stopTenantService(name: "tenant-1")
            var environment = stack.environment(instance: "tenant-doomed")
            environment["SWITCHYARD_ADMIN_TOKENS"] = "operator:\(TenantStack.token)"
            environment["SWITCHYARD_MIRROR_SIGNING_KEY"] = Hex.encode(TenantStack.signingSeed)
            environment["SWITCHYARD_LOG_LEVEL"] = "error"
            let process = try TestProcess(executable: Self.binary, arguments: [], environment: environment)
            // Requests in flight at the kill time out sooner than after the default 15 s (but not so soon that a
            // loaded machine's queueing alone makes them time out).
            let admin = AdminClient(connection: stack.connection, token: TenantStack.token, actor: "alice",
                                    timeout: .seconds(6))
            let up = try await eventually(within: .seconds(20)) {
                (try? await admin.call(.listKeys, ListKeysRequest(tenantID: "crashy"), as: ListKeysResponse.self)) != nil
            }
            try #require(up != nil, "the tenant process did not start: \(process.output)")

            let succeeded = Trace()
            let burst = Task {
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<300 {
                        group.addTask {
                            let issued = try? await admin.call(
                                .issueKey, IssueKeyRequest(tenantID: "crashy", label: "burst-\(index)"),
                                as: IssueKeyResponse.self)
                            if let id = issued?.key?.keyID { succeeded.add(id) }
                        }
                    }
                }
            }
            // Kill it once it is well into the burst: after 20 acknowledged changes, however long a loaded machine
            // takes to get there (CI once took more than 10 s).
            _ = await eventually(within: .seconds(120)) { succeeded.items.count >= 20 }
            process.terminate(signal: SIGKILL)
            _ = await process.waitUntilExit()
            await burst.value
            let acknowledged = succeeded.items
            #expect(acknowledged.count >= 20 && acknowledged.count < 300, "the kill landed mid-burst")

            // Every change that committed has exactly its audit record, and every acknowledged key exists.
            let keys = try await stack.postgres.psql(
                "SELECT key_id FROM api_keys WHERE tenant_id = 'crashy' AND label LIKE 'burst-%'")
                .split(separator: "\n").map(String.init)
            let audited = try await stack.postgres.psql(
                "SELECT count(*) FROM audit_log WHERE tenant_id = 'crashy' AND action = 'key.issue'")
            #expect(Int(audited.trimmingCharacters(in: .whitespacesAndNewlines)) == keys.count + 1)
            #expect(Set(acknowledged).isSubset(of: Set(keys)), "an acknowledged key was lost")

            // The next replica repairs KV and publishes what the dead one left in the outbox.
            try await stack.startTenantService(name: "tenant-2")
            let mirror = try await stack.mirror()
            let pool = try PostgresPoolFactory.make(stack.postgres)
            #expect(try await mirror.rebuild(pool: pool) == 0, "KV equals PostgreSQL after the restart")
            let snapshot = try await mirror.snapshot()
            #expect(Set(keys).isSubset(of: Set(snapshot.keys.keys)))
            #expect(try await eventually(within: .seconds(15)) { try await stack.count("outbox") == 0 } != nil)
            await pool.close()
        }
    }
}
