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
                defined (or redefined) with exactly the limits given — limits left out are 0, which means \
                unlimited — and every tenant on that plan gets the new limits.
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

        /// The plan definition to send, when any limit is given.
        var definition: Plan? {
            guard rpm != nil || tpm != nil || dailyBudgetMicros != nil || monthlyBudgetMicros != nil || maxTokens != nil
            else { return nil }
            return Plan(id: plan, rpm: rpm ?? 0, tpm: tpm ?? 0, dailyBudgetMicros: dailyBudgetMicros ?? 0,
                        monthlyBudgetMicros: monthlyBudgetMicros ?? 0, maxTokensPerRequest: maxTokens ?? 0)
        }

        func run() async throws {
            try await options.withSession { session in
                let response: SetPlanResponse = try await session.call(
                    .setPlan, SetPlanRequest(tenantID: tenant.tenant, planID: plan, plan: definition))
                try session.output(json: response) {
                    print(definition == nil ? "tenant \(tenant.tenant) is on plan \(plan)"
                                            : "defined plan \(plan); tenant \(tenant.tenant) is on it")
                    if let stored = response.plan { TenantText.printPlan(stored) }
                }
            }
        }
    }
}
