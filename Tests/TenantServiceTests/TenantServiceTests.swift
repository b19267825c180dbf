import Contracts
import Foundation
import Messaging
import Schemas
import Security
import Synchronization
import Tenancy
@testable import TenantCore
import Testing
import TestKit

/// Collects every message on `subject` until stopped.
final class EventRecorder: Sendable {
    final class Store: Sendable {
        let messages = Mutex<[NATSMessage]>([])
    }

    private let store = Store()
    private let subscription: NATSSubscription
    private let task: Task<Void, Never>

    init(connection: NATSConnection, subject: String) throws {
        let subscription = try connection.subscribe(subject)
        self.subscription = subscription
        let store = self.store
        task = Task { for await message in subscription.messages { store.messages.withLock { $0.append(message) } } }
    }

    var all: [NATSMessage] { store.messages.withLock { $0 } }
    func stop() { subscription.unsubscribe() }
}

func expectFailure<T>(_ code: AdminErrorCode, _ label: String = "", _ body: () async throws -> T,
                      sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        _ = try await body()
        Issue.record("expected \(code.rawValue) for \(label), got success", sourceLocation: sourceLocation)
    } catch let failure as AdminFailure {
        #expect(failure.code == code, "\(label): \(failure)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected AdminFailure for \(label), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite(.serialized) struct TenantServiceTests {
    // MARK: keys reach every gateway within a second

    @Test func issuedKeyWorksAndRevocationReachesEveryGateway() async throws {
        try await TenantStack.with(gateways: 2) { stack in
            let (key, record) = try await stack.createTenant("corner-cafe")
            let works = try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation)
            #expect(works != nil, "a freshly issued key must work at the gateway")
            let chat = try await stack.chat(key: key, model: "host")
            #expect(chat.status == 200, "\(chat.text)")
            let used = try await eventually(within: .seconds(2)) {
                let keys = try await stack.admin.call(.listKeys, ListKeysRequest(tenantID: "corner-cafe"),
                                                      as: ListKeysResponse.self).keys
                return keys.count == 1 && keys[0].lastUsedAtUnixNanos > record.createdAtUnixNanos && keys[0].env == "test"
            }
            #expect(used != nil, "list-keys reports when the key was last used")
            for gateway in 0..<2 {
                #expect(try await stack.waitForModels(key: key, gateway: gateway, status: 200, within: TenantStack.propagation) != nil)
            }

            _ = try await stack.admin.call(.revokeKey, RevokeKeyRequest(tenantID: "corner-cafe", keyID: record.keyID),
                                           as: RevokeKeyResponse.self)
            for gateway in 0..<2 {
                let rejected = try await stack.waitForModels(key: key, gateway: gateway, status: 401, within: TenantStack.propagation)
                #expect(rejected != nil, "gateway \(gateway) still accepts a revoked key")
            }
            let listed = try await stack.admin.call(.listKeys, ListKeysRequest(tenantID: "corner-cafe"),
                                                    as: ListKeysResponse.self)
            #expect(listed.keys.map(\.status) == ["revoked"])
            #expect(listed.keys.allSatisfy { $0.hashHex.isEmpty }, "key hashes are never handed out")
        }
    }

    @Test func rotationKeepsTheOldKeyOnlyForTheOverlap() async throws {
        try await TenantStack.with { stack in
            let (old, record) = try await stack.createTenant("rotating")
            #expect(try await stack.waitForModels(key: old, status: 200, within: TenantStack.propagation) != nil)
            let rotatedAt = ContinuousClock.now
            let rotated = try await stack.admin.call(
                .rotateKey, RotateKeyRequest(tenantID: "rotating", keyID: record.keyID, overlapSeconds: 5),
                as: RotateKeyResponse.self)
            #expect(rotated.plaintextKey != old && rotated.plaintextKey.hasPrefix("sy_test_"))
            #expect(rotated.newKey?.scopes == ["chat"])
            #expect(try await stack.waitForModels(key: rotated.plaintextKey, status: 200, within: .seconds(4)) != nil)
            // Inside the overlap both work (the new key being visible means the rotation reached the gateway).
            if ContinuousClock.now - rotatedAt < .seconds(4) {
                #expect(try await stack.models(key: old).status == 200, "the old key must work during the overlap")
            }
            // After it, only the new one — and never before the overlap ended (a lower bound a slow machine
            // can't break).
            let rejected = try await stack.waitForModels(key: old, status: 401, within: .seconds(20))
            #expect(rejected != nil)
            #expect(ContinuousClock.now - rotatedAt >= .seconds(5))
            #expect(try await stack.models(key: rotated.plaintextKey).status == 200)
            // A rotated key can't be rotated again.
            await expectFailure(.conflict, "second rotation") {
                try await stack.admin.call(.rotateKey, RotateKeyRequest(tenantID: "rotating", keyID: record.keyID),
                                           as: RotateKeyResponse.self)
            }
        }
    }

    @Test func expiringKeyStopsAtItsExpiry() async throws {
        try await TenantStack.with { stack in
            try await stack.createTenant("short-lived")
            // Wide margins, and the "only after" check as a lower bound: a slow machine can't break either.
            let expiresAt = ContinuousClock.now + .seconds(5)
            let issued = try await stack.admin.call(.issueKey, IssueKeyRequest(
                tenantID: "short-lived", expiresAtUnixNanos: EventClock.nowUnixNanos() + 5_000_000_000),
                as: IssueKeyResponse.self)
            #expect(try await stack.waitForModels(key: issued.plaintextKey, status: 200, within: .seconds(4)) != nil)
            let rejected = try await stack.waitForModels(key: issued.plaintextKey, status: 401, within: .seconds(20))
            #expect(rejected != nil)
            let answers = "helper"
            #expect(ContinuousClock.now >= expiresAt, "rejected only after the expiry: \(answers)")
            await expectFailure(.invalidArgument, "expiry in the past") {
                try await stack.admin.call(.issueKey, IssueKeyRequest(tenantID: "short-lived", expiresAtUnixNanos: 1),
                                           as: IssueKeyResponse.self)
            }
        }
    }

    /// The polling helpers themselves: a status never answered gives nil, one answered gives a duration.
    @Test func waitingReportsOnlyStatusesSeen() async throws {
        try await TenantStack.with { stack in
            let (key, _) = try await stack.createTenant("probe")
            let never = try await stack.waitForModels(key: key, status: 401, within: .milliseconds(400))
            #expect(never == nil)
            let soon = try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation)
            #expect(soon != nil)
        }
    }

    @Test func suspendedTenantGets403AndResumes() async throws {
        try await TenantStack.with { stack in
            let (key, _) = try await stack.createTenant("sleepy")
            #expect(try await stack.waitForChat(key: key, model: "host", status: 200, within: TenantStack.propagation) != nil)
            _ = try await stack.admin.call(.suspend, SuspendTenantRequest(tenantID: "sleepy", suspended: true,
                                                                          reason: "unpaid invoice"),
                                           as: SuspendTenantResponse.self)
            var statuses: [Int] = []
            let suspendedAt = ContinuousClock.now
            while ContinuousClock.now - suspendedAt < TenantStack.propagation {
                let status = try await stack.chat(key: key, model: "host").status
                statuses.append(status)
                if status == 403 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(statuses.last == 403, "statuses seen after suspending: \(statuses)")
            _ = try await stack.admin.call(.suspend, SuspendTenantRequest(tenantID: "sleepy", suspended: false),
                                           as: SuspendTenantResponse.self)
            #expect(try await stack.waitForChat(key: key, model: "host", status: 200, within: TenantStack.propagation) != nil)
        }
    }

    // MARK: manifests and rollouts reach the router

    @Test func manifestRolloutAndKillSwitchReachTheRouter() async throws {
        try await TenantStack.with { stack in
            let (key, _) = try await stack.createTenant("wine-bar")
            let routed = try EventRecorder(connection: stack.connection, subject: "evt.chat.routed.wine-bar")
            defer { routed.stop() }
            func lastRouted() -> ChatRouted? {
                routed.all.last.flatMap { try? ChatRouted(protobuf: $0.payload) }
            }
            #expect(try await stack.waitForChat(key: key, model: "host", status: 200, within: TenantStack.propagation) != nil)
            #expect(try await stack.chat(key: key, model: "sommelier").status == 404)

            // A new agent in the manifest.
            _ = try await stack.admin.call(.setManifest, SetManifestRequest(
                tenantID: "wine-bar", manifest: TenantStack.manifest(agents: ["host", "supervisor", "sommelier"])),
                as: SetManifestResponse.self)
            #expect(try await stack.waitForChat(key: key, model: "sommelier", status: 200, within: TenantStack.propagation) != nil)
            #expect(try await eventually(within: TenantStack.propagation) { lastRouted()?.agent == "sommelier" } != nil)

            // 100 % canary: the router picks the canary version.
            _ = try await stack.admin.call(.setRollout, SetRolloutRequest(tenantID: "wine-bar", rollout: RolloutSettings(
                agent: "host", stableVersion: "v1", canaryVersion: "v2", canaryPercent: 100)), as: SetRolloutResponse.self)
            let canary = try await eventually(within: TenantStack.propagation) {
                _ = try await stack.chat(key: key, model: "host")
                return lastRouted()?.agentVersion == "v2" && lastRouted()?.rolloutCohort == "canary"
            }
            #expect(canary != nil, "canary percent must take effect; last: \(String(describing: lastRouted()))")

            // Kill switch: traffic for host goes to its fallback agent.
            _ = try await stack.admin.call(.setRollout, SetRolloutRequest(tenantID: "wine-bar", rollout: RolloutSettings(
                agent: "host", stableVersion: "v1", canaryVersion: "v2", canaryPercent: 100, killSwitch: true)),
                as: SetRolloutResponse.self)
            let killed = try await eventually(within: TenantStack.propagation) {
                _ = try await stack.chat(key: key, model: "host")
                return lastRouted()?.agent == "supervisor"
            }
            #expect(killed != nil, "kill switch must take effect; last: \(String(describing: lastRouted()))")

            // The rollout controller's step (keep_kill_switch) changes the share but never turns the switch off;
            // an operator's change without it does.
            let step = try await stack.admin.call(.setRollout, SetRolloutRequest(
                tenantID: "wine-bar", rollout: RolloutSettings(agent: "host", stableVersion: "v1", canaryVersion: "v2",
                                                               canaryPercent: 50, killSwitch: false),
                keepKillSwitch: true), as: SetRolloutResponse.self)
            #expect(step.rollout?.killSwitch == true)
            #expect(step.rollout?.canaryPercent == 50)
            let operatorChange = try await stack.admin.call(.setRollout, SetRolloutRequest(
                tenantID: "wine-bar", rollout: RolloutSettings(agent: "host", stableVersion: "v1", canaryVersion: "v2",
                                                               canaryPercent: 100, killSwitch: false)),
                as: SetRolloutResponse.self)
            #expect(operatorChange.rollout?.killSwitch == false)

            // Rollouts only for agents of the manifest.
            await expectFailure(.notFound, "rollout of an unknown agent") {
                try await stack.admin.call(.setRollout, SetRolloutRequest(
                    tenantID: "wine-bar", rollout: RolloutSettings(agent: "ghost", canaryPercent: 5)),
                    as: SetRolloutResponse.self)
            }
        }
    }

    @Test func knowledgeBaseChangesApplyAtOnce() async throws {
        try await TenantStack.with { stack in
            let (key, _) = try await stack.createTenant("garage-diner")
            func answer() async throws -> String {
                let result = try await stack.chat(key: key, model: "host", content: "Where can I park my car?")
                let choices = result.json["choices"] as? [[String: Any]]
                return ((choices?.first?["message"] as? [String: Any])?["content"] as? String) ?? result.text
            }
            #expect(try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation) != nil)
            #expect(!(try await answer()).contains("Torstraße"))  // loads (and caches) the index
            _ = try await stack.admin.call(.knowledgeUpsert, KnowledgeUpsertRequest(tenantID: "garage-diner", entry:
                KnowledgeEntry(id: "parking", title: "Parking", content: "Park your car in the garage at Torstraße 5.",
                               language: "en", tags: ["parking", "park", "car"])), as: KnowledgeUpsertResponse.self)
            // The stack's orchestrator caches the index for an hour: only the TenantChanged event can explain this.
            #expect(try await eventually(within: TenantStack.propagation) { try await answer().contains("Torstraße 5") } != nil)
            let listed = try await stack.admin.call(.knowledgeList, KnowledgeListRequest(tenantID: "garage-diner",
                                                                                         query: "garage"),
                                                    as: KnowledgeListResponse.self)
            #expect(listed.entries.map(\.id) == ["parking"])
            _ = try await stack.admin.call(.knowledgeDelete, KnowledgeDeleteRequest(tenantID: "garage-diner",
                                                                                    entryID: "parking"),
                                           as: KnowledgeDeleteResponse.self)
            var last = try await answer()
            let deletedAt = ContinuousClock.now
            while last.contains("Torstraße 5") && ContinuousClock.now - deletedAt < TenantStack.propagation {
                try await Task.sleep(for: .milliseconds(20))
                last = try await answer()
            }
            #expect(!last.isEmpty && !last.contains("Torstraße 5"), "answer after the delete: \(last)")
        }
    }

    // MARK: the KV mirror is rebuilt from PostgreSQL

    @Test func wipedMirrorIsRebuiltFromPostgresAtRestart() async throws {
        try await TenantStack.with { stack in
            let (key, _) = try await stack.createTenant("phoenix")
            _ = try await stack.admin.call(.setRollout, SetRolloutRequest(tenantID: "phoenix", rollout: RolloutSettings(
                agent: "host", stableVersion: "v1", canaryVersion: "v2", canaryPercent: 10)), as: SetRolloutResponse.self)
            #expect(try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation) != nil)

            await stack.stopTenantService(name: "tenant-1")
            let mirror = try await stack.mirror()
            let before = try await mirror.snapshot()
            #expect(before.tenants.keys.sorted() == ["phoenix", "phoenix.manifest", "phoenix.plan", "phoenix.rollout.host"])
            #expect(before.keys.count == 1)
            // Wipe both buckets and plant a forged key record for a tenant that doesn't exist.
            try await mirror.apply(before.tenants.keys.map { .deleteTenant($0) } + before.keys.keys.map { .deleteKey($0) })
            let (_, forged) = APIKeyGenerator.generate(env: .live, pepper: nil, tenantID: "phoenix")
            var ghost = forged
            ghost.tenantID = "ghost"
            try await mirror.apply([.key(ghost), .putTenant("ghost", Tenant(id: "ghost", name: "Ghost",
                                                                             status: "active").protobufBytes())])
            #expect(try await stack.waitForModels(key: key, status: 401, within: TenantStack.propagation) != nil)

            try await stack.startTenantService(name: "tenant-1")
            let after = try await mirror.snapshot()
            #expect(after.tenants == before.tenants, "tenants bucket rebuilt exactly")
            #expect(after.keys == before.keys, "apikeys bucket rebuilt exactly, forged record removed")
            #expect(try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation) != nil)
        }
    }

    // MARK: signed mirror

    @Test func forgedMirrorRecordsAreIgnoredByVerifyingReaders() async throws {
        try await TenantStack.with { stack in
            let (key, record) = try await stack.createTenant("guarded")
            #expect(try await stack.waitForModels(key: key, status: 200, within: TenantStack.propagation) != nil)
            let unsigned = try await TenantMirror(jetStream: stack.jetStream, signer: nil, logger: TenantStack.quietLogger)
            let impostor = try await TenantMirror(jetStream: stack.jetStream, signer: Ed25519.SigningKey.generate(),
                                                  logger: TenantStack.quietLogger)
            // Keys forged for the tenant: unsigned, signed by another key, and a genuine signed value copied
            // to another key id.
            let (forged1, record1) = APIKeyGenerator.generate(env: .live, pepper: nil, tenantID: "guarded", scopes: ["chat"])
            let (forged2, record2) = APIKeyGenerator.generate(env: .live, pepper: nil, tenantID: "guarded", scopes: ["chat"])
            try await unsigned.apply([.key(record1)])
            try await impostor.apply([.key(record2)])
            let genuine = try await stack.mirror().snapshot().keys[record.keyID] ?? []
            let (forged3, record3) = APIKeyGenerator.generate(env: .live, pepper: nil, tenantID: "guarded")
            _ = try await stack.jetStream.keyValue(TenancyKeys.apiKeysBucket).put(record3.keyID, genuine)
            try await stack.waitForMirrorBarrier()  // the gateway has seen the forged records
            for forged in [forged1, forged2, forged3] {
                #expect(try await stack.models(key: forged).status == 401, "a forged key record was accepted")
            }
            // A suspended tenant can't be reactivated by an unsigned tenant record.
            let activeSigned = try await stack.mirror().snapshot().tenants["guarded"] ?? []
            _ = try await stack.admin.call(.suspend, SuspendTenantRequest(tenantID: "guarded", suspended: true),
                                           as: SuspendTenantResponse.self)
            #expect(try await stack.waitForChat(key: key, model: "host", status: 403, within: TenantStack.propagation) != nil)
            try await unsigned.apply([.tenant(Tenant(id: "guarded", name: "Guarded", planID: "default", status: "active"))])
            try await stack.waitForMirrorBarrier()  // the gateway has seen the unsigned record
            #expect(try await stack.chat(key: key, model: "host").status == 403)

            // Replaying an old, genuinely signed value (the tenant while it was active) and deleting its plan:
            // the tenant service's mirror guard puts PostgreSQL's truth back.
            let tenantsBucket = try await stack.jetStream.keyValue(TenancyKeys.tenantsBucket)
            _ = try await tenantsBucket.put("guarded", activeSigned)
            try await tenantsBucket.delete("guarded.plan")
            let repaired = try await eventually(within: .seconds(2)) {
                let snapshot = try await stack.mirror().snapshot()
                return snapshot.tenants["guarded"] != activeSigned && snapshot.tenants["guarded.plan"] != nil
            }
            #expect(repaired != nil, "the mirror guard restores replayed and deleted entries")
            #expect(try await stack.chat(key: key, model: "host").status == 403)
        }
    }

    // MARK: two replicas

    @Test func twoReplicasServingConcurrentlyNeverCorruptState() async throws {
        try await TenantStack.with(tenantReplicas: 2, chatPath: false) { stack in
            try await stack.createTenant("busy")
            let admin = stack.admin
            // The same create raced on both replicas: exactly one wins.
            let creates = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        (try? await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "raced", name: "Raced")),
                                               as: CreateTenantResponse.self)) != nil
                    }
                }
                return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(creates == 1)

            // A mix of changes to one tenant from both replicas at once.
            let failures = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<60 {
                    group.addTask {
                        do {
                            switch index % 4 {
                            case 0:
                                _ = try await admin.call(.issueKey, IssueKeyRequest(tenantID: "busy", label: "k\(index)"),
                                                         as: IssueKeyResponse.self)
                            case 1:
                                _ = try await admin.call(.setRollout, SetRolloutRequest(tenantID: "busy", rollout:
                                    RolloutSettings(agent: "host", stableVersion: "v1", canaryVersion: "v2",
                                                    canaryPercent: UInt32(index))), as: SetRolloutResponse.self)
                            case 2:
                                _ = try await admin.call(.suspend, SuspendTenantRequest(tenantID: "busy",
                                                                                        suspended: index % 8 == 2),
                                                         as: SuspendTenantResponse.self)
                            default:
                                _ = try await admin.call(.knowledgeUpsert, KnowledgeUpsertRequest(
                                    tenantID: "busy", entry: KnowledgeEntry(id: "e\(index)", title: "T", content: "C")),
                                    as: KnowledgeUpsertResponse.self)
                            }
                            return 0
                        } catch {
                            return 1
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(failures == 0)
            #expect(try await stack.count("api_keys") == 1 + 15)
            #expect(try await stack.count("knowledge_entries") == 1 + 15)
            #expect(try await stack.count("tenants") == 2)
            // 4 for each createTenant (create, manifest, knowledge, key) + 1 raced create + 60 changes.
            #expect(try await stack.count("audit_log") == 4 + 1 + 60)
            // The KV mirror equals PostgreSQL: a rebuild finds nothing to repair.
            let mirror = try await stack.mirror()
            let pool = try PostgresPoolFactory.make(stack.postgres)
            #expect(try await mirror.rebuild(pool: pool) == 0)
            let rollout = try await stack.postgres.psql("SELECT canary_percent FROM rollouts WHERE tenant_id = 'busy'")
            let snapshot = try await mirror.snapshot()
            let mirrored = try RolloutSettings(protobuf: MirrorSignature.open(
                bucket: "tenants", key: "busy.rollout.host", value: snapshot.tenants["busy.rollout.host"] ?? [],
                verifier: Ed25519.VerifyingKey(publicKey: TenantStack.signingKey.publicKey)) ?? [0xFF])
            #expect("\(mirrored.canaryPercent)" == rollout.trimmingCharacters(in: .whitespacesAndNewlines))
            await pool.close()
        }
    }

    // MARK: hostile input writes nothing

    @Test("a tenant's time zone is stored, updated and mirrored to the services")
    func timeZoneRoundTrip() async throws {
        try await TenantStack.with(chatPath: false) { stack in
            let admin = stack.admin
            _ = try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "zoned", name: "Z",
                                                                                timeZone: "Europe/Berlin")),
                                     as: CreateTenantResponse.self)
            var got = try await admin.call(.get, GetTenantRequest(tenantID: "zoned"), as: GetTenantResponse.self)
            #expect(got.tenant?.timeZone == "Europe/Berlin")
            var tenant = try #require(got.tenant)
            tenant.timeZone = "America/New_York"
            _ = try await admin.call(.update, UpdateTenantRequest(tenant: tenant), as: UpdateTenantResponse.self)
            got = try await admin.call(.get, GetTenantRequest(tenantID: "zoned"), as: GetTenantResponse.self)
            #expect(got.tenant?.timeZone == "America/New_York")
            try await stack.waitForMirrorBarrier()
            let value = try #require(try await stack.mirror().snapshot().tenants["zoned"])
            let payload = try #require(MirrorSignature.open(bucket: "tenants", key: "zoned", value: value, verifier: nil))
            #expect(try Tenant(protobuf: payload).timeZone == "America/New_York")
        }
    }

    @Test func hostileInputGetsClearErrorsAndWritesNothing() async throws {
        try await TenantStack.with(chatPath: false) { stack in
            let admin = stack.admin
            try await stack.createTenant("legit")
            let auditBefore = try await stack.count("audit_log")
            let mirror = try await stack.mirror()
            let kvBefore = try await mirror.snapshot()

            let hostileIDs = ["a.b", "a*b", "a>b", ">", "*", "a b", " a", "ünïcode", "😀", "", "A", "-a",
                              String(repeating: "a", count: 10_240), "a\nb", "..", "legit.plan", "admin.>"]
            for id in hostileIDs {
                await expectFailure(.invalidArgument, "create \(id.prefix(20).debugDescription)") {
                    try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: id, name: "X")),
                                         as: CreateTenantResponse.self)
                }
                await expectFailure(.invalidArgument, "issue-key \(id.prefix(20).debugDescription)") {
                    try await admin.call(.issueKey, IssueKeyRequest(tenantID: id), as: IssueKeyResponse.self)
                }
            }
            let huge = String(repeating: "x", count: 10_240)
            await expectFailure(.invalidArgument, "10 KB name") {
                try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "big-name", name: huge)),
                                     as: CreateTenantResponse.self)
            }
            await expectFailure(.invalidArgument, "missing tenant") {
                try await admin.call(.create, CreateTenantRequest(), as: CreateTenantResponse.self)
            }
            for zone in ["Mars/Olympus_Mons", "UTC; DROP TABLE tenants", String(repeating: "E", count: 200), "Europe/ Berlin"] {
                await expectFailure(.invalidArgument, "time zone \(zone.prefix(20).debugDescription)") {
                    try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "zoned", name: "Z", timeZone: zone)),
                                         as: CreateTenantResponse.self)
                }
            }
            await expectFailure(.invalidArgument, "agent with a dot") {
                var manifest = TenantStack.manifest()
                manifest.agents[0].agent = "host.evil"
                return try await admin.call(.setManifest, SetManifestRequest(tenantID: "legit", manifest: manifest),
                                            as: SetManifestResponse.self)
            }
            await expectFailure(.invalidArgument, "fallback to a missing agent") {
                var manifest = TenantStack.manifest()
                manifest.agents[0].fallbackAgent = "nobody"
                return try await admin.call(.setManifest, SetManifestRequest(tenantID: "legit", manifest: manifest),
                                            as: SetManifestResponse.self)
            }
            await expectFailure(.invalidArgument, "canary 101 %") {
                try await admin.call(.setRollout, SetRolloutRequest(tenantID: "legit", rollout: RolloutSettings(
                    agent: "host", canaryPercent: 101)), as: SetRolloutResponse.self)
            }
            await expectFailure(.invalidArgument, "100 KB knowledge entry") {
                try await admin.call(.knowledgeUpsert, KnowledgeUpsertRequest(tenantID: "legit", entry: KnowledgeEntry(
                    id: "big", title: "Big", content: String(repeating: "y", count: 100_000))),
                    as: KnowledgeUpsertResponse.self)
            }
            await expectFailure(.invalidArgument, "key id of the wrong shape") {
                try await admin.call(.revokeKey, RevokeKeyRequest(tenantID: "legit", keyID: "'; DROP TABLE api_keys; --"),
                                     as: RevokeKeyResponse.self)
            }
            // Duplicates and unknowns.
            await expectFailure(.conflict, "duplicate create") {
                try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "legit", name: "Again")),
                                     as: CreateTenantResponse.self)
            }
            await expectFailure(.notFound, "unknown tenant get") {
                try await admin.call(.get, GetTenantRequest(tenantID: "nobody"), as: GetTenantResponse.self)
            }
            await expectFailure(.notFound, "unknown tenant key") {
                try await admin.call(.issueKey, IssueKeyRequest(tenantID: "nobody"), as: IssueKeyResponse.self)
            }
            await expectFailure(.notFound, "unknown key") {
                try await admin.call(.revokeKey, RevokeKeyRequest(tenantID: "legit", keyID: "aaaaaaaa"),
                                     as: RevokeKeyResponse.self)
            }
            await expectFailure(.notFound, "unknown plan") {
                try await admin.call(.create, CreateTenantRequest(tenant: Tenant(id: "planless", name: "P", planID: "gold")),
                                     as: CreateTenantResponse.self)
            }
            // Credentials.
            for token in ["", "wrong-token-wrong-token", TenantStack.token + "x", String(repeating: "t", count: 5000)] {
                let intruder = AdminClient(connection: stack.connection, token: token, actor: "mallory")
                await expectFailure(.unauthorized, "token of \(token.count) chars") {
                    try await intruder.call(.create, CreateTenantRequest(tenant: Tenant(id: "intruder", name: "I")),
                                            as: CreateTenantResponse.self)
                }
                await expectFailure(.unauthorized, "list with a bad token") {
                    try await intruder.call(.list, ListTenantsRequest(), as: ListTenantsResponse.self)
                }
            }
            // Malformed protobuf and unknown commands.
            for payload: [UInt8] in [[0xFF, 0xFF, 0xFF, 0xFF], [0x0A, 0x50, 0x01], Array(repeating: 0x80, count: 64)] {
                let reply = try await stack.connection.request(AdminCommand.create.subject, payload: payload,
                                                               timeout: .seconds(5))
                let response = try CreateTenantResponse(protobuf: reply.payload)
                #expect(response.error?.code == "invalid_argument")
            }
            let unknown = try await stack.connection.request("admin.tenant.explode", payload: [], timeout: .seconds(5))
            #expect(try DeleteTenantResponse(protobuf: unknown.payload).error?.code == "invalid_argument")

            // Nothing was written.
            #expect(try await stack.count("tenants") == 1)
            #expect(try await stack.count("audit_log") == auditBefore)
            #expect(try await stack.count("api_keys") == 1)
            #expect(try await mirror.snapshot().tenants == kvBefore.tenants)
            #expect(try await mirror.snapshot().keys == kvBefore.keys)
        }
    }

    // MARK: no plaintext key anywhere

    @Test func noPlaintextKeyInPostgresLogsEventsOrKV() async throws {
        let capture = LogCapture()
        try await TenantStack.with(logger: capture.logger) { stack in
            let events = try EventRecorder(connection: stack.connection, subject: ">")
            defer { events.stop() }
            let (first, firstRecord) = try await stack.createTenant("secretive")
            var keys = [first]
            for _ in 0..<2 {
                keys.append(try await stack.admin.call(.issueKey, IssueKeyRequest(tenantID: "secretive", label: "extra"),
                                                       as: IssueKeyResponse.self).plaintextKey)
            }
            let rotated = try await stack.admin.call(
                .rotateKey, RotateKeyRequest(tenantID: "secretive", keyID: firstRecord.keyID, overlapSeconds: 60),
                as: RotateKeyResponse.self)
            keys.append(rotated.plaintextKey)
            for key in keys {
                #expect(try await stack.waitForChat(key: key, model: "host", status: 200, within: TenantStack.propagation) != nil)
            }
            _ = try await stack.admin.call(.revokeKey, RevokeKeyRequest(tenantID: "secretive",
                                                                        keyID: rotated.newKey?.keyID ?? ""),
                                           as: RevokeKeyResponse.self)
            _ = try await stack.waitForModels(key: rotated.plaintextKey, status: 401, within: TenantStack.propagation)
            _ = try await stack.models(key: keys[1] + "tampered")
            // The last change's events have landed once the revocation's TenantChanged arrived.
            let revoked = try await eventually(within: .seconds(10)) {
                events.all.contains { message in
                    message.subject == "evt.tenant.changed.secretive"
                        && (try? TenantChanged(protobuf: message.payload).change) == "key.revoked"
                }
            }
            #expect(revoked != nil, "the revocation's TenantChanged event arrived")

            let database = try await stack.databaseDump()
            #expect(database.contains("secretive"), "the dump covers the tenancy tables")
            let logs = capture.text
            #expect(logs.contains("admin command"), "the capture saw the services' logs")
            let published = events.all
            #expect(published.contains { $0.subject.hasPrefix("evt.audit.recorded.") })
            let changes = published.filter { $0.subject == "evt.tenant.changed.secretive" }
                .compactMap { try? TenantChanged(protobuf: $0.payload).change }
            #expect(["key.issued", "key.rotated", "key.revoked"].allSatisfy(changes.contains), "\(changes)")
            // (The admin reply to issue/rotate on `_INBOX.…` carries the plaintext once, by design.)
            let eventBytes = published.filter { !$0.subject.hasPrefix("_INBOX.") }.map { Array($0.subject.utf8) + Array("\($0.headers)".utf8) + $0.payload }
            let mirror = try await stack.mirror()
            let kv = try await mirror.snapshot()
            let kvBytes = Array(kv.tenants.values) + Array(kv.keys.values)
            for key in keys {
                let secret = String(key.suffix(32))  // the part after the lookup id
                #expect(!database.contains(secret), "a plaintext key is in PostgreSQL")
                #expect(!logs.contains(secret), "a plaintext key is in the logs")
                for bytes in eventBytes + kvBytes {
                    #expect(!contains(bytes, Array(secret.utf8)), "a plaintext key is in an event or KV value")
                }
            }
        }
    }

    // MARK: audit log and events

    @Test func changesAreAuditedAndEmittedAsEvents() async throws {
        try await TenantStack.with(chatPath: false) { stack in
            let audit = try EventRecorder(connection: stack.connection, subject: "evt.audit.>")
            let changed = try EventRecorder(connection: stack.connection, subject: "evt.tenant.changed.*")
            defer { audit.stop(); changed.stop() }
            _ = try await stack.admin.call(.create, CreateTenantRequest(tenant: Tenant(
                id: "audited", name: "Audited GmbH", featureFlags: ["beta-ui": true])), as: CreateTenantResponse.self)
            _ = try await stack.admin.call(.suspend, SuspendTenantRequest(tenantID: "audited", suspended: true,
                                                                          reason: "fraud review"),
                                           as: SuspendTenantResponse.self)
            _ = try await stack.admin.call(.setPlan, SetPlanRequest(
                tenantID: "audited", planID: "pro", plan: Plan(rpm: 600, tpm: 1_000_000, maxTokensPerRequest: 8192)),
                as: SetPlanResponse.self)
            #expect(try await eventually(within: .seconds(2)) { audit.all.count == 3 && changed.all.count == 3 } != nil)

            let records = try audit.all.map { try AuditRecorded(protobuf: $0.payload) }
            #expect(records.map(\.action) == ["tenant.create", "tenant.suspend", "plan.set"])
            #expect(records.allSatisfy { $0.actor == "operator (alice)" && $0.meta?.producer == "tenant" })
            #expect(records[0].beforeJSON == "null")
            #expect(records[0].afterJSON.contains("\"name\":\"Audited GmbH\""))
            #expect(records[1].beforeJSON.contains("\"status\":\"active\""))
            #expect(records[1].afterJSON.contains("\"status\":\"suspended\"") && records[1].afterJSON.contains("fraud review"))
            #expect(records[2].afterJSON.contains("\"rpm\":600"))
            #expect(audit.all.allSatisfy { $0.subject == "evt.audit.recorded.audited" })
            let changes = try changed.all.map { try TenantChanged(protobuf: $0.payload) }
            #expect(changes.map(\.change) == ["created", "suspended", "plan"])
            #expect(changes[1].tenant?.status == "suspended")

            let stored = try await stack.postgres.psql(
                "SELECT actor || '|' || action || '|' || target FROM audit_log WHERE tenant_id = 'audited' ORDER BY id")
            #expect(stored.split(separator: "\n").map(String.init) == [
                "operator (alice)|tenant.create|tenant/audited", "operator (alice)|tenant.suspend|tenant/audited",
                "operator (alice)|plan.set|tenant/audited/plan",
            ])
            #expect(try await eventually(within: .seconds(2)) { try await stack.count("outbox") == 0 } != nil)
        }
    }

    @Test func outboxSweepPublishesEventsLeftBehind() async throws {
        try await TenantStack.with(chatPath: false) { stack in
            let audit = try EventRecorder(connection: stack.connection, subject: "evt.audit.>")
            defer { audit.stop() }
            // An event committed by a replica that died before publishing it.
            let record = AuditRecorded(meta: EventMeta.make(tenantID: "orphan", producer: "tenant"), actor: "operator",
                                       action: "tenant.create", target: "tenant/orphan", beforeJSON: "null",
                                       afterJSON: "{}")
            let event = Outbox.event(.auditRecorded, tenant: "orphan", eventID: record.meta!.eventID,
                                     payload: record.protobufBytes())
            let pool = try PostgresPoolFactory.make(stack.postgres)
            _ = try await pool.withConnection { try await TenantStore.insertOutbox(event, on: $0) }
            let outbox = Outbox(pool: pool, jetStream: stack.jetStream, logger: TenantStack.quietLogger)
            #expect(try await outbox.sweep(minimumAge: .zero) == 1)
            #expect(try await outbox.sweep(minimumAge: .zero) == 0)
            #expect(try await eventually(within: .seconds(2)) { audit.all.count == 1 } != nil)
            #expect(try AuditRecorded(protobuf: audit.all[0].payload) == record)
            await pool.close()
        }
    }

    // MARK: HTTP admin API

    @Test func httpAdminAPIServesTheSameCommands() async throws {
        try await TenantStack.with(chatPath: false) { stack in
            let created = try await stack.adminHTTP("create", json: #"{"tenant":{"id":"web-shop","name":"Web Shop"}}"#)
            #expect(created.status == 200, "\(created.text)")
            #expect((created.json["tenant"] as? [String: Any])?["status"] as? String == "active")
            #expect(((created.json["tenant"] as? [String: Any])?["planId"] as? String) == "default")

            let issued = try await stack.adminHTTP("issue-key", json: #"{"tenantId":"web-shop","env":"live"}"#)
            #expect(issued.status == 200)
            #expect((issued.json["plaintextKey"] as? String)?.hasPrefix("sy_live_") == true)

            let noToken = try await stack.adminHTTP("list", json: "{}", token: nil)
            #expect(noToken.status == 401)
            let badToken = try await stack.adminHTTP("list", json: "{}", token: "not-the-admin-token-at-all")
            #expect(badToken.status == 401)
            #expect(((badToken.json["error"] as? [String: Any])?["code"] as? String) == "unauthorized")
            // A token in the body doesn't replace the header.
            let smuggled = try await stack.adminHTTP("list", json: #"{"adminToken":"\#(TenantStack.token)"}"#,
                                                     token: "not-the-admin-token-at-all")
            #expect(smuggled.status == 401)

            let malformed = try await stack.adminHTTP("create", json: #"{"tenant": {"id": "x", "#)
            #expect(malformed.status == 400)
            let unknownField = try await stack.adminHTTP("create", json: #"{"tenant":{"id":"typo","nmae":"T"}}"#)
            #expect(unknownField.status == 400)
            #expect(unknownField.text.contains("nmae"))
            let unknownCommand = try await stack.adminHTTP("explode", json: "{}")
            #expect(unknownCommand.status == 400)
            let missing = try await stack.adminHTTP("get", json: #"{"tenantId":"nobody"}"#)
            #expect(missing.status == 404)
            let duplicate = try await stack.adminHTTP("create", json: #"{"tenant":{"id":"web-shop","name":"Again"}}"#)
            #expect(duplicate.status == 409)
            let hostileBodies = [#"{"tenant":{"id":"web.shop","name":"Dot"}}"#, #"{"tenant":{"id":"a\u0000b","name":"N"}}"#,
                                 #"{"tenant":{"id":"web shop","name":"S"}}"#, #"{"tenant":{"id":"*","name":"W"}}"#,
                                 #"{"tenant":{"id":"\u00fcber","name":"U"}}"#]
            for body in hostileBodies {
                let hostile = try await stack.adminHTTP("create", json: body)
                #expect(hostile.status == 400, "\(body): \(hostile.text)")
            }
            // (Over NATS a NUL can't even be sent: protobuf-c strings are C strings, see docs/adr/0003.)

            let listed = try await stack.adminHTTP("list", json: "{}")
            #expect(listed.status == 200)
            #expect((listed.json["tenants"] as? [[String: Any]])?.map { $0["id"] as? String } == ["web-shop"])
            #expect(try await stack.count("tenants") == 1)
        }
    }
}

/// Notes taken inside polling closures, for failure messages.
final class Trace: Sendable {
    private let store = Mutex<[String]>([])
    func add(_ item: String) { store.withLock { $0.append(item) } }
    var items: [String] { store.withLock { $0 } }
}

func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
        if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
    }
    return false
}
