import ArgumentParser
import Schemas
import Tenancy

enum ConsentPolicy: String, ExpressibleByArgument, CaseIterable {
    case none
    case required
}

enum TenantStatus: String, ExpressibleByArgument, CaseIterable {
    case active
    case suspended
    case deleted
}

/// `--flag name=true|false`.
struct FeatureFlag: ExpressibleByArgument {
    var name: String
    var enabled: Bool

    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        switch parts[1] {
        case "true": enabled = true
        case "false": enabled = false
        default: return nil
        }
        name = String(parts[0])
    }
}

/// The tenant fields `create` and `update` take.
struct TenantFields: ParsableArguments {
    @Option(help: ArgumentHelp("An existing plan's id (plans are defined with `switchyard plan set`).",
                               valueName: "plan-id"))
    var plan: String?

    @Option(name: .customLong("package"), help: "Vertical package name, e.g. gastronomy.")
    var packageName: String?

    @Option(name: .customLong("consent-policy"), help: "Consent policy.")
    var consentPolicy: ConsentPolicy?

    @Option(name: .customLong("time-zone"),
            help: ArgumentHelp("IANA time zone of the tenant's days and months (budgets, billing), e.g. Europe/Berlin; "
                               + "\"\" = UTC.", valueName: "zone"))
    var timeZone: String?

    @Option(name: .customLong("flag"), parsing: .singleValue,
            help: ArgumentHelp("Set a feature flag (repeatable).", valueName: "name=true|false"))
    var flags: [FeatureFlag] = []

    func validate() throws {
        if let plan, !TenantID.isValid(plan) {
            throw ValidationError("invalid plan id: it must match [a-z0-9][a-z0-9-]{0,62}")
        }
        if let packageName, !TenantID.isValid(packageName) {
            throw ValidationError("invalid package name: it must match [a-z0-9][a-z0-9-]{0,62}")
        }
    }

    func apply(to tenant: inout Tenant) {
        if let plan { tenant.planID = plan }
        if let packageName { tenant.packageName = packageName }
        if let consentPolicy { tenant.consentPolicy = consentPolicy.rawValue }
        if let timeZone { tenant.timeZone = timeZone }
        for flag in flags { tenant.featureFlags[flag.name] = flag.enabled }
    }

    var isEmpty: Bool { plan == nil && packageName == nil && consentPolicy == nil && timeZone == nil && flags.isEmpty }
}

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Create, change, list, suspend and delete tenants.",
        subcommands: [Create.self, Update.self, List.self, Show.self, Suspend.self, Resume.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a tenant.",
            discussion: "Without --plan the tenant is put on the tenant service's default plan.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The new tenant's id ([a-z0-9][a-z0-9-]{0,62}; never reused).",
                                     valueName: "tenant-id"))
        var id: String
        @Option(help: "Display name.") var name: String
        @OptionGroup var fields: TenantFields

        func validate() throws { try validateTenantID(id) }

        func run() async throws {
            var tenant = Tenant(id: id, name: name)
            fields.apply(to: &tenant)
            try await options.withSession { session in
                let response: CreateTenantResponse = try await session.call(.create, CreateTenantRequest(tenant: tenant))
                try session.output(json: response) {
                    print("created tenant \(id)")
                    if let tenant = response.tenant { TenantText.printTenant(tenant) }
                }
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a tenant's name, plan, package, consent policy or feature flags.",
            discussion: "Fields you leave out keep their current values.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var id: String
        @Option(help: "Display name.") var name: String?
        @OptionGroup var fields: TenantFields
        @Option(name: .customLong("remove-flag"), parsing: .singleValue,
                help: ArgumentHelp("Remove a feature flag (repeatable).", valueName: "name"))
        var removeFlags: [String] = []

        func validate() throws {
            try validateTenantID(id)
            if name == nil && fields.isEmpty && removeFlags.isEmpty {
                throw ValidationError(
                    "nothing to change: give --name, --plan, --package, --consent-policy, --flag or --remove-flag")
            }
        }

        func run() async throws {
            try await options.withSession { session in
                let current: GetTenantResponse = try await session.call(.get, GetTenantRequest(tenantID: id))
                guard var tenant = current.tenant else { throw AdminFailure(.notFound, "no such tenant") }
                if let name { tenant.name = name }
                fields.apply(to: &tenant)
                for flag in removeFlags { tenant.featureFlags[flag] = nil }
                let response: UpdateTenantResponse = try await session.call(.update, UpdateTenantRequest(tenant: tenant))
                try session.output(json: response) {
                    print("updated tenant \(id)")
                    if let tenant = response.tenant { TenantText.printTenant(tenant) }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants (all pages).")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: "Only tenants with this status.") var status: TenantStatus?
        @Option(name: .customLong("page-size"), help: "Tenants per request (default: the service's, 100).")
        var pageSize: UInt32?

        func validate() throws {
            if let pageSize, pageSize == 0 || pageSize > 1000 {
                throw ValidationError("--page-size must be between 1 and 1000")
            }
        }

        func run() async throws {
            try await options.withSession { session in
                var all = ListTenantsResponse()
                var request = ListTenantsRequest(pageSize: pageSize ?? 0, status: status?.rawValue ?? "")
                var seenTokens = Set<String>()
                while true {
                    let page: ListTenantsResponse = try await session.call(.list, request)
                    all.tenants += page.tenants
                    if page.nextPageToken.isEmpty { break }
                    guard seenTokens.insert(page.nextPageToken).inserted else {
                        throw CLIFailure("the tenant service returned the same page token twice; stopped listing")
                    }
                    request.pageToken = page.nextPageToken
                }
                try session.output(json: all) {
                    var table = TextTable("ID", "STATUS", "PLAN", "PACKAGE", "CREATED", "NAME")
                    for tenant in all.tenants {
                        table.add(tenant.id, tenant.status, Output.text(tenant.planID), Output.text(tenant.packageName),
                                  Output.time(tenant.createdAtUnixNanos), cell(tenant.name))
                    }
                    table.print(ifEmpty: "no tenants")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a tenant with its plan, manifest summary and rollouts.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var id: String

        func validate() throws { try validateTenantID(id) }

        func run() async throws {
            try await options.withSession { session in
                let response: GetTenantResponse = try await session.call(.get, GetTenantRequest(tenantID: id))
                try session.output(json: response) {
                    guard let tenant = response.tenant else { return print("no such tenant") }
                    print("tenant \(tenant.id)")
                    TenantText.printTenant(tenant)
                    print("")
                    if let plan = response.plan {
                        print("plan \(plan.id)")
                        TenantText.printPlan(plan)
                    } else {
                        print("plan \(Output.text(tenant.planID)): (no definition)")
                    }
                    print("")
                    if let manifest = response.manifest {
                        ManifestText.printSummary(manifest)
                    } else {
                        print("manifest: none (set one with `switchyard manifest set`)")
                    }
                    print("")
                    if response.rollouts.isEmpty {
                        print("rollouts: none")
                    } else {
                        print("rollouts:")
                        RolloutText.printTable(response.rollouts)
                    }
                }
            }
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Suspend a tenant: its API keys are refused until it is resumed.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var id: String
        @Option(help: "Why (recorded in the audit log).") var reason: String = ""

        func validate() throws { try validateTenantID(id) }

        func run() async throws {
            try await TenantText.suspend(id, suspended: true, reason: reason, options: options)
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reactivate a suspended tenant.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var id: String

        func validate() throws { try validateTenantID(id) }

        func run() async throws {
            try await TenantText.suspend(id, suspended: false, reason: "", options: options)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a tenant (needs --yes).",
            discussion: """
                Revokes all of the tenant's API keys and erases its knowledge base. The tenant's record and audit \
                log stay, and its id is never reused.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Argument(help: ArgumentHelp("The tenant id.", valueName: "tenant-id")) var id: String
        @Flag(help: "Confirm the deletion.") var yes = false

        func validate() throws {
            try validateTenantID(id)
            guard yes else {
                throw ValidationError("refusing to delete tenant \(id) without --yes "
                    + "(this revokes all its API keys and erases its knowledge base)")
            }
        }

        func run() async throws {
            try await options.withSession { session in
                let response: DeleteTenantResponse = try await session.call(.delete, DeleteTenantRequest(tenantID: id))
                try session.output(json: response) {
                    print("deleted tenant \(id): its API keys are revoked and its knowledge base is erased")
                }
            }
        }
    }
}

/// Human output of tenants and plans.
enum TenantText {
    static func printTenant(_ tenant: Tenant) {
        let flags = tenant.featureFlags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        Output.printFields([
            ("name", tenant.name),
            ("status", tenant.status),
            ("plan", Output.text(tenant.planID)),
            ("package", Output.text(tenant.packageName)),
            ("consent policy", Output.text(tenant.consentPolicy)),
            ("time zone", Output.text(tenant.timeZone.isEmpty ? "UTC" : tenant.timeZone)),
            ("feature flags", Output.list(flags)),
            ("created", Output.time(tenant.createdAtUnixNanos)),
            ("updated", Output.time(tenant.updatedAtUnixNanos)),
        ])
    }

    static func printPlan(_ plan: Plan) {
        Output.printFields([
            ("requests per minute", Output.limit(plan.rpm)),
            ("tokens per minute", Output.limit(plan.tpm)),
            ("daily budget", Output.limit(plan.dailyBudgetMicros, unit: " micros")),
            ("monthly budget", Output.limit(plan.monthlyBudgetMicros, unit: " micros")),
            ("max tokens per request", Output.limit(plan.maxTokensPerRequest)),
        ])
    }

    static func suspend(_ id: String, suspended: Bool, reason: String, options: AdminOptions) async throws {
        try await options.withSession { session in
            let response: SuspendTenantResponse = try await session.call(
                .suspend, SuspendTenantRequest(tenantID: id, suspended: suspended, reason: reason))
            try session.output(json: response) {
                print(suspended ? "suspended tenant \(id): its API keys are refused until `switchyard tenant resume`"
                                : "resumed tenant \(id)")
            }
        }
    }
}
