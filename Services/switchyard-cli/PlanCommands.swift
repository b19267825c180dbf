import ArgumentParser
import Schemas
import Tenancy

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Assign plans to tenants and define their limits.",
        subcommands: [SetPlan.self])

    struct SetPlan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Put a tenant on a plan, optionally (re)defining the plan's limits.",
            discussion: """
                Without limit options the tenant is put on an existing plan. With any limit option the plan is \
                defined (or redefined) and every tenant on that plan gets the new limits. When the tenant is \
                already on that plan, limits left out keep their current values; for a plan the tenant is not on \
                yet, limits left out are 0, which means unlimited.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: ArgumentHelp("The plan id.", valueName: "plan-id")) var plan: String
        @Option(help: "Requests per minute per API key (0 = unlimited).") var rpm: UInt32?
        @Option(help: "Tokens per minute per API key (0 = unlimited).") var tpm: UInt32?
        @Option(name: .customLong("daily-budget-micros"),
                help: "Daily budget in micro-units of the billing currency (0 = unlimited).")
        var dailyBudgetMicros: Int64?
        @Option(name: .customLong("monthly-budget-micros"),
                help: "Monthly budget in micro-units of the billing currency (0 = unlimited).")
        var monthlyBudgetMicros: Int64?
        @Option(name: .customLong("max-tokens"), help: "Most tokens one request may ask for (0 = no cap).")
        var maxTokens: UInt32?

        func validate() throws {
            guard TenantID.isValid(plan) else {
                throw ValidationError("invalid plan id: it must match [a-z0-9][a-z0-9-]{0,62}")
            }
            for (name, value) in [("--daily-budget-micros", dailyBudgetMicros), ("--monthly-budget-micros", monthlyBudgetMicros)] {
                if let value, value < 0 { throw ValidationError("\(name) must not be negative") }
            }
        }

        /// The plan definition to send, when any limit is given: the given limits over `current` (the tenant's
        /// plan, when it is this plan), else over zero.
        func definition(current: Plan?) -> Plan? {
            guard rpm != nil || tpm != nil || dailyBudgetMicros != nil || monthlyBudgetMicros != nil || maxTokens != nil
            else { return nil }
            let base = current?.id == plan ? current! : Plan(id: plan)
            return Plan(id: plan, rpm: rpm ?? base.rpm, tpm: tpm ?? base.tpm,
                        dailyBudgetMicros: dailyBudgetMicros ?? base.dailyBudgetMicros,
                        monthlyBudgetMicros: monthlyBudgetMicros ?? base.monthlyBudgetMicros,
                        maxTokensPerRequest: maxTokens ?? base.maxTokensPerRequest)
        }

        func run() async throws {
            try await options.withSession { session in
                var sent = definition(current: nil)
                if sent != nil {
                    let current: GetTenantResponse = try await session.call(.get, GetTenantRequest(tenantID: tenant.tenant))
                    sent = definition(current: current.plan)
                }
                let response: SetPlanResponse = try await session.call(
                    .setPlan, SetPlanRequest(tenantID: tenant.tenant, planID: plan, plan: sent))
                try session.output(json: response) {
                    print(sent == nil ? "tenant \(tenant.tenant) is on plan \(plan)"
                                            : "defined plan \(plan); tenant \(tenant.tenant) is on it")
                    if let stored = response.plan { TenantText.printPlan(stored) }
                }
            }
        }
    }
}
