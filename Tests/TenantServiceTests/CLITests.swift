import Foundation
import Schemas
import Tenancy
import Testing
import TestKit

/// The `switchyard` binary (built by `swift build --build-tests`, i.e. `make test`) against a real tenant
/// service: the operator's path, exit codes and `--json` output.
@Suite(.serialized) struct CLITests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    static var binary: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("switchyard").path,
            URL(fileURLWithPath: Bundle.main.bundlePath).deletingLastPathComponent().appendingPathComponent("switchyard").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
    }

    func run(_ stack: TenantStack, _ arguments: [String], token: String? = TenantStack.token) async throws
        -> (status: Int32, output: String)
    {
        var environment = ["SWITCHYARD_NATS_URL": stack.nats.url, "SWITCHYARD_ACTOR": "ci", "SWITCHYARD_ADMIN_TOKEN": ""]
        if let token { environment["SWITCHYARD_ADMIN_TOKEN"] = token }
        return try await TestProcess.run(Self.binary, arguments, environment: environment,
                                         workingDirectory: Self.repositoryRoot, check: false)
    }

    func json(_ output: String) -> [String: Any] {
        // --json prints exactly one JSON document on stdout.
        guard let start = output.firstIndex(of: "{"), let end = output.lastIndex(of: "}") else { return [:] }
        return (try? JSONSerialization.jsonObject(with: Data(output[start...end].utf8))) as? [String: Any] ?? [:]
    }

    @Test func operatorPathThroughTheCLI() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the switchyard CLI first")
        try await TenantStack.with(chatPath: false) { stack in
            let created = try await run(stack, ["tenant", "create", "cli-shop", "--name", "CLI Shop",
                                                "--package", "gastronomy", "--json"])
            #expect(created.status == 0, "\(created.output)")
            #expect((json(created.output)["tenant"] as? [String: Any])?["id"] as? String == "cli-shop")

            let manifest = try await run(stack, ["manifest", "set", "--tenant", "cli-shop",
                                                 "examples/demo-restaurant/manifest.yaml"])
            #expect(manifest.status == 0, "\(manifest.output)")
            let imported = try await run(stack, ["kb", "import", "--tenant", "cli-shop",
                                                 "examples/demo-restaurant/knowledge.yaml"])
            #expect(imported.status == 0, "\(imported.output)")
            let entries = try await stack.admin.call(.knowledgeList, KnowledgeListRequest(tenantID: "cli-shop"),
                                                     as: KnowledgeListResponse.self).entries
            #expect(entries.count == 15)

            let key = try await run(stack, ["key", "issue", "--tenant", "cli-shop", "--env", "live", "--json"])
            #expect(key.status == 0, "\(key.output)")
            #expect((json(key.output)["plaintextKey"] as? String)?.hasPrefix("sy_live_") == true)

            let canary = try await run(stack, ["rollout", "set", "--tenant", "cli-shop", "--agent", "restaurant-host",
                                               "--canary-percent", "25", "--canary-version", "v2"])
            #expect(canary.status == 0, "\(canary.output)")
            let kill = try await run(stack, ["rollout", "kill", "--tenant", "cli-shop", "--agent", "restaurant-host"])
            #expect(kill.status == 0, "\(kill.output)")
            let state = try await stack.admin.call(.get, GetTenantRequest(tenantID: "cli-shop"), as: GetTenantResponse.self)
            let rollout = state.rollouts.first { $0.agent == "restaurant-host" }
            #expect(rollout?.canaryPercent == 25 && rollout?.canaryVersion == "v2" && rollout?.killSwitch == true)
            #expect(state.manifest?.agents.map(\.agent) == ["restaurant-host", "gastronomy-supervisor", "concierge"])

            let defined = try await run(stack, ["plan", "set", "--tenant", "cli-shop", "--plan", "pro", "--rpm", "100",
                                                "--tpm", "5000"])
            #expect(defined.status == 0, "\(defined.output)")
            let raised = try await run(stack, ["plan", "set", "--tenant", "cli-shop", "--plan", "pro", "--rpm", "200"])
            #expect(raised.status == 0, "\(raised.output)")
            let plan = try await stack.admin.call(.get, GetTenantRequest(tenantID: "cli-shop"), as: GetTenantResponse.self).plan
            #expect(plan?.rpm == 200 && plan?.tpm == 5000, "limits left out keep their values: \(String(describing: plan))")

            let listed = try await run(stack, ["tenant", "list", "--json"])
            #expect(listed.status == 0)
            #expect(listed.output.contains("cli-shop"))
            let audit = try await stack.postgres.psql("SELECT DISTINCT actor FROM audit_log")
            #expect(audit.trimmingCharacters(in: .whitespacesAndNewlines) == "operator (ci)")
        }
    }

    @Test func everyErrorIsOneClearLineAndANonZeroExit() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the switchyard CLI first")
        try await TenantStack.with(chatPath: false) { stack in
            let unknown = try await run(stack, ["tenant", "show", "nobody"])
            #expect(unknown.status == 1)
            #expect(unknown.output.contains("not_found"))
            let noToken = try await run(stack, ["tenant", "list"], token: nil)
            #expect(noToken.status == 2)
            #expect(noToken.output.contains("no admin token"))
            let badToken = try await run(stack, ["tenant", "list"], token: "wrong-token-wrong-token")
            #expect(badToken.status == 1)
            #expect(badToken.output.contains("unauthorized"))
            #expect(!badToken.output.contains("wrong-token-wrong-token"), "tokens are never printed")
            let badID = try await run(stack, ["tenant", "create", "Bad.Id", "--name", "x"])
            #expect(badID.status != 0)
            let missingFile = try await run(stack, ["manifest", "set", "--tenant", "x", "/nonexistent/manifest.yaml"])
            #expect(missingFile.status == 1)
            #expect(missingFile.output.contains("manifest.yaml"))
            for output in [unknown.output, noToken.output, badToken.output, missingFile.output] {
                #expect(!output.contains("Fatal error") && !output.contains("Stack dump"))
            }
            #expect(try await stack.count("tenants") == 0)
        }
    }
}
