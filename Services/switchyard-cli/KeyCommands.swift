import ArgumentParser
import Schemas
import Tenancy

enum KeyEnvironment: String, ExpressibleByArgument, CaseIterable {
    case live
    case test
}

struct KeyIDArgument: ParsableArguments {
    @Argument(help: ArgumentHelp("The 8-character key id shown by `key list` (the 8 characters after sy_<env>_).",
                                 valueName: "key-id"))
    var keyID: String
}

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Issue, revoke, rotate and list a tenant's API keys.",
        subcommands: [Issue.self, Revoke.self, Rotate.self, List.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new API key.",
            discussion: """
                The key is printed once and cannot be retrieved again: only its hash is stored. With --json the \
                response, including plaintextKey, is printed.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "Where the key may be used (default: live).") var env: KeyEnvironment?
        @Option(name: .customLong("scope"), parsing: .singleValue,
                help: ArgumentHelp("What the key may do (repeatable; default: chat).", valueName: "scope"))
        var scopes: [String] = []
        @Option(help: "A label to recognize the key by.") var label: String = ""
        @Option(name: .customLong("expires-in"),
                help: ArgumentHelp("Let the key expire after this many seconds (default: never).", valueName: "seconds"))
        var expiresIn: Int64?

        func validate() throws {
            if let expiresIn, expiresIn <= 0 || expiresIn > 100 * 365 * 24 * 3600 {
                throw ValidationError("--expires-in must be a positive number of seconds (at most 100 years)")
            }
        }

        func run() async throws {
            let expiresAt = expiresIn.map { EventClock.nowUnixNanos() + $0 * 1_000_000_000 } ?? 0
            let request = IssueKeyRequest(tenantID: tenant.tenant, scopes: scopes, expiresAtUnixNanos: expiresAt,
                                          label: label, env: env?.rawValue ?? "")
            try await options.withSession { session in
                let response: IssueKeyResponse = try await session.call(.issueKey, request)
                try session.output(json: response) {
                    let record = response.key ?? ApiKeyRecord()
                    print("issued API key \(record.keyID) for tenant \(tenant.tenant) "
                          + "(env \(env?.rawValue ?? "live"); \(KeyText.describe(record)))")
                    KeyText.printPlaintextOnce(response.plaintextKey)
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key at once.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @OptionGroup var key: KeyIDArgument

        func run() async throws {
            try await options.withSession { session in
                let response: RevokeKeyResponse = try await session.call(
                    .revokeKey, RevokeKeyRequest(tenantID: tenant.tenant, keyID: key.keyID))
                try session.output(json: response) {
                    let revokedAt = response.key.map { Output.time($0.revokedAtUnixNanos) } ?? "now"
                    print("revoked API key \(key.keyID) of tenant \(tenant.tenant) (at \(revokedAt))")
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace an API key with a new one; the old one keeps working for a while.",
            discussion: """
                The new key has the old key's scopes, label, environment and expiry. It is printed once and cannot \
                be retrieved again (with --json: plaintextKey in the response).
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @OptionGroup var key: KeyIDArgument
        @Option(help: ArgumentHelp("Seconds the old key keeps working (0 = it stops now).", valueName: "seconds"))
        var overlap: UInt32 = 3600

        func run() async throws {
            try await options.withSession { session in
                let response: RotateKeyResponse = try await session.call(
                    .rotateKey, RotateKeyRequest(tenantID: tenant.tenant, keyID: key.keyID, overlapSeconds: overlap))
                try session.output(json: response) {
                    let fresh = response.newKey ?? ApiKeyRecord()
                    print("rotated API key \(key.keyID) of tenant \(tenant.tenant): new key \(fresh.keyID) "
                          + "(\(KeyText.describe(fresh)))")
                    if let old = response.oldKey {
                        print(overlap == 0 ? "the old key \(old.keyID) stopped working now"
                              : "the old key \(old.keyID) keeps working until \(Output.time(old.revokedAtUnixNanos))")
                    }
                    KeyText.printPlaintextOnce(response.plaintextKey)
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a tenant's API keys (never the keys themselves).",
            discussion: """
                STATUS is active, rotating (the old key of a rotation: it stops at REVOKED AT), expired or revoked.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption

        func run() async throws {
            try await options.withSession { session in
                let response: ListKeysResponse = try await session.call(
                    .listKeys, ListKeysRequest(tenantID: tenant.tenant))
                try session.output(json: response) {
                    let now = EventClock.nowUnixNanos()
                    var table = TextTable("KEY ID", "ENV", "STATUS", "LABEL", "SCOPES", "CREATED", "LAST USED",
                                          "EXPIRES", "REVOKED AT")
                    for key in response.keys {
                        table.add(key.keyID, key.env, KeyText.state(key, now: now), cell(key.label, max: 30),
                                  Output.list(key.scopes), Output.time(key.createdAtUnixNanos),
                                  Output.time(key.lastUsedAtUnixNanos), Output.time(key.expiresAtUnixNanos),
                                  Output.time(key.revokedAtUnixNanos))
                    }
                    table.print(ifEmpty: "tenant \(tenant.tenant) has no API keys")
                }
            }
        }
    }
}

enum KeyText {
    static func describe(_ record: ApiKeyRecord) -> String {
        let expires = record.expiresAtUnixNanos == 0 ? "never" : Output.time(record.expiresAtUnixNanos)
        var parts = ["scopes \(Output.list(record.scopes))"]
        if !record.label.isEmpty { parts.append("label \"\(record.label)\"") }
        parts.append("expires \(expires)")
        return parts.joined(separator: "; ")
    }

    static func printPlaintextOnce(_ plaintext: String) {
        print("")
        print("    \(plaintext)")
        print("")
        print("Store this key now: it is shown only this once and cannot be retrieved again.")
    }

    /// active, rotating, expired or revoked — as the gateway treats the key now.
    static func state(_ key: ApiKeyRecord, now: Int64) -> String {
        guard key.status == "active" else { return key.status }
        if key.revokedAtUnixNanos != 0 { return key.revokedAtUnixNanos > now ? "rotating" : "revoked" }
        if key.expiresAtUnixNanos != 0 && key.expiresAtUnixNanos <= now { return "expired" }
        return "active"
    }
}
