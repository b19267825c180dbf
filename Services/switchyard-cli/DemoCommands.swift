import ArgumentParser
import Foundation
import Schemas
import Tenancy

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Demo data.", subcommands: [Seed.self])

    struct Seed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seed the demo tenant (demo-restaurant) through the tenant service's admin commands.",
            discussion: """
                Idempotent: creates or updates the tenant, defines plan demo-starter and puts the tenant on it, sets \
                the manifest, the rollouts and the knowledge base, and keeps the API key found in --env-file while \
                it is active (else issues a new test key with scope chat, label demo). The env file gets \
                SWITCHYARD_BASE_URL, SWITCHYARD_API_KEY, SWITCHYARD_NATS_URL (--reader-url when given: a URL with \
                the read-only consumer's credentials) and SWITCHYARD_NATS_INBOX_PREFIX, readable by the owner only.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(name: .customLong("env-file"),
                help: "Write SWITCHYARD_BASE_URL, SWITCHYARD_API_KEY and SWITCHYARD_NATS_URL to this file (mode 600).")
        var envFile: String?
        @Option(name: .customLong("base-url"), help: "The gateway's base URL to write into the env file.")
        var baseURL: String = "http://127.0.0.1:8080/v1"
        @Option(name: .customLong("reader-url"),
                help: "The NATS URL for outside consumers to write into the env file (with the read-only user's credentials).")
        var readerURL: String?
        @Option(help: "Requests per minute per key on the demo plan (0 = unlimited).")
        var rpm: UInt32 = DemoSeed.plan.rpm
        @Option(help: "Tokens per minute per key on the demo plan (0 = unlimited).")
        var tpm: UInt32 = DemoSeed.plan.tpm

        /// What the seed did (the `--json` output).
        struct Summary: Encodable {
            var tenantId: String
            var planId: String
            var agents: Int
            var rollouts: Int
            var knowledgeEntries: Int
            var keyId: String
            var keyIssued: Bool
            var envFile: String?
        }

        func run() async throws {
            let existingKey = try envFile.flatMap(Self.existingKey(in:))
            try await options.withSession { session in
                let id = DemoSeed.tenantID
                do {
                    let _: CreateTenantResponse = try await session.call(
                        .create, CreateTenantRequest(tenant: DemoSeed.tenant))
                } catch let failure as AdminFailure where failure.code == .conflict {
                    let _: UpdateTenantResponse = try await session.call(
                        .update, UpdateTenantRequest(tenant: DemoSeed.tenant))
                }
                var plan = DemoSeed.plan
                plan.rpm = rpm
                plan.tpm = tpm
                let _: SetPlanResponse = try await session.call(
                    .setPlan, SetPlanRequest(tenantID: id, planID: plan.id, plan: plan))
                let _: SetManifestResponse = try await session.call(
                    .setManifest, SetManifestRequest(tenantID: id, manifest: DemoSeed.manifest))
                for rollout in DemoSeed.rollouts {
                    let _: SetRolloutResponse = try await session.call(
                        .setRollout, SetRolloutRequest(tenantID: id, rollout: rollout))
                }
                for entry in DemoSeed.knowledge {
                    let _: KnowledgeUpsertResponse = try await session.call(
                        .knowledgeUpsert, KnowledgeUpsertRequest(tenantID: id, entry: entry))
                }

                // Keep the env file's key while it is active; otherwise issue one (shown once, stored hashed).
                var apiKey: (plaintext: String, keyID: String)?
                if let existingKey {
                    let keys: ListKeysResponse = try await session.call(.listKeys, ListKeysRequest(tenantID: id))
                    let now = EventClock.nowUnixNanos()
                    if keys.keys.contains(where: { $0.keyID == existingKey.keyID && KeyText.state($0, now: now) == "active" }) {
                        apiKey = existingKey
                    }
                }
                let issued = apiKey == nil
                if apiKey == nil {
                    let response: IssueKeyResponse = try await session.call(.issueKey, IssueKeyRequest(
                        tenantID: id, scopes: DemoSeed.keyScopes, label: DemoSeed.keyLabel, env: DemoSeed.keyEnvironment))
                    apiKey = (response.plaintextKey, response.key?.keyID ?? "")
                }
                guard let apiKey else { return }
                if let envFile {
                    try Self.writeEnvFile(envFile, lines: [
                        "SWITCHYARD_BASE_URL=\(baseURL)",
                        "SWITCHYARD_API_KEY=\(apiKey.plaintext)",
                        "SWITCHYARD_NATS_URL=\(readerURL ?? options.nats.url)",
                        // The read-only user may only receive replies under this prefix (never other clients').
                        "SWITCHYARD_NATS_INBOX_PREFIX=\(readerURL == nil ? "_INBOX" : "_INBOX_reader")",
                    ])
                }
                let summary = Summary(tenantId: id, planId: plan.id, agents: DemoSeed.manifest.agents.count,
                                      rollouts: DemoSeed.rollouts.count, knowledgeEntries: DemoSeed.knowledge.count,
                                      keyId: apiKey.keyID, keyIssued: issued, envFile: envFile)
                try session.output(json: summary) {
                    print("seeded tenant \(id): plan \(plan.id), \(summary.agents) agents, \(summary.rollouts) rollouts, "
                          + "\(summary.knowledgeEntries) knowledge entries")
                    switch (issued, envFile) {
                    case (false, let file?): print("kept API key \(apiKey.keyID) (in \(file))")
                    case (true, let file?): print("issued API key \(apiKey.keyID), written to \(file)")
                    case (_, nil):
                        print("issued API key \(apiKey.keyID)")
                        KeyText.printPlaintextOnce(apiKey.plaintext)
                    }
                }
            }
        }

        /// The API key in an existing env file (`SWITCHYARD_API_KEY=sy_<env>_<random>`) and its key id.
        static func existingKey(in envFile: String) throws(CLIFailure) -> (plaintext: String, keyID: String)? {
            guard FileManager.default.fileExists(atPath: envFile) else { return nil }
            let text: String
            do {
                text = try String(contentsOfFile: envFile, encoding: .utf8)
            } catch {
                throw CLIFailure("\(envFile): cannot read the env file")
            }
            let prefix = "SWITCHYARD_API_KEY="
            guard let line = text.split(whereSeparator: \.isNewline).last(where: { $0.hasPrefix(prefix) }) else {
                return nil
            }
            let key = String(line.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces)
            let parts = key.split(separator: "_", maxSplits: 2)
            guard parts.count == 3, parts[0] == APIKeyFormat.scheme,
                  APIKeyEnvironment(rawValue: String(parts[1])) != nil,
                  parts[2].count == APIKeyFormat.randomLength else { return nil }
            return (key, String(parts[2].prefix(APIKeyFormat.lookupIDLength)))
        }

        /// Writes the file readable by the owner only (created 0600, then renamed over the old one).
        static func writeEnvFile(_ path: String, lines: [String]) throws(CLIFailure) {
            let temporary = "\(path).tmp-\(ProcessInfo.processInfo.processIdentifier)"
            let bytes = Array((lines.joined(separator: "\n") + "\n").utf8)
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw CLIFailure("\(path): cannot write the env file: \(String(cString: strerror(errno)))")
            }
            var written = 0
            while written < bytes.count {
                let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    let reason = String(cString: strerror(errno))
                    close(fd)
                    unlink(temporary)
                    throw CLIFailure("\(path): cannot write the env file: \(reason)")
                }
                written += n
            }
            fchmod(fd, 0o600)
            close(fd)
            guard rename(temporary, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                throw CLIFailure("\(path): cannot write the env file: \(reason)")
            }
        }
    }
}
